"""training/flag.py: the served flag's measure, chosen by what each measure catches at the
same 5 % false-alarm rate, on hand-made logits whose answers are known."""

from __future__ import annotations

import numpy as np

from training.flag import choose, evidence

K = 4


def heads(*rows: list[list[float]]) -> np.ndarray:
    """logits [N, M, K] from rows of M heads' logits."""
    return np.asarray(rows, dtype=np.float64)


SURE_0 = [8.0, 0, 0, 0]  # a head sure of class 0
SURE_1 = [0, 8.0, 0, 0]
FLAT = [0.0, 0, 0, 0]  # a head with no idea


def test_each_question_gets_the_measure_that_answers_it() -> None:
    # validation: a right answer the heads agree on; a wrong answer where each head is unsure
    # (high expected entropy, no disagreement)
    val = (heads([SURE_0, SURE_0], [FLAT, FLAT]), np.array([0, 2]))
    corrupted = val
    # outliers: the heads are each sure and disagree (high mutual information)
    outliers = {"split": heads([SURE_0, SURE_1], [SURE_1, SURE_0])}
    thresholds = {"mutual_information": 0.1, "predictive_entropy": 0.5, "expected_entropy": 0.5}
    found = evidence(val, corrupted, outliers, 1.0, thresholds)
    assert found["mutual_information"]["corrupted_errors_flagged"] == 0.0
    assert found["mutual_information"]["ood_flagged_mean"] == 1.0
    assert found["expected_entropy"]["corrupted_errors_flagged"] == 1.0
    assert found["expected_entropy"]["ood_flagged_mean"] == 0.0
    # the mean prediction is spread in both cases: predictive entropy catches both
    assert found["predictive_entropy"]["corrupted_errors_flagged"] == 1.0
    assert found["predictive_entropy"]["ood_flagged_mean"] == 1.0
    assert found["predictive_entropy"]["corrupted_silent_errors"] == 0.0
    choice = choose(found)
    assert choice["measure"] == "predictive_entropy"
    assert choice["best_for_outliers"] in ("mutual_information", "predictive_entropy")
    assert choice["best_for_errors"] in ("expected_entropy", "predictive_entropy")


def test_a_tie_keeps_mutual_information() -> None:
    same = {"corrupted_errors_flagged": 0.9, "ood_flagged_mean": 0.95}
    found = {"predictive_entropy": dict(same), "mutual_information": dict(same)}
    assert choose(found)["measure"] == "mutual_information"
