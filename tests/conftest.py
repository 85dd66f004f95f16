"""Shared fixtures: small slices of the real offline data sets."""

import pytest
import torch

from memory_core.data import fashion_mnist, flatten, natural_patches


@pytest.fixture(scope="session")
def fashion_images() -> torch.Tensor:
    """The first 2000 Fashion-MNIST training images, (2000, 1, 28, 28) in [0, 1]."""
    return fashion_mnist("train", limit=2000)[0]


@pytest.fixture(scope="session")
def fashion_vectors(fashion_images) -> torch.Tensor:
    """The same images as (2000, 784) vectors."""
    return flatten(fashion_images)


@pytest.fixture(scope="session")
def patch_vectors() -> torch.Tensor:
    """500 natural-colour 32x32 patches as (500, 3072) vectors."""
    return flatten(natural_patches(32, count=500))
