"""Which universal Hopfield energies are Lyapunov functions, checked by iterating on real images.

With dot similarity, ``UniversalHopfield.energy`` = 1/2 |q|^2 - Phi(M q). Where Phi is
convex and its gradient is the separation's weights (softmax, max, top-k) the iterated
update is the concave-convex procedure on it and never raises it; identity never raises
it either but has no minimum (the state grows); polynomial and normalised identity weights
are the gradient of no potential, and the iteration raises the stated energy for most
cues. Measured here on 64 noisy Fashion-MNIST cues, 300 stored images, float64.
"""

from __future__ import annotations

import pytest
import torch

from memory_core import UniversalHopfield, make_separation
from memory_core.similarity import get_similarity

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 10


@pytest.fixture(scope="module")
def stored_and_cues(fashion_vectors) -> tuple[torch.Tensor, torch.Tensor]:
    stored = fashion_vectors[:300].double()
    gen = torch.Generator().manual_seed(0)
    cues = stored[:64] + 0.3 * torch.randn(64, stored.shape[1], generator=gen, dtype=torch.float64)
    return stored, cues


def _iterate(stored, cues, separation: str, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies (STEPS + 1, B) and state norms (STEPS + 1, B) along q <- retrieve(q)."""
    memory = UniversalHopfield("dot", separation, device="cpu", dtype=torch.float64, **params)
    memory.store(stored)
    q, energies, norms = cues.clone(), [], []
    for step in range(STEPS + 1):
        if step:
            q = memory.retrieve(q)
        energies.append(memory.energy(q))
        norms.append(q.norm(dim=1))
    return torch.stack(energies), torch.stack(norms)


@pytest.mark.parametrize(
    ("separation", "params"),
    [("softmax", {"beta": 0.01}), ("softmax", {"beta": 1.0}), ("max", {}), ("topk", {"k": 5, "beta": 0.01})],
)
def test_the_energy_never_rises_where_its_gradient_is_the_weights(stored_and_cues, separation, params):
    assert make_separation(separation, **params).has_gradient_weights
    energies, norms = _iterate(*stored_and_cues, separation, **params)
    rises = energies[1:] - energies[:-1]
    assert float(rises.max()) <= 1e-9 * float(energies.abs().max())  # measured <= 7e-13 (rounding)
    assert float((energies[0] - energies[-1]).min()) > 0  # and it did move every cue down
    assert float(norms[-1].max()) < 2 * float(
        stored_and_cues[0].norm(dim=1).max()
    )  # settled near the patterns


@pytest.mark.parametrize(
    ("separation", "params"),
    [("polynomial", {"n": 2.0}), ("polynomial", {"n": 3.0}), ("normalised_identity", {})],
)
def test_normalised_polynomial_weights_have_no_energy(stored_and_cues, separation, params):
    """The stated potential log(sum c^n) / n is not what these weights descend: the
    iteration raises it for most cues (measured 77% / 86% / 66%)."""
    assert not make_separation(separation, **params).has_gradient_weights
    energies, _ = _iterate(*stored_and_cues, separation, **params)
    rose = ((energies[1:] - energies[:-1]) > 1e-6 * energies.abs().max()).any(0)  # (B,)
    assert float(rose.float().mean()) >= 0.5


def test_identity_descends_without_a_minimum(stored_and_cues):
    """w = s is the gradient of 1/2 sum s^2, so the energy falls, but without bound: the
    state's norm grows geometrically (measured 15 -> 2e46 in 10 steps)."""
    energies, norms = _iterate(*stored_and_cues, "identity")
    assert bool((energies[1:] <= energies[:-1]).all())
    assert float(norms[-1].min()) > 1e20 * float(norms[0].max())


def test_the_polynomial_potential_gradient_is_not_its_weights():
    """d/ds log(sum c^n) / n = c^(n-1) / sum c^n (autograd), while the weights are
    c^n / sum c^n: equal only when all closenesses are equal."""
    scores = torch.tensor([[0.2, 0.5, 1.5, 3.0]], dtype=torch.float64, requires_grad=True)
    sep = make_separation("polynomial", n=3.0)
    (grad,) = torch.autograd.grad(sep.potential(scores).sum(), scores)
    c = scores.detach()
    assert torch.allclose(grad, c.pow(2) / c.pow(3).sum(), rtol=1e-12)
    assert not torch.allclose(grad, sep(c), atol=1e-3)


def test_normalised_identity_is_the_papers_and_identity_is_not(fashion_vectors):
    """The paper's identity normalises the closeness (1/d for distances) to sum to 1: a
    convex mix of the stored patterns. ``identity`` is w = s: with a distance, negative."""
    stored = fashion_vectors[:50].double()
    cue = stored[:8] + 0.1
    dist = -get_similarity("manhattan")(stored, cue)  # (8, 50), >= 0
    w = make_separation("normalised_identity")(-dist, True)
    assert torch.allclose(w, (1 / dist) / (1 / dist).sum(1, keepdim=True), rtol=1e-12)
    assert bool((make_separation("identity")(-dist, True) < 0).all())
