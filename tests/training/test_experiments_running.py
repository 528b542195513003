"""What the runner reads back from a training's log, and the recipe it trains by default."""

from __future__ import annotations

from pathlib import Path

from training.experiments.default_model import DEFAULT_RECIPE
from training.experiments.running import command_line
from training.experiments.steps import train_log


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


def test_default_model_reproduces_the_shipped_default_and_each_option_replaces_its_part() -> None:
    args = command_line().parse_args(["default-model", "--data-dir", "mnist"])
    assert {key: getattr(args, key) for key in DEFAULT_RECIPE} == DEFAULT_RECIPE
    assert DEFAULT_RECIPE["version"] == max(
        int(p.name) for p in (Path(__file__).parents[2] / "models" / "mnist").iterdir()
    )
    v1 = ["--config", "w1-m3-rho0-outlier", "--seed", "0", "--version", "1"]
    args = command_line().parse_args(["default-model", "--data-dir", "mnist", *v1])
    assert (args.config, args.seed, args.version) == ("w1-m3-rho0-outlier", 0, 1)
    assert args.outlier_families == DEFAULT_RECIPE["outlier_families"]
