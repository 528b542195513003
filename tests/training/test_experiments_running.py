"""What the runner reads back from a training's log."""

from __future__ import annotations

from pathlib import Path

from training.experiments.running import train_log


def test_train_log_sums_epochs_and_reads_the_parameter_count(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(
        "$ python -m training train ...\n"
        "training cnn M=3 rho=0.5 r=2 on mnist (55000 train, 5000 val), 471,166 parameters, "
        "1 process(es) on cpu, 1287 steps\n"
        '{"epoch": 1, "step": 429, "loss": 0.3, "seconds": 197.8, "val_accuracy": 0.96}\n'
        "epoch 2/3: 100%|#####| 429/429\n"
        # a resumed run appends its own header and epochs
        "training cnn M=3 rho=0.5 r=2 on mnist (55000 train, 5000 val), 471,166 parameters, "
        "1 process(es) on cpu, 1287 steps\n"
        '{"epoch": 2, "step": 858, "loss": 0.1, "seconds": 200.2, "val_accuracy": 0.98}\n'
    )
    seconds, parameters = train_log(log)
    assert seconds == 398.0
    assert parameters == 471_166
