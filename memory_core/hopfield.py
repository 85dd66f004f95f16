"""Universal Hopfield networks (Millidge et al., ICML 2022) and their classical instances.

    retrieval(q) = values^T . separation(similarity(keys, q))

``UniversalHopfield`` is the general memory (auto- or hetero-associative).
``modern_hopfield`` (dot + softmax = attention, Ramsauer et al. 2020),
``HopfieldNetwork`` (Hopfield 1982: bipolar, Hebbian, sign updates) and
``SparseDistributedMemory`` (Kanerva 1988: hamming + threshold over random hard
locations) are the named instances.

Every pass over the stored patterns is chunked (``reduce_over_memories``): running
log-sum-exp for softmax-like separations, running top-k for max / top-k, plain sums for
linear ones. Memory stays bounded for any N and the result equals the dense one to
float tolerance.

Fast paths (scripts/bench_hopfield.py measures them against faiss): the keys' squared
norms are cached at store time, so a euclidean chunk is one BLAS call; search ranks
chunks without sqrt and finishes only the k survivors; manhattan runs a compiled kernel
(``kernels.py``), and manhattan + softmax on the CPU runs in one pass of it (distances,
then the online softmax of each block of keys while it is in cache); and when a sharp softmax leaves all but a cue's few best patterns
with weights that underflow to exactly 0, retrieval mixes only those few, which is the
dense result without a (B, N) exp or a (B, N) x (N, Dv) matmul.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .checks import EmptyMemoryError, check_batch, check_dtype, check_mask, resolve_device
from .kernels import advise_huge_pages, l1_softmax
from .separation import Polynomial, Separation, Softmax, Threshold, make_separation
from .similarity import Similarity, bipolar, get_similarity, manhattan_scale

__all__ = [
    "HopfieldConfig",
    "HopfieldNetwork",
    "SparseDistributedMemory",
    "UniversalHopfield",
    "modern_hopfield",
    "reduce_over_memories",
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
    keys: Tensor, ranks: Tensor, cue: Tensor, mask: Tensor | None, sim: Similarity, sep: Separation, run_max: Tensor
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
    n_stored, batch = keys.shape[0], cue.shape[0]
    acc = _acc_dtype(keys.dtype)
    rows = _chunk_rows(batch, keys.shape[1], chunk_size, sim, mask is not None)
    if sep.mode == "select":
        top, idx = topk_over_memories(keys, cue, mask, sim, k=sep.k, chunk_size=rows, key_sq=key_sq)  # (B, k)
        out = None
        if values is not None:
            weights = sep.select_weights(top)  # (B, k)
            picked = values.index_select(0, idx.flatten()).view(*idx.shape, -1).to(acc)  # (B, k, Dv)
            out = torch.einsum("bk,bkd->bd", weights, picked)
        return out, (sep.potential_from_top(top) if potential else None)

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
        return out, phi

    fused = _fused_softmax(keys, values, cue, mask, sim, sep)
    if fused is not None:
        out, lmax, lsum = fused
        phi = sep.potential_from_lse((lmax + torch.log(lsum)).to(acc)) if potential else None
        return out, phi

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
            pick = (lambda t: t) if dense_rows is None else (lambda t: t.index_select(0, dense_rows))
            scores = sim.finish(pick(ranks), pick(cue), None if mask is None else pick(mask))  # (b, n)
            if sim.name == "euclidean":
                _exact_nearest(keys[start : start + rows], pick(ranks), scores, pick(cue),
                               None if mask is None else pick(mask))
            # (Gathering only the values with non-zero weight was measured slower than this
            # memory-bound matmul even at 11% non-zero: torch's row gathers run at ~1 GB/s.)
            state.merge(dense_rows, sep.logits(scores, sim.is_distance),
                        lambda expo: (expo.to(values.dtype) @ chunk_values).to(acc))  # (b, Dv)
        if bool(exact.any()):
            sparse_rows = None if bool(exact.all()) else exact.nonzero().squeeze(1).to(keys.device)
            pick = (lambda t: t) if sparse_rows is None else (lambda t: t.index_select(0, sparse_rows))
            logits, picked = pick(sparse[0]), pick(sparse[1])  # (b, m)

            def gathered_sum(expo: Tensor, picked: Tensor = picked) -> Tensor:
                rows_ = chunk_values.index_select(0, picked.flatten()).view(*picked.shape, -1)  # (b, m, Dv)
                return torch.bmm(expo[:, None, :], rows_.to(acc))[:, 0]  # (b, Dv)

            state.merge(sparse_rows, logits, gathered_sum)
    out = None if state.out is None else state.out / state.sum
    phi = sep.potential_from_lse((state.max + torch.log(state.sum)).squeeze(1)) if potential else None
    return out, phi


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
    if sim.name == "euclidean":
        # |q|^2 - 2<q,m> + |m|^2 ranks well, but near d = 0 it cancels to ~1e-4 of |q|^2 and
        # the sqrt blows that up to ~1e-2: the k winners get their distances computed
        # directly, so an exact match scores 0.
        return _direct_euclidean(keys, best_idx, cue, mask).to(acc), best_idx
    return sim.finish(best, cue, mask), best_idx


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
        out.append(d2.mul_(dim / known.sum(dim=1, keepdim=True).to(d2.dtype)).sqrt_().neg_())  # D / k in d2's dtype
    return torch.cat(out)


def _squared_norms(rows: Tensor) -> Tensor:
    """(N,) squared norms of rows (N, D), summed in float32 at least."""
    wide = rows.to(_acc_dtype(rows.dtype))
    return (wide * wide).sum(dim=1)


@dataclass(frozen=True)
class HopfieldConfig:
    """Constructor arguments of ``UniversalHopfield`` (what the service stores as config).

    Attributes:
        similarity: dot, cosine, euclidean, manhattan or hamming.
        separation: identity, softmax, polynomial, max, topk or threshold.
        beta: inverse temperature of softmax / top-k (per unit of similarity).
        n: order of the polynomial separation.
        k: how many patterns top-k separation mixes.
        radius: distance under which threshold separation activates a pattern.

    The defaults (``UniversalHopfield()``, and what the service resolves ``config: {}``
    to) come from
    ``scripts/capacity.py`` (README, "Universal Hopfield: capacity"): on Fashion-MNIST and
    natural patches with half-masked, 25%-known and noisy (std 0.5) cues, at N = 10 000,
    euclidean missed 1 cue of 2 400, cosine 5 and manhattan 8 (euclidean is the
    maximum-likelihood match under Gaussian noise); dot and hamming fail on [0, 1]
    images. Euclidean is also plain BLAS on every device. Softmax keeps retrieval smooth;
    beta = 100 is half a decade above the softest beta that lost no recall at N = 10 000
    (31.6; beta = 10 lost 2.5-3.5% of noisy cues), a margin for larger memories, where
    the best and second-best scores get closer.
    In these units (euclidean distance on [0, 1] pixels, masked cues rescaled to the
    full D) a pattern 0.05 further away than the best gets e^-5 of its weight.
    """

    similarity: str = "euclidean"
    separation: str = "softmax"
    beta: float = 100.0
    n: float = 2.0
    k: int = 5
    radius: float = 0.0


class UniversalHopfield:
    """A universal Hopfield network: similarity, separation, projection.

    Arguments:
        similarity, separation, beta, n, k, radius: see ``HopfieldConfig``.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        dtype: storage dtype; float32 by default, float16 / bfloat16 on a GPU.
        chunk_size: stored patterns per chunk (None: chosen within a memory budget).

    Example:
        >>> m = UniversalHopfield()  # euclidean, softmax, beta = 100: see HopfieldConfig
        >>> m = UniversalHopfield(similarity="manhattan", separation="softmax", beta=1.0)
        >>> m.store(patterns)                 # (N, D)
        >>> out = m.retrieve(cue, mask=mask)  # (B, D)
    """

    def __init__(
        self,
        similarity: str = HopfieldConfig.similarity,
        separation: str = HopfieldConfig.separation,
        beta: float = HopfieldConfig.beta,
        n: float = 2.0,
        k: int = 5,
        radius: float = 0.0,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
    ) -> None:
        self.config = HopfieldConfig(similarity, separation, float(beta), float(n), int(k), float(radius))
        self.sim = get_similarity(similarity)
        self.sep = make_separation(separation, beta=beta, n=n, k=k, radius=radius)
        self.device = resolve_device(device)
        self.dtype = check_dtype(dtype, self.device)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._keys: Tensor | None = None  # (capacity, D); rows [:count] are live
        self._values: Tensor | None = None  # (capacity, Dv) when hetero-associative
        # (capacity,) squared norms of the keys, kept with them so that euclidean and
        # cosine scores need no pass over the keys beyond the matmul.
        self._key_sq: Tensor | None = None
        self._count = 0

    # --- storage --------------------------------------------------------------------
    @property
    def hetero(self) -> bool:
        """True when values differ from keys (stored with ``store(keys, values)``)."""
        return self._values is not None

    @property
    def dim(self) -> int | None:
        """Key dimension D, or None before the first store."""
        return None if self._keys is None else self._keys.shape[1]

    @property
    def value_dim(self) -> int | None:
        """Value dimension Dv (= D when auto-associative), or None before the first store."""
        if self._keys is None:
            return None
        return (self._values if self._values is not None else self._keys).shape[1]

    @property
    def keys(self) -> Tensor:
        """(N, D) the stored keys (a view, do not modify)."""
        return self._live(self._keys)

    @property
    def values(self) -> Tensor:
        """(N, Dv) the stored values; the keys themselves when auto-associative."""
        return self._live(self._values if self._values is not None else self._keys)

    def _live(self, buf: Tensor | None) -> Tensor:
        if buf is None:
            raise EmptyMemoryError("nothing stored yet")
        return buf[: self._count]

    def __len__(self) -> int:
        return self._count

    def store(self, keys: Tensor, values: Tensor | None = None) -> None:
        """Append patterns: ``store(patterns)`` (auto) or ``store(keys, values)`` (hetero).

        Arguments:
            keys: (N, D) float.
            values: (N, Dv) float, only for a hetero-associative memory; a memory is
                auto- or hetero-associative from its first store on.
        """
        keys = check_batch(keys, self.dim, "patterns" if values is None else "keys")
        if self._count and (values is not None) != self.hetero:
            kind = "hetero" if self.hetero else "auto"
            raise ValueError(f"this memory is {kind}-associative: store keys and values accordingly")
        if values is not None:
            values = check_batch(values, self.value_dim if self.hetero else None, "values")
            if values.shape[0] != keys.shape[0]:
                raise ValueError(f"{keys.shape[0]} keys but {values.shape[0]} values")
        self._keys = self._append(self._keys, keys)
        new_keys = self._keys[self._count : self._count + keys.shape[0]]  # as stored (rounded)
        self._key_sq = self._append(self._key_sq, _squared_norms(new_keys))
        if values is not None:
            self._values = self._append(self._values, values)
        self._count += keys.shape[0]

    def _append(self, buf: Tensor | None, rows: Tensor) -> Tensor:
        """Write rows after the live ones, doubling capacity when full (amortised O(1))."""
        rows = rows.to(self.device, self.dtype)
        need = self._count + rows.shape[0]
        if buf is None or buf.shape[0] < need:
            grown = torch.empty(max(need, 2 * (0 if buf is None else buf.shape[0]), 16), *rows.shape[1:],
                                dtype=self.dtype, device=self.device)
            advise_huge_pages(grown)  # before the first write: scans stream through it
            if buf is not None:
                grown[: self._count] = buf[: self._count]
            buf = grown
        buf[self._count : need] = rows
        return buf

    def remove(self, rows: Tensor | list[int]) -> None:
        """Forget the stored patterns at these row indices; later rows move up, in order."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.device).flatten()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._count):
            raise IndexError(f"row index out of range for {self._count} stored patterns")
        keep = torch.ones(self._count, dtype=torch.bool, device=self.device)
        keep[idx] = False
        kept = int(keep.sum())
        self._keys[:kept] = self.keys[keep].clone()
        self._key_sq[:kept] = self._live(self._key_sq)[keep].clone()
        if self._values is not None:
            self._values[:kept] = self.values[keep].clone()
        self._count = kept

    def clear(self) -> None:
        """Forget everything (a fresh memory, auto or hetero again)."""
        self._keys = self._values = self._key_sq = None
        self._count = 0

    def to(self, device: str | torch.device) -> UniversalHopfield:
        """Move the stored patterns to ``device`` (in place); returns self."""
        self.device = resolve_device(device)
        check_dtype(self.dtype, self.device)
        if self._keys is not None:
            self._keys = self._keys.to(self.device)
            self._key_sq = self._key_sq.to(self.device)
        if self._values is not None:
            self._values = self._values.to(self.device)
        return self

    # --- recall -----------------------------------------------------------------------
    def _prepare(self, cue: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self._count == 0:
            raise EmptyMemoryError("the memory is empty: store patterns before recalling")
        cue = check_batch(cue, self.dim, "cue").to(self.device, self.dtype)
        if mask is not None:
            mask = check_mask(mask, cue.shape).to(self.device)
        return cue, mask

    def retrieve(
        self, cue: Tensor, mask: Tensor | None = None, steps: int = 1, tol: float = 1e-6
    ) -> Tensor:
        """Recall from a corrupted or partial cue.

        Arguments:
            cue: (B, D). Unknown entries (mask False) may hold anything.
            mask: (B, D) bool, True = known entry; the first step compares only those.
            steps: iterated updates q <- retrieve(q) (auto-associative only); stops
                early once no entry changes by more than ``tol``. Steps after the first
                compare whole states, since every entry is then an estimate.
            tol: convergence tolerance (max abs change).

        Returns:
            (B, Dv) in the memory's dtype.
        """
        cue, mask = self._prepare(cue, mask)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if steps > 1 and self.hetero:
            raise ValueError("iterated retrieval needs an auto-associative memory (values = keys)")
        state = cue
        for step in range(steps):
            out, _ = reduce_over_memories(self.keys, self.values, state, mask if step == 0 else None,
                                          self.sim, self.sep, chunk_size=self.chunk_size,
                                          key_sq=self._live(self._key_sq))
            out = out.to(self.dtype)
            converged = step > 0 and float((out - state).abs().max()) <= tol
            state = out
            if converged:
                break
        return state

    def search(self, cue: Tensor, k: int = 5, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The k nearest stored patterns under the similarity.

        Returns:
            scores (B, k) best first (similarity units; distances negated), and
            indices (B, k) into the stored patterns, in storage order.
        """
        cue, mask = self._prepare(cue, mask)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return topk_over_memories(self.keys, cue, mask, self.sim, k=k, chunk_size=self.chunk_size,
                                  key_sq=self._live(self._key_sq))

    def energy(self, state: Tensor, mask: Tensor | None = None) -> Tensor:
        """Energy (B,) of states (B, D): ``R(q) - Phi(sim(keys, q))``.

        Phi is the separation's potential and R(q) = 1/2 |q|^2 for dot similarity, 0
        otherwise. A Lyapunov function only for dot similarity with softmax, max or
        top-k (``sep.has_gradient_weights``: Phi convex, dPhi/ds = the weights): there
        the iterated update is the concave-convex procedure on this energy and never
        raises it (Ramsauer et al. 2020); with softmax it is Ramsauer's energy up to
        constants. With ``identity`` it never rises either but has no lower bound (the
        state grows without settling once ||M|| > 1); polynomial and normalised identity
        weights are the gradient of no potential, and the iteration raises this energy
        for most cues (tests/numerics/test_hopfield_energy.py,
        results/hopfield_paper_protocol.md). For the other similarities, and there, it
        is a familiarity score: lower = closer to what is stored.
        """
        state, mask = self._prepare(state, mask)
        _, phi = reduce_over_memories(self.keys, None, state, mask, self.sim, self.sep,
                                      chunk_size=self.chunk_size, potential=True,
                                      key_sq=self._live(self._key_sq))
        if self.sim.name == "dot":
            return 0.5 * (state.to(phi.dtype) ** 2).sum(dim=1) - phi
        return -phi

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
        return f"UniversalHopfield({args}, device={str(self.device)!r}, stored={self._count})"


def modern_hopfield(beta: float = 1.0, **kwargs) -> UniversalHopfield:
    """The modern continuous Hopfield network (Ramsauer et al. 2020): dot + softmax(beta).

    One retrieval step equals attention: softmax(beta q K^T) V.
    """
    return UniversalHopfield(similarity="dot", separation="softmax", beta=beta, **kwargs)


class HopfieldNetwork:
    """The classical Hopfield network (Hopfield 1982): bipolar units, Hebbian weights.

    W = (1/D) sum_mu xi_mu xi_mu^T with a zero diagonal; update s_i <- sign(W_i . s)
    (a unit whose field is exactly 0 keeps its state); energy E = -1/2 s^T W s, which
    never increases under asynchronous updates. Patterns may be binary {0, 1} or bipolar
    {-1, +1}; states are returned bipolar.

    Its synchronous update with the diagonal kept equals the universal Hopfield network
    with dot similarity and identity separation, followed by sign.
    """

    def __init__(self, dim: int, zero_diagonal: bool = True, device: str | torch.device = "auto") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.zero_diagonal = zero_diagonal
        self.device = resolve_device(device)
        self.weights = torch.zeros(dim, dim, device=self.device)  # (D, D)
        self.count = 0

    def store(self, patterns: Tensor) -> None:
        """Hebbian storage of (N, D) binary or bipolar patterns (adds to the weights)."""
        xi = bipolar(check_batch(patterns, self.dim, "patterns").to(self.device, torch.float32))
        self.weights += xi.T @ xi / self.dim  # (D, D)
        if self.zero_diagonal:
            self.weights.fill_diagonal_(0.0)
        self.count += xi.shape[0]

    def retrieve(
        self,
        cue: Tensor,
        steps: int = 100,
        mode: str = "async",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run the dynamics from cues (B, D) until a fixed point or ``steps`` sweeps.

        Arguments:
            cue: (B, D) binary or bipolar (entries > 0 count as +1).
            steps: maximum sweeps; a sweep updates every unit once.
            mode: "sync" (all units at once) or "async" (one unit at a time, in a
                random order per sweep).
            generator: random source for the asynchronous order.

        Returns:
            (B, D) bipolar states.
        """
        if self.count == 0:
            raise EmptyMemoryError("the network is empty: store patterns before recalling")
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        state = bipolar(check_batch(cue, self.dim, "cue").to(self.device, torch.float32))
        for _ in range(steps):
            previous = state.clone()
            if mode == "sync":
                field = state @ self.weights  # (B, D); W is symmetric
                state = torch.where(field == 0, state, torch.sign(field))
            else:
                order = torch.randperm(self.dim, generator=generator).tolist()
                for i in order:
                    field = state @ self.weights[:, i]  # (B,)
                    state[:, i] = torch.where(field == 0, state[:, i], torch.sign(field))
            if torch.equal(state, previous):
                break
        return state

    def energy(self, state: Tensor) -> Tensor:
        """E = -1/2 s^T W s for bipolar states (B, D); returns (B,)."""
        s = bipolar(check_batch(state, self.dim, "state").to(self.device, torch.float32))
        return -0.5 * ((s @ self.weights) * s).sum(dim=1)


def _binomial_quantile(dim: int, fraction: float) -> int:
    """Smallest radius r with P[Binomial(dim, 1/2) <= r] >= fraction."""
    log_total = dim * math.log(2.0)
    cdf = 0.0
    for r in range(dim + 1):
        cdf += math.exp(math.lgamma(dim + 1) - math.lgamma(r + 1) - math.lgamma(dim - r + 1) - log_total)
        if cdf >= fraction:
            return r
    return dim


class SparseDistributedMemory:
    """Kanerva's sparse distributed memory, as a universal Hopfield network.

    L hard locations with random bipolar addresses A (L, D) and counters C (L, Dv).
    Writing data x at address a adds bipolar(x) to the counters of every location
    within hamming distance ``radius`` of a. Reading at q sums the counters of the
    locations within ``radius`` of q and thresholds at 0. In universal Hopfield terms:
    keys = A, similarity = hamming, separation = threshold(radius), projection = C.

    Arguments:
        dim: address (and, auto-associatively, data) dimension D.
        locations: number of hard locations L.
        radius: activation radius in bits; None picks the one that activates about
            ``activation`` of the locations for a random address.
        activation: target fraction of active locations when radius is None.
        value_dim: data dimension (default D).
        seed: seeds the random addresses.
    """

    def __init__(
        self,
        dim: int,
        locations: int = 2000,
        radius: int | None = None,
        activation: float = 0.05,
        value_dim: int | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.dim, self.value_dim = dim, value_dim or dim
        gen = torch.Generator().manual_seed(seed)
        self.addresses = (torch.randint(0, 2, (locations, dim), generator=gen) * 2 - 1).float().to(self.device)
        self.counters = torch.zeros(locations, self.value_dim, device=self.device)  # (L, Dv)
        self.radius = _binomial_quantile(dim, activation) if radius is None else int(radius)
        self.sim = get_similarity("hamming")
        self.sep = Threshold(radius=float(self.radius))

    def activation(self, address: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, L) 0/1: which hard locations lie within the radius of each address (B, D)."""
        address = check_batch(address, self.dim, "address").to(self.device, torch.float32)
        if mask is not None:
            mask = check_mask(mask, address.shape).to(self.device)
        return self.sep.linear_weights(self.sim(self.addresses, address, mask), True)

    def write(self, address: Tensor, data: Tensor) -> None:
        """Write data (B, Dv) at addresses (B, D): active counters += bipolar(data)."""
        data = bipolar(check_batch(data, self.value_dim, "data").to(self.device, torch.float32))
        self.counters += self.activation(address).T @ data  # (L, Dv)

    def store(self, patterns: Tensor) -> None:
        """Auto-associative storage: each pattern written at its own address."""
        self.write(patterns, patterns)

    def read(self, address: Tensor, mask: Tensor | None = None) -> Tensor:
        """Bipolar data (B, Dv) read at addresses (B, D); a tie (sum 0) reads as -1."""
        address = check_batch(address, self.dim, "address").to(self.device, torch.float32)
        if mask is not None:
            mask = check_mask(mask, address.shape).to(self.device)
        sums, _ = reduce_over_memories(self.addresses, self.counters, address, mask, self.sim, self.sep)
        return torch.where(sums > 0, 1.0, -1.0)

    def retrieve(self, cue: Tensor, mask: Tensor | None = None, steps: int = 1) -> Tensor:
        """Iterated reads (auto-associative): q <- read(q); the mask applies to the first."""
        state = self.read(cue, mask)
        for _ in range(steps - 1):
            nxt = self.read(state)
            if torch.equal(nxt, state):
                break
            state = nxt
        return state
