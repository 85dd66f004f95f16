"""The MNIST sample and the decorrelated patch stand-in (memory_core.data)."""

from __future__ import annotations

import torch

from memory_core.data import distinct_patches, flatten, mnist, natural_patches


def test_mnist_is_the_bundled_sample_in_a_fixed_shuffled_order():
    images, labels = mnist()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert labels.bincount().tolist() == [500] * 10  # 500 per class
    assert len(set(labels[:20].tolist())) > 5  # shuffled, not sorted by class as in the file
    again, _ = mnist(limit=10)
    assert torch.equal(again, images[:10])


def test_distinct_patches_are_far_apart_and_spread_like_real_images():
    patches = flatten(distinct_patches(32, count=1000)).double()
    assert patches.shape == (1000, 3072) and 0.0 <= float(patches.min()) and float(patches.max()) <= 1.0
    d = torch.cdist(patches, patches).square() / patches.shape[1]
    d.fill_diagonal_(float("inf"))
    assert float(d.min()) >= 0.01  # no near-copies (the overlapping crops: 41% within 0.01)

    def components_for_95(x: torch.Tensor) -> int:
        var = torch.linalg.svdvals(x - x.mean(0)).square()
        return int((var.cumsum(0) / var.sum() < 0.95).sum()) + 1

    # measured 135 (Fashion-MNIST's first 1000: 140), against 64 for the overlapping crops
    assert components_for_95(patches) >= 2 * components_for_95(
        flatten(natural_patches(32, count=1000)).double()
    )
    assert torch.equal(distinct_patches(32, count=5), distinct_patches(32, count=5))
