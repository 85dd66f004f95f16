"""Model-based: a hypothesis state machine drives a real server with create / store / delete /
recall / restart, keeps a model of what the server must hold, and checks after every step:

- the memories and their counts are the model's;
- each memory's listing is the model's ids in storage order, none twice;
- every stored pattern of a memory that changed (and of every memory after a restart) is
  recalled exactly from a clean cue: its own id first, the stored vector bit for bit.

Patterns are distinct vectors with entries in {0, 1/3, 2/3, 1}: manhattan distances between
them are >= 1/3, and at beta = 1000 softmax gives the nearest weight exactly 1 in float32,
so exact recall is the right expectation. Restarts are SIGKILL or SIGTERM. Bounded:
MAX_EXAMPLES runs of up to STEPS steps, at most one restart per run, no shrinking.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from live_server import LiveServer

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15
STEPS = 40
NAMES = st.sampled_from(["a", "b", "c"])
DIMS = st.sampled_from([6, 10])


def _vector(serial: int, dim: int) -> np.ndarray:
    """The serial-th distinct pattern of dimension dim: its base-4 digits / 3, float32."""
    digits = [(serial >> (2 * j)) & 3 for j in range(dim)]
    return (np.asarray(digits, dtype=np.float32) / np.float32(3)).astype(np.float32)


class ServiceMachine(RuleBasedStateMachine):
    server: LiveServer  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.c = self.server.client()
        for m in self.c.get("/v1/memories").json()["memories"]:  # a clean slate per run
            assert self.c.delete(f"/v1/memories/{m['name']}").status_code == 204
        self.model: dict[str, dict[str, np.ndarray]] = {}  # memory -> id -> vector, in storage order
        self.dims: dict[str, int] = {}
        self.serial = 1  # next distinct pattern (0 would be the zero vector, fine too, but keep it out)
        self.restarts = 0
        self.dirty: set[str] = set()  # memories whose recall must be checked again

    def teardown(self) -> None:
        self.c.close()

    # --- rules ------------------------------------------------------------------------
    @initialize(dims=st.lists(DIMS, min_size=1, max_size=3))
    def create_some(self, dims: list[int]) -> None:
        for name, dim in zip(["a", "b", "c"], dims):
            self.create(name, dim)

    @rule(name=NAMES, dim=DIMS)
    def create(self, name: str, dim: int) -> None:
        r = self.c.post(
            "/v1/memories", json={"name": name, "kind": "hopfield", "shape": [dim], "config": {"beta": 1000}}
        )
        if name in self.model:
            assert r.status_code == 409 and r.json()["error"]["code"] == "memory_exists", r.text
            return
        assert r.status_code == 201, r.text
        assert r.json()["count"] == 0
        self.model[name], self.dims[name] = {}, dim

    @rule(name=NAMES, n=st.integers(1, 5), trouble=st.sampled_from([None, None, None, "taken", "twice"]))
    def store(self, name: str, n: int, trouble: str | None) -> None:
        dim = self.dims.get(name, 6)
        ids = [f"p{self.serial + i}" for i in range(n)]
        vectors = [_vector(self.serial + i, dim) for i in range(n)]
        self.serial += n
        if trouble == "taken" and self.model.get(name):
            ids[-1] = next(iter(self.model[name]))  # an id the memory has already
        elif trouble == "twice" and n > 1:
            ids[-1] = ids[0]  # the same id twice in one batch
        else:
            trouble = None
        body = {"patterns": [{"id": i, "vector": v.tolist()} for i, v in zip(ids, vectors, strict=True)]}
        r = self.c.post(f"/v1/memories/{name}/patterns", json=body)
        if name not in self.model:
            assert r.status_code == 404 and r.json()["error"]["code"] == "memory_not_found", r.text
        elif trouble == "taken":
            assert r.status_code == 409 and r.json()["error"]["code"] == "pattern_exists", r.text
        elif trouble == "twice":
            assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_id", r.text
        else:
            assert r.status_code == 201, r.text
            self.model[name].update(zip(ids, vectors, strict=True))
            assert r.json() == {"ids": ids, "count": len(self.model[name])}
            self.dirty.add(name)

    def _held(self) -> list[tuple[str, str]]:
        return [(name, pid) for name, held in self.model.items() for pid in held]

    @precondition(lambda self: self._held())
    @rule(pick=st.integers(0, 10_000))
    def delete_pattern(self, pick: int) -> None:
        held = self._held()
        name, pid = held[pick % len(held)]
        r = self.c.delete(f"/v1/memories/{name}/patterns/{pid}")
        assert r.status_code == 204, r.text
        del self.model[name][pid]
        self.dirty.add(name)

    @rule(name=NAMES, pid=st.sampled_from(["nope", "p1"]))
    def delete_missing_pattern(self, name: str, pid: str) -> None:
        r = self.c.delete(f"/v1/memories/{name}/patterns/{pid}")
        if name not in self.model:
            assert r.status_code == 404 and r.json()["error"]["code"] == "memory_not_found", r.text
        elif pid not in self.model[name]:
            assert r.status_code == 404 and r.json()["error"]["code"] == "pattern_not_found", r.text
        else:  # p1 may be held
            assert r.status_code == 204, r.text
            del self.model[name][pid]
            self.dirty.add(name)

    @rule(name=NAMES)
    def delete_memory(self, name: str) -> None:
        r = self.c.delete(f"/v1/memories/{name}")
        if name in self.model:
            assert r.status_code == 204, r.text
            del self.model[name], self.dims[name]
            self.dirty.discard(name)
        else:
            assert r.status_code == 404, r.text

    @rule(name=NAMES, pick=st.integers(0, 1000))
    def recall(self, name: str, pick: int) -> None:
        held = list(self.model.get(name, {}).items())
        dim = self.dims.get(name, 6)
        cue = held[pick % len(held)][1] if held else np.zeros(dim, np.float32)
        r = self.c.post(f"/v1/memories/{name}/retrieve", json={"vector": cue.tolist(), "k": 2})
        if name not in self.model:
            assert r.status_code == 404, r.text
        elif not held:
            assert r.status_code == 409 and r.json()["error"]["code"] == "memory_empty", r.text
        else:
            self._check_recall(r, held[pick % len(held)][0], cue, min(2, len(held)))

    @precondition(lambda self: self.restarts < 1)
    @rule(kill=st.booleans(), really=st.integers(0, 3))
    def restart(self, kill: bool, really: int) -> None:
        if really:  # restarts are slow (seconds): one draw in four restarts
            return
        self.c.close()
        self.server.restart(kill=kill)
        self.c = self.server.client()
        self.restarts += 1
        self.dirty |= set(self.model)

    # --- invariants -------------------------------------------------------------------
    @invariant()
    def memories_and_listings_are_the_model(self) -> None:
        listed = {m["name"]: m["count"] for m in self.c.get("/v1/memories").json()["memories"]}
        assert listed == {name: len(held) for name, held in self.model.items()}
        for name, held in self.model.items():
            page = self.c.get(f"/v1/memories/{name}/patterns", params={"limit": 1000}).json()
            assert [p["id"] for p in page["patterns"]] == list(held)  # storage order, none twice
            assert page["next_cursor"] is None

    @invariant()
    def every_stored_pattern_is_recalled_exactly(self) -> None:
        checks = [(name, pid, v) for name in sorted(self.dirty) for pid, v in self.model[name].items()]
        self.dirty.clear()

        def recall(item: tuple[str, str, np.ndarray]) -> None:
            name, pid, vector = item
            r = self.c.post(f"/v1/memories/{name}/retrieve", json={"vector": vector.tolist(), "k": 1})
            self._check_recall(r, pid, vector, 1)

        with ThreadPoolExecutor(8) as pool:  # concurrent, as clients would: batched server-side
            list(pool.map(recall, checks))

    def _check_recall(self, r, pid: str, vector: np.ndarray, k: int) -> None:
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["matches"]) == k
        assert body["matches"][0] == {"id": pid, "score": 0.0}
        assert np.asarray(body["pattern"]["vector"], dtype=np.float32).tobytes() == vector.tobytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LiveServer(tmp_path_factory.mktemp("model") / "data")
    yield srv
    srv.stop()


def test_http_api_against_its_model(server):
    ServiceMachine.server = server
    run_state_machine_as_test(
        ServiceMachine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            # No shrinking: with server restarts in the steps it can take many minutes, past
            # the suite's time budget; a failure is reported with its (unshrunk) steps.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )
