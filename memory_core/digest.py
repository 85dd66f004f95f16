"""Checksums of checkpoints: a SHA-256 over a checkpoint's tensors and metadata.

A checkpoint keeps ``digest(tensors, metadata)`` in its metadata (``KEY``); a loader that
finds it recomputes it and refuses a file whose bytes changed since it was written: a
flipped bit in a weight's mantissa leaves a finite number that no other check can tell
from the right one. Checkpoints written before digests were kept have none, and load
with the other checks alone; so that damage to the digest's own key cannot pass a file
off as one of those, a loader also refuses metadata keys its format never wrote.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor

__all__ = ["KEY", "digest", "verify"]

KEY = "sha256"


def digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """Hex SHA-256 of the tensors (names, dtypes, shapes, bytes; in name order) and of the
    metadata but its own ``KEY``."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in metadata.items() if k != KEY}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"\0{name}\0{t.dtype}\0{tuple(tensors[name].shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify(tensors: dict[str, Tensor], metadata: dict[str, str], path: object, known: frozenset[str]) -> None:
    """ValueError when ``metadata`` holds a key outside ``known`` (the keys its format ever
    wrote) and ``KEY`` (a damaged key: ``sha256`` flipped to ``sha2u6`` would otherwise
    load as a checkpoint without a digest), or a digest the file's content no longer matches."""
    unknown = sorted(set(metadata) - known - {KEY})
    if unknown:
        raise ValueError(
            f"{path}: the checkpoint's metadata has keys its format never wrote: {unknown} (a damaged file)"
        )
    kept = metadata.get(KEY)
    if kept is not None and kept != digest(tensors, metadata):
        raise ValueError(f"{path}: the checkpoint's checksum does not match its content (a damaged file)")
