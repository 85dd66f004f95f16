"""Crash, relational memories: a real server is SIGKILLed while clients store and delete facts
and while the memory trains, then restarted on the same data.

Two rounds. Each: two writers store batches of 1-5 facts (arity 2 and 3, names new and
reused), a deleter deletes facts acknowledged before the round, and a training job runs
(round 1: the memory's first, killed mid-job; round 2: after a short job that finished and
whose answers were read, a long one, killed mid-job). After each restart:

- every acknowledged fact is there under its id, exactly as sent; every acknowledged delete
  is gone; nothing is there that was never sent; no batch is there in part; the count is
  the listing's length;
- the model: never "training"; untrained while no job ever finished (queries 409), else
  the finished job's model is back (its answers for the entities it knew are the same
  scores, bit for bit) and stale; one checkpoint file at most.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from live_server import LiveServer

pytestmark = pytest.mark.slow

SEED = 20261206
CONFIG = {"dim": 8, "negatives": 4, "batch_size": 64}
POOL = [f"e{i}" for i in range(30)]  # entity names the writers reuse


@dataclass
class Ledger:
    sent: dict[tuple, str] = field(default_factory=dict)  # (relation, *args) -> batch
    batches: dict[str, list[tuple]] = field(default_factory=dict)
    acked: dict[tuple, int] = field(default_factory=dict)  # fact -> its id
    deletes_sent: set[tuple] = field(default_factory=set)
    deleted: set[tuple] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(server: LiveServer, ledger: Ledger, rnd: int, t: int, rng: random.Random) -> None:
    with server.client() as c:
        for b in range(100_000):
            batch = f"r{rnd}-w{t}-b{b}"
            facts = []
            for i in range(rng.randint(1, 5)):  # each fact unique: one argument names its batch
                arity = rng.choice([2, 3])
                args = [f"{batch}-{i}", *rng.sample(POOL, arity - 1)]
                rng.shuffle(args)
                facts.append((f"r{arity}", *args))
            with ledger.lock:
                ledger.batches[batch] = facts
                ledger.sent.update(dict.fromkeys(facts, batch))
            body = {"facts": [{"relation": f[0], "args": list(f[1:])} for f in facts]}
            try:
                r = c.post("/v1/memories/kb/facts", json=body)
            except httpx.TransportError:
                return  # the server died under us: never acknowledged
            if r.status_code != 201:
                with ledger.lock:
                    ledger.errors.append(f"store {batch}: {r.status_code} {r.text[:300]}")
                return
            with ledger.lock:
                ledger.acked.update(zip(facts, r.json()["ids"], strict=True))
            time.sleep(0.01)


def _deleter(server: LiveServer, ledger: Ledger, victims: list[tuple]) -> None:
    with server.client() as c:
        for fact in victims:
            with ledger.lock:
                ledger.deletes_sent.add(fact)
            try:
                r = c.delete(f"/v1/memories/kb/facts/{ledger.acked[fact]}")
            except httpx.TransportError:
                return
            if r.status_code != 204:
                with ledger.lock:
                    ledger.errors.append(f"delete {fact}: {r.status_code} {r.text[:300]}")
                return
            with ledger.lock:
                ledger.deleted.add(fact)


def _all_facts(c: httpx.Client) -> dict[tuple, int]:
    out, cursor = {}, None
    while True:
        r = c.get("/v1/memories/kb/facts", params={"limit": 1000} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        for f in r.json()["facts"]:
            fact = (f["relation"], *f["args"])
            assert fact not in out, f"listed twice: {fact}"
            out[fact] = f["id"]
        if (cursor := r.json()["next_cursor"]) is None:
            return out


def _verify_facts(c: httpx.Client, ledger: Ledger, where: str) -> dict[tuple, int]:
    stored = _all_facts(c)
    assert c.get("/v1/memories/kb").json()["count"] == len(stored), where
    invented = set(stored) - set(ledger.sent)
    assert not invented, f"{where}: never sent, yet stored: {sorted(invented)[:3]}"
    lost = set(ledger.acked) - ledger.deletes_sent - set(stored)
    assert not lost, f"{where}: {len(lost)} acknowledged facts lost, e.g. {sorted(lost)[:3]}"
    assert all(stored[f] == i for f, i in ledger.acked.items() if f in stored), f"{where}: ids changed"
    back = ledger.deleted & set(stored)
    assert not back, f"{where}: acknowledged deletes came back: {sorted(back)[:3]}"
    for fact in ledger.deletes_sent - ledger.deleted:  # cut off by the kill: done or not, known now
        (ledger.deleted.add if fact not in stored else ledger.deletes_sent.discard)(fact)
    torn = [
        b
        for b, facts in ledger.batches.items()
        if 0 < len(set(facts) & (set(stored) | ledger.deleted)) < len(facts)
        and not set(facts) & ledger.deletes_sent
    ]
    assert not torn, f"{where}: batches stored in part: {torn[:3]}"
    return stored


def _job(c: httpx.Client, epochs: int, wait_done: bool) -> dict:
    r = c.post("/v1/memories/kb/train", json={"epochs": epochs})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{r.json()['id']}").json()
        if job["status"] == "succeeded" or (
            not wait_done and job["status"] == "running" and job["epoch"] >= 1
        ):
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.02)
    raise AssertionError(f"training did not get going: {job}")


QUERY = {"relation": "r2", "args": ["e0", None], "k": 10_000}


def _round(server: LiveServer, ledger: Ledger, rnd: int, rng: random.Random) -> None:
    with ledger.lock:
        victims = [f for f in ledger.acked if f not in ledger.deletes_sent]
    rng.shuffle(victims)
    threads = [
        threading.Thread(target=_writer, args=(server, ledger, rnd, t, random.Random(rng.random())))
        for t in range(2)
    ]
    threads.append(threading.Thread(target=_deleter, args=(server, ledger, victims[:20])))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(ledger.acked) < 10 * (rnd + 1) and time.monotonic() < deadline:
        time.sleep(0.005)  # until the stream is flowing
    with server.client() as c:
        _job(c, 100_000, wait_done=False)  # a long training, killed mid-job
    time.sleep(rng.uniform(0.1, 0.5))
    server.kill()
    for t in threads:
        t.join(60)
    assert not ledger.errors, f"round {rnd}: {ledger.errors[:3]}"
    server.start()


def test_sigkill_during_fact_stores_and_training_loses_nothing(tmp_path):
    rng = random.Random(SEED)
    ledger = Ledger()
    server = LiveServer(tmp_path / "data")
    try:
        with server.client() as c:
            body = {"name": "kb", "kind": "relational", "config": CONFIG}
            assert c.post("/v1/memories", json=body).status_code == 201
        checkpoints = lambda: list(server.data_dir.glob("checkpoints/*/relational-*.safetensors"))  # noqa: E731

        _round(server, ledger, 0, rng)  # killed during the first training: no model yet
        with server.client() as c:
            _verify_facts(c, ledger, "round 0")
            details = c.get("/v1/memories/kb").json()
            assert details["state"] == "untrained" and not checkpoints(), details
            assert c.post("/v1/memories/kb/query", json=QUERY).json()["error"]["code"] == "not_trained"
            trained = _job(c, 3, wait_done=True)
            before = {
                x["entity"]: x["score"]
                for x in c.post("/v1/memories/kb/query", json=QUERY).json()["candidates"]
            }

        _round(server, ledger, 1, rng)  # facts and a second training after a finished one, killed
        with server.client() as c:
            stored = _verify_facts(c, ledger, "round 1")
            details = c.get("/v1/memories/kb").json()
            assert details["state"] == "stale" and details["trained_count"] == trained["patterns"], details
            assert len(checkpoints()) == 1
            after = {
                x["entity"]: x["score"]
                for x in c.post("/v1/memories/kb/query", json=QUERY).json()["candidates"]
            }
            assert {e: after[e] for e in before} == before  # the finished job's model, bit for bit
        print(
            f"2 kills: {len(ledger.acked)} facts and {len(ledger.deleted)} deletes acknowledged, "
            f"{len(ledger.sent) - len(ledger.acked)} facts in flight at a kill, {len(stored)} stored at the end"
        )
    finally:
        server.stop()
