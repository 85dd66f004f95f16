"""Against a real uvicorn process: the default data directory, chunked bodies over the
limit, and SIGKILL during a stream of concurrent stores (several rounds) losing no
acknowledged pattern and tearing no batch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

DIM = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A service process started the way the README says, in ``cwd`` (data under ./data)."""

    def __init__(self, cwd: Path, command: str = "uvicorn", **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
        environ.update(env)
        if command == "uvicorn":
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        else:  # python -m app (what `make run` runs), port from the environment
            argv = [sys.executable, "-m", "app"]
            environ.update(AMS_PORT=str(self.port), AMS_LOG_LEVEL="warning")
        self.log = open(cwd / f"server-{self.port}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self._log_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s: {self._log_text()}")

    def _log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.log.close()


def _vector(pid: str) -> list[float]:
    """The vector stored under an id, recomputable after a restart."""
    return np.random.default_rng(zlib.crc32(pid.encode())).random(DIM, dtype=np.float32).tolist()


def _all_ids(client: httpx.Client, name: str) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/memories/{name}/patterns", params=params).json()
        ids += [p["id"] for p in page["patterns"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.slow
def test_sigkill_during_concurrent_stores_loses_no_acknowledged_pattern(tmp_path):
    server = Server(tmp_path, command="python -m app")  # README's run command, embedded defaults
    assert (tmp_path / "data" / "ams.sqlite3").exists()  # SQLite under ./data
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert (
            c.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [DIM]}).status_code == 201
        )
    acked: set[str] = set()
    sent: dict[str, list[str]] = {}  # batch -> ids, every batch sent (acknowledged or not)
    lock = threading.Lock()
    try:
        for rnd in range(3):
            stop = threading.Event()
            recall_errors: list[str] = []

            def store(t: int, server=server, rnd=rnd) -> None:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    for b in range(10_000):
                        ids = [f"r{rnd}-t{t}-b{b}-{i}" for i in range(4)]
                        with lock:
                            sent[ids[0]] = ids
                        try:
                            r = c.post(
                                "/v1/memories/m/patterns",
                                json={"patterns": [{"id": i, "vector": _vector(i)} for i in ids]},
                            )
                        except httpx.TransportError:
                            return  # the server died under us: this batch was never acknowledged
                        assert r.status_code == 201, r.text
                        with lock:
                            acked.update(ids)

            def recall(server=server, stop=stop, recall_errors=recall_errors) -> None:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    while not stop.is_set():
                        try:
                            r = c.post("/v1/memories/m/retrieve", json={"vector": _vector("probe"), "k": 2})
                        except httpx.TransportError:
                            return
                        if r.status_code not in (200, 409):  # 409: still empty in round 0
                            recall_errors.append(r.text)

            threads = [threading.Thread(target=store, args=(t,)) for t in range(4)]
            threads.append(threading.Thread(target=recall))
            start = len(acked)
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while len(acked) - start < 40 and time.monotonic() < deadline:  # a stream is flowing
                time.sleep(0.02)
            server.kill()  # mid-stream: requests in flight
            stop.set()
            for t in threads:
                t.join(60)
            assert len(acked) - start >= 40 and recall_errors == []

            server = Server(tmp_path, command="uvicorn")  # rebuilt from ./data
            with httpx.Client(base_url=server.url, timeout=30) as c:
                ids = _all_ids(c, "m")
                stored = set(ids)
                assert len(ids) == len(stored) == c.get("/v1/memories/m").json()["count"]
                lost = acked - stored
                assert not lost, (
                    f"round {rnd}: {len(lost)} acknowledged patterns lost, e.g. {sorted(lost)[:5]}"
                )
                torn = [b for b, bids in sent.items() if 0 < len(stored & set(bids)) < len(bids)]
                assert not torn, f"round {rnd}: batches stored in part: {torn[:5]}"
                assert stored <= {i for bids in sent.values() for i in bids}
                # Contents survive too, and recall finds them.
                for pid in sorted(acked)[:: max(1, len(acked) // 5)]:
                    assert c.get(f"/v1/memories/m/patterns/{pid}").json()["vector"] == _vector(pid)
                    r = c.post("/v1/memories/m/retrieve", json={"vector": _vector(pid)}).json()
                    assert r["matches"][0]["id"] == pid
    finally:
        server.stop()


def test_chunked_body_over_the_limit_on_a_real_server(tmp_path):
    server = Server(tmp_path, AMS_MAX_REQUEST_BYTES=str(256 * 1024))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert (
                c.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [4]}).status_code
                == 201
            )

            def body():  # no Content-Length: Transfer-Encoding: chunked
                yield b'{"patterns": [{"vector": [1, 2, 3, 4], "text": "'
                for _ in range(80):
                    yield b"x" * 4096
                yield b'"}]}'

            r = c.post(
                "/v1/memories/m/patterns", content=body(), headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        with httpx.Client(base_url=server.url, timeout=30) as c:  # a fresh connection: nothing was stored
            assert c.get("/v1/memories/m").json()["count"] == 0
            r = c.post("/v1/memories/m/patterns", json={"patterns": [{"vector": [1, 2, 3, 4]}]})
            assert r.status_code == 201
    finally:
        server.stop()
