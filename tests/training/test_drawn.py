"""training/drawn.py on the session's tiny digits model (8x8): every group and shape scored."""

from __future__ import annotations

import json
from pathlib import Path

from training.__main__ import main
from training.drawn import drawn_rates
from training.glyphs import DIGITS, HELD_OUT, NON_DIGITS


def test_drawn_rates(model_repository: Path, tmp_path: Path) -> None:
    model = model_repository / "digits" / "1" / "model.onnx"
    rates = drawn_rates(model, hands=2, seed=0)
    assert rates["hands_per_shape"] == 2
    assert set(rates["digits"]["shapes"]) == set(DIGITS)
    assert set(rates["non_digits"]["shapes"]) == set(NON_DIGITS)
    assert set(rates["held_out"]["shapes"]) == set(HELD_OUT)
    for group in ("digits", "non_digits", "held_out"):
        assert 0.0 <= rates[group]["flagged"] <= 1.0
    digits = rates["digits"]
    assert 0.0 <= digits["right_unflagged"] <= digits["right"] <= 1.0
    assert all(
        r["answered_as"] in [str(d) for d in range(10)]
        for r in rates["held_out"]["shapes"].values()
    )
    assert drawn_rates(model, hands=2, seed=0) == rates  # reproducible

    out = tmp_path / "drawn.json"
    assert main(["drawn", "--model", str(model), "--hands", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["hands_per_shape"] == 1
