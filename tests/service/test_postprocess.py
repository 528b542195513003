"""Logits -> answers (service/postprocess.py): a lone image, scored in Python numbers, answers
and records what a batch scored with numpy would; recording is apart from scoring, and a pass
run on the event loop records after its answer (service/pool.py)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.contract import ModelContract
from service.postprocess import Scored, ScoredOne, score
from service.uncertainty import ensemble_uncertainty

NAMES = ("zero", "one", "two", "three")
CONTRACT = ModelContract(
    ensemble_size=3,
    input_shape=(1, 2, 2),
    labels=NAMES,
    preprocess={},
    temperature=0.9,
    thresholds={"mutual_information": 0.05},
)
HISTOGRAMS = ("mimo_mutual_information", "mimo_predictive_entropy", "mimo_disagreement")


def recorded(labels: tuple[str, str]) -> dict[str, float]:
    """Every sample of the uncertainty histograms and class counters under `labels`."""
    found = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name.endswith("_created"):  # (a timestamp)
                continue
            if sample.labels.get("model") == labels[0] and sample.labels.get("version") == "1":
                key = sample.name + repr(sorted(sample.labels.items()))
                found[key] = sample.value
    return found


@pytest.mark.parametrize(
    "logits",
    [
        [[4.0, 0.0, -1.0, -1.0], [3.5, 0.5, -1.0, 0.0], [4.2, -0.3, -2.0, -1.0]],  # agree
        [[6.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0], [0.0, 0.0, 0.0, 6.0]],  # uncertain
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]],  # a tie
        [[0.0, -math.inf, -math.inf, 2.0], [1.0, 0.0, -3e4, 0.0], [0.0, 0.0, 0.0, 0.0]],
    ],
    ids=["agree", "uncertain", "tie", "extreme"],
)
def test_a_lone_image_answers_as_a_batch_does(logits: list[list[float]]) -> None:
    array = np.array([logits], dtype=np.float32)
    one = score(CONTRACT, array)
    assert isinstance(one, ScoredOne) and len(one) == 1
    u = ensemble_uncertainty(array, CONTRACT.temperature)
    batch = Scored(u, u.mutual_information > CONTRACT.thresholds["mutual_information"])
    one.prepare()
    assert one.ranking == batch.ranking  # ties: the lower index first in both
    assert one.flags == batch.flags
    assert one.members[0] == batch.members[0]
    for got, want in [
        (one.probabilities, batch.probabilities),
        (one.members[1], batch.members[1]),
        (one.members[2], batch.members[2]),
        ([list(d.values()) for d in one.measures], [list(d.values()) for d in batch.measures]),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert list(one.measures[0]) == list(batch.measures[0])
    # The arrays a batch has (OIP outputs, member_probabilities) are there too.
    for name in ("probabilities", "member_probabilities", "mutual_information", "kl_to_mean"):
        np.testing.assert_allclose(
            getattr(one.uncertainty, name), getattr(u, name), rtol=1e-12, atol=1e-15
        )
    np.testing.assert_array_equal(one.uncertain, batch.uncertain)
    np.testing.assert_allclose(one.answered, batch.answered, rtol=1e-12, atol=1e-15)


def test_a_lone_image_with_nan_logits_is_scored_by_numpy() -> None:
    logits = np.zeros((1, 3, 4), np.float32)
    logits[0, 1, 2] = np.nan
    assert type(score(CONTRACT, logits)) is Scored


def test_scoring_records_nothing_and_record_counts_as_a_batch_would() -> None:
    # Two images' answers recorded through the lone path, once each, and through numpy as a
    # batch of two: the same buckets, sums and class counts.
    logits = np.array(
        [
            [[5.0, 0.0, 0.0, 0.0], [4.0, 1.0, 0.0, 0.0], [5.0, 0.0, 1.0, 0.0]],
            [[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0], [0.0, 4.0, 0.0, 5.0]],
        ],
        dtype=np.float32,
    )
    alone, together = ("postprocess-alone", "1"), ("postprocess-together", "1")
    answers = [score(CONTRACT, logits[i : i + 1]) for i in range(2)]
    batch = score(CONTRACT, logits)
    assert recorded(alone) == {} and recorded(together) == {}
    for one in answers:
        one.record(NAMES, alone)
    batch.record(NAMES, together)
    got, want = recorded(alone), recorded(together)
    assert want  # (the series exist)
    assert got.keys() == {k.replace("together", "alone") for k in want}
    for key, value in want.items():
        assert got[key.replace("together", "alone")] == pytest.approx(value, rel=1e-12), key
    count = REGISTRY.get_sample_value(
        "mimo_uncertain_predictions_total", {"model": "postprocess-alone", "version": "1"}
    )
    assert count == 1  # the second image's heads disagree


def test_a_pass_on_the_event_loop_records_after_its_answer() -> None:
    # service/pool.py: on the loop (a lone image), the metrics wait for the loop's next turn,
    # after the request has written its answer; in the inference thread, at once.
    from types import SimpleNamespace

    from service.pool import batch_function

    class Session:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            n = len(feeds["images"])
            logits = np.zeros((n, 3, 4), np.float32)
            logits[:, :, 1] = 5.0
            return [logits]

    labels = ("postprocess-loop", "1")
    model = SimpleNamespace(
        contract=CONTRACT,
        series=labels,
        session_for=lambda rows, lone: Session(),
        rows_for=lambda n: n,
        ensemble_size=3,
    )
    run = batch_function(model, packed=False)  # type: ignore[arg-type]
    image = np.zeros((1, 1, 2, 2), np.float32)
    key = {"model": labels[0], "version": "1", "label": "one"}

    async def on_the_loop() -> tuple[float | None, float | None]:
        run(image)
        before = REGISTRY.get_sample_value("mimo_predictions_total", key)
        await asyncio.sleep(0)
        return before, REGISTRY.get_sample_value("mimo_predictions_total", key)

    assert asyncio.run(on_the_loop()) == (None, 1.0)
    run(image)  # no loop in this thread: recorded before it returns
    assert REGISTRY.get_sample_value("mimo_predictions_total", key) == 2.0
    inference = REGISTRY.get_sample_value(
        "mimo_inference_duration_seconds_count", {"model": labels[0], "version": "1"}
    )
    assert inference == 2.0
