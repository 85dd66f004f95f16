"""The classical associative memories, as instances of the universal Hopfield network:
``HopfieldNetwork`` (Hopfield 1982: bipolar units, Hebbian weights, sign updates) and
``SparseDistributedMemory`` (Kanerva 1988: hamming similarity and a threshold over random
hard locations).

``hopfield.py`` (the universal network) re-exports both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import EmptyMemoryError, check_batch, check_mask, resolve_device
from .chunked import reduce_over_memories
from .separation import Threshold
from .similarity import bipolar, get_similarity

__all__ = ["HopfieldNetwork", "SparseDistributedMemory"]


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
        self.addresses = (
            (torch.randint(0, 2, (locations, dim), generator=gen) * 2 - 1).float().to(self.device)
        )
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
