"""Typed errors and retries of ``ams_client``.

Every error type the service can answer is raised from a real answer of a real service
process (the shared one of conftest.py, and one whose storage cannot be recovered, which
answers 503 ``not_ready``). 429 (the service has no rate limits yet) and a proxy's 502
come from a scripted HTTP server, which also shows the retry policy at work: what was
retried, how long the client waited (Retry-After), what was not repeated.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from ams_client import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    NetworkError,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from live_server import LiveServer, free_port
from loop_thread import run_async

pytestmark = pytest.mark.timeout(300)

MEMORY = {
    "name": "m", "kind": "hopfield", "shape": [4], "dim": 4, "text": False, "config": {}, "count": 0,
    "state": "ready", "trained_count": 0, "created_at": "2025-01-01T12:00:00Z",
}  # fmt: skip
INFO = {
    "version": "0", "device": "cpu", "cuda": False, "kinds": ["hopfield"], "similarities": [], "separations": [],
    "default_configs": {}, "auth": False,
    "limits": {"max_request_bytes": 1 << 20, "max_image_pixels": 1 << 20, "max_batch": 100, "max_dim": 1 << 20,
               "max_page": 1000, "max_k": 100, "max_steps": 100},
}  # fmt: skip


def error_body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": f"scripted {code}", "details": None}}).encode()


class Scripted:
    """A real HTTP/1.1 server on a free port that answers each request with the next of its
    scripted (status, headers, body) and records (method, path, body, arrival time)."""

    def __init__(self, *responses: tuple[int, dict[str, str], bytes]) -> None:
        self.responses = list(responses)
        self.seen: list[tuple[str, str, bytes, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path, body, time.monotonic()))
                status, headers, payload = outer.responses.pop(0)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def gaps(self) -> list[float]:
        """Seconds between successive requests."""
        return [b[3] - a[3] for a, b in zip(self.seen, self.seen[1:], strict=False)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    def make(*responses: tuple[int, dict[str, str], bytes]) -> Scripted:
        made.append(Scripted(*responses))
        return made[-1]

    yield make
    for server in made:
        server.close()


# --- retries ------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_503_with_retry_after_is_waited_out_then_answered(scripted, flavour) -> None:
    server = scripted(
        (503, {"Retry-After": "1"}, error_body("not_ready")), (200, {}, json.dumps(MEMORY).encode())
    )
    if flavour == "sync":
        with Client(server.url, max_retries=2) as client:
            memory = client.get_memory("m")
    else:

        async def get() -> object:
            async with AsyncClient(server.url, max_retries=2) as client:
                return await client.get_memory("m")

        memory = run_async(get())
    assert memory.name == "m" and memory.shape == (4,)
    assert [(m, p) for m, p, _, _ in server.seen] == [("GET", "/v1/memories/m")] * 2
    assert server.gaps()[0] >= 0.95  # Retry-After: 1 honoured


def test_429_with_a_date_is_honoured_for_a_store_and_the_same_body_sent_again(scripted) -> None:
    later = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1..2 s
    server = scripted(
        (200, {}, json.dumps(INFO).encode()),
        (429, {"Retry-After": later}, error_body("rate_limited")),
        (201, {}, json.dumps({"ids": ["a", "b"], "count": 2}).encode()),
    )
    with Client(server.url) as client:
        result = client.store("m", np.eye(2, 4), ids=["a", "b"])
    assert result.ids == ["a", "b"] and result.count == 2
    (_, _, _, _), first, second = server.seen
    assert first[:3] == second[:3] and first[0] == "POST"  # the store, sent again unchanged
    assert json.loads(first[2]) == {
        "patterns": [{"id": "a", "vector": [1, 0, 0, 0]}, {"id": "b", "vector": [0, 1, 0, 0]}]
    }
    assert server.gaps()[1] >= 0.9


def test_a_503_that_may_have_stored_is_not_repeated(scripted) -> None:
    """The Ray mode's 503 with ``details.stored_unknown`` (a store that some shard may have
    kept): raised with those ids, not sent again."""
    doubt = {"code": "shard_unavailable", "message": "shard 1 of 2 ...", "details": {"stored_unknown": ["b"]}}
    server = scripted(
        (200, {}, json.dumps(INFO).encode()),
        (503, {"Retry-After": "0"}, json.dumps({"error": doubt}).encode()),
    )
    with Client(server.url, max_retries=3) as client, pytest.raises(Unavailable) as err:
        client.store("m", np.eye(2, 4), ids=["a", "b"])
    assert [m for m, _, _, _ in server.seen] == ["GET", "POST"]  # info, then the store once
    assert err.value.details == {"stored_unknown": ["b"]} and err.value.stored is None


def test_a_proxys_502_is_retried_for_reads_only(scripted) -> None:
    server = scripted(
        (502, {}, b"<html>bad gateway</html>"), (200, {}, json.dumps({"memories": [MEMORY]}).encode())
    )
    with Client(server.url, backoff=0.01) as client:
        assert [m.name for m in client.list_memories()] == ["m"]
    assert len(server.seen) == 2
    server = scripted((502, {}, b"<html>bad gateway</html>"))
    with Client(server.url, backoff=0.01) as client, pytest.raises(ServerError) as err:
        client.create_memory("m", 4)  # not known to be safe to repeat: raised at once
    assert len(server.seen) == 1
    assert (err.value.status, err.value.code, err.value.message) == (
        502,
        "http_502",
        "<html>bad gateway</html>",
    )


def test_retries_give_up_with_the_typed_error(scripted) -> None:
    server = scripted(*[(503, {"Retry-After": "0"}, error_body("not_ready"))] * 3)
    with Client(server.url, max_retries=2) as client, pytest.raises(Unavailable) as err:
        client.info()
    assert len(server.seen) == 3 and err.value.code == "not_ready" and err.value.retry_after == 0
    server = scripted((429, {"Retry-After": "3600"}, error_body("rate_limited")))
    with Client(server.url, max_retry_wait=30) as client, pytest.raises(RateLimited) as err:
        client.info()  # an hour is more than the client will wait: raised at once
    assert len(server.seen) == 1 and err.value.retry_after == 3600 and err.value.status == 429
    server = scripted((503, {}, error_body("not_ready")))
    with Client(server.url, max_retries=0) as client, pytest.raises(Unavailable):
        client.info()
    assert len(server.seen) == 1


def test_network_errors() -> None:
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with (
        Client(f"http://127.0.0.1:{port}", max_retries=2, backoff=0.01) as client,
        pytest.raises(NetworkError) as err,
    ):
        client.create_memory("m", 4)  # a connection never opened: safe to retry even a create
    assert err.value.code == "connection_error" and err.value.status is None and time.monotonic() - start < 5
    silent = Silent()  # accepts connections and never answers
    try:
        with Client(silent.url, timeout=0.3, max_retries=1, backoff=0.01) as client:
            start = time.monotonic()
            with pytest.raises(NetworkError) as err:
                client.get_memory("m")  # a read: retried once after its timeout
            assert err.value.code == "timeout" and time.monotonic() - start >= 0.6
            assert silent.wait_for(2) == 2
            with pytest.raises(NetworkError) as err:
                client.train("m")  # a write that may have happened: not repeated
            assert err.value.code == "timeout"
            time.sleep(0.3)
            assert silent.wait_for(3) == 3  # one more connection, not two
    finally:
        silent.close()


class Silent:
    """A TCP server that accepts connections, counts them, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def wait_for(self, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while len(self.held) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.held)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


# --- every error type from a real answer ---------------------------------------------------
def test_errors_from_the_service(ams, ams_server, fresh) -> None:
    name = fresh("err")
    ams.create_memory(name, 4)
    cases = [
        (lambda: ams.request("POST", "/v1/memories", content=b"{not json"), BadRequest, 400, "invalid_json"),
        (
            lambda: ams.request("POST", f"/v1/memories/{name}/patterns", content=b"x", headers={"Content-Type": "text/plain"}),
            BadRequest, 415, "unsupported_media_type",
        ),
        (
            lambda: ams.request("GET", f"/v1/memories/{name}/patterns/a", headers={"Accept": "image/png"}),
            BadRequest, 406, "not_acceptable",
        ),
        (lambda: ams.create_memory(fresh("bad"), (0,)), ValidationError, 422, "validation_error"),
        (lambda: ams.store(name, np.ones((1, 5))), ValidationError, 422, "dimension_mismatch"),
        (lambda: ams.retrieve(name, np.ones(4), k=1000), ValidationError, 422, "k_too_large"),
        (lambda: ams.get_memory(fresh("missing")), NotFound, 404, "memory_not_found"),
        (lambda: ams.job("0123abcd"), NotFound, 404, "job_not_found"),
        (lambda: ams.create_memory(name, 4), Conflict, 409, "memory_exists"),
        (lambda: ams.retrieve(name, np.ones(4)), Conflict, 409, "memory_empty"),
    ]  # fmt: skip
    for call, cls, status, code in cases:
        with pytest.raises(cls) as err:
            call()
        e = err.value
        assert isinstance(e, ApiError) and (e.status, e.code) == (status, code), (code, repr(e))
        assert e.message and code in str(e) and e.message in str(e)
    with pytest.raises(ValidationError) as err:
        ams.create_memory(fresh("bad"), (0,))
    assert (
        isinstance(err.value.details, list) and err.value.details
    )  # pydantic's errors, as the service gives them


def test_too_large_from_the_service(ams, ams_server, fresh) -> None:
    name = fresh("wide")
    ams.create_memory(name, 20_000)  # one pattern's JSON is over the 64 KiB requests: no split helps
    with pytest.raises(TooLarge) as err:
        ams.store(name, np.full((1, 20_000), 0.123456))
    assert (err.value.status, err.value.code, err.value.stored) == (413, "request_too_large", None)
    pictures = fresh("pic")
    ams.create_memory(pictures, (1, 28, 28))
    ams.store(pictures, np.zeros((1, 1, 28, 28)))
    big = np.zeros((1, 400, 400))  # 160 000 pixels > AMS_MAX_IMAGE_PIXELS = 100 000
    with pytest.raises(TooLarge) as err:
        ams.complete(pictures, big, mask=np.ones((400, 400), bool))
    assert (err.value.status, err.value.code) == (413, "image_too_large")


def test_auth_errors_from_the_service(ams_server) -> None:
    with Client(ams_server.url, api_key="") as anonymous, pytest.raises(Unauthorized) as err:
        anonymous.list_memories()
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    with Client(ams_server.url, api_key="not-the-key") as wrong, pytest.raises(Unauthorized):
        wrong.list_memories()
    with Client(ams_server.url, api_key=ams_server.env["AMS_READ_API_KEY"]) as reader:
        assert isinstance(reader.list_memories(), list)  # reads pass
        with pytest.raises(Forbidden) as err:
            reader.create_memory("not-allowed", 4)
    assert (err.value.status, err.value.code) == (403, "forbidden")


def test_key_from_the_environment(ams_server, monkeypatch) -> None:
    monkeypatch.setenv("AMS_URL", ams_server.url)
    monkeypatch.setenv("AMS_API_KEY", ams_server.env["AMS_API_KEY"])
    with Client() as client:
        assert client.url == ams_server.url and client.info().auth is True


class NotReadyServer(LiveServer):
    """A service whose database cannot be opened: it stays up, and answers 503 ``not_ready``."""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if self.client(timeout=5).get("/livez").status_code == 200:
                    return
            except Exception:
                time.sleep(0.05)
        raise AssertionError(self.log_tail())


@pytest.fixture(scope="module")
def not_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotReadyServer]:
    data = Path(tmp_path_factory.mktemp("broken")) / "data"
    data.mkdir()
    (data / "ams.sqlite3").write_bytes(b"this is not a database " * 300)
    server = NotReadyServer(data)
    yield server
    server.stop()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_unavailable_from_a_service_that_is_not_ready(not_ready, flavour) -> None:
    async def calls() -> tuple[bool, bool, Unavailable, Unavailable]:
        async with AsyncClient(not_ready.url, max_retries=1, backoff=0.01) as client:
            return await run(client)

    async def run(client) -> tuple[bool, bool, Unavailable, Unavailable]:
        live, ready = await client.live(), await client.ready()
        errors = []
        for call in (client.get_memory("x"), client.wait_ready(timeout=0.3, interval=0.05)):
            try:
                await call
            except Unavailable as exc:
                errors.append(exc)
        return live, ready, *errors

    if flavour == "async":
        live, ready, first, waited = run_async(calls())
    else:
        with Client(not_ready.url, max_retries=1, backoff=0.01) as client:
            live, ready = client.live(), client.ready()
            with pytest.raises(Unavailable) as err:
                client.get_memory("x")
            first = err.value
            with pytest.raises(Unavailable) as err:
                client.wait_ready(timeout=0.3, interval=0.05)
            waited = err.value
    assert live is True and ready is False
    assert (first.status, first.code) == (503, "not_ready") and "recovery failed" in first.message
    assert waited.code == "not_ready"
