"""Separation functions of universal Hopfield networks (Millidge et al., ICML 2022).

A separation turns similarity scores (B, N) into weights on the stored patterns;
retrieval is then ``weights @ values``. Each separation also has a potential Phi,
which gives ``UniversalHopfield.energy`` (``E(q) = 1/2 |q|^2 - Phi(sim(M, q))`` for dot
similarity, ``-Phi`` otherwise). Where Phi is convex and dPhi/ds = the weights exactly
(softmax, max, top-k: ``has_gradient_weights``), the iterated update with dot similarity
is the concave-convex procedure on that energy and never raises it. The normalised
separations of Millidge et al.'s code (polynomial, normalised identity) have no such
potential at all: their weights' Jacobian is not symmetric (d w_i / d s_j = -n w_i
c_j^(n-1) / sum c^n, which differs from d w_j / d s_i unless c_i = c_j), so no Phi has
them as its gradient, and their Phi is a familiarity score only (measured on
Fashion-MNIST: results/hopfield_paper_protocol.md).

Separations come in three modes, which lets ``hopfield.py`` reduce over the stored
patterns in chunks with bounded memory and the same result as one dense pass:

- ``linear``: weights depend on each score alone and are summed as they are
  (identity, threshold);
- ``normalised``: weights are softmax(logits), reduced with a running log-sum-exp
  (softmax, polynomial);
- ``select``: only the k best scores get weight, merged with a running top-k
  (max, top-k).

All of them are finite for any beta: logits are never infinite and normalisation uses
the log-sum-exp shift, so a cue equal to a stored pattern gives no inf or NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

__all__ = [
    "SEPARATIONS",
    "Identity",
    "Max",
    "NormalisedIdentity",
    "Polynomial",
    "Separation",
    "Softmax",
    "Threshold",
    "TopK",
    "make_separation",
]

Mode = Literal["linear", "normalised", "select"]


@dataclass(frozen=True)
class Separation:
    """Base class: subclasses set ``name`` and ``mode`` and fill in their hooks."""

    name: ClassVar[str] = "separation"
    mode: ClassVar[Mode] = "linear"
    k: ClassVar[int] = 1  # select mode: how many of the best scores get weight
    # dPhi/ds equals the weights and Phi is convex: iterating with dot similarity
    # descends the energy (see the module docstring).
    has_gradient_weights: ClassVar[bool] = False

    # --- linear mode -------------------------------------------------------------
    def linear_weights(self, scores: Tensor, is_distance: bool) -> Tensor:
        """(B, n) weights of a chunk of scores."""
        raise NotImplementedError

    def linear_potential(self, scores: Tensor, is_distance: bool) -> Tensor:
        """(B,) this chunk's share of Phi (shares add up)."""
        raise NotImplementedError

    # --- normalised mode ---------------------------------------------------------
    def logits(self, scores: Tensor, is_distance: bool) -> Tensor:
        """(B, n) finite logits; weights = softmax over all N stored patterns."""
        raise NotImplementedError

    def potential_from_lse(self, lse: Tensor) -> Tensor:
        """(B,) Phi from log-sum-exp of the logits over all N."""
        raise NotImplementedError

    # --- select mode -------------------------------------------------------------
    def select_weights(self, top_scores: Tensor) -> Tensor:
        """(B, k) weights of the k best scores (sorted, best first)."""
        raise NotImplementedError

    def potential_from_top(self, top_scores: Tensor) -> Tensor:
        """(B,) Phi from the k best scores."""
        raise NotImplementedError

    # --- dense reference, for tests and small memories ----------------------------
    def __call__(self, scores: Tensor, is_distance: bool = False) -> Tensor:
        """Dense weights (B, N) from scores (B, N), in one pass over all N."""
        if self.mode == "linear":
            return self.linear_weights(scores, is_distance)
        if self.mode == "normalised":
            return torch.softmax(self.logits(scores, is_distance), dim=1)
        k = min(self.k, scores.shape[1])
        top, idx = scores.topk(k, dim=1)  # (B, k)
        weights = torch.zeros_like(scores)
        return weights.scatter_(1, idx, self.select_weights(top))

    def potential(self, scores: Tensor, is_distance: bool = False) -> Tensor:
        """Dense Phi (B,) from scores (B, N)."""
        if self.mode == "linear":
            return self.linear_potential(scores, is_distance)
        if self.mode == "normalised":
            return self.potential_from_lse(torch.logsumexp(self.logits(scores, is_distance), dim=1))
        return self.potential_from_top(scores.topk(min(self.k, scores.shape[1]), dim=1).values)


@dataclass(frozen=True)
class Identity(Separation):
    """w = s, unnormalised: the linear (classical) associative memory. Phi = 1/2 sum s^2.

    Not the "identity" of Millidge et al.'s code, which normalises (w = c / sum c):
    that one is ``NormalisedIdentity``. With distance similarities (s = -d <= 0) these
    weights are negative, and the output is minus a sum of patterns (0% recall).
    dPhi/ds = w, and with dot similarity the iteration never raises the energy, but the
    energy 1/2 |q|^2 - 1/2 |M q|^2 has no lower bound once ||M|| > 1: the state grows
    geometrically instead of settling (a fixed point only at q = 0).
    """

    name: ClassVar[str] = "identity"
    mode: ClassVar[Mode] = "linear"

    def linear_weights(self, scores: Tensor, is_distance: bool) -> Tensor:
        return scores

    def linear_potential(self, scores: Tensor, is_distance: bool) -> Tensor:
        return 0.5 * (scores * scores).sum(dim=1)


@dataclass(frozen=True)
class Threshold(Separation):
    """w = 1 when the distance is at most ``radius`` (sparse distributed memory).

    Meant for distance similarities (scores = -d): w = [d <= radius]. Phi counts the
    activated patterns.
    """

    radius: float = 0.0
    name: ClassVar[str] = "threshold"
    mode: ClassVar[Mode] = "linear"

    def linear_weights(self, scores: Tensor, is_distance: bool) -> Tensor:
        return (scores >= -self.radius).to(scores.dtype)

    def linear_potential(self, scores: Tensor, is_distance: bool) -> Tensor:
        return self.linear_weights(scores, is_distance).sum(dim=1)


@dataclass(frozen=True)
class Softmax(Separation):
    """w = softmax(beta s) (modern continuous Hopfield network). Phi = lse(beta s) / beta,
    convex with gradient w: a Lyapunov function of the iteration with dot similarity."""

    beta: float = 1.0
    name: ClassVar[str] = "softmax"
    mode: ClassVar[Mode] = "normalised"
    has_gradient_weights: ClassVar[bool] = True

    def logits(self, scores: Tensor, is_distance: bool) -> Tensor:
        return self.beta * scores

    def potential_from_lse(self, lse: Tensor) -> Tensor:
        return lse / self.beta


def _closeness_log(scores: Tensor, is_distance: bool) -> Tensor:
    """log of a non-negative closeness: 1/d for distances, max(s, 0) otherwise; finite."""
    tiny = torch.finfo(scores.dtype).tiny
    if is_distance:
        return -torch.log((-scores).clamp_min(tiny))
    return torch.log(scores.clamp_min(tiny))


@dataclass(frozen=True)
class Polynomial(Separation):
    """w_i = c_i^n / sum_j c_j^n, c = closeness (s for dot/cosine, 1/d for distances).

    The normalised polynomial of Millidge et al.'s reference code; computed in log space
    (logits = n log c) so large n or an exact match (d = 0) stays finite. No potential
    has these weights as its gradient (module docstring); ``potential`` gives Phi =
    log(sum c^n) / n, whose gradient is c^(n-1) / sum c^n, not w: a familiarity score
    (larger when some stored pattern is close), not a Lyapunov function. With dot
    similarity the iteration raises this energy for most cues (measured on
    Fashion-MNIST, results/hopfield_paper_protocol.md).
    """

    n: float = 2.0
    name: ClassVar[str] = "polynomial"
    mode: ClassVar[Mode] = "normalised"

    def logits(self, scores: Tensor, is_distance: bool) -> Tensor:
        return self.n * _closeness_log(scores, is_distance)

    def potential_from_lse(self, lse: Tensor) -> Tensor:
        return lse / self.n


@dataclass(frozen=True)
class NormalisedIdentity(Polynomial):
    """w_i = c_i / sum_j c_j, c = closeness: the "identity" separation of Millidge et al.'s
    code (``use_norm=True``), which normalises the similarity scores to sum to 1. It is
    ``Polynomial`` with n = 1 (so no energy either); ``Identity`` is the unnormalised
    w = s of the classical Hopfield network."""

    n: float = 1.0
    name: ClassVar[str] = "normalised_identity"


@dataclass(frozen=True)
class Max(Separation):
    """w = one-hot of the best score: nearest-neighbour retrieval. Phi = max s."""

    name: ClassVar[str] = "max"
    mode: ClassVar[Mode] = "select"
    has_gradient_weights: ClassVar[bool] = True  # max is convex, its (sub)gradient the one-hot

    def select_weights(self, top_scores: Tensor) -> Tensor:
        return torch.ones_like(top_scores[:, :1])

    def potential_from_top(self, top_scores: Tensor) -> Tensor:
        return top_scores[:, 0]


@dataclass(frozen=True)
class TopK(Separation):
    """Softmax(beta s) over the k best scores only, zero elsewhere. Phi = lse_k(beta s) / beta,
    the largest lse over any k scores (lse grows with each score): a maximum of convex
    functions, so convex, with gradient w wherever the k best are unique."""

    k: int = 5
    beta: float = 1.0
    name: ClassVar[str] = "topk"
    mode: ClassVar[Mode] = "select"
    has_gradient_weights: ClassVar[bool] = True

    def select_weights(self, top_scores: Tensor) -> Tensor:
        return torch.softmax(self.beta * top_scores, dim=1)

    def potential_from_top(self, top_scores: Tensor) -> Tensor:
        return torch.logsumexp(self.beta * top_scores, dim=1) / self.beta


SEPARATIONS: tuple[str, ...] = (
    "identity",
    "softmax",
    "polynomial",
    "max",
    "topk",
    "threshold",
    "normalised_identity",
)
# The largest beta and polynomial order n: far past argmax already (beta = 1e4 separates
# scores 0.001 apart by e^10), and small enough that beta * s or n * log c stays finite in
# float32 for any score a memory can have, so no separation ever makes an inf or a NaN.
MAX_SHARPNESS = 1e12


def make_separation(
    name: str, *, beta: float = 1.0, n: float = 2.0, k: int = 5, radius: float = 0.0
) -> Separation:
    """Build a separation by name from the parameters it uses; ValueError on bad ones."""
    if name not in SEPARATIONS:
        raise ValueError(f"unknown separation {name!r}; known: {', '.join(SEPARATIONS)}")
    if name in ("softmax", "topk") and not (math.isfinite(beta) and 0 < beta <= MAX_SHARPNESS):
        raise ValueError(f"beta must be a number in (0, {MAX_SHARPNESS:g}], got {beta!r}")
    if name == "polynomial" and not (math.isfinite(n) and 0 < n <= MAX_SHARPNESS):
        raise ValueError(f"polynomial order n must be a number in (0, {MAX_SHARPNESS:g}], got {n!r}")
    if name == "topk" and not (isinstance(k, int) and 1 <= k < 2**31):
        raise ValueError(f"top-k needs an integer k >= 1 (below 2^31), got {k!r}")
    if name == "threshold" and not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"threshold radius must be a finite number >= 0, got {radius!r}")
    return {
        "identity": lambda: Identity(),
        "normalised_identity": lambda: NormalisedIdentity(),
        "softmax": lambda: Softmax(beta=float(beta)),
        "polynomial": lambda: Polynomial(n=float(n)),
        "max": lambda: Max(),
        "topk": lambda: TopK(k=k, beta=float(beta)),
        "threshold": lambda: Threshold(radius=float(radius)),
    }[name]()
