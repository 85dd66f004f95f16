"""Memory kinds in RAM: config resolution, batched recall = single recalls, add/remove bookkeeping."""

from __future__ import annotations

import pytest
import torch

from app.kinds import HopfieldMemory
from app.storage import MemoryRecord
from memory_core.data import flatten


def _memory(config=None):
    resolved = HopfieldMemory.resolve_config(config or {}, (1, 28, 28))
    rec = MemoryRecord(
        id=1, name="m", kind="hopfield", shape=(1, 28, 28), text=False, config=resolved, created_at=0.0
    )
    return HopfieldMemory(rec, torch.device("cpu"))


def test_default_config_is_the_measured_one():
    assert HopfieldMemory.resolve_config({}, (784,)) == {
        "similarity": "euclidean",
        "separation": "softmax",
        "beta": 100.0,
        "n": 2.0,
        "k": 5,
        "radius": 0.0,
    }
    assert HopfieldMemory.resolve_config({"beta": 3}, (4,))["beta"] == 3.0
    with pytest.raises(ValueError, match="unknown config key"):
        HopfieldMemory.resolve_config({"dtype": "float16"}, (4,))


def test_batched_recall_equals_single_recalls(fashion):
    m = _memory()
    x = flatten(fashion[:50])
    with m.rw.write():
        m.add(list(range(50)), [f"p{i}" for i in range(50)], x)
    cues = x[:6].clone()
    cues[:, 392:] = 0
    masks = torch.ones_like(cues, dtype=torch.bool)
    masks[:3, 392:] = False  # three masked cues, three whole (zeroed bottom halves count)
    batch = m.recall_batch(cues, masks, k=3, steps=1)
    for b in range(6):
        one = m.recall(cues[b], masks[b], k=3, steps=1)
        assert torch.allclose(one.output, batch[b].output, atol=1e-6)
        assert [i for i, _ in one.matches] == [i for i, _ in batch[b].matches]
        # The best candidates' euclidean distances are computed directly (not from the
        # expanded form, whose rounding depends on the BLAS path): energies agree closely.
        assert one.energy == pytest.approx(batch[b].energy, rel=1e-4, abs=1e-4)
    assert [r.matches[0][0] for r in batch[:3]] == ["p0", "p1", "p2"]


def test_remove_keeps_ids_and_rows_in_step(fashion):
    m = _memory()
    x = flatten(fashion[:10])
    with m.rw.write():
        m.add(list(range(10)), [f"p{i}" for i in range(10)], x)
        m.remove("p0")
        m.remove("p5")
    assert m.ids == ["p1", "p2", "p3", "p4", "p6", "p7", "p8", "p9"] and m.seqs == [1, 2, 3, 4, 6, 7, 8, 9]
    for i in (1, 4, 6, 9):
        assert m.recall(x[i], None, k=1, steps=1).matches[0][0] == f"p{i}"
