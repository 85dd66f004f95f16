"""What the gateway and a shard say to each other: which shard owns an id, one fan-out's question
and a shard's answer.

A fan-out is one ``ShardQuery`` to every shard of a memory; each shard answers with its
parts (``memory_core.partials``) and the gateway merges them. One query may ask for
several parts of the same states at once (the retrieval pass, the potential, the k best,
the nearest captions), so that a recall costs one fan-out per retrieval step plus one for
the energy and the matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from memory_core.partials import Partial, Top

__all__ = ["ShardAnswer", "ShardQuery", "from_wire", "shard_of", "to_wire"]

T = TypeVar("T")


def shard_of(pattern_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) that owns a pattern id: a stable hash (BLAKE2b, not Python's
    per-process ``hash``), the same on every machine and after every restart."""
    digest = hashlib.blake2b(pattern_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass
class ShardQuery:
    """One fan-out's question, about states (B, D') of the stored vectors' length.

    Attributes:
        state: (B, D') float32; mask: (B, D') bool or None (True = known).
        output: the retrieval pass's part (with ``mask``).
        potential: the potential's part (without mask: the energy of a result).
        top_k: > 0: the k best stored patterns (``Top`` with ids); ``top_masked``: ranked
            with the mask (a caption query) or without (the matches of a result);
            ``top_values``: with their stored vectors.
        captions_k: > 0: the k stored captions nearest the states' caption parts (cosine),
            in a text memory whose caption part starts at ``caption_from``.
    """

    state: Tensor
    mask: Tensor | None = None
    output: bool = False
    potential: bool = False
    top_k: int = 0
    top_masked: bool = False
    top_values: bool = False
    captions_k: int = 0
    caption_from: int = 0


@dataclass
class ShardAnswer:
    """One shard's parts; all None from a shard that stores nothing.

    Attributes:
        count: patterns the shard holds now.
        partial: the retrieval pass's and/or the potential's part.
        top, top_ids: the shard's k best and their pattern ids, per cue.
        captions, caption_ids: the same for the nearest captions.
        seconds: the shard's compute time for this query.
    """

    count: int
    partial: Partial | None = None
    top: Top | None = None
    top_ids: list[list[str]] = field(default_factory=list)
    captions: Top | None = None
    caption_ids: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0


def to_wire(message: T) -> T:
    """The message with every tensor (at any depth of its dataclasses) as a numpy array: Ray
    moves numpy arrays without pickling them, which is cheaper per call than torch tensors."""
    return _map(message, lambda t: t.detach().cpu().numpy() if isinstance(t, Tensor) else t)


def from_wire(message: T) -> T:
    """``to_wire`` undone: numpy arrays back to tensors (copied where Ray handed them read-only)."""
    return _map(
        message,
        lambda a: torch.from_numpy(a if a.flags.writeable else a.copy()) if isinstance(a, np.ndarray) else a,
    )


def _map(value: Any, convert: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _map(getattr(value, f.name), convert) for f in fields(value)})
    return convert(value)
