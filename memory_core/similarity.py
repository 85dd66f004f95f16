"""Similarity functions of universal Hopfield networks (Millidge et al., ICML 2022).

Every function compares a batch of cues with a block of stored patterns and returns
a score matrix where larger means more alike:

    sim(memories (N, D), cue (B, D), mask (B, D) | None) -> scores (B, N)

Distances are returned negated (``-d``), so that ``argmax`` is always the nearest
pattern and softmax / max separation can treat every similarity alike.

Masks (True = known entry of the cue) make partial cues work: only the known entries
are compared, and the result is rescaled by ``D / k`` (k = number of known entries of
that cue). With every entry known this is exactly the unmasked score, and cues with
different masks are put on the same scale, so a cue with half its pixels known is
compared as fairly as a whole one.

Speed: manhattan runs the compiled kernel of ``kernels.py`` (no (B, N, D) block);
euclidean and cosine take the keys' squared norms when the caller caches them
(``key_sq``); euclidean also offers ranks (ordered like the scores, no sqrt) that search finishes
into scores only for the patterns it keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels import l1_distances
from .linalg import linear  # x @ w.T through oneDNN on the CPU (2x MKL's sgemm here)

__all__ = ["SIMILARITIES", "Similarity", "bipolar", "get_similarity", "similarity"]


def bipolar(x: Tensor) -> Tensor:
    """Map binary {0, 1} or bipolar {-1, +1} patterns to {-1, +1}: entries > 0 are +1."""
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


def _known_counts(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Number of known entries per cue, (B, 1); refuses a cue with none known."""
    counts = mask.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("mask has a cue with no known entries (all False): nothing to compare")
    return counts.to(dtype)


def _dot(memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None) -> Tensor:
    if mask is None:
        return linear(cue, memories)  # (B, N)
    d = cue.shape[1]
    masked = cue * mask  # (B, D): unknown entries contribute nothing
    return linear(masked, memories).mul_(d / _known_counts(mask, cue.dtype))  # (B, N)


def _row_sq(memories: Tensor, key_sq: Tensor | None) -> Tensor:
    """(N,) squared norms of the memories: the cached ones when given."""
    return key_sq if key_sq is not None else (memories * memories).sum(dim=1)


def _cosine(memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None) -> Tensor:
    eps = torch.finfo(cue.dtype).tiny
    if mask is None:
        dots = linear(cue, memories)  # (B, N)
        cue_norm = cue.norm(dim=1, keepdim=True)  # (B, 1)
        mem_norm = _row_sq(memories, key_sq).sqrt()[None, :]  # (1, N)
        return dots / (cue_norm * mem_norm).clamp_min(eps)
    maskf = mask.to(cue.dtype)
    masked = cue * maskf  # (B, D)
    dots = linear(masked, memories)  # (B, N)
    cue_norm = masked.norm(dim=1, keepdim=True)  # (B, 1)
    # Norm of each memory restricted to the entries this cue knows: (B, D) @ (D, N).
    mem_norm = linear(maskf, memories * memories).clamp_min(0).sqrt()  # (B, N)
    return dots / (cue_norm * mem_norm).clamp_min(eps)


def _squared_euclidean(
    memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None
) -> Tensor:
    """Squared distances (B, N), rescaled by D / k under a mask; never negative."""
    if mask is None:
        cue_sq = (cue * cue).sum(dim=1, keepdim=True)  # (B, 1)
        # |m|^2 - 2 <q, m> in one BLAS call, then + |q|^2.
        d2 = linear(cue * -2.0, memories, _row_sq(memories, key_sq).to(cue.dtype))  # (B, N)
        return d2.add_(cue_sq).clamp_min_(0)
    d = cue.shape[1]
    maskf = mask.to(cue.dtype)
    masked = cue * maskf  # (B, D)
    cue_sq = (masked * masked).sum(dim=1, keepdim=True)  # (B, 1)
    mem_sq = linear(maskf, memories * memories)  # (B, N): |m|^2 over each cue's known entries
    d2 = mem_sq.sub_(linear(masked, memories), alpha=2.0).add_(cue_sq)  # (B, N)
    return d2.clamp_min_(0).mul_(d / _known_counts(mask, cue.dtype))


def _euclidean(memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None) -> Tensor:
    return _squared_euclidean(memories, cue, mask, key_sq).sqrt_().neg_()


def _euclidean_rank(
    memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None
) -> Tensor:
    """Unmasked: 2 <q, m> - |m|^2 = |q|^2 - d^2, which orders patterns as -d does (one
    BLAS call, no sqrt); masked: the scores themselves."""
    if mask is not None:
        return _euclidean(memories, cue, mask)
    return linear(cue * 2.0, memories, -_row_sq(memories, key_sq).to(cue.dtype))  # (B, N)


def _euclidean_finish(rank: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    if mask is not None:
        return rank
    cue_sq = (cue * cue).sum(dim=1, keepdim=True).to(rank.dtype)  # (B, 1)
    return (cue_sq - rank).clamp_min_(0).sqrt_().neg_()


def manhattan_scale(cue: Tensor, mask: Tensor | None) -> Tensor:
    """(B, 1) factor from a masked L1 sum to the manhattan score: -1, or -D/k under a mask."""
    if mask is None:
        return -torch.ones(cue.shape[0], 1, dtype=cue.dtype, device=cue.device)
    return -(cue.shape[1] / _known_counts(mask, cue.dtype))


def _manhattan(memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None) -> Tensor:
    # The compiled kernel (or its bounded torch fallback) applies -1 or -D/k as it writes
    # the sums: no (B, N, D) block is built and no (B, N) pass follows.
    return l1_distances(memories, cue, mask, manhattan_scale(cue, mask))  # (B, N)


def _hamming(memories: Tensor, cue: Tensor, mask: Tensor | None, key_sq: Tensor | None = None) -> Tensor:
    # For +-1 vectors over k entries: differing = (k - <a, b>) / 2.
    mem_b = bipolar(memories)
    cue_b = bipolar(cue)
    d = cue.shape[1]
    if mask is None:
        return -(d - cue_b @ mem_b.T) / 2.0  # (B, N)
    k = _known_counts(mask, cue.dtype)  # (B, 1)
    differing = (k - (cue_b * mask) @ mem_b.T) / 2.0  # (B, N)
    return -differing * (d / k)


def _identity_finish(rank: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    return rank


ScoreFn = Callable[[Tensor, Tensor, "Tensor | None", "Tensor | None"], Tensor]


@dataclass(frozen=True)
class Similarity:
    """A named similarity.

    Attributes:
        name: its name in configs and the REST API.
        fn: ``(memories (N, D), cue (B, D), mask (B, D) | None, key_sq (N,) | None)
            -> scores (B, N)``; ``key_sq`` are the memories' squared norms when the
            caller has them cached (euclidean and cosine then skip a pass).
        is_distance: True when scores are negated distances (<= 0, 0 = identical);
            polynomial separation then weighs by inverse distance.
        rank_fn: optional cheaper ``(memories, cue, mask, key_sq) -> (B, N)`` that orders
            the patterns of each cue exactly as the scores do; ``finish_fn(rank, cue,
            mask)`` turns ranks (of the selected patterns) into scores. Search uses them.
        temporaries: whether a call builds (N, D) temporaries ("always", only with a
            "masked" cue, or "none"), for the callers' chunk budget.
    """

    name: str
    fn: ScoreFn
    is_distance: bool
    rank_fn: ScoreFn | None = None
    finish_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor] = _identity_finish
    temporaries: str = "none"

    def __call__(
        self, memories: Tensor, cue: Tensor, mask: Tensor | None = None, key_sq: Tensor | None = None
    ) -> Tensor:
        return self.fn(memories, cue, mask, key_sq)

    def rank(
        self, memories: Tensor, cue: Tensor, mask: Tensor | None = None, key_sq: Tensor | None = None
    ) -> Tensor:
        """(B, N) values ordered per cue like the scores (larger = more alike)."""
        return (self.rank_fn or self.fn)(memories, cue, mask, key_sq)

    def finish(self, rank: Tensor, cue: Tensor, mask: Tensor | None = None) -> Tensor:
        """Scores from ranks (B, k) of selected patterns."""
        return self.finish_fn(rank, cue, mask)


_REGISTRY: dict[str, Similarity] = {
    s.name: s
    for s in (
        Similarity("dot", _dot, is_distance=False),
        Similarity("cosine", _cosine, is_distance=False, temporaries="masked"),
        Similarity(
            "euclidean",
            _euclidean,
            is_distance=True,
            rank_fn=_euclidean_rank,
            finish_fn=_euclidean_finish,
            temporaries="masked",
        ),
        Similarity("manhattan", _manhattan, is_distance=True),
        Similarity("hamming", _hamming, is_distance=True, temporaries="always"),
    )
}
SIMILARITIES: tuple[str, ...] = tuple(_REGISTRY)


def get_similarity(name: str) -> Similarity:
    """Look a similarity up by name; raises ValueError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown similarity {name!r}; known: {', '.join(SIMILARITIES)}") from None


def similarity(name: str, memories: Tensor, cue: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scores (B, N) of cues (B, D) against memories (N, D); see the module docstring."""
    return get_similarity(name)(memories, cue, mask)
