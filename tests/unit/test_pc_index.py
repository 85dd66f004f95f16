"""PCIndex: recall that lands on stored patterns, on real images (memory_core.pc_index).

One PC network fit on 250 Fashion-MNIST images (width 512, fit's defaults), where the
pure recall blends (noisy cues 3% right in results/pc_experiments_full.jsonl). The index
must land on the stored patterns, say so, and leave unseen images to the reconstruction.
"""

from __future__ import annotations

import pytest
import torch

from memory_core import EmptyMemoryError, PCIndex, PCIndexConfig, PCMemory
from memory_core.masks import pixel_mask_to_vector

pytestmark = pytest.mark.usefixtures("one_thread")

N = 250


@pytest.fixture(scope="module")
def fit(fashion_vectors) -> tuple[PCMemory, PCIndex, torch.Tensor]:
    stored = fashion_vectors[:N]
    pc = PCMemory(sizes=[256, 512, 784], device="cpu", seed=0)
    pc.fit(stored, progress=False)
    index = PCIndex(pc)
    index.build(stored)
    return pc, index, stored


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().mean(1)


def _top_half(count: int) -> torch.Tensor:
    pix = torch.zeros(28, 28, dtype=torch.bool)
    pix[:14] = True
    return pixel_mask_to_vector(pix, 1).expand(count, -1)


def test_noisy_cues_land_on_the_stored_patterns_where_pure_recall_blends(fit):
    pc, index, stored = fit
    x = stored[:100]
    cue = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    got = index.recall(cue)
    assert float((_mse(got.output, x) < 0.005).float().mean()) >= 0.95
    assert bool(got.stored.all()) and torch.equal(got.nearest, torch.arange(100))
    assert float(got.unique.float().mean()) >= 0.95
    assert int(got.rounds.max()) <= 3  # F settles once the match is sharp
    pure = float((_mse(pc.retrieve(cue), x) < 0.005).float().mean())
    assert pure <= 0.5  # what the index is for


def test_half_images_complete_to_the_stored_pattern(fit):
    _, index, stored = fit
    x = stored[100:200]
    mask = _top_half(len(x))
    got = index.recall(torch.where(mask, x, torch.zeros(())), mask=mask)
    assert float((_mse(got.output, x) < 0.001).float().mean()) >= 0.9
    assert torch.equal(got.output[mask], x[mask])  # the known entries as given


def test_the_output_is_the_networks_prediction_of_the_matched_code_not_a_copy(fit):
    pc, _, stored = fit
    sharp = PCIndex(pc, noise_margin=None)
    sharp.build(stored)
    got = sharp.recall(stored[:20] + 0.1 * torch.randn(20, 784, generator=torch.Generator().manual_seed(2)))
    codes = [c[got.nearest] for c in sharp.codes]
    assert torch.allclose(got.output, pc.predict_sensory(codes), atol=1e-5)
    assert float(_mse(got.output, stored[:20]).min()) > 0  # the network's fit, not the pattern


def test_unseen_images_are_not_called_stored_and_get_the_reconstruction(fit, fashion_vectors):
    pc, index, _ = fit
    unseen = fashion_vectors[1000:1100]
    cue = unseen + 0.2 * torch.randn(unseen.shape, generator=torch.Generator().manual_seed(3))
    got = index.recall(cue)
    assert float(got.stored.float().mean()) <= 0.1
    far = ~got.stored
    assert torch.allclose(got.output[far], pc.retrieve(cue[far]), atol=1e-6)
    assert float(got.evidence[far].min()) > 1.0


def test_the_index_refuses_what_it_cannot_do(fashion_vectors):
    pc = PCMemory(sizes=[8, 16, 784], device="cpu", seed=0, epochs=1)
    with pytest.raises(EmptyMemoryError):
        PCIndex(pc).build(fashion_vectors[:10])
    pc.fit(fashion_vectors[:10], progress=False)
    with pytest.raises(EmptyMemoryError):
        PCIndex(pc).recall(fashion_vectors[:2])
    with pytest.raises(ValueError):
        PCIndexConfig(candidates=0)
    with pytest.raises(ValueError):
        PCIndex(pc).build(fashion_vectors[:10, :100])  # wrong dimension


def test_a_cue_that_several_stored_patterns_explain_is_not_called_unique(fit):
    """A quarter of a Fashion-MNIST image is often mostly background: several stored images
    explain it. The index answers with the best, but flags it not unique (its runner-up
    passes the test too): among the answers it calls unique, few are wrong."""
    _, index, stored = fit
    pix = torch.zeros(28, 28, dtype=torch.bool)
    pix[:7] = True
    x = stored[:100]
    mask = pixel_mask_to_vector(pix, 1).expand(len(x), -1)
    got = index.recall(torch.where(mask, x, torch.zeros(())), mask=mask)
    right = got.nearest == torch.arange(len(x))
    assert bool((got.unique <= got.stored).all())
    assert float((got.unique & ~right).float().mean()) <= 0.05
    assert float((got.stored & ~got.unique).float().mean()) > 0  # ambiguous quarters exist and are flagged
    assert bool((got.runner_up[got.stored & ~got.unique] <= 1).all())
