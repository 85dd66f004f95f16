"""Masks for cues: which entries of a pattern are known (True) and which are to be filled.

Pixel masks are (H, W) or (B, H, W) bool; ``pixel_mask_to_vector`` spreads one over the
channels of a (C, H, W) image and flattens it C-major, as the image vectors are.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bottom_half_unknown", "box_unknown", "pixel_mask_to_vector", "random_known_pixels"]


def pixel_mask_to_vector(mask: Tensor, channels: int) -> Tensor:
    """(H, W) -> (C*H*W,) or (B, H, W) -> (B, C*H*W): every channel shares the pixel's mask."""
    if mask.dtype != torch.bool or mask.ndim not in (2, 3):
        raise ValueError(f"pixel mask must be bool (H, W) or (B, H, W), got {mask.dtype} {tuple(mask.shape)}")
    if mask.ndim == 2:
        return mask[None].expand(channels, -1, -1).reshape(-1)
    return mask[:, None].expand(-1, channels, -1, -1).reshape(mask.shape[0], -1)


def bottom_half_unknown(height: int, width: int) -> Tensor:
    """(H, W) mask with the top half known and the bottom half to be filled."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[: height // 2] = True
    return mask


def random_known_pixels(
    batch: int, height: int, width: int, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """(B, H, W) masks, each with exactly round(fraction * H * W) known pixels chosen at random."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pixels = height * width
    known = max(1, round(fraction * pixels))
    order = torch.rand(batch, pixels, generator=generator).argsort(dim=1)  # (B, P)
    mask = torch.zeros(batch, pixels, dtype=torch.bool)
    mask.scatter_(1, order[:, :known], True)
    return mask.reshape(batch, height, width)


def box_unknown(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> Tensor:
    """(H, W) mask with a box of unknown pixels and everything else known."""
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[top : top + box_h, left : left + box_w] = False
    return mask
