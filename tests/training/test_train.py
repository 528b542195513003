"""Training end to end on the embedded digits set: it learns, it resumes exactly, it runs under
torchrun, and the command line reports user errors."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import torch

import training.train as train_module
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.config import PRESETS, TrainConfig
from training.data import load_dataset, split_validation
from training.models.mimo import tile
from training.train import to_float, train

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 19  # digits: 1437 train - 200 val = 1237 examples, batch 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # train() sets config.threads for the whole process


def digits(out_dir: Path, **overrides: Any) -> TrainConfig:
    return replace(PRESETS["digits"], out_dir=str(out_dir), threads=1, **overrides)


def run(config: TrainConfig, resume: str | Path | None = None) -> dict[str, Any]:
    path = train(config, resume=str(resume) if resume else None)
    assert path == Path(config.out_dir) / "model.pt" and path.is_file()
    return load_checkpoint(path)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def assert_same_history(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Equal records, up to float noise, apart from the wall-clock time."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - {"seconds"}:
            assert x[key] == pytest.approx(y[key], abs=1e-6), key


# ---- learning ----


def test_short_run_beats_chance_by_far(tmp_path: Path) -> None:
    checkpoint = run(digits(tmp_path, epochs=6, lr=1e-2))
    history = checkpoint["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in history] == [STEPS_PER_EPOCH * e for e in range(1, 7)]
    assert history[-1]["loss"] < history[0]["loss"]
    final = history[-1]
    assert final["val_accuracy"] > 0.5  # chance is 0.1
    assert len(final["val_member_accuracy"]) == 3
    assert min(final["val_member_accuracy"]) > 0.3  # every member learned, not just one

    # The saved model reproduces the recorded validation accuracy on the same held-out split.
    model = model_from_checkpoint(checkpoint)
    full = load_dataset("digits", "train")
    _, val = split_validation(full, 200, seed=0)
    with torch.no_grad():
        probs = model(tile(to_float(val.images), 3)).softmax(-1).mean(1)
    correct = int((probs.argmax(-1) == torch.as_tensor(val.labels)).sum())
    assert correct / len(val) == pytest.approx(final["val_accuracy"], abs=1e-9)
    assert_same_weights(load_checkpoint(tmp_path / "last.pt")["model"], checkpoint["model"])


def test_single_member_network_trains(tmp_path: Path) -> None:
    checkpoint = run(digits(tmp_path, ensemble_size=1, epochs=4, lr=1e-2))
    final = checkpoint["history"][-1]
    assert final["val_accuracy"] > 0.5
    assert final["val_member_accuracy"] == [pytest.approx(final["val_accuracy"])]
    assert checkpoint["model"]["head.weight"].shape[0] == 10


def test_outlier_loss_runs_and_max_steps_stops(tmp_path: Path) -> None:
    checkpoint = run(digits(tmp_path, outlier_weight=1.0, epochs=2, max_steps=8))
    history = checkpoint["history"]
    assert len(history) == 1
    assert history[0]["step"] == 8
    assert math.isfinite(history[0]["loss"]) and history[0]["loss"] > 0
    assert checkpoint["config"]["outlier_weight"] == 1.0


def test_outlier_exposure_trains_a_single_network(tmp_path: Path) -> None:
    config = digits(tmp_path, ensemble_size=1, outlier_weight=1.0, outlier_loss="uniform")
    checkpoint = run(replace(config, epochs=2, max_steps=8))
    assert math.isfinite(checkpoint["history"][0]["loss"])
    assert checkpoint["config"]["outlier_loss"] == "uniform"
    with pytest.raises(ValueError, match="a single network takes --outlier-loss uniform"):
        train(replace(config, outlier_loss="agreement"))
    with pytest.raises(ValueError, match="unknown outlier_loss 'kl'"):
        train(replace(config, outlier_loss="kl"))


def test_outlier_families_take_turns(tmp_path: Path) -> None:
    config = digits(tmp_path, outlier_weight=1.0, outlier_families="smooth_noise,pen_strokes")
    checkpoint = run(replace(config, epochs=2, max_steps=4))
    assert math.isfinite(checkpoint["history"][0]["loss"])
    assert checkpoint["config"]["outlier_families"] == "smooth_noise,pen_strokes"
    with pytest.raises(ValueError, match=r"unknown outlier_families \['doodles'\]"):
        train(replace(config, outlier_families="smooth_noise,doodles"))


def test_drawn_digits_join_the_step(tmp_path: Path) -> None:
    checkpoint = run(digits(tmp_path, drawn_digit_fraction=0.25, epochs=2, max_steps=4))
    assert math.isfinite(checkpoint["history"][0]["loss"])
    assert checkpoint["config"]["drawn_digit_fraction"] == 0.25


def test_a_resumed_run_keeps_its_outliers(tmp_path: Path) -> None:
    """Resumed from a checkpoint, a run trains on the checkpoint's outlier families and loss,
    not on the defaults of whoever resumes it: it lands on the uninterrupted run's weights."""
    drawn = {
        "outlier_weight": 1.0,
        "outlier_families": "pen_strokes",
        "outlier_loss": "uniform",
        # (a schedule that does not depend on the run's length: see the test above)
        "schedule": "step",
        "warmup_epochs": 1.0,
    }
    straight = run(digits(tmp_path / "straight", epochs=2, **drawn))
    run(digits(tmp_path / "resumed", epochs=1, **drawn))
    resumed = run(digits(tmp_path / "resumed", epochs=2), resume=tmp_path / "resumed" / "last.pt")
    assert resumed["config"]["outlier_families"] == "pen_strokes"
    assert_same_weights(resumed["model"], straight["model"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("optimizer", "lion", "unknown optimizer"), ("schedule", "cosine", "unknown schedule")],
)
def test_unknown_optimizer_or_schedule(tmp_path: Path, field: str, value: str, message: str):
    with pytest.raises(ValueError, match=message):
        train(digits(tmp_path, **{field: value}))


# ---- checkpoint and resume ----


@pytest.fixture(scope="module")
def onecycle_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 3-epoch run (default one-cycle schedule), keeping a copy of last.pt as
    it was after every epoch: the files an interrupted run would have left behind."""
    out = tmp_path_factory.mktemp("onecycle")
    save = train_module.save_atomic

    def save_and_keep(obj: Any, path: Path) -> None:
        save(obj, path)
        if path.name == "last.pt":
            shutil.copy(path, path.with_name(f"after-epoch-{obj['epoch'] + 1}.pt"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_atomic", save_and_keep)
        final = run(digits(out, epochs=3))
    return {"dir": out, "final": final}


def test_resume_after_interruption_matches_the_uninterrupted_run(
    onecycle_run: dict[str, Any],
) -> None:
    out, uninterrupted = onecycle_run["dir"], onecycle_run["final"]
    resumed = run(digits(out, epochs=3), resume=out / "after-epoch-2.pt")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["step"] == uninterrupted["step"] == 3 * STEPS_PER_EPOCH
    assert_same_weights(resumed["model"], uninterrupted["model"])
    assert_same_history(resumed["history"], uninterrupted["history"])


def test_resume_with_more_epochs_continues_the_counters(
    tmp_path: Path, onecycle_run: dict[str, Any]
) -> None:
    first = run(digits(tmp_path, epochs=2))
    assert len(first["history"]) == 2
    resumed = run(digits(tmp_path, epochs=3), resume=tmp_path / "last.pt")
    history = resumed["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [r["step"] for r in history] == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    assert history[:2] == first["history"]
    assert resumed["epoch"] == 2 and resumed["step"] == 3 * STEPS_PER_EPOCH
    assert resumed["config"]["epochs"] == 3
    assert math.isfinite(history[2]["loss"])
    # the third epoch runs on the 3-epoch one-cycle curve and ends where that curve ends
    final_lr = onecycle_run["final"]["history"][-1]["lr"]
    assert history[2]["lr"] == pytest.approx(final_lr, rel=1e-9)
    assert not torch.equal(resumed["model"]["head.weight"], first["model"]["head.weight"])


def test_resume_matches_uninterrupted_run_with_the_step_schedule(tmp_path: Path) -> None:
    """The step schedule does not depend on the run's length: train 2 epochs, resume to 3, and
    land on the weights of a 3-epoch run (warm-up in epoch 1, a decay at epoch 2)."""
    step_schedule = {"schedule": "step", "warmup_epochs": 1.0, "lr_decay_epochs": (2,)}
    run(digits(tmp_path / "resumed", epochs=2, **step_schedule))
    resumed = run(
        digits(tmp_path / "resumed", epochs=3, **step_schedule),
        resume=tmp_path / "resumed" / "last.pt",
    )
    straight = run(digits(tmp_path / "straight", epochs=3, **step_schedule))
    assert [r["step"] for r in resumed["history"]] == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    assert_same_weights(resumed["model"], straight["model"])
    assert_same_history(resumed["history"], straight["history"])
    lrs = [r["lr"] for r in straight["history"]]
    assert lrs[1] == pytest.approx(0.2 * lrs[0])  # the decay happened across the resume point


# ---- processes and command line ----


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_ddp_under_torchrun(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    command = [
        str(torchrun), "--standalone", "--nproc-per-node", "2",
        "-m", "training", "train", "--preset", "digits",
        "--max-steps", "6", "--epochs", "1", "--threads", "1", "--out-dir", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint["meta"]["world_size"] == 2
    assert checkpoint["step"] == 6
    model = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 1, 8, 8)).shape == (2, 3, 10)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_lists_every_config_flag() -> None:
    done = cli("train", "--help")
    assert done.returncode == 0, done.stderr
    for name in ["preset", "resume"] + [f.name for f in fields(TrainConfig) if f.name != "extra"]:
        assert f"--{name.replace('_', '-')}" in done.stdout


def test_cli_bad_dataset_dir_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-mnist-here"
    done = cli("train", "--dataset", "mnist", "--data-dir", str(missing), "--threads", "1",
               "--out-dir", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode != 0
    assert str(missing) in done.stderr
    assert "MNIST" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_resume_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "last.pt"
    done = cli("train", "--resume", str(missing), "--threads", "1", "--out-dir", str(tmp_path))
    assert done.returncode != 0
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
