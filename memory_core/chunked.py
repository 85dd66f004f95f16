"""Every pass of a universal Hopfield network over its stored patterns, chunked.

``reduce_over_memories`` folds a separation over chunks of the stored patterns: running
log-sum-exp for softmax-like separations, running top-k for max / top-k, plain sums for
linear ones, so memory stays bounded for any N and the result equals the dense one to
float tolerance. ``topk_over_memories`` ranks chunks for ``search`` (without sqrt,
finishing only the k survivors exactly). Used by ``hopfield.UniversalHopfield``.

``partial_over_memories`` and ``top_over_memories`` are the same passes stopped before
normalisation (``partials.Partial``, ``partials.Top``): what one shard of a memory split
over machines contributes; ``partials.merge_partials`` merges them as the chunks here are.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .kernels import l1_softmax
from .partials import Partial, Top, finish_partial
from .separation import Polynomial, Separation, Softmax
from .similarity import Similarity, manhattan_scale

__all__ = [
    "partial_over_memories",
    "reduce_over_memories",
    "stable_topk",
    "top_over_memories",
    "topk_over_memories",
]

# Elements of the largest temporary a chunk may create (float32: 4 bytes each, 32 MiB).
_CHUNK_BUDGET = 1 << 23


def _chunk_rows(batch: int, dim: int, chunk_size: int | None, sim: Similarity, masked: bool) -> int:
    """Stored patterns per chunk so that a chunk's (B, n) scores, and the (n, D)
    temporaries of the similarities that build them, stay within budget. (Manhattan
    builds no (B, n, D) block: its kernel and its torch fallback bound their own.)
    Chunks are otherwise as large as the budget allows: fewer, larger BLAS calls are
    faster, most of all on a busy machine where every parallel region waits for cores."""
    if chunk_size is not None:
        return chunk_size
    builds_nd = sim.temporaries == "always" or (sim.temporaries == "masked" and masked)
    return max(256, _CHUNK_BUDGET // (max(batch, dim) if builds_nd else batch))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in float32 at least (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _part(key_sq: Tensor | None, start: int, rows: int) -> Tensor | None:
    return None if key_sq is None else key_sq[start : start + rows]


# exp(x) is exactly 0 in float32 below x = -103.3 (the smallest subnormal is 1.4e-45),
# in float64 below -744.5: weights that far below the best one add nothing at all.
_UNDERFLOW = {torch.float32: 104.0, torch.float64: 746.0}
# Candidates per cue that the sparse softmax path looks at before falling back to dense.
_SPARSE_CANDIDATES = 16


def _sparse_candidates(
    keys: Tensor,
    ranks: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    sep: Separation,
    run_max: Tensor,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Each cue's m best logits in this chunk, and whether they are all that matters.

    Logits of normalised separations never decrease as the score grows, and ranks order
    patterns as scores do, so if a cue's m-th best logit is already ``_UNDERFLOW`` below
    its running max, exp() of every logit past it is exactly 0 in this dtype: for that
    cue the m best give the same sums as the whole chunk (up to summation order) without
    a (B, n) transcendental (sqrt, exp) or a (B, n) x (n, Dv) matmul.

    Arguments:
        keys: (n, D) the chunk's keys.
        ranks: (B, n) the chunk's ranks (``sim.rank``), in the accumulation dtype.
        run_max: (B, 1) the running max of the logits so far.

    Returns:
        logits (B, m), their pattern rows (B, m) and exact (B,) bool (True: every other
        weight is exactly 0), or None where this does not apply (other separations,
        small chunks, dtypes without a known underflow point).
    """
    m = _SPARSE_CANDIDATES
    if not isinstance(sep, (Softmax, Polynomial)) or ranks.shape[1] <= 2 * m or ranks.dtype not in _UNDERFLOW:
        return None  # (logits known to be monotone in the score: softmax, polynomial)
    top_ranks, rows = ranks.topk(m, dim=1)  # (B, m), best first
    if sim.name == "euclidean":
        # The candidates' distances directly, not from the expanded form (see
        # topk_over_memories): a cue on a stored pattern then has its best logit exact,
        # and so does the energy, whatever the batch (gemv and gemm round differently).
        scores = _direct_euclidean(keys, rows, cue, mask).to(ranks.dtype)  # (B, m)
    else:
        scores = sim.finish(top_ranks, cue, mask)  # (B, m)
    logits = sep.logits(scores, sim.is_distance)  # (B, m)
    best = torch.maximum(run_max, logits[:, :1])  # (B, 1)
    exact = (logits[:, -1:] - best <= -_UNDERFLOW[ranks.dtype]).squeeze(1)  # (B,)
    return logits, rows, exact


class _RunningSoftmax:
    """Running max, sum and weighted sum of a softmax over chunks (flash-attention style).

    ``merge`` folds in a chunk's logits for some of the cues; the final output is
    ``out / sum`` and log-sum-exp is ``max + log(sum)``.
    """

    def __init__(self, batch: int, value_dim: int | None, dtype: torch.dtype, device: torch.device) -> None:
        self.max = torch.full((batch, 1), -math.inf, dtype=dtype, device=device)  # (B, 1)
        self.sum = torch.zeros(batch, 1, dtype=dtype, device=device)  # (B, 1)
        self.out = None if value_dim is None else torch.zeros(batch, value_dim, dtype=dtype, device=device)

    def merge(self, rows: Tensor | None, logits: Tensor, contribution) -> None:
        """Fold in logits (b, n) of cues ``rows`` (None: all B); ``contribution(expo (b, n))
        -> (b, Dv)`` is the chunk's weighted sum of values."""
        pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
        new_max = torch.maximum(pick(self.max), logits.max(dim=1, keepdim=True).values)  # (b, 1)
        rescale = torch.exp(pick(self.max) - new_max)  # (b, 1); exp(-inf) = 0 on the first chunk
        expo = torch.exp_(logits.sub_(new_max))  # (b, n), each <= 1 (logits is ours to overwrite)
        new_sum = pick(self.sum) * rescale + expo.sum(dim=1, keepdim=True)
        new_out = None if self.out is None else pick(self.out) * rescale + contribution(expo)
        if rows is None:
            self.max, self.sum, self.out = new_max, new_sum, new_out
        else:
            self.max.index_copy_(0, rows, new_max)
            self.sum.index_copy_(0, rows, new_sum)
            if new_out is not None:
                self.out.index_copy_(0, rows, new_out)


def _fused_softmax(
    keys: Tensor, values: Tensor | None, cue: Tensor, mask: Tensor | None, sim: Similarity, sep: Separation
) -> tuple[Tensor | None, Tensor, Tensor] | None:
    """Manhattan + softmax in one pass of the compiled kernel (``kernels.l1_softmax``):
    output (B, Dv) or None, max (B,) and sum (B,) of the exp'd logits; None where the
    kernel does not apply (other similarities/separations, CUDA, float64, no compiled
    kernel, batches over ``kernels.FUSED_MAX_BATCH``): the caller takes the chunked path."""
    if sim.name != "manhattan" or not isinstance(sep, Softmax):
        return None
    return l1_softmax(keys, values, cue, mask, manhattan_scale(cue, mask), sep.beta)


def reduce_over_memories(
    keys: Tensor,
    values: Tensor | None,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    sep: Separation,
    *,
    chunk_size: int | None = None,
    potential: bool = False,
    key_sq: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """One chunked pass: ``values^T sep(sim(keys, cue))`` and/or the potential Phi.

    Arguments:
        keys: (N, D) stored keys.
        values: (N, Dv) stored values, or None to skip the output.
        cue: (B, D) queries.
        mask: (B, D) bool, True = known entry of the cue, or None.
        sim, sep: the similarity and separation.
        chunk_size: stored patterns per chunk; None picks one within a memory budget.
        potential: also return Phi(sim(keys, cue)), shape (B,).
        key_sq: (N,) squared norms of the keys when cached (saves euclidean/cosine a pass).

    Returns:
        (output (B, Dv) or None, potential (B,) or None), in the accumulation dtype.
    """
    part = partial_over_memories(
        keys, values, cue, mask, sim, sep, chunk_size=chunk_size, potential=potential, key_sq=key_sq
    )
    out, phi = finish_partial(part, sep)
    acc = _acc_dtype(keys.dtype)
    return (None if out is None else out.to(acc)), (phi.to(acc) if potential else None)


def partial_over_memories(
    keys: Tensor,
    values: Tensor | None,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    sep: Separation,
    *,
    chunk_size: int | None = None,
    potential: bool = False,
    key_sq: Tensor | None = None,
    order: Tensor | None = None,
) -> Partial:
    """``reduce_over_memories`` stopped before normalisation: these keys' share of the pass.

    Arguments as ``reduce_over_memories``, and ``order``: (N,) int64 global positions of
    the keys (storage order; default 0..N-1), which break ties of select separations.
    ``potential`` matters for linear separations only (the others always carry what the
    potential needs).
    """
    n_stored, batch = keys.shape[0], cue.shape[0]
    acc = _acc_dtype(keys.dtype)
    rows = _chunk_rows(batch, keys.shape[1], chunk_size, sim, mask is not None)
    if sep.mode == "select":
        top, _ = top_over_memories(
            keys, values, cue, mask, sim, k=sep.k, chunk_size=rows, key_sq=key_sq, order=order
        )
        return Partial("select", top=top)

    if sep.mode == "linear":
        out = None if values is None else torch.zeros(batch, values.shape[1], dtype=acc, device=keys.device)
        phi = torch.zeros(batch, dtype=acc, device=keys.device) if potential else None
        for start in range(0, n_stored, rows):
            scores = sim(keys[start : start + rows], cue, mask, _part(key_sq, start, rows)).to(acc)  # (B, n)
            if out is not None:
                w = sep.linear_weights(scores, sim.is_distance)  # (B, n)
                out += w.to(values.dtype) @ values[start : start + rows]
            if phi is not None:
                phi += sep.linear_potential(scores, sim.is_distance)
        return Partial("linear", out=out, phi=phi)

    fused = _fused_softmax(keys, values, cue, mask, sim, sep)
    if fused is not None:
        out, lmax, lsum = fused  # out normalised already; lmax, lsum (B,) float64
        lsum = lsum[:, None]
        return Partial("normalised", max=lmax[:, None], sum=lsum, out=None if out is None else out * lsum)

    # normalised: softmax over all N with a running max. Per chunk, the cues whose
    # weights past their few best patterns underflow to exactly 0 (a sharp beta) mix only
    # those few; the others take every pattern of the chunk, as a dense softmax would.
    state = _RunningSoftmax(batch, None if values is None else values.shape[1], acc, keys.device)
    for start in range(0, n_stored, rows):
        ranks = sim.rank(keys[start : start + rows], cue, mask, _part(key_sq, start, rows)).to(acc)  # (B, n)
        chunk_values = None if values is None else values[start : start + rows]  # (n, Dv)
        sparse = _sparse_candidates(keys[start : start + rows], ranks, cue, mask, sim, sep, state.max)
        exact = torch.zeros(batch, dtype=torch.bool) if sparse is None else sparse[2].cpu()  # (B,)
        if not bool(exact.all()):
            dense_rows = None if not bool(exact.any()) else (~exact).nonzero().squeeze(1).to(keys.device)
            pick = (
                (lambda t: t) if dense_rows is None else (lambda t, rows=dense_rows: t.index_select(0, rows))
            )
            scores = sim.finish(pick(ranks), pick(cue), None if mask is None else pick(mask))  # (b, n)
            if sim.name == "euclidean":
                _exact_nearest(
                    keys[start : start + rows],
                    pick(ranks),
                    scores,
                    pick(cue),
                    None if mask is None else pick(mask),
                )
            # (Gathering only the values with non-zero weight was measured slower than this
            # memory-bound matmul even at 11% non-zero: torch's row gathers run at ~1 GB/s.)
            state.merge(
                dense_rows,
                sep.logits(scores, sim.is_distance),
                lambda expo, v=chunk_values: (expo.to(values.dtype) @ v).to(acc),
            )  # (b, Dv)
        if bool(exact.any()):
            sparse_rows = None if bool(exact.all()) else exact.nonzero().squeeze(1).to(keys.device)
            pick = (
                (lambda t: t)
                if sparse_rows is None
                else (lambda t, rows=sparse_rows: t.index_select(0, rows))
            )
            logits, picked = pick(sparse[0]), pick(sparse[1])  # (b, m)

            def gathered_sum(expo: Tensor, picked: Tensor = picked, v: Tensor = chunk_values) -> Tensor:
                rows_ = v.index_select(0, picked.flatten()).view(*picked.shape, -1)  # (b, m, Dv)
                return torch.bmm(expo[:, None, :], rows_.to(acc))[:, 0]  # (b, Dv)

            state.merge(sparse_rows, logits, gathered_sum)
    return Partial("normalised", max=state.max, sum=state.sum, out=state.out)


def stable_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``scores.topk(k)`` with ties broken towards the lower index, so results never
    depend on chunking or on the kernel's order.

    Arguments:
        scores: (B, n).
        k: at most n.

    Returns:
        values (B, k) best first, indices (B, k).
    """
    if k == 1:  # max/argmax return the first maximal index
        best, idx = scores.max(dim=1, keepdim=True)
        return best, idx
    top, idx = scores.topk(k, dim=1)  # (B, k), arbitrary among ties
    kth = top[:, -1:]  # (B, 1)
    # Only ties at the k-th value can change which rows are picked; they are rare for
    # real-valued scores, so the exact stable sort runs only for rows that have them.
    ambiguous = (scores == kth).sum(dim=1) > (top == kth).sum(dim=1)  # (B,)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        vals, order = scores[rows].sort(dim=1, descending=True, stable=True)
        top[rows], idx[rows] = vals[:, :k], order[:, :k]
    # Order ties inside the k best by index: sort by index, then stably by value.
    by_index = idx.argsort(dim=1)
    top, idx = top.gather(1, by_index), idx.gather(1, by_index)
    by_value = top.argsort(dim=1, descending=True, stable=True)
    return top.gather(1, by_value), idx.gather(1, by_value)


def topk_over_memories(
    keys: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    *,
    k: int,
    chunk_size: int | None = None,
    key_sq: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The k best-scoring stored patterns per cue, merged chunk by chunk.

    Chunks are ranked with ``sim.rank`` (ordered like the scores, cheaper: e.g. no sqrt
    for euclidean, one BLAS call) and only the k survivors get ``sim.finish`` into scores.
    Ties go to the lower row index, whatever the chunking.

    Returns:
        scores (B, k) best first, and their row indices (B, k) into ``keys``.
    """
    ranks, idx = _topk_ranks(keys, cue, mask, sim, k, chunk_size, key_sq)
    return _finish_top(keys, ranks, idx, cue, mask, sim), idx


def top_over_memories(
    keys: Tensor,
    values: Tensor | None,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    *,
    k: int,
    chunk_size: int | None = None,
    key_sq: Tensor | None = None,
    order: Tensor | None = None,
) -> tuple[Top, Tensor]:
    """``topk_over_memories`` with what a merge across shards needs: the ranks, the global
    positions ``order`` (N,) int64 of the winners (default: row indices) and their values
    (when ``values`` (N, Dv) is given). Returns (``Top``, row indices (B, k) into ``keys``)."""
    ranks, idx = _topk_ranks(keys, cue, mask, sim, k, chunk_size, key_sq)
    picked = None
    if values is not None:
        acc = _acc_dtype(keys.dtype)
        picked = values.index_select(0, idx.flatten()).view(*idx.shape, -1).to(acc)  # (B, k, Dv)
    positions = idx if order is None else order.to(idx.device)[idx]
    return Top(ranks, _finish_top(keys, ranks, idx, cue, mask, sim), positions, picked), idx


def _topk_ranks(
    keys: Tensor,
    cue: Tensor,
    mask: Tensor | None,
    sim: Similarity,
    k: int,
    chunk_size: int | None,
    key_sq: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Ranks (B, k) best first and row indices (B, k) of the k best, chunk by chunk."""
    n_stored, batch = keys.shape[0], cue.shape[0]
    k = min(k, n_stored)
    rows = _chunk_rows(batch, keys.shape[1], chunk_size, sim, mask is not None)
    acc = _acc_dtype(keys.dtype)
    best = torch.full((batch, 0), -math.inf, dtype=acc, device=keys.device)  # (B, <=k)
    best_idx = torch.zeros((batch, 0), dtype=torch.long, device=keys.device)
    for start in range(0, n_stored, rows):
        ranks = sim.rank(keys[start : start + rows], cue, mask, _part(key_sq, start, rows)).to(acc)  # (B, n)
        top, idx = stable_topk(ranks, min(k, ranks.shape[1]))
        if start == 0:
            best, best_idx = top, idx
            continue
        # Earlier chunks (lower indices) come first, so stable ties keep them.
        merged = torch.cat([best, top], dim=1)
        merged_idx = torch.cat([best_idx, idx + start], dim=1)
        best, pos = stable_topk(merged, min(k, merged.shape[1]))
        best_idx = merged_idx.gather(1, pos)
    return best, best_idx


def _finish_top(
    keys: Tensor, ranks: Tensor, idx: Tensor, cue: Tensor, mask: Tensor | None, sim: Similarity
) -> Tensor:
    """Scores (B, k) of the winners ``idx`` from their ranks."""
    if sim.name == "euclidean":
        # |q|^2 - 2<q,m> + |m|^2 ranks well, but near d = 0 it cancels to ~1e-4 of |q|^2 and
        # the sqrt blows that up to ~1e-2: the k winners get their distances computed
        # directly, so an exact match scores 0.
        return _direct_euclidean(keys, idx, cue, mask).to(ranks.dtype)
    return sim.finish(ranks, cue, mask)


# Patterns per cue and chunk whose euclidean distances the dense softmax path recomputes
# directly: the nearest ones, where the expanded form's cancellation error is largest.
_EXACT_NEAREST = 4


def _exact_nearest(keys: Tensor, ranks: Tensor, scores: Tensor, cue: Tensor, mask: Tensor | None) -> None:
    """Overwrite each cue's ``_EXACT_NEAREST`` best euclidean scores (B, n) with direct
    distances. The expanded form's error (~1e-2 after the sqrt near d = 0) sits on the
    nearest patterns, which also dominate the softmax and the energy: those become exact
    and no longer depend on the BLAS path (a batch or one cue alone); a far pattern's
    relative error is small. keys: (n, D); ranks, scores: (B, n); cue, mask: (B, D)."""
    idx = ranks.topk(min(_EXACT_NEAREST, ranks.shape[1]), dim=1).indices  # (B, m)
    scores.scatter_(1, idx, _direct_euclidean(keys, idx, cue, mask).to(scores.dtype))


def _direct_euclidean(keys: Tensor, idx: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    """-|q - m| (rescaled by D / k under a mask) for the selected rows ``idx`` (B, k) only."""
    batch, k = idx.shape
    dim = cue.shape[1]
    step = max(1, _CHUNK_BUDGET // max(1, k * dim))  # cues per block: bounded (b, k, D) temporaries
    out = []
    for b in range(0, batch, step):
        diff = cue[b : b + step, None, :] - keys[idx[b : b + step]]  # (b, k, D)
        if mask is None:
            out.append(diff.square_().sum(dim=2).sqrt_().neg_())
            continue
        known = mask[b : b + step]
        d2 = diff.square_().mul_(known[:, None, :]).sum(dim=2)  # (b, k)
        out.append(
            d2.mul_(dim / known.sum(dim=1, keepdim=True).to(d2.dtype)).sqrt_().neg_()
        )  # D / k in d2's dtype
    return torch.cat(out)


def _squared_norms(rows: Tensor) -> Tensor:
    """(N,) squared norms of rows (N, D), summed in float32 at least."""
    wide = rows.to(_acc_dtype(rows.dtype))
    return (wide * wide).sum(dim=1)
