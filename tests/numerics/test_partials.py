"""A memory split into parts and merged (memory_core/partials.py) against the unsplit memory.

The stored patterns are dealt to S parts by a hash of their position (not in blocks), each
part computes its share in its own ``UniversalHopfield`` (its own chunking, fused kernel
and sparse softmax paths), and the merged answer must be the unsplit memory's: outputs and
energies to 1e-5, the same top-k rows in the same order. This is the arithmetic the Ray
mode's gateway runs over its shards (app/cluster/); tests/e2e/test_cluster_*.py check it
over HTTP on a real cluster.
"""

from __future__ import annotations

import pytest
import torch

from memory_core import UniversalHopfield
from memory_core.partials import (
    energy_from_potential,
    finish_partial,
    iterate_retrieval,
    merge_partials,
    merge_tops,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = [
    ("euclidean", "softmax", 100.0),
    ("manhattan", "softmax", 0.05),
    ("dot", "softmax", 0.05),
    ("cosine", "polynomial", 1.0),
    ("euclidean", "polynomial", 1.0),
    ("dot", "identity", 1.0),
    ("manhattan", "max", 1.0),
    ("euclidean", "topk", 20.0),
    ("hamming", "threshold", 1.0),
]


def _split(patterns: torch.Tensor, shards: int, **config) -> tuple[UniversalHopfield, list, list]:
    whole = UniversalHopfield(**config, device="cpu")
    whole.store(patterns)
    owner = (torch.arange(len(patterns)) * 2654435761 % 1000003) % shards  # scattered, not blocks
    parts, orders = [], []
    for s in range(shards):
        rows = (owner == s).nonzero().squeeze(1)
        part = UniversalHopfield(**config, device="cpu")
        part.store(patterns[rows])
        parts.append(part)
        orders.append(rows)
    return whole, parts, orders


def _sharded_retrieve(parts, orders, cue, mask, steps, sep):
    def one_pass(state, first_mask):
        merged = merge_partials(
            [p.partial(state, first_mask, order=o) for p, o in zip(parts, orders)], k=sep.k
        )
        return finish_partial(merged, sep)[0]

    return iterate_retrieval(one_pass, cue, mask, steps, 1e-6, torch.float32)


@pytest.mark.parametrize("shards", [2, 4])
@pytest.mark.parametrize(("similarity", "separation", "beta"), CONFIGS)
def test_split_memory_answers_as_the_whole(fashion_vectors, shards, similarity, separation, beta):
    patterns = fashion_vectors[:1200]
    config = dict(similarity=similarity, separation=separation, beta=beta, radius=60.0)
    whole, parts, orders = _split(patterns, shards, **config)
    gen = torch.Generator().manual_seed(0)
    cue = (fashion_vectors[:6] + 0.2 * torch.randn(6, 784, generator=gen)).clamp(0, 1)
    mask = torch.ones(6, 784, dtype=torch.bool)
    mask[:, 392:] = False  # the lower half unknown
    sep = whole.sep
    for m in (None, mask):
        steps = 1 if separation in ("identity", "threshold") else 3
        expected = whole.retrieve(cue, mask=m, steps=steps)
        got = _sharded_retrieve(parts, orders, cue, m, steps, sep)
        scale = expected.abs().max().clamp_min(1.0)
        assert torch.allclose(got, expected, atol=1e-5 * scale, rtol=1e-5), (got - expected).abs().max()
        # energy of the result: the potential from the merged parts (one fan-out)
        merged = merge_partials(
            [p.partial(expected, None, output=False, potential=True, order=o) for p, o in zip(parts, orders)],
            k=sep.k,
        )
        energy = energy_from_potential(expected, finish_partial(merged, sep)[1], whole.sim).float()
        want = whole.energy(expected)
        assert torch.allclose(energy, want, atol=1e-5 * want.abs().max().clamp_min(1.0), rtol=1e-5)


@pytest.mark.parametrize("similarity", ["euclidean", "manhattan", "dot", "cosine"])
def test_split_search_names_the_same_rows(fashion_vectors, similarity):
    patterns = torch.cat([fashion_vectors[:900], fashion_vectors[:20]])  # exact duplicates: ties
    whole, parts, orders = _split(patterns, 4, similarity=similarity)
    cue = torch.cat([fashion_vectors[:10] + 0.05, fashion_vectors[:5]])
    mask = torch.rand(cue.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    for m in (None, mask):
        scores, rows = whole.search(cue, k=7, mask=m)
        tops = [p.top(cue, 7, m, order=o)[0] for p, o in zip(parts, orders)]
        merged, _ = merge_tops(tops, 7)
        assert torch.equal(merged.order, rows)  # same rows, same order, ties to the lower
        assert torch.allclose(merged.scores, scores, atol=1e-5, rtol=1e-5)


def test_merge_of_one_part_is_the_part(fashion_vectors):
    """S = 1: merging changes nothing (the single-shard gateway adds no arithmetic error)."""
    m = UniversalHopfield(device="cpu")
    m.store(fashion_vectors[:500])
    cue = fashion_vectors[:4] + 0.1
    out, _ = finish_partial(merge_partials([m.partial(cue)]), m.sep)
    assert torch.allclose(out, m.retrieve(cue), atol=1e-6)


def test_merge_refuses_no_parts():
    with pytest.raises(ValueError, match="no part"):
        merge_partials([])
