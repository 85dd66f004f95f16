"""Kind "relational" in RAM, without HTTP: the journal of changes a training job replays, when
jobs overlap the way the job manager lets them (the next one submitted before the last one's
``training_ended`` has run)."""

from __future__ import annotations

import pytest
import torch

from app.jobs import JobContext, JobManager, JobRecord
from app.kinds import RelationalKind
from app.storage import SQLiteStorage

pytestmark = pytest.mark.usefixtures("one_thread")


def _facts(prefix: str, n: int) -> list[tuple[str, tuple[str, ...]]]:
    return [("next", (f"{prefix}{i}", f"{prefix}{i + 1}")) for i in range(n)]


def _train(live: RelationalKind, storage: SQLiteStorage, manager: JobManager, epochs: int):
    with live.writing:  # as Registry.train calls it
        work, _, _ = live.training(storage, epochs)
    return work, JobContext(manager, JobRecord(id=f"job-{epochs}", memory=live.name, kind="train"))


def test_changes_during_a_job_reach_its_model_when_the_last_job_ends_late(tmp_path):
    storage = SQLiteStorage(tmp_path)
    config = RelationalKind.resolve_config({"dim": 4, "negatives": 2}, ())
    record = storage.create_memory("kb", "relational", (), False, config)
    live = RelationalKind(record, torch.device("cpu"))
    manager = JobManager()
    live.store_facts(storage, _facts("a", 5))

    first, ctx1 = _train(live, storage, manager, 2)
    first(ctx1)  # the first job trains and swaps in its model ...
    second, ctx2 = _train(live, storage, manager, 3)  # ... the next is made at once ...
    live.training_ended("succeeded")  # ... before the first one's end is reported
    assert live.state == "training"
    live.store_facts(storage, _facts("b", 4))  # while the second job trains
    second(ctx2)
    live.training_ended("succeeded")

    stored = {(f.relation, f.args) for f in storage.page_facts(record.id, -1, 100)}
    assert set(live.model.stored_facts()) == stored and len(stored) == 9
    assert live.state == "stale" and live.trained_count == 5 and live.count == 9
    assert any(c.known for c in live.query("next", ["b0", None], 100, False).candidates)
    storage.close()
