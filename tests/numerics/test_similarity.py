"""Unit tests of the similarity functions against their textbook definitions, on real data."""

import pytest
import torch

from memory_core import SIMILARITIES, similarity
from memory_core.similarity import bipolar, get_similarity


def _reference(name: str, m: torch.Tensor, c: torch.Tensor) -> float:
    """The plain definition for one pair of vectors (float64)."""
    m, c = m.double(), c.double()
    if name == "dot":
        return float(m @ c)
    if name == "cosine":
        return float(m @ c / (m.norm() * c.norm()))
    if name == "euclidean":
        return -float(((m - c) ** 2).sum().sqrt())
    if name == "manhattan":
        return -float((m - c).abs().sum())
    if name == "hamming":
        return -float(((m > 0) != (c > 0)).sum())
    raise AssertionError(name)


@pytest.fixture(scope="module")
def pairs(fashion_vectors):
    memories = fashion_vectors[:12]
    cues = fashion_vectors[100:105] + 0.1 * torch.randn(5, 784, generator=torch.Generator().manual_seed(0))
    return memories, cues


@pytest.mark.parametrize("name", SIMILARITIES)
def test_matches_textbook_definition(name, pairs):
    memories, cues = pairs
    got = similarity(name, memories, cues)  # (B, N)
    assert got.shape == (5, 12)
    want = torch.tensor([[_reference(name, m, c) for m in memories] for c in cues], dtype=torch.float64)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", SIMILARITIES)
def test_all_known_mask_equals_no_mask(name, pairs):
    memories, cues = pairs
    mask = torch.ones_like(cues, dtype=torch.bool)
    assert torch.allclose(similarity(name, memories, cues, mask), similarity(name, memories, cues), atol=1e-4)


@pytest.mark.parametrize("name", SIMILARITIES)
def test_mask_compares_only_known_entries_rescaled(name, pairs):
    """Masked score = the score over the known entries alone, times D / k (cosine: no rescale)."""
    memories, cues = pairs
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(cues.shape, generator=gen) < 0.3
    got = similarity(name, memories, cues, mask)
    for b in range(cues.shape[0]):
        known = mask[b]
        k, d = int(known.sum()), cues.shape[1]
        scale = 1.0 if name == "cosine" else d / k
        if name == "euclidean":  # the rescale applies to the squared distance
            want = [-((_reference(name, m[known], cues[b, known]) ** 2) * scale) ** 0.5 for m in memories]
        else:
            want = [_reference(name, m[known], cues[b, known]) * scale for m in memories]
        assert torch.allclose(got[b].double(), torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-3), name


def test_unknown_entries_do_not_matter(pairs):
    """Whatever the unknown entries hold, a masked cue scores the same."""
    memories, cues = pairs
    mask = torch.zeros_like(cues, dtype=torch.bool)
    mask[:, :392] = True
    garbage = cues.clone()
    garbage[~mask] = torch.rand(int((~mask).sum()))
    for name in SIMILARITIES:
        assert torch.allclose(similarity(name, memories, cues, mask), similarity(name, memories, garbage, mask),
                              atol=1e-4), name


def test_masks_put_cues_on_one_scale(fashion_vectors):
    """A pattern's masked self-distance is 0 and its distance to another pattern is about the
    same whether a quarter or three quarters of the entries are known (fair comparison)."""
    a, b = fashion_vectors[0:1], fashion_vectors[1:2]
    gen = torch.Generator().manual_seed(3)
    full = similarity("manhattan", b, a)
    for frac in (0.25, 0.75):
        mask = torch.rand(a.shape, generator=gen) < frac
        assert similarity("manhattan", a, a, mask).abs().item() == 0.0
        assert similarity("manhattan", b, a, mask).item() == pytest.approx(full.item(), rel=0.25)


def test_hamming_binary_and_bipolar_agree():
    gen = torch.Generator().manual_seed(0)
    binary = torch.randint(0, 2, (6, 50), generator=gen).float()
    bip = binary * 2 - 1
    assert torch.equal(bipolar(binary), bip)
    assert torch.equal(similarity("hamming", binary[:3], binary[3:]), similarity("hamming", bip[:3], bip[3:]))
    assert similarity("hamming", binary[:1], binary[:1]).item() == 0


def test_distance_flag():
    assert {n for n in SIMILARITIES if get_similarity(n).is_distance} == {"euclidean", "manhattan", "hamming"}


def test_errors_name_the_problem(pairs):
    memories, cues = pairs
    with pytest.raises(ValueError, match="unknown similarity 'l3'"):
        similarity("l3", memories, cues)
    with pytest.raises(ValueError, match="no known entries"):
        similarity("manhattan", memories, cues, torch.zeros_like(cues, dtype=torch.bool))
