"""Input checks and device resolution shared by every memory.

Each check raises a clear exception naming the argument and what was wrong:
TypeError for a wrong kind or dtype, ValueError for a wrong shape or value.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EmptyMemoryError", "check_batch", "check_dtype", "check_mask", "resolve_device"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class EmptyMemoryError(RuntimeError):
    """Raised when a memory is asked to recall before anything has been stored."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else as torch understands it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} asked for, but CUDA is not available here")
    return dev


def check_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Float dtypes only; float16 and bfloat16 only on a GPU (CPU kernels for them are slow)."""
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of float16, bfloat16, float32, float64; got {dtype}")
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        raise ValueError(f"{dtype} is for GPUs; use float32 (or float64) on the CPU")
    return dtype


def check_batch(x: object, dim: int | None, name: str) -> Tensor:
    """A finite float tensor of shape (B, dim) with B >= 1; returns it unchanged.

    Arguments:
        x: the candidate.
        dim: required width, or None to accept any width >= 1.
        name: argument name for the message.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {dim}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_mask(mask: object, shape: torch.Size, name: str = "mask") -> Tensor:
    """A bool tensor of the cue's shape (True = known) with at least one known entry per row."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = known), got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, the cue has {tuple(shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name} has a row with no known entry: nothing to recall from")
    return mask
