"""``PCGraph`` checkpoints: one safetensors file (weights, biases, adjacency, Adam's moments),
the JSON config and counters in its metadata, written atomically (``files.atomic_write``).

``load`` trusts nothing in the file: every failure (a damaged header, a checksum that does
not match (``memory_core.digest``), tensors that do not fit the config, non-finite numbers,
unreadable metadata) is a ValueError naming the file.
Shapes are checked against the config before any model is built, so that a damaged
config can never make the loader allocate more than the file itself holds.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import digest
from .files import atomic_write
from .graphs import as_adjacency

__all__ = ["FORMAT", "load", "save"]

FORMAT = "memory_core.PCGraph"
METADATA_KEYS = frozenset({"format", "version", "config", "dtype", "trained_count", "adam_step"})
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_ERRORS = (KeyError, TypeError, ValueError, OverflowError, RuntimeError, AttributeError)


def save(graph: Any, path: str | os.PathLike) -> None:
    """Write ``graph`` (a ``PCGraph``) to ``path`` atomically."""
    from safetensors.torch import save as st_save

    tensors = {
        "weights": graph.weights.detach().cpu().contiguous(),
        "bias": graph.bias.detach().cpu().contiguous(),
        "adjacency": graph.adjacency.cpu().contiguous(),
    }
    for name, (m, v) in graph._opt.moments.items():
        tensors[f"adam.{name}.m"] = m.cpu().contiguous()
        tensors[f"adam.{name}.v"] = v.cpu().contiguous()
    meta = {
        "format": FORMAT,
        "version": "1",
        "config": json.dumps(asdict(graph.config)),
        "dtype": str(graph.dtype).removeprefix("torch."),
        "trained_count": str(graph.trained_count),
        "adam_step": str(graph._opt.step),
    }
    meta[digest.KEY] = digest.digest(tensors, meta)
    atomic_write(path, st_save(tensors, metadata=meta))


def load(cls: type, config_cls: type, path: str | os.PathLike, device: str | torch.device = "auto") -> Any:
    """Read a checkpoint written by ``save`` into a new ``cls`` (``PCGraph``, whose config is
    ``config_cls``) on ``device``; ValueError for anything but a whole, finite checkpoint
    (OSError when the file cannot be read at all)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    raw = Path(path).read_bytes()
    try:
        tensors = st_load(raw)
        meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
    except (SafetensorError, *_ERRORS) as exc:
        raise ValueError(f"{path} is not a PCGraph checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a PCGraph checkpoint (no PCGraph metadata)")
    try:
        digest.verify(tensors, meta, path, METADATA_KEYS)
        return _build(cls, config_cls, tensors, meta, device)
    except _ERRORS as exc:
        raise ValueError(f"{path}: damaged PCGraph checkpoint ({type(exc).__name__}: {exc})") from None


def _check(tensors: dict[str, Tensor], n: int) -> None:
    """The tensors a graph of n vertices has, with their shapes, finite (the adjacency aside)."""
    shapes = {"weights": (n, n), "bias": (n,), "adjacency": (n, n)}
    for name in ("weights", "bias"):
        if f"adam.{name}.m" in tensors or f"adam.{name}.v" in tensors:
            shapes |= {f"adam.{name}.m": shapes[name], f"adam.{name}.v": shapes[name]}
    if set(tensors) != set(shapes):
        raise ValueError(f"tensors {sorted(tensors)}; expected {sorted(shapes)}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, the config needs {shape}")
        if name != "adjacency" and not bool(torch.isfinite(tensors[name]).all()):
            raise ValueError(f"{name} holds NaN or infinite values")


def _build(cls: type, config_cls: type, tensors: dict[str, Tensor], meta: dict, device) -> Any:
    config = config_cls.from_dict(json.loads(meta["config"]))  # old key names too
    dtype = _DTYPES.get(meta["dtype"])
    if dtype is None:
        raise ValueError(f"dtype {meta['dtype']!r} is not a float dtype")
    _check(tensors, config.n_vertices)
    trained_count, step = int(meta["trained_count"]), int(meta["adam_step"])
    if trained_count < 0 or step < 0:
        raise ValueError("negative trained_count or adam_step")
    adj = as_adjacency(tensors["adjacency"], config.n_vertices)
    graph = cls.__new__(cls)
    graph._setup(config, adj, device, dtype)
    graph.weights = tensors["weights"].to(graph.device, dtype)
    graph.bias = tensors["bias"].to(graph.device, dtype)
    graph.trained_count = trained_count
    graph._opt.step = step
    for name in ("weights", "bias"):
        if f"adam.{name}.m" in tensors:
            graph._opt.moments[name] = (
                tensors[f"adam.{name}.m"].to(graph.device, dtype),
                tensors[f"adam.{name}.v"].to(graph.device, dtype),
            )
    return graph
