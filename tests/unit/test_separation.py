"""Unit tests of the separation functions: definitions, stability, potentials."""

import pytest
import torch

from memory_core import SEPARATIONS, make_separation, similarity


@pytest.fixture(scope="module")
def scores(fashion_vectors):
    """Manhattan and dot scores of 4 cues (two of them stored exactly) against 50 stored images."""
    memories = fashion_vectors[:50]
    cues = torch.cat([fashion_vectors[:2], fashion_vectors[200:202]])
    return similarity("manhattan", memories, cues), similarity("dot", memories, cues)


def test_softmax_is_softmax_of_beta_scores(scores):
    _, dot = scores
    for beta in (0.01, 0.5, 3.0):
        sep = make_separation("softmax", beta=beta)
        assert torch.allclose(sep(dot), torch.softmax(beta * dot, dim=1), atol=1e-6)


@pytest.mark.parametrize("beta", [1e-8, 1.0, 1e4, 1e12])
def test_softmax_finite_for_any_beta_even_on_exact_match(scores, beta):
    dist, _ = scores
    w = make_separation("softmax", beta=beta)(dist, True)
    assert torch.isfinite(w).all()
    assert torch.allclose(w.sum(1), torch.ones(4))
    if beta >= 1e4:  # the exact matches (distance 0) take all the weight
        assert w[0, 0] == 1.0 and w[1, 1] == 1.0


def test_polynomial_weights_are_normalised_powers(scores):
    dist, dot = scores
    sep = make_separation("polynomial", n=3)
    # dot similarity: w ~ s^3
    want = dot.clamp_min(0) ** 3
    assert torch.allclose(sep(dot, False), want / want.sum(1, keepdim=True), rtol=1e-4)
    # distances: w ~ (1/d)^3; the cues not stored have no zero distance
    d = -dist[2:]
    want = d ** -3.0
    assert torch.allclose(sep(dist[2:], True), want / want.sum(1, keepdim=True), rtol=1e-4)


@pytest.mark.parametrize("n", [2.0, 10.0, 60.0])
def test_polynomial_stable_on_exact_match_and_large_order(scores, n):
    dist, _ = scores
    w = make_separation("polynomial", n=n)(dist, True)
    assert torch.isfinite(w).all()
    assert w[0, 0] == pytest.approx(1.0) and w[1, 1] == pytest.approx(1.0)


def test_max_is_one_hot_at_argmax(scores):
    dist, _ = scores
    w = make_separation("max")(dist, True)
    assert torch.equal(w.argmax(1), dist.argmax(1))
    assert torch.equal(w.sum(1), torch.ones(4)) and torch.equal((w > 0).sum(1), torch.ones(4, dtype=torch.long))


def test_topk_weights_k_best_with_softmax(scores):
    _, dot = scores
    w = make_separation("topk", k=3, beta=0.05)(dot)
    top, idx = dot.topk(3, dim=1)
    assert torch.equal((w > 0).sum(1), torch.full((4,), 3))
    assert torch.allclose(w.gather(1, idx), torch.softmax(0.05 * top, dim=1), atol=1e-6)


def test_identity_and_threshold(scores):
    dist, _ = scores
    assert torch.equal(make_separation("identity")(dist), dist)
    w = make_separation("threshold", radius=60.0)(dist, True)
    assert torch.equal(w, (-dist <= 60.0).float())


@pytest.mark.parametrize("name", ["identity", "softmax", "max", "topk"])
def test_potential_gradient_is_the_weights(name, scores):
    """dPhi/ds = sep(s): what makes the update a descent on the energy."""
    _, dot = scores
    s = (dot / 100).double().requires_grad_(True)
    sep = make_separation(name, beta=2.0, k=4)
    (grad,) = torch.autograd.grad(sep.potential(s).sum(), s)
    assert torch.allclose(grad, sep(s.detach()), atol=1e-9)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown separation 'sigmoid'"):
        make_separation("sigmoid")
    with pytest.raises(ValueError, match="beta"):
        make_separation("softmax", beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        make_separation("softmax", beta=float("inf"))
    with pytest.raises(ValueError, match="order n"):
        make_separation("polynomial", n=-1)
    with pytest.raises(ValueError, match="k >= 1"):
        make_separation("topk", k=0)
    assert set(SEPARATIONS) >= {"identity", "softmax", "polynomial", "max", "topk"}
