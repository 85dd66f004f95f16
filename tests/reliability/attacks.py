"""The attacks of issue 22 on requests (findings 1, 2, 3, 8 and rate limits), each against a real
server, measured; attacks_state.py has those on memory, jobs and storage (findings 4-7, disk
full). tests/reliability/test_attacks.py and test_faults.py assert on the measurements;
scripts/reliability_attacks.py runs them on any checkout and writes the before/after table
of docs/reliability.md.

An attack is a function ``(Target) -> dict``: it sends what an attacker would (raw sockets
where a client library would stop early), never raises for what the server does, and
returns what it saw: statuses, seconds, and ``result``, one line for the table. ``run``
wraps it: /livez is probed every 20 ms meanwhile (``LivezProbe``), the server's peak RSS is
read, and whether it is still alive afterwards. Each attack takes seconds, not minutes.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
from live_server import LiveServer
from PIL import Image

MIB = 1 << 20
FULL_KEY, READ_KEY = "attack-full-key", "attack-read-key"
# The server under attack: capped address space, short timeouts, generous rate limit.
SERVER_ENV = dict(
    AMS_API_KEY=FULL_KEY,
    AMS_READ_API_KEY=READ_KEY,
    AMS_BODY_TIMEOUT="2",
    AMS_HEADER_TIMEOUT="2",
    AMS_RATE_LIMIT="200",
    AMS_RATE_BURST="400",
    AMS_TORCH_THREADS="1",
    AMS_RECALL_BATCH_WAIT_MS="1",
)
LIMIT_AS = 3 << 30  # bytes of address space: ~2 GiB above what the idle server maps


# --- the target ----------------------------------------------------------------------------
@dataclass
class Target:
    """The server under attack, and what the attacks set up on it."""

    server: LiveServer
    ready: set[str] = field(default_factory=set)  # fixtures made (see ``fixture``)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str | None = FULL_KEY, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def fixture(self, name: str) -> None:
        """Make one of the memories the attacks aim at, once: ``vec`` (hopfield, D = 64, 8
        patterns), ``img`` (hopfield 1x28x28, 4 pictures), ``cap`` (a text memory, D = 16)."""
        if name in self.ready:
            return
        specs = {"vec": [64], "img": [1, 28, 28], "cap": [16]}
        with self.client() as c:
            c.delete(f"/v1/memories/{name}")
            body = {"name": name, "kind": "hopfield", "shape": specs[name], "text": name == "cap"}
            assert c.post("/v1/memories", json=body).status_code == 201
            dim = int(np.prod(specs[name]))
            rng = np.random.default_rng(0)
            patterns = [
                {"id": f"p{i}", "vector": rng.random(dim).round(3).tolist(), "text": f"pattern {i}"}
                for i in range(8 if name != "img" else 4)
            ]
            r = c.post(f"/v1/memories/{name}/patterns", json={"patterns": patterns})
            assert r.status_code == 201, r.text
        self.ready.add(name)


# --- watching the server -----------------------------------------------------------------------
_PROBE = """
import http.client, json, sys, time
host, port, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lat, failures, conn = [], 0, None
sys.stdout.write("ready\\n"); sys.stdout.flush()
import select
while not select.select([sys.stdin], [], [], 0)[0]:
    start = time.perf_counter()
    try:
        conn = conn or http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/livez")
        ok = bool(conn.getresponse().read())
    except (OSError, http.client.HTTPException):
        ok, conn = False, None
    elapsed = 1000 * (time.perf_counter() - start)
    lat.append(elapsed if ok else 5000.0)
    failures += not ok
    time.sleep(max(0.0, period - elapsed / 1000))
sys.stdout.write(json.dumps({"latencies": lat, "failures": failures}))
"""


class LivezProbe:
    """GET /livez every ``period`` seconds on one keep-alive connection, from a process of its
    own (so that the attack's threads in this one never delay it); latencies in ms (a failure
    or an answer over 5 s counts as 5000 ms)."""

    def __init__(self, url: str, period: float = 0.02) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.period, self.latencies, self.failures = period, [], 0

    def __enter__(self) -> LivezProbe:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, self.host, self.port, str(self.period)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc.stdout.readline()  # "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._proc.communicate("stop\n", timeout=30)
        result = json.loads(out)
        self.latencies, self.failures = result["latencies"], result["failures"]

    def summary(self) -> dict:
        lat = sorted(self.latencies) or [0.0]
        return {
            "probes": len(self.latencies),
            "failures": self.failures,
            "p50_ms": round(statistics.median(lat), 1),
            "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
            "max_ms": round(lat[-1], 1),
        }


def run(target: Target, attack: Callable[[Target], dict]) -> dict:
    """Run one attack with /livez probed and the peak RSS read; its measurements."""
    server = target.server
    base = server.rss_bytes() if server.alive else 0
    peak_known = server.alive and server.reset_peak_rss()
    start = time.perf_counter()
    with LivezProbe(target.url) as probe:
        time.sleep(0.1)  # a few probes of the quiet server first
        try:
            out = attack(target)
        except (OSError, httpx.HTTPError) as exc:  # the server went away under it
            out = {"result": f"attack stopped: {type(exc).__name__}: {exc}"}
        time.sleep(0.1)
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["livez"] = probe.summary()
    out["livez_slow"] = [round(x) for x in probe.latencies if x > 100]
    out["alive"] = server.alive and _livez_ok(target.url)
    if server.alive and peak_known:
        out["rss_peak_growth_mib"] = round((server.rss_bytes("VmHWM") - base) / MIB, 1)
    return out


def survived(r: dict) -> None:
    """Assert that the server is up and answered every /livez probe of the attack ``r`` within
    100 ms (docs/reliability.md, "The tests", gives the margin measured for it)."""
    assert r["alive"], r
    livez = r["livez"]
    assert livez["failures"] == 0, livez
    assert livez["max_ms"] < 100, r


def _livez_ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# --- raw HTTP ----------------------------------------------------------------------------------
def _head(
    method: str, path: str, length: int | None, key: str | None = None, ctype: str = "application/json"
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1."):
        try:
            return int(data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None
    return None


def send_body(url: str, head: bytes, body: bytes, wait: float = 30.0) -> dict:
    """Send ``head`` then ``body`` on a raw socket while reading: the status, the seconds to the
    answer's first byte, and how many body bytes the server took before it answered."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=wait)
    answer: list[bytes] = []
    first: list[float] = []
    sent = [0]
    start = time.perf_counter()

    def reader() -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                if not answer:
                    first.append(time.perf_counter() - start)
                answer.append(data)
                if b"\r\n\r\n" in b"".join(answer):
                    return
        except OSError:
            return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        sock.sendall(head)
        view = memoryview(body)
        for i in range(0, len(body), 1 << 16):
            if answer:
                break  # answered: an attacker's client would stop sending too
            sock.sendall(view[i : i + (1 << 16)])
            sent[0] = i + len(view[i : i + (1 << 16)])
    except OSError:
        pass
    thread.join(wait)
    sock.close()
    data = b"".join(answer)
    return {"status": _status(data), "seconds": round(first[0], 3) if first else None, "sent": sent[0]}


def _summary(results: list[dict]) -> str:
    statuses = Counter(str(r["status"]) if r["status"] else "no answer" for r in results)
    times = [r["seconds"] for r in results if r["seconds"] is not None]
    when = f" in {max(times) * 1000:.0f} ms at most" if times else ""
    return ", ".join(f"{n} x {s}" for s, n in statuses.most_common()) + when


def _many(fn: Callable[[], dict], n: int) -> list[dict]:
    out: list[dict] = [{}] * n

    def one(i: int) -> None:
        out[i] = fn()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def json_of_numbers(prefix: bytes, count: int, suffix: bytes) -> bytes:
    """``prefix`` + count zeros as a JSON list + ``suffix``: the cheapest way to many values."""
    return prefix + b"[" + b"0," * (count - 1) + b"0]" + suffix


# --- finding 1: bodies before the key ------------------------------------------------------------
def unauthenticated_stalled_bodies(t: Target, connections: int = 60, mib: int = 30) -> dict:
    """60 connections without a key each announce a 30 MiB store and send it."""
    body = b"x" * (mib * MIB)
    head = _head("POST", "/v1/memories/vec/patterns", len(body))
    results = _many(lambda: send_body(t.url, head, body, wait=20), connections)
    taken = sum(r["sent"] for r in results) / MIB
    return {
        "statuses": [r["status"] for r in results],
        "result": f"{_summary(results)}; {taken:.0f} MiB sent",
    }


def unauthenticated_big_json(t: Target, clients: int = 4, mib: int = 30) -> dict:
    """4 clients without a key post 30 MB of valid JSON to POST /v1/memories."""
    body = json_of_numbers(
        b'{"name": "x", "kind": "hopfield", "shape": [4], "config": {"k": ', mib * MIB // 2, b"}}"
    )
    head = _head("POST", "/v1/memories", len(body))
    results = _many(lambda: send_body(t.url, head, body), clients)
    return {"statuses": [r["status"] for r in results], "result": _summary(results)}


def write_key_big_json(t: Target, mib: int = 30) -> dict:
    """The write key posts 30 MB of JSON to POST /v1/memories (a body FastAPI parses itself)."""
    body = json_of_numbers(
        b'{"name": "x", "kind": "hopfield", "shape": [4], "config": {"k": ', mib * MIB // 2, b"}}"
    )
    results = _many(lambda: send_body(t.url, _head("POST", "/v1/memories", len(body), FULL_KEY), body), 4)
    return {"statuses": [r["status"] for r in results], "result": _summary(results)}


def slow_body(t: Target, hold: float = 8.0) -> dict:
    """The write key announces a 1000-byte store and sends 10 bytes every 0.5 s."""
    host, port = t.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=hold + 5)
    sock.sendall(_head("POST", "/v1/memories/vec/patterns", 1000, FULL_KEY))
    start, data = time.perf_counter(), b""
    sock.settimeout(0.5)
    while time.perf_counter() - start < hold:
        try:
            sock.sendall(b" " * 10)
        except OSError:
            break
        try:
            data = sock.recv(65536)  # an answer, or b"" when the server closed
            break
        except TimeoutError:
            continue
        except OSError:
            break
    held = time.perf_counter() - start
    sock.close()
    status = _status(data)
    if status:
        return {"status": status, "result": f"{status} after {held:.1f} s"}
    return {"status": None, "result": f"no answer: held {hold:.0f} s (until the client gave up)"}


# --- finding 2: a cue's values before its length --------------------------------------------------
def huge_cue(t: Target, clients: int = 4, mib: int = 30) -> dict:
    """4 read-key clients each send a 30 MB cue vector to retrieve, in a vector memory (D = 64)
    and in an image memory (28 x 28, whose cues may be large pictures)."""
    t.fixture("vec")
    t.fixture("img")
    body = json_of_numbers(b'{"vector": ', mib * MIB // 2, b"}")
    out = {}
    for name in ("vec", "img"):
        head = _head("POST", f"/v1/memories/{name}/retrieve", len(body), READ_KEY)
        out[name] = _many(lambda head=head: send_body(t.url, head, body, wait=60), clients)
    return {
        "statuses": {name: [r["status"] for r in results] for name, results in out.items()},
        "result": f"vector memory: {_summary(out['vec'])}; image memory: {_summary(out['img'])}",
    }


# --- finding 3: image formats and bombs -----------------------------------------------------------
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def ico_bomb(side: int = 8000) -> bytes:
    """An ICO whose directory says 256 x 256 and whose embedded PNG is side x side (64 MP)."""
    inner = _png(Image.new("L", (side, side)))
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + inner


def other_formats() -> dict[str, bytes]:
    """A 28 x 28 picture in each format Pillow reads but the service does not document."""
    out = {}
    for fmt in ("BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA"):
        buf = io.BytesIO()
        Image.new("L", (28, 28), 128).save(buf, format=fmt)
        out[fmt] = buf.getvalue()
    return out


def image_bombs(t: Target, clients: int = 8) -> dict:
    """8 read-key clients each send a 64 MP ICO (a few hundred KB) as a retrieve cue; then one
    picture in each undocumented format."""
    t.fixture("img")
    bomb = base64.b64encode(ico_bomb()).decode()
    with t.client(READ_KEY, timeout=120) as c:
        results = _many(lambda: _post(c, "/v1/memories/img/retrieve", {"image": bomb}), clients)
        formats = {
            fmt: _post(c, "/v1/memories/img/retrieve", {"image": base64.b64encode(data).decode()})["status"]
            for fmt, data in other_formats().items()
        }
    accepted = sorted(f for f, s in formats.items() if s == 200)
    return {
        "statuses": [r["status"] for r in results],
        "formats": formats,
        "result": f"ICO bomb: {_summary(results)}; other formats accepted: {', '.join(accepted) or 'none'}",
    }


def _post(c: httpx.Client, path: str, body: dict, **kw: object) -> dict:
    start = time.perf_counter()
    try:
        r = c.post(path, json=body, **kw)
    except httpx.HTTPError as exc:
        return {"status": None, "seconds": None, "error": type(exc).__name__}
    code = (
        r.json().get("error", {}).get("code")
        if r.headers.get("content-type", "").startswith("application/json")
        else None
    )
    return {"status": r.status_code, "seconds": round(time.perf_counter() - start, 3), "code": code}


# --- finding 8: the smaller ones ---------------------------------------------------------------
def header_trickle(t: Target, idle: int = 50, hold: float = 8.0) -> dict:
    """50 connections that send nothing, and one that sends its headers a byte a second."""
    host, port = t.url.removeprefix("http://").split(":")
    quiet = [socket.create_connection((host, int(port)), timeout=hold + 5) for _ in range(idle)]
    slow = socket.create_connection((host, int(port)), timeout=1.0)
    start, data = time.perf_counter(), b""
    request = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64
    for byte in request:
        if time.perf_counter() - start > hold:
            break
        try:
            slow.sendall(bytes([byte]))
            data = slow.recv(65536)
            break  # an answer, or closed
        except TimeoutError:
            continue
        except OSError:
            break
    held = time.perf_counter() - start
    closed = 0
    for sock in quiet:
        sock.settimeout(0.2)
        try:
            closed += sock.recv(1) in (b"", b"H")  # closed, or an answer (408) before closing
        except TimeoutError:
            pass
        except OSError:
            closed += 1
        sock.close()
    slow.close()
    status = _status(data)
    slow_result = f"{status} after {held:.1f} s" if status else f"held {held:.0f} s, no answer"
    return {
        "status": status,
        "idle_closed": closed,
        "result": f"trickled headers: {slow_result}; idle connections closed: {closed} of {idle}",
    }


def malformed_json_without_key(t: Target) -> dict:
    """Malformed JSON to POST /v1/memories without a key: 400 before 401 tells an anonymous
    client how its body was parsed."""
    r = httpx.post(f"{t.url}/v1/memories", content=b"{", headers={"Content-Type": "application/json"})
    return {"status": r.status_code, "result": f"{r.status_code}"}


def exif_orientation(t: Target) -> dict:
    """A JPEG stored with EXIF orientation 6 (a phone held upright): its pixels come out the
    right way up, or sideways?"""
    upright = Image.new("L", (20, 40), 0)
    upright.paste(255, (0, 0, 20, 10))  # white band at the top of the upright picture
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # as the sensor stored it: 40 x 20
    exif = sideways.getexif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    buf = io.BytesIO()
    sideways.save(buf, format="JPEG", quality=95, exif=exif)
    with t.client() as c:
        c.delete("/v1/memories/photos")
        c.post("/v1/memories", json={"name": "photos", "kind": "hopfield", "shape": [1, 40, 20]})
        r = c.post(
            "/v1/memories/photos/patterns",
            json={"patterns": [{"id": "phone", "image": base64.b64encode(buf.getvalue()).decode()}]},
        )
        top = None
        if r.status_code == 201:
            got = c.get("/v1/memories/photos/patterns/phone", headers={"Accept": "image/png"})
            pixels = np.asarray(Image.open(io.BytesIO(got.content)), dtype=float)
            top = round(float(pixels[:10].mean()))
        c.delete("/v1/memories/photos")
    upright_ok = top is not None and top > 200
    code = r.json().get("error", {}).get("code") if r.status_code >= 400 else ""
    return {
        "status": r.status_code,
        "upright": upright_ok,
        "result": "stored upright" if upright_ok else f"{r.status_code} {code}".strip(),
    }


def docs_open(t: Target) -> dict:
    statuses = {
        p: httpx.get(f"{t.url}{p}", timeout=30).status_code for p in ("/docs", "/redoc", "/openapi.json")
    }
    return {"statuses": statuses, "result": ", ".join(f"{p} {s}" for p, s in statuses.items())}


# --- rate limits --------------------------------------------------------------------------------
def request_flood(t: Target, requests: int = 600, clients: int = 6) -> dict:
    """6 read-key clients send 600 GET /v1/memories as fast as they can."""
    t.fixture("vec")
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()

    def flood() -> dict:
        with t.client(READ_KEY) as c:
            for _ in range(requests // clients):
                r = c.get("/v1/memories")
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    retry_after.add(r.headers.get("retry-after", "missing"))
        return {}

    start = time.perf_counter()
    _many(flood, clients)
    rate = requests / (time.perf_counter() - start)
    return {
        "statuses": dict(statuses),
        "retry_after": sorted(retry_after),
        "result": f"{dict(sorted(statuses.items()))} at {rate:.0f} requests/s; Retry-After {sorted(retry_after) or '-'}",
    }
