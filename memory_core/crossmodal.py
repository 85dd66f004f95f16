"""Cross-modal lookup as pattern completion over two modalities.

A captioned image is stored as one joint pattern [image vector ; w * caption embedding]
(DESIGN.md). A lookup masks the missing modality and lets the memory complete it:

- text -> image: the caption part is known (the query's embedding), the image part is
  completed;
- image (possibly partial) -> caption: the known pixels are given, the caption part is
  completed and read out as the nearest stored captions (cosine).

Any memory with ``retrieve(cue, mask)`` works: a universal Hopfield network compares
only the known part (mask-aware similarity) and projects the stored patterns; a PC
memory clamps the known part and infers the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .text import EMBEDDING_DIM

__all__ = ["JointLayout", "nearest_captions"]


@dataclass(frozen=True)
class JointLayout:
    """Where each modality sits in a joint pattern, and how the caption part is scaled.

    Attributes:
        image_dim: length of the image vector (C*H*W).
        text_dim: length of the caption embedding (384 for all-MiniLM-L6-v2).
        text_weight: w, the scale of the (unit-norm) caption embedding in the pattern.
    """

    image_dim: int
    text_dim: int = EMBEDDING_DIM
    text_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.image_dim < 1 or self.text_dim < 1:
            raise ValueError("image_dim and text_dim must be >= 1")
        if not self.text_weight > 0:
            raise ValueError(f"text_weight must be > 0, got {self.text_weight}")

    @property
    def dim(self) -> int:
        """Length of a joint pattern."""
        return self.image_dim + self.text_dim

    def join(self, images: Tensor, texts: Tensor) -> Tensor:
        """(N, image_dim) images and (N, text_dim) embeddings -> (N, dim) joint patterns."""
        if images.shape[0] != texts.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {texts.shape[0]} captions")
        return torch.cat([images, self.text_weight * texts.to(images.dtype)], dim=1)

    def image_part(self, joint: Tensor) -> Tensor:
        """(B, dim) -> (B, image_dim)."""
        return joint[:, : self.image_dim]

    def text_part(self, joint: Tensor) -> Tensor:
        """(B, dim) -> (B, text_dim), in embedding units (the weight divided out)."""
        return joint[:, self.image_dim :] / self.text_weight

    def text_cue(self, texts: Tensor) -> tuple[Tensor, Tensor]:
        """A cue for text -> image: caption part known, image part unknown.

        Returns:
            cue (B, dim) with zeros for the image part, mask (B, dim) True on the caption part.
        """
        batch = texts.shape[0]
        cue = torch.cat([texts.new_zeros(batch, self.image_dim), self.text_weight * texts], dim=1)
        mask = torch.zeros(batch, self.dim, dtype=torch.bool, device=texts.device)
        mask[:, self.image_dim :] = True
        return cue, mask

    def image_cue(self, images: Tensor, image_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A cue for image -> text: the known pixels given, the caption part unknown.

        Arguments:
            images: (B, image_dim).
            image_mask: (B, image_dim) bool, True = known pixel; None = all known.
        """
        batch = images.shape[0]
        cue = torch.cat([images, images.new_zeros(batch, self.text_dim)], dim=1)
        mask = torch.zeros(batch, self.dim, dtype=torch.bool, device=images.device)
        mask[:, : self.image_dim] = True if image_mask is None else image_mask
        return cue, mask


def nearest_captions(text_part: Tensor, caption_embeddings: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """The k stored captions closest (cosine) to completed caption parts.

    Arguments:
        text_part: (B, text_dim) completed embeddings (any norm).
        caption_embeddings: (N, text_dim) stored captions' unit embeddings.

    Returns:
        cosine scores (B, k) best first, indices (B, k) into the stored captions.
    """
    k = min(k, caption_embeddings.shape[0])
    scores = F.normalize(text_part, dim=1) @ F.normalize(caption_embeddings, dim=1).T  # (B, N)
    return scores.topk(k, dim=1)
