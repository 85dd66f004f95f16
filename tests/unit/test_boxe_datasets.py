"""Nations and UMLS read offline from PyKEEN's wheel, and a short run on real facts."""

from __future__ import annotations

import pytest

from memory_core.boxe import BoxE
from memory_core.boxe.datasets import load_pykeen_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("name", "sizes", "entities", "relations"),
    [
        ("nations", (1592, 199, 201), 14, 55),
        ("umls", (5216, 652, 661), 135, 46),
    ],
)
def test_benchmarks_load_from_the_wheel(name, sizes, entities, relations):
    splits = load_pykeen_dataset(name)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == sizes
    assert (len(splits.entities), len(splits.relations)) == (entities, relations)
    relation, (head, tail) = splits.train[0]
    assert relation in splits.relations and {head, tail} <= splits.entities


def test_unknown_benchmark_is_refused():
    with pytest.raises(ValueError, match="unknown data set"):
        load_pykeen_dataset("freebase")


def test_nations_is_learned_in_a_few_epochs():
    """Filtered MRR on Nations' test set after 15 epochs, far above chance (about 0.25
    for 14 entities); the full comparison with PyKEEN is scripts/bench_boxe.py."""
    splits = load_pykeen_dataset("nations")
    m = BoxE(dim=32, seed=0, device="cpu", batch_size=256)
    m.add_facts(splits.train)
    m.fit(15, progress=False)
    metrics = m.evaluate(splits.test, also_known=splits.valid)
    assert metrics["count"] == 2 * len(splits.test)
    assert metrics["mrr"] > 0.6, metrics
