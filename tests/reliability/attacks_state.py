"""The attacks of issue 22 on memory, jobs and storage (findings 4-7, a full disk), and the
ledger of acknowledged writes kept while attacks run; see attacks.py for the conventions."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from attacks import FULL_KEY, Target, _png, _post
from live_server import LiveServer
from PIL import Image


def warm_up(t: Target) -> None:
    """Serve each path the attacks take once, before any is measured: the first use of a path
    loads code (imports, the caption model, compiled kernels, a first training job's thread
    set-up), which holds the interpreter for up to a few hundred ms once per process; the
    attacks measure what an attacker can repeat."""
    for name in ("vec", "img", "cap"):
        t.fixture(name)
    with t.client(timeout=120) as c:
        _pc_memory(c, "warm-up", {"sizes": [8, 64], "epochs": 2}, count=4)
        job = c.post("/v1/memories/warm-up/train", json={}).json()
        wait_job(c, job.get("id", ""), 60)
        c.post("/v1/memories/warm-up/retrieve", json={"vector": [0.5] * 64})
        c.delete("/v1/memories/warm-up")
        cue = b'{"vector": [' + b"0," * 200_000 + b"0]}"
        for name in ("vec", "img"):
            c.post(f"/v1/memories/{name}/retrieve", content=cue, headers={"Content-Type": "application/json"})
        c.post("/v1/memories/cap/lookup", json={"text": "warm up"})


# --- finding 4: models and batches too large for the machine --------------------------------------
def wait_job(c: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline, job = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    return job


def huge_model(t: Target) -> dict:
    """The write key creates a pc memory with sizes [16000, 16000, 4] and trains it."""
    with t.client(timeout=120) as c:
        c.delete("/v1/memories/huge")
        body = {
            "name": "huge",
            "kind": "pc",
            "shape": [4],
            "config": {"sizes": [16000, 16000, 4], "epochs": 1},
        }
        created = _post(c, "/v1/memories", body)
        if created["status"] != 201:
            return {"create": created, "result": f"create: {created['status']} {created.get('code')}"}
        _post(c, "/v1/memories/huge/patterns", {"patterns": [{"vector": [0.1, 0.2, 0.3, 0.4]}]})
        try:
            r = c.post("/v1/memories/huge/train", json={})
            started = r.status_code
            job = wait_job(c, r.json()["id"], 120) if started == 202 else {}
        except httpx.HTTPError as exc:
            started, job = None, {"status": type(exc).__name__}
        c.delete("/v1/memories/huge")
    return {
        "create": created,
        "result": f"create 201, train {started}: job {job.get('status')} {job.get('error') or ''}".strip(),
    }


def upscaled_batch(t: Target, count: int = 128) -> dict:
    """The write key stores 128 tiny PNGs with ?fit=true into a [3, 512, 512] memory."""
    tiny = _png(Image.new("RGB", (8, 8), (200, 100, 50)))
    with t.client(timeout=180) as c:
        c.delete("/v1/memories/big-pictures")
        c.post("/v1/memories", json={"name": "big-pictures", "kind": "hopfield", "shape": [3, 512, 512]})
        files = [("images", (f"{i}.png", tiny, "image/png")) for i in range(count)]
        start = time.perf_counter()
        try:
            r = c.post("/v1/memories/big-pictures/patterns", params={"fit": "true"}, files=files)
            status, code = (
                r.status_code,
                r.json().get("error", {}).get("code") if r.status_code >= 400 else None,
            )
        except httpx.HTTPError as exc:
            status, code = None, type(exc).__name__
        seconds = time.perf_counter() - start
        try:
            c.delete("/v1/memories/big-pictures")
        except httpx.HTTPError:
            pass
    return {
        "status": status,
        "code": code,
        "result": f"{status or 'no answer'} {code or ''} in {seconds:.1f} s".replace("  ", " "),
    }


# --- finding 5: work without end --------------------------------------------------------------
def _pc_memory(c: httpx.Client, name: str, config: dict, count: int = 16, dim: int = 64) -> int:
    c.delete(f"/v1/memories/{name}")
    status = c.post(
        "/v1/memories", json={"name": name, "kind": "pc", "shape": [dim], "config": config}
    ).status_code
    if status == 201:
        rng = np.random.default_rng(1)
        c.post(
            f"/v1/memories/{name}/patterns",
            json={"patterns": [{"vector": rng.random(dim).round(3).tolist()} for _ in range(count)]},
        )
    return status


def endless_training(t: Target) -> dict:
    """The write key asks for train_steps = 1e9; then a long job is cancelled, and another one's
    memory deleted: how long until each stops, and can the name train again at once."""
    out: dict = {}
    with t.client(timeout=120) as c:
        out["create_1e9"] = _pc_memory(c, "endless", {"sizes": [32, 64], "train_steps": 10**9, "epochs": 2})
        long = {"sizes": [32, 64], "epochs": 100_000, "train_steps": 200, "stop_energy": 0}
        if out["create_1e9"] == 201:  # accepted: train it, as the attacker would
            job = c.post("/v1/memories/endless/train", json={}).json()
        else:
            _pc_memory(c, "endless", long)
            job = c.post("/v1/memories/endless/train", json={}).json()
        time.sleep(1.0)
        start = time.perf_counter()
        c.delete(f"/v1/jobs/{job['id']}")
        stopped = wait_job(c, job["id"], timeout=10)
        out["cancel_s"] = (
            round(time.perf_counter() - start, 2) if stopped.get("status") == "cancelled" else None
        )
        if stopped.get("status") != "cancelled":
            _pc_memory(c, "endless2", long)  # the slot is held: the next memory's job
        else:
            c.delete("/v1/memories/endless")
            _pc_memory(c, "endless", long)
        name = "endless" if stopped.get("status") == "cancelled" else "endless2"
        job2 = c.post(f"/v1/memories/{name}/train", json={}).json()
        time.sleep(0.5)
        start = time.perf_counter()
        deleted = c.delete(f"/v1/memories/{name}")
        out["delete_s"] = round(time.perf_counter() - start, 2)
        _pc_memory(c, name, {"sizes": [8, 64], "epochs": 1})
        again = c.post(f"/v1/memories/{name}/train", json={})
        out["train_again"] = again.status_code
        gone = wait_job(c, job2.get("id", ""), timeout=10)
        for n in ("endless", "endless2"):
            c.delete(f"/v1/memories/{n}")
    cancel = (
        f"cancel: stopped in {out['cancel_s']} s"
        if out["cancel_s"] is not None
        else "cancel: still running after 10 s"
    )
    out["result"] = (
        f"train_steps 1e9: {out['create_1e9']}; {cancel}; delete {deleted.status_code} in {out['delete_s']} s "
        f"(its job: {gone.get('status')}); same name trains again: {out['train_again']}"
    )
    return out


def starved_jobs(t: Target) -> dict:
    """One memory's long job holds the only training slot; how long does another memory's
    5-epoch job take?"""
    with t.client(timeout=120) as c:
        _pc_memory(c, "hog", {"sizes": [32, 64], "epochs": 100_000, "train_steps": 50, "stop_energy": 0})
        _pc_memory(c, "small", {"sizes": [8, 64], "epochs": 5})
        hog = c.post("/v1/memories/hog/train", json={}).json()
        time.sleep(0.5)
        start = time.perf_counter()
        small = c.post("/v1/memories/small/train", json={}).json()
        job = wait_job(c, small["id"], timeout=30)
        seconds = time.perf_counter() - start
        c.delete(f"/v1/jobs/{hog['id']}")
        wait_job(c, hog["id"], timeout=30)
        for n in ("hog", "small"):
            c.delete(f"/v1/memories/{n}")
    done = job.get("status") == "succeeded"
    return {
        "small_job_s": round(seconds, 1) if done else None,
        "result": f"the other job finished in {seconds:.1f} s"
        if done
        else "the other job: still queued after 30 s",
    }


# --- finding 6: inputs that got a 500 ----------------------------------------------------------
def _status_of(call: Callable[[], httpx.Response]) -> int | str:
    try:
        return call().status_code
    except httpx.HTTPError as exc:  # the connection dropped: no answer
        return type(exc).__name__


def five_hundreds(t: Target, races: int = 30) -> dict:
    """Each input that was answered 500: long captions and text queries, a cursor past 2^63,
    a polynomial of order 1e308, a pc seed of 2^70, deletes racing train starts."""
    t.fixture("cap")
    t.fixture("vec")
    seen: dict[str, int | str] = {}
    with t.client(timeout=60) as c:
        caption = {"patterns": [{"vector": [0.5] * 16, "text": "a" * 3000}]}
        seen["caption 3000 chars"] = _status_of(lambda: c.post("/v1/memories/cap/patterns", json=caption))
        seen["lookup text 3000 chars"] = _status_of(
            lambda: c.post("/v1/memories/cap/lookup", json={"text": "a " * 1500})
        )
        cursor = base64.urlsafe_b64encode(str(2**64).encode()).decode().rstrip("=")
        seen["cursor 2^64"] = _status_of(
            lambda: c.get("/v1/memories/vec/patterns", params={"cursor": cursor})
        )
        c.delete("/v1/memories/poly")
        poly = {
            "name": "poly",
            "kind": "hopfield",
            "shape": [4],
            "config": {"separation": "polynomial", "n": 1e308},
        }
        seen["polynomial n = 1e308"] = _status_of(lambda: c.post("/v1/memories", json=poly))
        if seen["polynomial n = 1e308"] == 201:
            stored = {"patterns": [{"vector": [0.1, 0.2, 0.3, 0.4]}, {"vector": [0.9, 0.1, 0.5, 0.2]}]}
            c.post("/v1/memories/poly/patterns", json=stored)
            cue = {"vector": [0.1, 0.2, 0.3, 0.5]}
            seen["polynomial n = 1e308"] = _status_of(lambda: c.post("/v1/memories/poly/retrieve", json=cue))
        try:
            seen["pc seed 2^70"] = _pc_memory(c, "seeded", {"sizes": [8, 64], "seed": 2**70, "epochs": 1})
            if seen["pc seed 2^70"] == 201:
                job = c.post("/v1/memories/seeded/train", json={}).json()
                done = wait_job(c, job.get("id", ""), 60)
                seen["pc seed 2^70"] = (
                    "job failed" if done.get("status") == "failed" else "job " + str(done.get("status"))
                )
        except httpx.HTTPError as exc:  # the connection dropped: no answer
            seen["pc seed 2^70"] = type(exc).__name__
        race: Counter[str] = Counter()
        for i in range(races):
            name = f"race{i}"
            try:
                _pc_memory(c, name, {"sizes": [8, 64], "epochs": 50}, count=4)
                results = _race(t, name)
                race.update(f"{k} {v}" for k, v in results.items())
                if results.get("delete") == 204 and results.get("gone") == 200:
                    race["deleted, yet still there"] += 1
                c.delete(f"/v1/memories/{name}")
            except httpx.HTTPError as exc:  # a dropped connection: no answer (counted as a 5xx)
                race[f"no answer ({type(exc).__name__}) 5xx"] += 1
        fives = sum(n for k, n in race.items() if k.split()[-1].startswith("5"))
        seen["delete racing train: 5xx"] = fives + race["deleted, yet still there"]
        for name in ("poly", "seeded"):
            c.delete(f"/v1/memories/{name}")
    bad = [k for k, v in seen.items() if (v != 0 if k.endswith("5xx") else v != 422)]
    shown = ", ".join(f"{k}: {seen[k]}" for k in bad) or "none"
    return {
        "seen": seen,
        "race": dict(race),
        "result": f"not a 4xx: {shown}; races {dict(sorted(race.items()))}",
    }


def _race(t: Target, name: str) -> dict[str, int]:
    """POST .../train and DELETE the memory at the same moment, from two connections."""
    results: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def call(what: str) -> None:
        with t.client(timeout=60) as c:
            barrier.wait()
            if what == "train":
                results[what] = c.post(f"/v1/memories/{name}/train", json={}).status_code
            else:
                results[what] = c.delete(f"/v1/memories/{name}").status_code
                results["gone"] = c.get(f"/v1/memories/{name}").status_code  # 404 once deleted

    threads = [threading.Thread(target=call, args=(w,)) for w in ("train", "delete")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return results


# --- finding 7: one damaged memory -------------------------------------------------------------
def build_damaged(server: LiveServer) -> dict:
    """Fill the server with a healthy memory and five to damage (a NaN vector, a vector of the
    wrong length, a config this version refuses, a pc checkpoint whose header is flipped, and
    one whose weights hold a NaN), stop it, damage them on disk and start it again."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {FULL_KEY}"}, timeout=120) as c:
        rng = np.random.default_rng(2)
        for name in ("healthy", "nan-vector", "short-vector", "bad-config"):
            c.post("/v1/memories", json={"name": name, "kind": "hopfield", "shape": [8]})
            c.post(
                f"/v1/memories/{name}/patterns",
                json={"patterns": [{"id": f"p{i}", "vector": rng.random(8).tolist()} for i in range(4)]},
            )
        for name in ("bad-header", "nan-weights"):
            _pc_memory(c, name, {"sizes": [4, 8], "epochs": 3}, count=4, dim=8)
            wait_job(c, c.post(f"/v1/memories/{name}/train", json={}).json()["id"], 120)
        ids = {m["name"]: m for m in c.get("/v1/memories").json()["memories"]}
    server.stop()
    db = sqlite3.connect(server.data_dir / "ams.sqlite3")
    mid = {name: db.execute("SELECT id FROM memories WHERE name = ?", (name,)).fetchone()[0] for name in ids}
    db.execute(
        "UPDATE patterns SET vector = ? WHERE memory_id = ? AND pid = 'p1'",
        (np.full(8, np.nan, "<f4").tobytes(), mid["nan-vector"]),
    )
    db.execute(
        "UPDATE patterns SET vector = ? WHERE memory_id = ? AND pid = 'p2'",
        (np.zeros(5, "<f4").tobytes(), mid["short-vector"]),
    )
    db.execute(
        "UPDATE memories SET config = ? WHERE id = ?", ('{"similarity": "no-such"}', mid["bad-config"])
    )
    extras = {
        n: json.loads(db.execute("SELECT extra FROM memories WHERE id = ?", (mid[n],)).fetchone()[0])
        for n in ("bad-header", "nan-weights")
    }
    db.commit()
    db.close()
    for name, how in (("bad-header", "header"), ("nan-weights", "weights")):
        path = server.data_dir / "checkpoints" / str(mid[name]) / extras[name]["checkpoint"]
        data = bytearray(path.read_bytes())
        if how == "header":
            data[8:40] = b"\xff" * 32  # the JSON header's start
        else:  # a NaN for the first weight, in a checkpoint without a checksum (as older ones are)
            size = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + size])
            header.get("__metadata__", {}).pop("sha256", None)
            text = json.dumps(header).encode()
            data = bytearray(len(text).to_bytes(8, "little") + text + data[8 + size :])
            data[8 + len(text) : 8 + len(text) + 4] = struct.pack("<f", float("nan"))
        path.write_bytes(bytes(data))
    server.start_anyway()
    return mid


def damaged_memories(t: Target) -> dict:
    """After ``build_damaged``: is the service ready, does the healthy memory serve, and what do
    the damaged ones answer?"""
    out: dict = {}
    with t.client(timeout=60) as c:
        ready = c.get("/readyz")
        out["ready"] = ready.status_code
        out["healthy_recall"] = c.post(
            "/v1/memories/healthy/retrieve", json={"vector": [0.5] * 8}
        ).status_code
        for name in ("nan-vector", "short-vector", "bad-config", "bad-header", "nan-weights"):
            details = c.get(f"/v1/memories/{name}")
            recall = c.post(f"/v1/memories/{name}/retrieve", json={"vector": [0.5] * 8})
            out[name] = {
                "details": details.status_code,
                "state": details.json().get("state") if details.status_code == 200 else None,
                "recall": recall.status_code,
                "code": recall.json().get("error", {}).get("code") if recall.status_code >= 400 else None,
            }
    damaged = ", ".join(
        f"{k}: {v['recall']} {v['code'] or ''}".strip() for k, v in out.items() if isinstance(v, dict)
    )
    out["result"] = f"/readyz {out['ready']}; healthy memory's recall {out['healthy_recall']}; {damaged}"
    return out


def emptied_database(server: LiveServer, train: bool = True) -> dict:
    """A pc memory with a checkpoint (trained here unless ``train`` is False: one is there
    already); the server stops; its database file is emptied (0 bytes, as a botched restore
    or copy leaves it) and the server starts on it again."""
    if train:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {FULL_KEY}"}, timeout=120
        ) as c:
            _pc_memory(c, "trained", {"sizes": [4, 8], "epochs": 3}, count=4, dim=8)
            wait_job(c, c.post("/v1/memories/trained/train", json={}).json()["id"], 120)
    server.stop()
    for name in ("ams.sqlite3-wal", "ams.sqlite3-shm"):
        (server.data_dir / name).unlink(missing_ok=True)
    (server.data_dir / "ams.sqlite3").write_bytes(b"")
    before = sorted(p.name for p in (server.data_dir / "checkpoints").rglob("*.safetensors"))
    server.start_anyway()
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    after = sorted(p.name for p in (server.data_dir / "checkpoints").rglob("*.safetensors"))
    kept = len(after) == len(before) > 0
    reason = ready.json().get("error", {}).get("message", "") if ready.status_code != 200 else ""
    return {
        "ready": ready.status_code,
        "checkpoints_kept": kept,
        "reason": reason,
        "result": f"/readyz {ready.status_code}; checkpoints {'kept' if kept else 'deleted'}",
    }


# --- nothing acknowledged lost ------------------------------------------------------------------
class Ledger:
    """A writer storing small batches into memory ``ledger`` while attacks run; every store it
    got 201 for is acknowledged (``check`` later: all of them there, after a restart too)."""

    def __init__(self, t: Target) -> None:
        self.t, self.acked, self.errors = t, [], Counter()
        self._stop = threading.Event()
        with t.client() as c:
            if c.get("/v1/memories/ledger").status_code == 404:
                c.post("/v1/memories", json={"name": "ledger", "kind": "hopfield", "shape": [4]})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            ids = [f"l{n}-{i}" for i in range(3)]
            body = {
                "patterns": [{"id": pid, "vector": [n % 7 / 7, i / 3, 0.5, 1.0]} for i, pid in enumerate(ids)]
            }
            try:
                with self.t.client(timeout=30) as c:
                    r = c.post("/v1/memories/ledger/patterns", json=body)
                if r.status_code == 201:
                    self.acked.extend(ids)
                else:
                    self.errors[r.status_code] += 1
            except httpx.HTTPError as exc:
                self.errors[type(exc).__name__] += 1
            n += 1
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def missing(self) -> list[str]:
        """The acknowledged ids the server does not list."""
        with self.t.client() as c:
            have = listed_ids(c, "ledger")
        return [pid for pid in self.acked if pid not in have]


def listed_ids(c: httpx.Client, memory: str) -> set[str]:
    """The ids of every pattern the server lists for ``memory`` (all pages)."""
    have: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = c.get(f"/v1/memories/{memory}/patterns", params=params).json()
        have |= {p["id"] for p in page["patterns"]}
        cursor = page["next_cursor"]
        if not cursor:
            return have


# --- disk full ----------------------------------------------------------------------------------
def disk_full(server: LiveServer, ballast: Path) -> dict:
    """On a small filesystem: fill it (a ballast file), store until a store fails, free the
    space, store again, restart; the failed stores must be nowhere, the acknowledged ones all there."""
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    acked, failed, answers = [], [], Counter()
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        c.post("/v1/memories", json={"name": "full", "kind": "hopfield", "shape": [256]})
        stat = os.statvfs(ballast.parent)
        with open(ballast, "wb") as fh:  # leave about 256 KiB
            fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - (256 << 10)))
        rng = np.random.default_rng(3)
        for n in range(400):
            ids = [f"d{n}-{i}" for i in range(8)]
            body = {"patterns": [{"id": pid, "vector": rng.random(256).tolist()} for pid in ids]}
            try:
                r = c.post("/v1/memories/full/patterns", json=body)
                code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1
                failed.extend(ids)
                break
            answers[f"{r.status_code} {code}".strip()] += 1
            (acked if r.status_code == 201 else failed).extend(ids)
            if r.status_code != 201 and len(failed) >= 24:
                break
        ballast.unlink()
        try:
            after_status = c.post(
                "/v1/memories/full/patterns", json={"patterns": [{"id": "after", "vector": [0.5] * 256}]}
            ).status_code
        except httpx.HTTPError as exc:  # the server went away under the full disk
            after_status = type(exc).__name__
        if after_status == 201:
            acked.append("after")
    alive = server.alive
    server.restart(kill=True)
    have: set[str] = set()
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            have = listed_ids(c, "full")
    except (httpx.HTTPError, KeyError) as exc:  # the restarted server does not list them
        answers[f"after a restart: {type(exc).__name__}"] += 1
    lost = [pid for pid in acked if pid not in have]
    ghosts = [pid for pid in failed if pid in have]
    refusals = {k: v for k, v in answers.items() if not k.startswith("201")}
    return {
        "answers": dict(answers),
        "lost": len(lost),
        "ghosts": len(ghosts),
        "stored_after": after_status,
        "server_survived": alive,
        "result": f"full disk answered {refusals}; after freeing space {after_status}"
        f"{'' if alive else ' (the server had died)'}; "
        f"acknowledged lost: {len(lost)}, failed stores visible: {len(ghosts)}",
    }
