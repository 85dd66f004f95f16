"""Crash: a real server is SIGKILLed at random moments while clients store (and delete)
patterns concurrently and while a PC memory trains, then restarted on the same data; every
acknowledged pattern must be there, byte for byte, and nothing else.

Each round: a stream of concurrent requests (3 writers storing batches of 1-6 patterns
into a vector memory and a PC memory, as JSON, and into an image memory, as JSON base64
PNGs or multipart files; a deleter removing patterns acknowledged in earlier rounds; a
reader recalling), then SIGKILL after a random delay, then a restart that rebuilds every
memory from disk, then the checks:

- every acknowledged store is there: the vector's float32 bytes, the picture's pixels,
  the caption and the metadata exactly as sent; every acknowledged delete is gone;
- nothing is there that was never sent, no id twice, no batch in part, and the count
  agrees with the listing;
- recall finds stored patterns again.

Every TRAIN_EVERY-th round also trains the PC memory: a short job that finishes before
the kill (then its model must survive it), or a long one that the kill interrupts (then
the last finished model, or none, must be there, whole). After every restart the PC
memory is never "training", has a model if a training ever finished, recalls (or says
409 not_trained when it has none), and keeps one checkpoint file at most.

A process kill leaves the OS page cache intact, so this tests that the service
acknowledges only what it has committed; power-loss safety rests on SQLite's fsyncs.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from live_server import LiveServer
from PIL import Image

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("AMS_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("AMS_CRASH_SEED", "20261129"))
DIM = 32  # the vector memory's D
SIDE = 12  # the image memory's pictures are SIDE x SIDE grey
WRITERS = 3
MAX_KILL_DELAY = 0.6  # seconds after the stream is flowing
TRAIN_EVERY = 4  # rounds; 5 of 20 train the PC memory
PAUSE = 0.02  # seconds between a writer's batches: keeps what each round must verify (GET each) small
PC_CONFIG = {"sizes": [16, 32, DIM], "epochs": 2}  # small: a training job takes ~0.1-10 s here
VECTOR_MEMORIES = ("vec", "pcm")


@dataclass
class Sent:
    """A pattern as sent: its memory, batch, and exact content."""

    memory: str
    batch: str
    raw: bytes  # float32 bytes of the vector, or the picture's uint8 pixels
    text: str
    metadata: dict | None


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across rounds."""

    sent: dict[str, Sent] = field(default_factory=dict)  # id -> pattern
    batches: dict[str, list[str]] = field(default_factory=dict)  # batch -> ids
    acked: dict[str, int] = field(default_factory=dict)  # id -> round it was acknowledged in
    deletes_sent: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)  # acknowledged deletes
    errors: list[str] = field(default_factory=list)
    trained: int = 0  # trained_count of the last training acknowledged as finished
    lock: threading.Lock = field(default_factory=threading.Lock)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def _writer(server: LiveServer, ledger: Ledger, rnd: int, t: int, rng: random.Random) -> None:
    gen = np.random.default_rng(rng.randrange(1 << 30))
    with server.client() as c:
        for b in range(100_000):
            batch = f"r{rnd}-w{t}-b{b}"
            n = rng.randint(1, 6)
            ids = [f"{batch}-{i}" for i in range(n)]
            memory = rng.choice(["vec", "img", "pcm"])
            items: list[Sent] = []
            for pid in ids:
                meta = {"round": rnd, "n": int(gen.integers(1 << 40)), "s": "é\u2603"}
                if memory in VECTOR_MEMORIES:
                    raw = gen.random(DIM, dtype=np.float32).tobytes()
                else:
                    raw = gen.integers(0, 256, (SIDE, SIDE), dtype=np.uint8).tobytes()
                items.append(Sent(memory, batch, raw, f"caption {pid} ✓", meta))
            with ledger.lock:
                ledger.batches[batch] = ids
                ledger.sent.update(zip(ids, items, strict=True))
            try:
                if memory in VECTOR_MEMORIES:
                    body = [
                        {
                            "id": pid,
                            "vector": np.frombuffer(s.raw, np.float32).tolist(),
                            "text": s.text,
                            "metadata": s.metadata,
                        }
                        for pid, s in zip(ids, items, strict=True)
                    ]
                    r = c.post(f"/v1/memories/{memory}/patterns", json={"patterns": body})
                elif b % 2:  # multipart picture files
                    for s in items:  # multipart carries no metadata
                        s.metadata = None
                    files = [
                        (
                            "images",
                            (
                                f"{pid}.png",
                                _png(np.frombuffer(s.raw, np.uint8).reshape(SIDE, SIDE)),
                                "image/png",
                            ),
                        )
                        for pid, s in zip(ids, items, strict=True)
                    ]
                    data = {"ids": ids, "texts": [s.text for s in items]}
                    r = c.post("/v1/memories/img/patterns", files=files, data=data)
                else:  # JSON with base64 pictures
                    body = [
                        {
                            "id": pid,
                            "text": s.text,
                            "metadata": s.metadata,
                            "image": base64.b64encode(
                                _png(np.frombuffer(s.raw, np.uint8).reshape(SIDE, SIDE))
                            ).decode(),
                        }
                        for pid, s in zip(ids, items, strict=True)
                    ]
                    r = c.post("/v1/memories/img/patterns", json={"patterns": body})
            except httpx.TransportError:
                return  # the server died under us: this batch was never acknowledged
            if r.status_code != 201:
                with ledger.lock:
                    ledger.errors.append(f"store {batch}: {r.status_code} {r.text[:300]}")
                return
            with ledger.lock:
                for pid in ids:
                    ledger.acked[pid] = rnd
            time.sleep(PAUSE)


def _deleter(server: LiveServer, ledger: Ledger, rnd: int, rng: random.Random) -> None:
    with ledger.lock:  # patterns acknowledged in earlier rounds, not deleted yet
        victims = [pid for pid, r in ledger.acked.items() if r < rnd and pid not in ledger.deletes_sent]
    rng.shuffle(victims)
    with server.client() as c:
        for pid in victims[:40]:
            with ledger.lock:
                ledger.deletes_sent.add(pid)
            memory = ledger.sent[pid].memory
            try:
                r = c.delete(f"/v1/memories/{memory}/patterns/{pid}")
            except httpx.TransportError:
                return
            if r.status_code != 204:
                with ledger.lock:
                    ledger.errors.append(f"delete {pid}: {r.status_code} {r.text[:300]}")
                return
            with ledger.lock:
                ledger.deleted.add(pid)


def _reader(server: LiveServer, ledger: Ledger, stop: threading.Event, rng: random.Random) -> None:
    with server.client() as c:
        while not stop.is_set():
            with ledger.lock:
                vecs = [pid for pid in ledger.acked if ledger.sent[pid].memory == "vec"]
            cue = np.frombuffer(ledger.sent[rng.choice(vecs)].raw, np.float32) if vecs else np.zeros(DIM)
            try:
                r = c.post("/v1/memories/vec/retrieve", json={"vector": cue.tolist(), "k": 2})
            except httpx.TransportError:
                return
            if r.status_code not in (200, 409):  # 409: the memory is still empty
                with ledger.lock:
                    ledger.errors.append(f"retrieve: {r.status_code} {r.text[:300]}")
                return


def _listing(c: httpx.Client, memory: str) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        r = c.get(f"/v1/memories/{memory}/patterns", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [p["id"] for p in page["patterns"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def _verify(server: LiveServer, ledger: Ledger, rnd: int, rng: random.Random) -> int:
    """Check the restarted server against the ledger; returns how many patterns were compared."""
    where = f"round {rnd} (seed {SEED})"
    compared = 0
    with server.client() as c:
        stored: set[str] = set()
        for memory in ("vec", "img", "pcm"):
            ids = _listing(c, memory)
            assert len(ids) == len(set(ids)), f"{where}: an id listed twice in {memory}"
            assert c.get(f"/v1/memories/{memory}").json()["count"] == len(ids), where
            assert all(ledger.sent[pid].memory == memory for pid in ids if pid in ledger.sent), where
            stored |= set(ids)
        invented = stored - set(ledger.sent)
        assert not invented, f"{where}: never sent, yet stored: {sorted(invented)[:5]}"
        # A delete cut off by the kill may have happened or not; every other one is known.
        lost = set(ledger.acked) - ledger.deletes_sent - stored
        assert not lost, f"{where}: {len(lost)} acknowledged patterns lost, e.g. {sorted(lost)[:5]}"
        back = ledger.deleted & stored
        assert not back, f"{where}: acknowledged deletes came back: {sorted(back)[:5]}"
        for pid in ledger.deletes_sent - ledger.deleted:  # now we know: it is there from here on, or gone
            if pid in stored:
                ledger.deletes_sent.discard(pid)
            else:
                ledger.deleted.add(pid)
        torn = [
            b
            for b, ids in ledger.batches.items()
            if 0 < len(stored & set(ids)) + len(ledger.deleted & set(ids)) < len(ids)
            and not set(ids) & ledger.deletes_sent
        ]
        assert not torn, f"{where}: batches stored in part: {torn[:5]}"
        # Byte for byte: every pattern acknowledged this round (and still there).
        for pid, r in ledger.acked.items():
            if r != rnd or pid in ledger.deleted:
                continue
            sent = ledger.sent[pid]
            got = c.get(f"/v1/memories/{sent.memory}/patterns/{pid}")
            assert got.status_code == 200, f"{where}: {pid}: {got.text}"
            body = got.json()
            if sent.memory in VECTOR_MEMORIES:
                raw = np.asarray(body["vector"], dtype=np.float32).tobytes()
            else:
                raw = _pixels(base64.b64decode(body["image"])).tobytes()
            assert raw == sent.raw, f"{where}: {pid}: content differs"
            assert (body["text"], body["metadata"]) == (sent.text, sent.metadata), f"{where}: {pid}"
            compared += 1
        # Recall finds stored patterns from a clean cue.
        vecs = sorted(pid for pid in stored if ledger.sent[pid].memory == "vec")
        for pid in rng.sample(vecs, min(3, len(vecs))):
            cue = np.frombuffer(ledger.sent[pid].raw, np.float32).tolist()
            r = c.post("/v1/memories/vec/retrieve", json={"vector": cue, "k": 1})
            assert r.status_code == 200 and r.json()["matches"][0]["id"] == pid, f"{where}: {r.text}"
        _verify_pc(c, server, ledger, where)
    return compared


def _verify_pc(c: httpx.Client, server: LiveServer, ledger: Ledger, where: str) -> None:
    """The PC memory after a restart: a whole model if a training ever finished, else none."""
    details = c.get("/v1/memories/pcm").json()
    assert details["state"] in ("untrained", "ready", "stale"), (
        f"{where}: {details}"
    )  # jobs end with the process
    files = sorted(p.name for p in server.data_dir.glob("checkpoints/*/pc-*.safetensors"))
    models = [f for f in files if not f.endswith(".index.safetensors")]  # the index file is its model's
    assert len(models) <= 1, f"{where}: checkpoints left over: {files}"
    assert all(f.split(".")[0] == models[0].split(".")[0] for f in files) if models else not files, (
        f"{where}: index files left over: {files}"
    )
    if ledger.trained:
        assert details["state"] != "untrained" and details["trained_count"] >= ledger.trained, (
            f"{where}: {details}"
        )
    assert (details["state"] == "untrained") == (not files), f"{where}: {details}, {files}"
    cue = np.zeros(DIM, np.float32).tolist()
    r = c.post("/v1/memories/pcm/retrieve", json={"vector": cue, "k": 1})
    if details["state"] == "untrained":
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_trained", f"{where}: {r.text}"
    else:
        assert r.status_code == 200, f"{where}: {r.text}"


def _train(server: LiveServer, ledger: Ledger, rnd: int, long: bool) -> float:
    """Start a training job on the PC memory: short (waits for it to finish, which is then
    acknowledged) or long (returns once it runs, to be killed in the middle). Returns the
    longest the kill may wait, in seconds."""
    with server.client() as c:
        r = c.post("/v1/memories/pcm/train", json={"epochs": 2000 if long else 2})
        assert r.status_code == 202, f"round {rnd}: {r.text}"
        job = r.json()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job['id']}").json()
            if long and job["status"] == "running" and job["epoch"] >= 1:
                return 2.0  # the kill lands within its first seconds: mid-training
            if job["status"] == "succeeded":
                with ledger.lock:
                    ledger.trained = job["patterns"]
                return MAX_KILL_DELAY
            assert job["status"] in ("queued", "running"), f"round {rnd}: {job}"
            time.sleep(0.02)
    raise AssertionError(f"round {rnd}: training job did not get going: {job}")


def _acked_in(ledger: Ledger, rnd: int) -> int:
    with ledger.lock:
        return sum(r == rnd for r in ledger.acked.values())


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path):
    rng = random.Random(SEED)
    ledger = Ledger()
    server = LiveServer(tmp_path / "data", AMS_RECALL_BATCH_WAIT_MS="1")
    try:
        with server.client() as c:
            for body in (
                {"name": "vec", "kind": "hopfield", "shape": [DIM], "config": {"beta": 100}},
                {"name": "img", "kind": "hopfield", "shape": [1, SIDE, SIDE]},
                {"name": "pcm", "kind": "pc", "shape": [DIM], "config": PC_CONFIG},
            ):
                assert c.post("/v1/memories", json=body).status_code == 201
        compared = 0
        trainings = {"finished": 0, "interrupted": 0}
        for rnd in range(ROUNDS):
            stop = threading.Event()
            threads = [
                threading.Thread(target=_writer, args=(server, ledger, rnd, t, random.Random(rng.random())))
                for t in range(WRITERS)
            ]
            threads.append(
                threading.Thread(target=_deleter, args=(server, ledger, rnd, random.Random(rng.random())))
            )
            threads.append(
                threading.Thread(target=_reader, args=(server, ledger, stop, random.Random(rng.random())))
            )
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while _acked_in(ledger, rnd) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)  # until the stream is flowing
            kill_within = MAX_KILL_DELAY
            if rnd % TRAIN_EVERY == TRAIN_EVERY - 1:  # the PC memory has patterns by now
                long = (rnd // TRAIN_EVERY) % 2 == 1  # short and long jobs in turn
                kill_within = _train(server, ledger, rnd, long)
                trainings["interrupted" if long else "finished"] += 1
            time.sleep(rng.uniform(0, kill_within))
            server.kill()  # mid-stream (and mid-training): requests in flight are cut off
            stop.set()
            for t in threads:
                t.join(60)
            assert not ledger.errors, f"round {rnd}: {ledger.errors[:3]}"
            assert _acked_in(ledger, rnd) >= 3, f"round {rnd}: no stream"
            server.start()  # the same data directory, rebuilt from disk
            compared += _verify(server, ledger, rnd, rng)
        # Deletes only touch earlier rounds, so each acknowledged store was compared once.
        assert compared == len(ledger.acked)
        if ROUNDS >= 2 * TRAIN_EVERY:
            assert trainings["finished"] >= 1 and trainings["interrupted"] >= 1 and ledger.trained > 0
        print(
            f"{ROUNDS} kills: {len(ledger.acked)} stores and {len(ledger.deleted)} deletes acknowledged, "
            f"{len(ledger.sent) - len(ledger.acked)} stores in flight at a kill; {compared} compared byte for "
            f"byte; PC trainings finished before a kill {trainings['finished']}, killed mid-job "
            f"{trainings['interrupted']}"
        )
    finally:
        server.stop()
