"""A pass of a universal Hopfield network over part of its stored patterns, and the exact merge.

A memory split into parts (chunks of one tensor, or shards on other machines) answers as
the whole memory would when each part returns what it contributes before anything is
normalised, and the parts are merged the way ``chunked.reduce_over_memories`` folds its
chunks:

- normalised separations (softmax, polynomial): each part's max logit ``m_i``,
  ``Z_i = sum exp(l - m_i)`` and ``O_i = sum exp(l - m_i) v``; merged with the global max
  ``m`` (log-sum-exp): ``Z = sum Z_i exp(m_i - m)``, output ``sum O_i exp(m_i - m) / Z``,
  potential from ``m + log Z``;
- linear separations (identity, threshold): sums of weighted values and of the potential;
- select separations (max, top-k) and search: each part's k best, merged into the k best.

Ranking keys (``Top.ranks``) are what the chunked passes rank by (``Similarity.rank``,
e.g. no sqrt for euclidean); ties go to the lower global position (``Top.order``: storage
order), so a merged top-k names exactly the patterns one unsplit pass names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .separation import Separation
from .similarity import Similarity

__all__ = [
    "Partial",
    "Top",
    "energy_from_potential",
    "finish_partial",
    "iterate_retrieval",
    "merge_partials",
    "merge_tops",
]


@dataclass
class Top:
    """The k best stored patterns of a part, per cue, best first.

    Attributes:
        ranks: (B, k) ranking keys (larger = better), comparable across parts for one cue.
        scores: (B, k) the similarity scores (distances negated).
        order: (B, k) int64 global positions (storage order): ties go to the lower one.
        values: (B, k, Dv) the stored values of those patterns, when asked for.
    """

    ranks: Tensor
    scores: Tensor
    order: Tensor
    values: Tensor | None = None


@dataclass
class Partial:
    """What one part of the stored patterns contributes to a pass, before normalisation.

    Which fields are set depends on the separation's mode:
        normalised: ``max`` (B, 1) the part's largest logit, ``sum`` (B, 1) of
            exp(logit - max), ``out`` (B, Dv) the exp(logit - max)-weighted sum of values
            (None when no output was asked for);
        linear: ``out`` (B, Dv) the weighted sum of values, ``phi`` (B,) the potential's share;
        select: ``top``, the part's k best with their values.
    """

    mode: str
    max: Tensor | None = None
    sum: Tensor | None = None
    out: Tensor | None = None
    phi: Tensor | None = None
    top: Top | None = None


def merge_tops(tops: list[Top], k: int) -> tuple[Top, Tensor]:
    """The k best of several parts' ``Top``s, ties to the lower ``order``.

    Returns:
        the merged ``Top`` (B, k'), k' = min(k, all candidates), and (B, k') positions of
        the winners in the parts' candidates laid side by side (part 0's k_0 columns, then
        part 1's, ...), so callers can pick what else each part sent along (e.g. ids).
    """
    ranks = torch.cat([t.ranks for t in tops], dim=1)  # (B, M)
    order = torch.cat([t.order for t in tops], dim=1)  # (B, M)
    by_order = order.argsort(dim=1, stable=True)  # ties: lower global position first
    ranked = ranks.gather(1, by_order).argsort(dim=1, descending=True, stable=True)
    pos = by_order.gather(1, ranked)[:, : min(k, ranks.shape[1])]  # (B, k')
    scores = torch.cat([t.scores for t in tops], dim=1).gather(1, pos)
    values = None
    if all(t.values is not None for t in tops):
        stacked = torch.cat([t.values for t in tops], dim=1)  # (B, M, Dv)
        values = stacked.gather(1, pos[:, :, None].expand(-1, -1, stacked.shape[2]))
    return Top(ranks.gather(1, pos), scores, order.gather(1, pos), values), pos


def merge_partials(parts: list[Partial], k: int = 1) -> Partial:
    """One ``Partial`` from several parts' (of the same cues, mode and separation).

    Arguments:
        parts: at least one; parts of empty shards are left out by the caller.
        k: select mode: how many of the best to keep (the separation's k).
    """
    if not parts:
        raise ValueError("nothing to merge: no part holds a stored pattern")
    mode = parts[0].mode
    if mode == "select":
        return Partial(mode, top=merge_tops([p.top for p in parts], k)[0])
    if mode == "linear":
        return Partial(
            mode,
            out=None if parts[0].out is None else sum(p.out for p in parts[1:]) + parts[0].out,
            phi=None if parts[0].phi is None else sum(p.phi for p in parts[1:]) + parts[0].phi,
        )
    best = torch.stack([p.max for p in parts]).amax(dim=0)  # (B, 1) the global max
    scales = [torch.exp(p.max - best) for p in parts]  # (B, 1) each <= 1
    total = sum(p.sum * s for p, s in zip(parts, scales))
    out = None
    if parts[0].out is not None:
        out = sum(p.out * s for p, s in zip(parts, scales))
    return Partial(mode, max=best, sum=total, out=out)


def finish_partial(part: Partial, sep: Separation) -> tuple[Tensor | None, Tensor | None]:
    """(output (B, Dv) or None, potential Phi (B,) or None) of a whole pass from its merged parts."""
    if part.mode == "select":
        top = part.top
        out = None
        if top.values is not None:
            out = torch.einsum("bk,bkd->bd", sep.select_weights(top.scores), top.values.to(top.scores.dtype))
        return out, sep.potential_from_top(top.scores)
    if part.mode == "linear":
        return part.out, part.phi
    out = None if part.out is None else part.out / part.sum
    return out, sep.potential_from_lse((part.max + torch.log(part.sum)).squeeze(1))


def energy_from_potential(state: Tensor, phi: Tensor, sim: Similarity) -> Tensor:
    """Energy (B,) ``R(q) - Phi`` of states (B, D) (R = 1/2 |q|^2 for dot, else 0)."""
    if sim.name == "dot":
        return 0.5 * (state.to(phi.dtype) ** 2).sum(dim=1) - phi
    return -phi


def iterate_retrieval(
    step: Callable[[Tensor, Tensor | None], Tensor],
    cue: Tensor,
    mask: Tensor | None,
    steps: int,
    tol: float,
    dtype: torch.dtype,
) -> Tensor:
    """Iterated retrieval q <- step(q), the mask on the first step only, stopping early once no
    entry of the batch moves by more than ``tol``.

    Arguments:
        step: (state (B, D), mask or None) -> output (B, D): one whole pass (one fan-out
            to every shard, in a sharded memory).
        cue, mask: (B, D); steps: at most this many passes; dtype: the states' dtype.
    """
    state = cue
    for n in range(steps):
        out = step(state, mask if n == 0 else None).to(dtype)
        converged = n > 0 and float((out - state).abs().max()) <= tol
        state = out
        if converged:
            break
    return state
