"""Universal Hopfield networks (Millidge et al., ICML 2022) and their classical instances.

    retrieval(q) = values^T . separation(similarity(keys, q))

``UniversalHopfield`` is the general memory (auto- or hetero-associative).
``modern_hopfield`` (dot + softmax = attention, Ramsauer et al. 2020),
``HopfieldNetwork`` (Hopfield 1982: bipolar, Hebbian, sign updates) and
``SparseDistributedMemory`` (Kanerva 1988: hamming + threshold over random hard
locations) are the named instances; the last two are ``classical.py``'s, re-exported here.

Every pass over the stored patterns is chunked (``chunked.reduce_over_memories``): running
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

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .checks import EmptyMemoryError, check_batch, check_dtype, check_mask, resolve_device
from .chunked import (
    _squared_norms,
    partial_over_memories,
    reduce_over_memories,
    top_over_memories,
    topk_over_memories,
)
from .classical import HopfieldNetwork, SparseDistributedMemory
from .kernels import advise_huge_pages
from .partials import Partial, Top, energy_from_potential, iterate_retrieval
from .separation import make_separation
from .similarity import get_similarity

__all__ = [
    "HopfieldConfig",
    "HopfieldNetwork",
    "SparseDistributedMemory",
    "UniversalHopfield",
    "modern_hopfield",
    "reduce_over_memories",
    "topk_over_memories",
]


@dataclass(frozen=True)
class HopfieldConfig:
    """Constructor arguments of ``UniversalHopfield`` (what the service stores as config).

    Attributes:
        similarity: dot, cosine, euclidean, manhattan or hamming.
        separation: identity, softmax, polynomial, max, topk, threshold or
            normalised_identity.
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

    def __post_init__(self) -> None:
        get_similarity(self.similarity)  # ValueError naming the known ones
        make_separation(self.separation, beta=self.beta, n=self.n, k=self.k, radius=self.radius)


def _number(name: str, value: object, cast: type) -> float | int:
    """``cast(value)``, or a ValueError naming the argument (not float()'s own message)."""
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


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
        numbers = (_number("beta", beta, float), _number("n", n, float), _number("k", k, int))
        self.config = HopfieldConfig(similarity, separation, *numbers, _number("radius", radius, float))
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
            grown = torch.empty(
                max(need, 2 * (0 if buf is None else buf.shape[0]), 16),
                *rows.shape[1:],
                dtype=self.dtype,
                device=self.device,
            )
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

    def retrieve(self, cue: Tensor, mask: Tensor | None = None, steps: int = 1, tol: float = 1e-6) -> Tensor:
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

        def one_pass(state: Tensor, first_mask: Tensor | None) -> Tensor:
            out, _ = reduce_over_memories(
                self.keys,
                self.values,
                state,
                first_mask,
                self.sim,
                self.sep,
                chunk_size=self.chunk_size,
                key_sq=self._live(self._key_sq),
            )
            return out

        return iterate_retrieval(one_pass, cue, mask, steps, tol, self.dtype)

    def search(self, cue: Tensor, k: int = 5, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The k nearest stored patterns under the similarity (all N when k > N).

        Returns:
            scores (B, min(k, N)) best first (similarity units; distances negated), and
            indices (B, min(k, N)) into the stored patterns (their storage order).
        """
        cue, mask = self._prepare(cue, mask)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return topk_over_memories(
            self.keys, cue, mask, self.sim, k=k, chunk_size=self.chunk_size, key_sq=self._live(self._key_sq)
        )

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
        _, phi = reduce_over_memories(
            self.keys,
            None,
            state,
            mask,
            self.sim,
            self.sep,
            chunk_size=self.chunk_size,
            potential=True,
            key_sq=self._live(self._key_sq),
        )
        return energy_from_potential(state, phi, self.sim)

    # --- parts of a pass, for a memory split over shards (partials.py) ---------------
    def partial(
        self,
        cue: Tensor,
        mask: Tensor | None = None,
        *,
        output: bool = True,
        potential: bool = False,
        order: Tensor | None = None,
    ) -> Partial:
        """This memory's share of one retrieval pass (``output``) and/or of the potential,
        before normalisation; ``partials.merge_partials`` + ``finish_partial`` over every
        shard's share give what one memory holding all of them computes.

        Arguments:
            cue: (B, D); mask: (B, D) bool or None.
            order: (N,) int64 global positions of the stored patterns (ties of select
                separations go to the lower one); default their row indices.
        """
        cue, mask = self._prepare(cue, mask)
        return partial_over_memories(
            self.keys,
            self.values if output else None,
            cue,
            mask,
            self.sim,
            self.sep,
            chunk_size=self.chunk_size,
            potential=potential,
            key_sq=self._live(self._key_sq),
            order=order,
        )

    def top(
        self,
        cue: Tensor,
        k: int,
        mask: Tensor | None = None,
        *,
        values: bool = False,
        order: Tensor | None = None,
    ) -> tuple[Top, Tensor]:
        """``search`` as a part of a sharded search: (``partials.Top`` with ranks, scores,
        global positions ``order[rows]`` and, with ``values``, the stored values (B, k, Dv);
        row indices (B, k))."""
        cue, mask = self._prepare(cue, mask)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return top_over_memories(
            self.keys,
            self.values if values else None,
            cue,
            mask,
            self.sim,
            k=k,
            chunk_size=self.chunk_size,
            key_sq=self._live(self._key_sq),
            order=order,
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
        return f"UniversalHopfield({args}, device={str(self.device)!r}, stored={self._count})"


def modern_hopfield(beta: float = 1.0, **kwargs) -> UniversalHopfield:
    """The modern continuous Hopfield network (Ramsauer et al. 2020): dot + softmax(beta).

    One retrieval step equals attention: softmax(beta q K^T) V.
    """
    return UniversalHopfield(similarity="dot", separation="softmax", beta=beta, **kwargs)
