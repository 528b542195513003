"""Evaluation through ONNX Runtime: metrics, calibration, deep ensembles, the CLI and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.contract import ModelContract, parse_contract
from service.uncertainty import MEASURES, ensemble_uncertainty
from training import metrics
from training.__main__ import main
from training.calibration import calibrate, validation_split
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.config import PRESETS, with_overrides
from training.conversion import to_onnx_bytes
from training.corruptions import CORRUPTIONS
from training.data import ImageDataset, load_dataset
from training.evaluate import SCORES, classification_metrics, evaluate, load_checkpoints
from training.export import export
from training.ood import EVALUATION_FAMILIES, TRAINING_FAMILIES
from training.predictor import OnnxPredictor, as_float
from training.report import markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LIMITS = ["--corruption-limit", "24", "--ood-count", "24"]
OOD_SETS = {
    *EVALUATION_FAMILIES,
    "inverted",
    *(f"{name} (training family)" for name in TRAINING_FAMILIES),
}


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint: Path) -> dict[str, Any]:
    return load_checkpoint(digits_checkpoint)


@pytest.fixture(scope="module")
def predictor(checkpoint: dict[str, Any]) -> OnnxPredictor:
    return OnnxPredictor.from_bytes([to_onnx_bytes(model_from_checkpoint(checkpoint))], threads=1)


@pytest.fixture(scope="module")
def validation(
    checkpoint: dict[str, Any], predictor: OnnxPredictor
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [200, 3, 10] and labels of the split the training run held out."""
    val = validation_split(checkpoint)
    assert len(val) == 200
    return predictor(as_float(val.images)), val.labels


@pytest.fixture(scope="module")
def calibration(validation: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    return calibrate(*validation)


@pytest.fixture(scope="module")
def held_out() -> ImageDataset:
    return load_dataset("digits", "test")


@pytest.fixture(scope="module")
def result(
    predictor: OnnxPredictor, held_out: ImageDataset, calibration: dict[str, Any]
) -> dict[str, Any]:
    return evaluate(predictor, held_out, calibration, corruption_limit=24, ood_count=24)


@pytest.fixture(scope="module")
def member_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two ordinary networks (M=1) from different seeds: the members of a deep ensemble."""
    from training.train import train

    paths = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"member-{seed}")
        overrides = {
            "ensemble_size": 1,
            "batch_repetition": 1,
            "epochs": 3,
            "lr": 1e-2,
            "seed": seed,
            "val_seed": 0,  # one held-out split for the whole ensemble
            "threads": 1,
            "out_dir": str(out),
        }
        paths.append(train(with_overrides(PRESETS["digits"], overrides)))
    return paths


def assert_classification(r: dict[str, Any], members: int) -> None:
    for key in ("accuracy", "nll", "ece", "brier", "disagreement", "mutual_information"):
        assert math.isfinite(r[key]), key
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 and 0 <= r["brier"] <= 2
    assert len(r["member_accuracy"]) == len(r["member_nll"]) == members


def test_classification_metrics_by_hand() -> None:
    # Two images, two heads: head 0 right on both, head 1 wrong on the second.
    logits = np.array([[[9.0, 0.0], [9.0, 0.0]], [[0.0, 9.0], [9.0, 0.0]]])
    r = classification_metrics(logits, np.array([0, 1]))
    assert r["member_accuracy"] == [1.0, 0.5]
    assert r["disagreement"] == pytest.approx(0.5)  # pairs differ on one image of two
    assert r["mutual_information"] == pytest.approx(math.log(2) / 2, abs=1e-3)
    # The second image's ensemble is a 50/50 coin; the tie goes to class 0.
    assert r["accuracy"] == 0.5
    assert r["nll"] == pytest.approx(metrics.ensemble_nll(logits, np.array([0, 1])))
    assert r["member_nll"][0] < 1e-3 < r["member_nll"][1]


def test_predictor_tiles_and_batches(predictor: OnnxPredictor, held_out: ImageDataset) -> None:
    x = as_float(held_out.images[:50])
    logits = predictor(x)
    assert logits.shape == (50, 3, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(predictor(x, batch_size=7), logits, atol=1e-5)
    assert predictor.forward_passes == 1 and predictor.ensemble_sizes == [3]


def test_evaluate_writes_complete_metrics(result: dict[str, Any], held_out: ImageDataset) -> None:
    assert result["dataset"] == "digits" and result["test_size"] == len(held_out) == 360
    assert result["temperature"] > 0
    assert set(result["thresholds"]) == set(MEASURES)

    assert_classification(result["clean"], members=3)
    assert_classification(result["clean_calibrated"], members=3)
    assert result["clean"]["accuracy"] > 0.5
    assert 0 <= result["clean"]["uncertain_fraction"] <= 1
    # A temperature rescales each head's logits: it never changes a head's top class.
    assert result["clean_calibrated"]["member_accuracy"] == result["clean"]["member_accuracy"]

    corrupted = result["corrupted"]
    assert corrupted["images"] == 24
    assert set(corrupted["by_corruption"]) == set(CORRUPTIONS)
    for name, by_severity in corrupted["by_corruption"].items():
        assert list(by_severity) == ["1", "2", "3", "4", "5"], name
        for r in by_severity.values():
            assert_classification(r, members=3)
    assert set(corrupted["mean"]) == {"accuracy", "nll", "ece", "brier"}
    all_runs = [r for by in corrupted["by_corruption"].values() for r in by.values()]
    assert corrupted["mean"]["accuracy"] == pytest.approx(
        np.mean([r["accuracy"] for r in all_runs])
    )

    assert set(result["ood"]) == OOD_SETS
    for name, entry in result["ood"].items():
        for score in SCORES:
            assert set(entry[score]) == {"auroc", "aupr", "fpr_at_95_tpr"}, name
            assert all(0 <= v <= 1 for v in entry[score].values()), (name, score)
        assert 0 <= entry["uncertain_fraction"] <= 1
    held_out = [k for k in result["ood"] if "training family" not in k]
    assert len(held_out) == len(EVALUATION_FAMILIES) + 1
    for score in SCORES:
        expected = np.mean([result["ood"][k][score]["auroc"] for k in held_out])
        assert result["ood_mean"][score]["auroc"] == pytest.approx(expected)
    assert 0 <= result["ood_mean"]["uncertain_fraction"] <= 1
    # every signal flags about 5 % of validation images; on OOD sets, its share flagged
    assert set(result["score_thresholds"]) == set(SCORES)
    assert set(result["ood_mean"]["flagged"]) == set(SCORES)
    for entry in result["ood"].values():
        assert all(0 <= v <= 1 for v in entry["flagged"].values())

    # misclassification detection and selective prediction, clean and corrupted, per signal
    for split in ("clean", "corrupted"):
        found = result["misclassification"][split]
        assert set(found) == set(SCORES), split
        for score, m in found.items():
            assert 0 <= m["auroc"] <= 1 and 0 <= m["augrc"] <= m["aurc"] <= 1, (split, score)
            assert 0 <= m["silent_errors"] <= m["error_rate"], (split, score)
    clean_error = 1 - result["clean_calibrated"]["accuracy"]
    assert result["misclassification"]["clean"]["max_probability"]["error_rate"] == pytest.approx(
        clean_error
    )

    inference = result["inference"]
    assert inference["forward_passes"] == 1
    assert inference["ms_per_image_batch_1"] > 0 and inference["ms_per_image_batch_256"] > 0
    # metrics.json must hold it: plain JSON, nothing numpy-specific.
    assert json.loads(json.dumps(result)) == result


def test_temperature_minimises_validation_nll(
    validation: tuple[np.ndarray, np.ndarray], calibration: dict[str, Any]
) -> None:
    logits, labels = validation
    t = calibration["temperature"]
    fitted = metrics.ensemble_nll(logits, labels, t)
    assert fitted <= metrics.ensemble_nll(logits, labels, 1.0) + 1e-9
    for nearby in (t * 1.05, t / 1.05, 2 * t, t / 2):
        assert fitted <= metrics.ensemble_nll(logits, labels, nearby) + 1e-9


def test_thresholds_flag_about_five_percent_of_validation(
    validation: tuple[np.ndarray, np.ndarray], calibration: dict[str, Any]
) -> None:
    logits, _ = validation
    u = ensemble_uncertainty(logits, calibration["temperature"])
    for name, values in u.measures().items():
        threshold = calibration["thresholds"][name]
        assert threshold == pytest.approx(np.percentile(values, 95)), name
    mi = u.mutual_information
    flagged = float((mi > calibration["thresholds"]["mutual_information"]).mean())
    # The 95th percentile of 200 values: 10 lie strictly above it, fewer only with ties.
    assert flagged <= 0.06
    if len(np.unique(mi)) == len(mi):
        assert flagged >= 0.03


def test_deep_ensemble_pools_heads(
    member_checkpoints: list[Path], held_out: ImageDataset, calibration: dict[str, Any]
) -> None:
    checkpoints, ensemble = load_checkpoints(member_checkpoints)
    assert len(checkpoints) == 2
    assert ensemble.ensemble_sizes == [1, 1] and ensemble.forward_passes == 2
    x = as_float(held_out.images[:40])
    pooled = ensemble(x)
    assert pooled.shape == (40, 2, 10)
    # Head m of the pool is member m's own single head.
    for m, path in enumerate(member_checkpoints):
        alone = load_checkpoints([path])[1](x)
        np.testing.assert_allclose(pooled[:, m : m + 1], alone, atol=1e-5)
    r = evaluate(ensemble, held_out, calibration, corruption_limit=8, ood_count=8)
    assert len(r["clean"]["member_accuracy"]) == 2
    assert r["inference"]["forward_passes"] == 2
    assert r["clean"]["accuracy"] > 0.5


def test_cli_writes_metrics_report_and_diagram(
    member_checkpoints: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    paths = [str(p) for p in member_checkpoints]
    assert main(["evaluate", "--checkpoint", *paths, "--out", str(out), *LIMITS]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["model"]["checkpoints"] == paths
    assert len(result["clean"]["member_accuracy"]) == 2
    assert result["inference"]["forward_passes"] == 2
    assert set(result["ood"]) == OOD_SETS and result["corrupted"]["images"] == 24

    report = (out / "report.md").read_text()
    assert report.startswith("# Evaluation on digits (360 test images)")
    assert all(name in report for name in CORRUPTIONS)
    assert all(f"| {name} |" in report for name in OOD_SETS)
    assert "![reliability diagram](reliability.png)" in report
    assert "`uncertain` flags mutual information (the heads' disagreement) above" in report

    # A model flagged by another measure gets a report whose `uncertain` column is that one's.
    flagged = result["clean"]["flagged"]
    assert set(flagged) == set(SCORES) and all(0 <= v <= 1 for v in flagged.values())
    by_entropy = markdown(result, "predictive_entropy")
    assert "`uncertain` flags predictive entropy (of the heads' mean) above" in by_entropy
    assert f"| in-distribution test | | | | {flagged['predictive_entropy']:.3f} |" in by_entropy
    blank = result["ood"]["blank"]
    row = next(line for line in by_entropy.splitlines() if line.startswith("| blank |"))
    assert row.endswith(f" | {blank['flagged']['predictive_entropy']:.3f} |")

    png = out / "reliability.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_cli_evaluates_an_exported_model_with_its_own_calibration(
    digits_checkpoint: Path, result: dict[str, Any], tmp_path: Path
) -> None:
    # Thresholds no validation set would give, so that only the file can be their source.
    calibration = {
        "temperature": 2.5,
        "thresholds": {"mutual_information": 1e6, "predictive_entropy": 0.5},
    }
    model = export(digits_checkpoint, tmp_path / "models", "digits", 1, {**result, **calibration})
    out = tmp_path / "eval"
    assert main(["evaluate", "--onnx", str(model), "--out", str(out), *LIMITS]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["temperature"] == 2.5
    assert evaluated["thresholds"] == calibration["thresholds"]
    assert evaluated["model"]["onnx"] == str(model)
    assert evaluated["model"]["training"]["dataset"] == "digits"
    assert evaluated["dataset"] == "digits"
    assert evaluated["clean"]["uncertain_fraction"] == 0.0
    assert all(r["uncertain_fraction"] == 0.0 for r in evaluated["ood"].values())
    # The same graph as the checkpoint's: identical uncalibrated metrics.
    assert evaluated["clean"]["accuracy"] == result["clean"]["accuracy"]
    assert evaluated["clean"]["nll"] == pytest.approx(result["clean"]["nll"], abs=1e-5)
    assert evaluated["clean_calibrated"]["nll"] == pytest.approx(
        metrics.ensemble_nll(
            OnnxPredictor.from_bytes([str(model)], threads=1)(
                as_float(load_dataset("digits", "test").images)
            ),
            load_dataset("digits", "test").labels,
            2.5,
        ),
        abs=1e-6,
    )
    assert (out / "report.md").is_file()
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    # The model carries the summary of the evaluation it was exported with.
    summary = read_contract(model).evaluation
    assert summary["clean"] == result["clean"]
    assert summary["corrupted"] == result["corrupted"]["mean"]
    assert set(summary["ood"]) == OOD_SETS
    assert summary["ood"]["blank"] == {
        "auroc_mutual_information": result["ood"]["blank"]["mutual_information"]["auroc"],
        "uncertain_fraction": result["ood"]["blank"]["uncertain_fraction"],
    }


def read_contract(path: Path) -> ModelContract:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return parse_contract(meta, session.get_inputs(), session.get_outputs(), str(path))


def write_imagefolder(root: Path) -> None:
    """Two classes of 20x20 color PNGs (noise; class b has a white left half)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 6)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                if cls == "b":
                    pixels[:, :10] = 255
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_cli_evaluates_imagefolder_models_at_their_own_size(tmp_path: Path) -> None:
    """Test images are loaded in the model's format (16x16 gray here), not the default."""
    from training.train import train

    data = tmp_path / "data"
    write_imagefolder(data)
    overrides = {
        "dataset": "imagefolder",
        "data_dir": str(data),
        "image_size": 16,
        "color": "L",
        "val_size": 8,
        "ensemble_size": 2,
        "epochs": 1,
        "batch_size": 16,
        "threads": 1,
        "out_dir": str(tmp_path / "run"),
    }
    checkpoint = train(with_overrides(PRESETS["digits"], overrides))
    limits = ["--corruption-limit", "4", "--ood-count", "4"]
    out = tmp_path / "eval-checkpoint"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), *limits]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["dataset"] == "imagefolder" and evaluated["test_size"] == 12

    model = export(checkpoint, tmp_path / "models", "shapes", 1, evaluated)
    assert read_contract(model).input_shape == (1, 16, 16)
    out = tmp_path / "eval-onnx"
    command = ["evaluate", "--onnx", str(model), "--data-dir", str(data), "--out", str(out)]
    assert main([*command, *limits]) == 0
    from_onnx = json.loads((out / "metrics.json").read_text())
    assert from_onnx["clean"]["accuracy"] == evaluated["clean"]["accuracy"]


def test_members_with_different_validation_splits_are_refused(
    digits_checkpoint: Path, tmp_path: Path
) -> None:
    from training.train import train

    other = train(
        with_overrides(
            PRESETS["digits"],
            {"seed": 1, "epochs": 1, "threads": 1, "out_dir": str(tmp_path)},
        )
    )
    with pytest.raises(ValueError, match="different validation splits"):
        load_checkpoints([digits_checkpoint, other])
