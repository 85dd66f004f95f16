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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["SIMILARITIES", "Similarity", "get_similarity", "similarity", "bipolar"]


def bipolar(x: Tensor) -> Tensor:
    """Map binary {0, 1} or bipolar {-1, +1} patterns to {-1, +1}: entries > 0 are +1."""
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


def _known_counts(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Number of known entries per cue, (B, 1); refuses a cue with none known."""
    counts = mask.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("mask has a cue with no known entries (all False): nothing to compare")
    return counts.to(dtype)


def _dot(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return cue @ memories.T  # (B, N)
    d = cue.shape[1]
    masked = cue * mask  # (B, D): unknown entries contribute nothing
    return (masked @ memories.T) * (d / _known_counts(mask, cue.dtype))  # (B, N)


def _cosine(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    eps = torch.finfo(cue.dtype).tiny
    if mask is None:
        dots = cue @ memories.T  # (B, N)
        cue_norm = cue.norm(dim=1, keepdim=True)  # (B, 1)
        mem_norm = memories.norm(dim=1)[None, :]  # (1, N)
        return dots / (cue_norm * mem_norm).clamp_min(eps)
    maskf = mask.to(cue.dtype)
    masked = cue * maskf  # (B, D)
    dots = masked @ memories.T  # (B, N)
    cue_norm = masked.norm(dim=1, keepdim=True)  # (B, 1)
    # Norm of each memory restricted to the entries this cue knows: (B, D) @ (D, N).
    mem_norm = (maskf @ (memories * memories).T).clamp_min(0).sqrt()  # (B, N)
    return dots / (cue_norm * mem_norm).clamp_min(eps)


def _squared_euclidean(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    """Squared distances (B, N), rescaled by D / k under a mask; never negative."""
    if mask is None:
        cue_sq = (cue * cue).sum(dim=1, keepdim=True)  # (B, 1)
        mem_sq = (memories * memories).sum(dim=1)[None, :]  # (1, N)
        d2 = cue_sq - 2.0 * (cue @ memories.T) + mem_sq  # (B, N)
        return d2.clamp_min(0)
    d = cue.shape[1]
    maskf = mask.to(cue.dtype)
    masked = cue * maskf  # (B, D)
    cue_sq = (masked * masked).sum(dim=1, keepdim=True)  # (B, 1)
    mem_sq = maskf @ (memories * memories).T  # (B, N): |m|^2 over each cue's known entries
    d2 = cue_sq - 2.0 * (masked @ memories.T) + mem_sq  # (B, N)
    return d2.clamp_min(0) * (d / _known_counts(mask, cue.dtype))


def _euclidean(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    return -_squared_euclidean(memories, cue, mask).sqrt()


def _manhattan(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    # One (B, N, D) difference block: callers keep it bounded by passing a chunk of
    # the stored patterns at a time (hopfield.py does).
    diff = (cue[:, None, :] - memories[None, :, :]).abs_()  # (B, N, D)
    if mask is None:
        return -diff.sum(dim=2)
    d = cue.shape[1]
    dist = (diff * mask[:, None, :]).sum(dim=2)  # (B, N)
    return -dist * (d / _known_counts(mask, cue.dtype))


def _hamming(memories: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    # For +-1 vectors over k entries: differing = (k - <a, b>) / 2.
    mem_b = bipolar(memories)
    cue_b = bipolar(cue)
    d = cue.shape[1]
    if mask is None:
        return -(d - cue_b @ mem_b.T) / 2.0  # (B, N)
    k = _known_counts(mask, cue.dtype)  # (B, 1)
    differing = (k - (cue_b * mask) @ mem_b.T) / 2.0  # (B, N)
    return -differing * (d / k)


@dataclass(frozen=True)
class Similarity:
    """A named similarity.

    Attributes:
        name: its name in configs and the REST API.
        fn: ``(memories (N, D), cue (B, D), mask (B, D) | None) -> scores (B, N)``.
        is_distance: True when scores are negated distances (<= 0, 0 = identical);
            polynomial separation then weighs by inverse distance.
    """

    name: str
    fn: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    is_distance: bool

    def __call__(self, memories: Tensor, cue: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.fn(memories, cue, mask)


_REGISTRY: dict[str, Similarity] = {
    s.name: s
    for s in (
        Similarity("dot", _dot, is_distance=False),
        Similarity("cosine", _cosine, is_distance=False),
        Similarity("euclidean", _euclidean, is_distance=True),
        Similarity("manhattan", _manhattan, is_distance=True),
        Similarity("hamming", _hamming, is_distance=True),
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
