"""PCIndex: recall that lands on stored patterns, on real images (memory_core/pc/index.py).

The network is conftest's ``fashion_pc``: 100 Fashion-MNIST images, width 512, fit's
defaults (one fit shared with test_pc.py). Its pure recall denoises light noise (std 0.2:
96%) but blends under heavy noise (variance 0.2: 0%) and from a quarter of the rows
(results/pc_real_images.md). The index must land on the stored patterns, say so, and leave
unseen images to the reconstruction; its files must come back exactly and only beside
the model they were built for.
"""

from __future__ import annotations

import pytest
import torch

from memory_core import EmptyMemoryError, PCIndex, PCIndexConfig, PCMemory
from memory_core.masks import pixel_mask_to_vector

pytestmark = pytest.mark.usefixtures("one_thread")

N = 100
CUES = 50
HEAVY = 0.2**0.5  # noise of variance 0.2


@pytest.fixture(scope="module")
def fit(fashion_pc, fashion_vectors) -> tuple[PCMemory, PCIndex, torch.Tensor]:
    pc, history = fashion_pc
    stored = fashion_vectors[:N]
    index = PCIndex(pc)
    index.build(stored, codes=history.codes)  # fit's own codes: no second relaxation
    return pc, index, stored


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().mean(1)


def _top_rows(rows: int, count: int) -> torch.Tensor:
    pix = torch.zeros(28, 28, dtype=torch.bool)
    pix[:rows] = True
    return pixel_mask_to_vector(pix, 1).expand(count, -1)


def test_fits_codes_are_the_ones_build_would_infer(fit):
    pc, index, stored = fit
    assert all(torch.equal(a, b) for a, b in zip(index.codes, pc.codes(stored), strict=True))
    with pytest.raises(ValueError, match="codes have shapes"):
        PCIndex(pc).build(stored, codes=[c[:10] for c in index.codes])


def test_heavy_noise_lands_on_the_stored_patterns_where_pure_recall_blends(fit):
    pc, index, stored = fit
    x = stored[:CUES]
    cue = x + HEAVY * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    got = index.recall(cue)
    assert float((_mse(got.output, x) < 0.005).float().mean()) >= 0.95  # measured 100%
    assert bool(got.stored.all()) and torch.equal(got.nearest, torch.arange(CUES))
    # near-copies within heavy noise are flagged, not hidden: some cues are not unique
    assert 0.4 <= float(got.unique.float().mean()) < 1.0  # measured 65% (of 100)
    assert int(got.rounds.max()) <= 3  # F settles once the match is sharp
    pure = float((_mse(pc.retrieve(cue), x) < 0.005).float().mean())
    assert pure <= 0.1  # what the index is for (measured 0%)


def test_half_images_complete_to_the_stored_pattern(fit):
    _, index, stored = fit
    x = stored[N - CUES :]
    mask = _top_rows(14, len(x))
    got = index.recall(torch.where(mask, x, torch.zeros(())), mask=mask)
    assert float((_mse(got.output, x) < 0.001).float().mean()) >= 0.9
    assert bool(got.unique.all()) and torch.equal(got.nearest, torch.arange(N - CUES, N))
    assert torch.equal(got.output[mask], x[mask])  # the known entries as given


def test_the_output_is_the_networks_prediction_of_the_matched_code_not_a_copy(fit):
    pc, index, stored = fit
    sharp = PCIndex(pc, noise_margin=None)
    sharp.build(stored, codes=index.codes)
    got = sharp.recall(stored[:20] + 0.1 * torch.randn(20, 784, generator=torch.Generator().manual_seed(2)))
    codes = [c[got.nearest] for c in sharp.codes]
    assert torch.allclose(got.output, pc.predict_sensory(codes), atol=1e-5)
    assert float(_mse(got.output, stored[:20]).min()) > 0  # the network's fit, not the pattern


def test_unseen_images_are_not_called_stored_and_get_the_reconstruction(fit, fashion_vectors):
    pc, index, _ = fit
    unseen = fashion_vectors[1000 : 1000 + CUES]
    cue = unseen + 0.2 * torch.randn(unseen.shape, generator=torch.Generator().manual_seed(3))
    got = index.recall(cue)
    assert float(got.stored.float().mean()) <= 0.1  # measured 2% (of 100)
    far = ~got.stored
    assert torch.allclose(got.output[far], pc.retrieve(cue[far]), atol=1e-6)
    assert float(got.evidence[far].min()) > 1.0


def test_a_cue_that_several_stored_patterns_explain_is_not_called_unique(fit):
    """A quarter of a Fashion-MNIST image is often mostly background: several stored images
    explain it. The index answers with the best, but flags it not unique (its runner-up
    passes the test too): among the answers it calls unique, few are wrong."""
    _, index, stored = fit
    x = stored
    mask = _top_rows(7, len(x))
    got = index.recall(torch.where(mask, x, torch.zeros(())), mask=mask)
    right = got.nearest == torch.arange(len(x))
    assert bool((got.unique <= got.stored).all())
    assert float((got.unique & ~right).float().mean()) <= 0.05
    assert float((got.stored & ~got.unique).float().mean()) > 0  # ambiguous quarters exist and are flagged
    assert bool((got.runner_up[got.stored & ~got.unique] <= 1).all())


def test_saved_index_recalls_exactly_and_only_beside_its_model(fit, fashion_vectors, tmp_path):
    pc, index, stored = fit
    index.save(tmp_path / "index.safetensors", metadata={"ids": "a,b"})
    back = PCIndex.load(tmp_path / "index.safetensors", pc)
    assert back.metadata == {"ids": "a,b"} and back.config == index.config and len(back) == N
    assert (back.spacing, back.fit_mse, back.absorbed) == (index.spacing, index.fit_mse, index.absorbed)
    cue = stored[:8] + HEAVY * torch.randn(8, 784, generator=torch.Generator().manual_seed(4))
    a, b = index.recall(cue), back.recall(cue)
    assert torch.equal(a.output, b.output) and torch.equal(a.evidence, b.evidence)
    other = PCMemory(sizes=[256, 512, 784], device="cpu", seed=1, epochs=1)
    other.fit(fashion_vectors[:10], progress=False)
    with pytest.raises(ValueError, match="another model"):
        PCIndex.load(tmp_path / "index.safetensors", other)
    (tmp_path / "junk.safetensors").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a PC memory index"):
        PCIndex.load(tmp_path / "junk.safetensors", pc)
    pc.save(tmp_path / "model.safetensors")  # a model checkpoint is not an index either
    with pytest.raises(ValueError, match="not a PC memory index"):
        PCIndex.load(tmp_path / "model.safetensors", pc)
    data = bytearray((tmp_path / "index.safetensors").read_bytes())
    data[-5] ^= 1  # one low bit of one stored number: finite, and wrong
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        PCIndex.load(tmp_path / "flipped.safetensors", pc)


def test_the_index_refuses_what_it_cannot_do(fashion_vectors):
    pc = PCMemory(sizes=[8, 16, 784], device="cpu", seed=0, epochs=1)
    with pytest.raises(EmptyMemoryError):
        PCIndex(pc).build(fashion_vectors[:10])
    pc.fit(fashion_vectors[:10], progress=False)
    with pytest.raises(EmptyMemoryError):
        PCIndex(pc).recall(fashion_vectors[:2])
    with pytest.raises(EmptyMemoryError):
        PCIndex(pc).save("never-written.safetensors")
    with pytest.raises(ValueError):
        PCIndexConfig(candidates=0)
    with pytest.raises(ValueError):
        PCIndex(pc).build(fashion_vectors[:10, :100])  # wrong dimension
