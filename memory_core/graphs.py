"""Graph topologies for ``PCGraph``: dense bool adjacency matrices A (N, N), A[j, i] = an
edge j -> i (vertex j predicts vertex i)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_adjacency", "fully_connected", "hierarchy", "layered", "random_sparse"]


def fully_connected(n: int) -> Tensor:
    """Every vertex predicts every other one; no self-loops (a vertex predicting itself is trivial)."""
    if n < 2:
        raise ValueError(f"a graph needs at least 2 vertices, got {n}")
    return ~torch.eye(n, dtype=torch.bool)


def layered(sizes: Sequence[int], direction: str = "down") -> Tensor:
    """A hierarchical graph: vertex blocks of ``sizes`` (block 0 first), consecutive blocks joined.

    Arguments:
        sizes: vertices per layer, bottom (block 0, e.g. the sensory layer) to top.
        direction: "down" (each layer predicts the one below: a generative hierarchy),
            "up" (each layer predicts the one above), or "both" (cycles between layers).
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"layered needs >= 2 layers of >= 1 vertex, got {list(sizes)}")
    starts = [0]
    for s in sizes:
        starts.append(starts[-1] + int(s))
    groups = [range(lo, hi) for lo, hi in itertools.pairwise(starts)]
    return hierarchy(starts[-1], groups, direction)


def hierarchy(n: int, layers: Sequence[Sequence[int]], direction: str = "down") -> Tensor:
    """Like ``layered``, with each layer any set of vertex indices (bottom to top).

    For a graph whose sensory vertices [image ; label] come first but sit at both ends of
    the hierarchy, e.g. label -> hidden -> image:
    ``hierarchy(n, [range(0, 784), range(794, n), range(784, 794)])``.
    """
    if direction not in ("down", "up", "both"):
        raise ValueError(f"direction must be 'down', 'up' or 'both', got {direction!r}")
    if len(layers) < 2 or any(len(layer) == 0 for layer in layers):
        raise ValueError("a hierarchy needs >= 2 layers of >= 1 vertex")
    idx = [torch.as_tensor(list(layer), dtype=torch.long) for layer in layers]
    flat = torch.cat(idx)
    if int(flat.min()) < 0 or int(flat.max()) >= n or len(flat.unique()) != len(flat):
        raise ValueError(f"layers must be disjoint sets of vertex indices in [0, {n})")
    adj = torch.zeros(n, n, dtype=torch.bool)
    for below, above in itertools.pairwise(idx):
        if direction in ("down", "both"):
            adj[above[:, None], below[None, :]] = True  # upper layer -> lower layer
        if direction in ("up", "both"):
            adj[below[:, None], above[None, :]] = True
    return adj


def random_sparse(n: int, density: float, seed: int = 0) -> Tensor:
    """Each ordered pair (j, i), j != i, is an edge with probability ``density``."""
    if n < 2:
        raise ValueError(f"a graph needs at least 2 vertices, got {n}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, n, generator=gen) < density) & fully_connected(n)


def as_adjacency(adjacency: Tensor, n: int | None = None) -> Tensor:
    """A dense bool (N, N) adjacency from a dense or sparse (COO/CSR) tensor of 0/1 or bool."""
    if not isinstance(adjacency, Tensor):
        raise TypeError(f"adjacency must be a torch.Tensor, got {type(adjacency).__name__}")
    dense = adjacency.to_dense() if adjacency.layout != torch.strided else adjacency
    if dense.ndim != 2 or dense.shape[0] != dense.shape[1]:
        raise ValueError(f"adjacency must be square (N, N), got shape {tuple(dense.shape)}")
    if n is not None and dense.shape[0] != n:
        raise ValueError(f"adjacency has {dense.shape[0]} vertices, expected {n}")
    if dense.dtype != torch.bool:
        if not bool(((dense == 0) | (dense == 1)).all()):
            raise ValueError("adjacency entries must be 0/1 (or bool)")
        dense = dense != 0
    return dense.cpu().contiguous()
