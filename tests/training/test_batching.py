"""MIMO batch construction and losses, checked against the reference recipe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.batching import (
    agreement_loss,
    mimo_batch,
    mimo_indices,
    mimo_loss,
    uniform_loss,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def multiset(batch: int, repetitions: int) -> torch.Tensor:
    """Sorted tile(arange(b), r): what every head row must be a permutation of."""
    return torch.arange(batch).repeat(repetitions).sort().values


# ---- indices ----


@pytest.mark.parametrize(("batch", "repetitions"), [(16, 1), (16, 2), (7, 4)])
def test_full_input_repetition_gives_every_head_the_same_rows(batch: int, repetitions: int) -> None:
    idx = mimo_indices(batch, 3, 1.0, repetitions, gen())
    assert idx.shape == (3, batch * repetitions)
    assert (idx == idx[0]).all()
    assert torch.equal(idx[0].sort().values, multiset(batch, repetitions))


@pytest.mark.parametrize(("batch", "repetitions"), [(32, 1), (32, 2), (10, 4)])
def test_no_input_repetition_gives_independent_permutations(batch: int, repetitions: int) -> None:
    M = 4
    idx = mimo_indices(batch, M, 0.0, repetitions, gen(1))
    assert idx.shape == (M, batch * repetitions)
    for m in range(M):
        assert torch.equal(idx[m].sort().values, multiset(batch, repetitions))
    for a in range(M):
        for b in range(a + 1, M):
            assert not torch.equal(idx[a], idx[b])


def test_heads_are_paired_at_random_without_repetition() -> None:
    """Two independent shuffles of tile(arange(b), r) agree at a position with probability 1/b
    (with rho = 1 they always agree)."""
    batch, repetitions, draws = 16, 4, 300
    g = gen(2)
    agree = [mimo_indices(batch, 2, 0.0, repetitions, g) for _ in range(draws)]
    rate = torch.stack([(i[0] == i[1]).float().mean() for i in agree]).mean().item()
    assert abs(rate - 1 / batch) < 0.015
    shared = mimo_indices(batch, 2, 1.0, repetitions, g)
    assert (shared[0] == shared[1]).all()


@pytest.mark.parametrize(
    ("batch", "repetitions", "rho"),
    [(64, 2, 0.6), (10, 3, 0.5), (32, 4, 0.3), (13, 2, 0.25), (50, 1, 0.9)],
)
def test_partial_input_repetition_shares_exactly_the_trailing_rows(
    batch: int, repetitions: int, rho: float
) -> None:
    M, rows = 4, batch * repetitions
    n = int(rows * (1 - rho))  # the reference split: rows [n:] are shared by every head
    assert 0 < n < rows
    g = gen(3)
    boundary_differs = False
    for _ in range(20):
        idx = mimo_indices(batch, M, rho, repetitions, g)
        assert idx.shape == (M, rows)
        # the trailing rho fraction is identical in every head ...
        assert (idx[:, n:] == idx[0, n:]).all()
        # ... the leading part is the same multiset for every head, reshuffled per head
        lead = idx[0, :n].sort().values
        for m in range(M):
            assert torch.equal(idx[m, :n].sort().values, lead)
            assert torch.equal(idx[m].sort().values, multiset(batch, repetitions))
        # row n-1 belongs to the reshuffled part: somewhere it differs between heads
        boundary_differs |= bool((idx[:, n - 1] != idx[0, n - 1]).any())
    assert boundary_differs


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("repetitions", [1, 2, 4])
def test_every_example_appears_exactly_r_times_per_head(rho: float, repetitions: int) -> None:
    batch = 24
    idx = mimo_indices(batch, 3, rho, repetitions, gen(4))
    for row in idx:
        assert torch.equal(torch.bincount(row, minlength=batch), torch.full((batch,), repetitions))


def test_indices_are_determined_by_the_generator() -> None:
    a = mimo_indices(32, 3, 0.5, 2, gen(5))
    b = mimo_indices(32, 3, 0.5, 2, gen(5))
    c = mimo_indices(32, 3, 0.5, 2, gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("rho", "repetitions", "message"),
    [(-0.1, 2, "rho"), (1.5, 2, "rho"), (0.5, 0, "repetition"), (0.0, -1, "repetition")],
)
def test_bad_rho_or_repetitions_raise(rho: float, repetitions: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mimo_indices(8, 3, rho, repetitions, gen())
    with pytest.raises(ValueError, match=message):
        mimo_batch(
            torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long), 3, rho, repetitions, gen()
        )


# ---- gather ----


def tagged_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i and has the label 100 + i."""
    images = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(-1, 3, 5, 5)
    return images.contiguous(), torch.arange(batch) + 100


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_mimo_batch_gathers_images_and_labels_with_the_same_indices(rho: float) -> None:
    batch, M, r = 12, 3, 2
    images, labels = tagged_batch(batch)
    x, y = mimo_batch(images, labels, M, rho, r, gen(7))
    assert x.shape == (batch * r, M, 3, 5, 5)
    assert y.shape == (batch * r, M)
    source = x[:, :, 0, 0, 0].long()  # which example sits in each (row, slot)
    assert (x == x[:, :, :1, :1, :1]).all()  # whole images were moved, not pixels
    assert torch.equal(y, source + 100)
    # and the gather is the one mimo_indices draws from the same generator state
    assert torch.equal(source.T, mimo_indices(batch, M, rho, r, gen(7)))


def test_shared_rows_are_pixel_identical_across_heads() -> None:
    g = gen(8)
    images = torch.rand(16, 1, 6, 6, generator=g)
    labels = torch.randint(0, 10, (16,), generator=g)
    x, y = mimo_batch(images, labels, 3, 1.0, 2, gen(9))
    for m in range(1, 3):
        assert torch.equal(x[:, m], x[:, 0])
        assert torch.equal(y[:, m], y[:, 0])


# ---- losses ----


def test_mimo_loss_is_the_sum_over_heads_of_mean_cross_entropy() -> None:
    g = gen(10)
    N, M, K = 17, 3, 5
    logits = torch.randn(N, M, K, generator=g, requires_grad=True)
    labels = torch.randint(0, K, (N, M), generator=g)
    loss = mimo_loss(logits, labels)

    manual = sum(F.cross_entropy(logits[:, m], labels[:, m]) for m in range(M))
    torch.testing.assert_close(loss, manual)
    # by hand, without cross_entropy: -log softmax of the label
    log_p = logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]  # [N, M]
    torch.testing.assert_close(loss, -log_p.sum() / N)
    # torch-uncertainty averages over heads instead: 1/M of the reference
    head_mean = F.cross_entropy(logits.reshape(-1, K), labels.reshape(-1))
    torch.testing.assert_close(loss, M * head_mean)

    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_mimo_loss_of_one_head_is_plain_cross_entropy() -> None:
    g = gen(11)
    logits = torch.randn(9, 1, 4, generator=g)
    labels = torch.randint(0, 4, (9, 1), generator=g)
    torch.testing.assert_close(
        mimo_loss(logits, labels), F.cross_entropy(logits[:, 0], labels[:, 0])
    )


def confident(classes: torch.Tensor, K: int) -> torch.Tensor:
    """Logits [N, M, K] putting almost all mass on classes [N, M]."""
    return 50.0 * F.one_hot(classes, K).float()


def test_agreement_is_one_when_heads_are_confident_on_the_same_class() -> None:
    classes = torch.tensor([3, 1, 7, 0])[:, None].expand(-1, 3)
    loss = agreement_loss(confident(classes, 10))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


def test_agreement_is_zero_when_heads_are_confident_on_different_classes() -> None:
    classes = torch.tensor([[0, 1, 2], [5, 6, 7], [9, 8, 4]])
    assert agreement_loss(confident(classes, 10)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("K", [2, 10, 100])
def test_agreement_of_uniform_heads_is_one_over_k(K: int) -> None:
    assert agreement_loss(torch.zeros(6, 3, K)).item() == pytest.approx(1 / K, rel=1e-6)


def test_agreement_of_one_head_is_zero() -> None:
    logits = torch.randn(5, 1, 10, requires_grad=True)
    loss = agreement_loss(logits)
    assert loss.shape == ()
    assert loss.item() == 0.0


def test_agreement_matches_the_pairwise_definition() -> None:
    g = gen(12)
    N, M, K = 7, 4, 6
    logits = torch.randn(N, M, K, generator=g) * 2
    p = logits.softmax(-1)
    pairs = [(a, b) for a in range(M) for b in range(M) if a != b]
    expected = sum((p[:, a] * p[:, b]).sum(-1) for a, b in pairs) / len(pairs)
    torch.testing.assert_close(agreement_loss(logits), expected.mean())


def test_uniform_loss_is_zero_at_uniform_and_grows_with_confidence() -> None:
    K = 10
    assert uniform_loss(torch.zeros(4, 3, K)).item() == pytest.approx(0.0, abs=1e-6)
    sure = torch.zeros(2, 1, K)
    sure[:, :, 0] = 10.0
    # -mean_k log p_k - log K, by hand for logits (10, 0, ..., 0)
    log_z = math.log(math.exp(10.0) + K - 1)
    expected = -(10.0 - K * log_z) / K - math.log(K)
    assert uniform_loss(sure).item() == pytest.approx(expected, rel=1e-5)
