"""Captions of cross-modal (``text: true``) memories.

Such a memory stores each pattern as the joint vector [pattern ; w * caption embedding]
(DESIGN.md: cross-modal lookup is pattern completion). The joint vector is what goes to
storage, so a restart needs no text model: the embedding a pattern was stored with is
the one it keeps. Requests still speak of the pattern alone (D entries): cues are
extended with an unknown caption part, and results are cut back to D.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from memory_core.crossmodal import JointLayout
from memory_core.text import EMBEDDING_DIM, encode_texts

from .exceptions import ApiError
from .storage import MemoryRecord, NewPattern

__all__ = ["TEXT_WEIGHT", "embed", "layout_of", "stored_dim", "with_captions"]

# w: the caption embedding's scale in a joint pattern. A text query is compared on the
# caption part alone (mask-aware, rescaled by D/k), where w multiplies the distances
# and so sharpens softmax like beta. Measured on the 69 captioned photos with the
# default config: at w = 1 only 97% of paraphrase queries completed exactly the best
# match's picture (the rest a blend of two); at w = 3, 10 and 30, 100%. 10 keeps a
# margin. It is part of the stored vectors: changing it means migrating text memories.
TEXT_WEIGHT = 10.0


@lru_cache(maxsize=256)
def _layout(dim: int) -> JointLayout:
    return JointLayout(image_dim=dim, text_dim=EMBEDDING_DIM, text_weight=TEXT_WEIGHT)


def layout_of(record: MemoryRecord) -> JointLayout:
    """Where the pattern and its caption sit in a text memory's stored vectors."""
    return _layout(record.dim)


def stored_dim(shape: tuple[int, ...], text: bool) -> int:
    """Length of the vectors a memory of this shape stores: D, or D + 384 for a text memory."""
    return math.prod(shape) + (EMBEDDING_DIM if text else 0)


def embed(texts: list[str], device: torch.device) -> Tensor:
    """(n, 384) unit caption embeddings. A missing text model (``TextEncoderUnavailable``) is a
    broken deployment, answered as 501 text_model_unavailable (``errors.LIBRARY_ERRORS``)."""
    return encode_texts(texts, device=device).float()


def with_captions(
    record: MemoryRecord, patterns: list[NewPattern], vectors: Tensor, device: torch.device
) -> tuple[list[NewPattern], Tensor]:
    """Join each pattern of a text memory with its caption's embedding.

    Arguments:
        patterns: checked patterns whose ``vector`` is the pattern alone (D,).
        vectors: (n, D) the same vectors.

    Returns:
        the patterns with joint vectors (D + 384,), and the joint vectors (n, D + 384).
    """
    missing = [i for i, p in enumerate(patterns) if p.text is None or not p.text.strip()]
    if missing:
        raise ApiError(
            422,
            "text_required",
            f"memory {record.name!r} pairs every pattern with a caption: "
            f"patterns{missing[:10]} have no 'text'",
            {"indices": missing},
        )
    emb = embed([p.text for p in patterns], device).cpu()  # (n, 384)
    joint = layout_of(record).join(vectors.float(), emb)  # (n, D + 384)
    arrays = joint.numpy().astype(np.float32)
    joined = [
        NewPattern(id=p.id, vector=arrays[i], text=p.text, metadata=p.metadata) for i, p in enumerate(patterns)
    ]
    return joined, joint
