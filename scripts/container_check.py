"""The container, built and run for real with podman (runc, rootful), and what it measured.

Run through scripts/container_check.sh, which makes the local base image first:
    scripts/container_check.sh [--results results/container.json] [--keep]
Steps, each of which must hold or the check fails (exit 1, naming the claim):
  1. build docker/Dockerfile (CPU) on the given base; image size;
  2. run it with a named volume on a free loopback port; time from `podman run` to /readyz
     answering 200 and to the image's own HEALTHCHECK command passing (`podman healthcheck run`);
  3. HTTP round trip with real pictures (scripts/container_traffic.py);
  4. the user inside is the image's numeric non-root user; /data and what the service wrote
     there belong to it and are not world-writable; the code is read-only to it;
  5. SIGTERM (`podman stop`) stops it cleanly (exit 0) within the grace period; `podman start`
     brings it back with every picture; a new container on the same volume finds them too;
  6. the compose file's CPU service, started by podman-compose with the image just built,
     becomes healthy with the compose file's port, volume and restart settings.
The image's HEALTHCHECK needs `--format docker` (OCI images have no health checks); podman
runs it on demand here, as no systemd is there to schedule it. Ulimits are set lower
explicitly: podman's default raises them, which this machine does not permit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from container_traffic import CheckFailed, read_back, round_trip

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
IMAGE = "localhost/associative-memory-service:cpu"  # the compose file's image, so compose runs it
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
GRACE_S = 10  # Docker's and compose's default stop grace period
READY_TIMEOUT_S = 180
DEFAULT_RESULTS = ROOT / "results" / "container.json"
BUILD_LOG = Path(os.environ.get("AMS_CONTAINER_CACHE", ROOT / ".cache" / "container")) / "build.log"
USER = "10001:10001"  # the Dockerfile's USER


def log(message: str) -> None:
    print(f"container_check: {message}", file=sys.stderr, flush=True)


def podman(*args: str, check: bool = True, timeout: float = 300) -> str:
    """Run podman with runc; its stdout, stripped. Raises CheckFailed when it fails and check is set."""
    run = subprocess.run([*PODMAN, *args], check=False, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise CheckFailed(
            f"podman {' '.join(args[:3])} failed ({run.returncode}): {run.stderr.strip()[-800:]}"
        )
    return run.stdout.strip()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_version() -> str:
    return re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)


def _pip_config(key: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", key], check=False, capture_output=True, text=True
    )
    return run.stdout.strip() if run.returncode == 0 else ""


def local_torch_wheels(version: str) -> Path | None:
    """A folder holding the CPU torch wheel for Python 3.11: AMS_TORCH_WHEELS, else pip's find-links."""
    places = [os.environ.get("AMS_TORCH_WHEELS", "")]
    places += (os.environ.get("PIP_FIND_LINKS", "") + " " + _pip_config("global.find-links")).split()
    for place in places:
        folder = Path(place.removeprefix("file://"))
        if place and folder.is_dir() and any(folder.glob(f"torch-{version}+cpu-cp311-*.whl")):
            return folder
    return None


def build_flags(scratch: Path) -> tuple[list[str], dict]:
    """podman build flags beyond the Dockerfile's defaults, for a machine without PyTorch's index:
    the local torch wheel, and pip trusting what the host's pip trusts (a TLS-intercepting
    proxy's CA). Both are mounted read-only over folders every Debian image has (/mnt, /root),
    since podman 4.3 leaves the mount points it creates as empty files in the image's layers.
    Also what was chosen, for the record."""
    flags: list[str] = []
    chosen: dict = {"torch": "PyTorch's CPU index (the Dockerfile's default)"}
    wheels = local_torch_wheels(_torch_version())
    if wheels is not None:
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
        flags += [
            "--volume",
            f"{wheels}:/mnt:ro",
            "--build-arg",
            "TORCH_FIND_LINKS=/mnt",
            "--build-arg",
            f"TORCH_INDEX_URL={index}",
        ]
        chosen["torch"] = f"local wheel from {wheels} (mounted at /mnt), other packages from {index}"
    cert = os.environ.get("PIP_CERT") or _pip_config("global.cert")
    if cert and Path(cert).is_file():
        home = scratch / "root"  # the build's $HOME: pip reads ~/.config/pip/pip.conf
        (home / ".config" / "pip").mkdir(parents=True)
        shutil.copyfile(cert, home / "host-ca.crt")
        (home / ".config" / "pip" / "pip.conf").write_text("[global]\ncert = /root/host-ca.crt\n")
        flags += ["--volume", f"{home}:/root:ro"]
        chosen["pip_cert"] = cert
    return flags, chosen


def build(base: str, scratch: Path) -> dict:
    """Build the CPU image on `base`, streaming the step lines; build time, size and layers."""
    flags, chosen = build_flags(scratch)
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    command = [
        *PODMAN,
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        *ULIMITS,
        *flags,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "-f",
        str(DOCKERFILE),
        "-t",
        IMAGE,
        str(ROOT),
    ]
    log("$ " + " ".join(command))
    start = time.monotonic()
    tail: list[str] = []
    steps = cached = 0
    began: list[tuple[float, str]] = []  # (seconds into the build, step) for every step
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
        BUILD_LOG.open("w") as build_log,
    ):
        for line in proc.stdout:
            stamped = f"{time.monotonic() - start:6.1f} s  {line.rstrip()}"
            build_log.write(stamped + "\n")
            tail = (tail + [stamped])[-60:]
            steps += line.startswith("[") and " STEP " in line
            cached += line.startswith("--> Using cache")
            if re.match(r"\[\d+/\d+\] (STEP|COMMIT)", line):
                log(f"build {stamped[:120]}")
                began.append((time.monotonic() - start, " ".join(line.split())[:70]))
    build_s = time.monotonic() - start
    # Where the time went: each step until the next began; the last span is podman's clean-up.
    spans = [(step, round(end - at, 1)) for (at, step), (end, _) in zip(began, [*began[1:], (build_s, "")])]
    log(f"build log: {BUILD_LOG}")
    _expect(proc.returncode == 0, "podman build failed:\n" + "\n".join(tail))
    info = json.loads(podman("image", "inspect", IMAGE))[0]
    if previous and previous != info["Id"]:
        podman("rmi", previous, check=False)  # the superseded image, unless something still uses it
    health = info.get("Config", {}).get("Healthcheck") or info.get("Healthcheck")
    _expect(
        bool(health and health.get("Test")), "the image has no HEALTHCHECK (was it built --format docker?)"
    )
    return {
        "seconds": round(build_s, 1),
        "steps": steps,
        "steps_from_cache": cached,
        "slow_steps_s": {step: s for step, s in spans if s >= 5},
        "image": IMAGE,
        "image_id": info["Id"][:12],
        "size_bytes": info["Size"],
        "size_mb": round(info["Size"] / 1e6),
        "layers": len(info["RootFS"]["Layers"]),
        "user": info["Config"].get("User"),
        "healthcheck": health["Test"],
        **chosen,
    }


def healthcheck_passes(container: str) -> bool:
    """The image's own HEALTHCHECK command, run inside the container now."""
    run = subprocess.run([*PODMAN, "healthcheck", "run", container], check=False, capture_output=True)
    return run.returncode == 0


def wait_healthy(container: str, port: int, started: float) -> dict:
    """Seconds from `started` until /readyz answers 200 and until the image's HEALTHCHECK passes."""
    ready = healthy = None
    deadline = started + READY_TIMEOUT_S
    while healthy is None:
        state = podman("inspect", "--format", "{{.State.Status}}", container)
        _expect(state == "running", f"{container} is {state}:\n{podman('logs', '--tail', '30', container)}")
        _expect(time.monotonic() < deadline, f"{container} not healthy after {READY_TIMEOUT_S} s")
        if ready is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    ready = time.monotonic() - started
            except httpx.HTTPError:
                pass
        if ready is not None and healthcheck_passes(container):
            healthy = time.monotonic() - started
        else:
            time.sleep(0.1)
    return {"ready_s": round(ready, 2), "healthy_s": round(healthy, 2)}


def run_container(name: str, volume: str, port: int) -> dict:
    """`podman run` the image with the volume on 127.0.0.1:port, as compose publishes it; its start."""
    started = time.monotonic()
    publish, mount = f"127.0.0.1:{port}:8000", f"{volume}:/data"
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        publish,
        "-v",
        mount,
        "--stop-timeout",
        str(GRACE_S),
        *ULIMITS,
        IMAGE,
    )
    return wait_healthy(name, port, started)


def inside(container: str) -> dict:
    """Who the service runs as, and the permissions of /data and of the code."""

    def sh(script: str) -> str:
        return podman("exec", container, "sh", "-c", script)

    uid, gid = sh("id -u"), sh("id -g")
    pid1 = dict(line.split(":", 1) for line in sh("grep -E '^(Uid|Gid)' /proc/1/status").splitlines())
    data = sh("stat -c '%u:%g %a' /data").split()
    not_ours = sh("find /data ! -user 10001 | head -5")
    world_writable = sh("find /data -perm -o+w | head -5")
    written = sh("find /data -type f | wc -l")
    code_writable = sh("for d in /opt/venv /opt/ams /; do touch $d/.w 2>/dev/null && echo $d; done; true")
    _expect(f"{uid}:{gid}" == USER, f"runs as {uid}:{gid}, not {USER}")
    _expect(pid1["Uid"].split()[0] == uid != "0", f"the service (pid 1) has Uid {pid1['Uid']}")
    _expect(data[0] == USER and int(data[1], 8) & 0o022 == 0, f"/data is {data}")
    _expect(
        not not_ours and not world_writable,
        f"/data holds foreign or world-writable entries: {not_ours or world_writable}",
    )
    _expect(int(written) > 0, "the service wrote nothing under /data")
    _expect(not code_writable, f"the service can write to {code_writable.split()}")
    return {
        "uid": int(uid),
        "gid": int(gid),
        "pid1_uid": int(pid1["Uid"].split()[0]),
        "data_owner": data[0],
        "data_mode": data[1],
        "data_files": int(written),
        "code_writable": False,
    }


def stop_cleanly(container: str) -> dict:
    """`podman stop` sends SIGTERM and waits GRACE_S before SIGKILL: it must exit 0, by itself, in time."""
    start = time.monotonic()
    podman("stop", "--time", str(GRACE_S), container, timeout=GRACE_S + 60)
    stop_s = time.monotonic() - start
    code = int(podman("inspect", "--format", "{{.State.ExitCode}}", container))
    run = subprocess.run([*PODMAN, "logs", container], check=False, capture_output=True, text=True)
    logs = run.stdout + run.stderr  # uvicorn logs its shutdown on stderr
    _expect(
        code == 0 and stop_s < GRACE_S, f"SIGTERM: exit code {code} after {stop_s:.1f} s (grace {GRACE_S} s)"
    )
    _expect("Finished server process" in logs, f"no clean uvicorn shutdown in the log:\n{logs[-2000:]}")
    return {
        "signal": podman("inspect", "--format", "{{.Config.StopSignal}}", container),
        "exit_code": code,
        "stop_s": round(stop_s, 2),
        "grace_s": GRACE_S,
    }


def _compose(project: str) -> list[str]:
    """podman-compose on the compose file as project `project`, with runc and no pod."""
    found = shutil.which(
        "podman-compose", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    _expect(found is not None, "podman-compose not found (pip install podman-compose; `make setup` does)")
    return [found, "-f", str(COMPOSE), "-p", project, "--in-pod", "false", "--podman-args=--runtime=runc"]


def compose_up(project: str) -> dict:
    """The compose file's CPU service under podman-compose, on the image just built."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")} | {"AMS_PUBLISH_PORT": str(port)}
    limits = [f"--podman-run-args=--ulimit={limit}" for limit in ULIMITS[1::2]]
    started = time.monotonic()
    up = [*_compose(project), *limits, "up", "-d", "--no-build", "ams"]
    run = subprocess.run(up, check=False, capture_output=True, text=True, env=env, timeout=300)
    _expect(run.returncode == 0, f"podman-compose up failed: {run.stderr[-800:]}")
    container = f"{project}_ams_1"
    timing = wait_healthy(container, port, started)
    info = json.loads(podman("inspect", container))[0]
    mounts = [(m.get("Name"), m["Destination"]) for m in info["Mounts"]]
    bindings = info["HostConfig"]["PortBindings"]["8000/tcp"]
    device = httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=10).json()["device"]
    _expect((f"{project}_ams-data", "/data") in mounts, f"compose mounts {mounts}")
    _expect(bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}], f"compose publishes {bindings}")
    _expect(device == "cpu", f"the compose service runs on {device}")
    version = subprocess.run([up[0], "--version"], check=False, capture_output=True, text=True).stdout
    return {
        "tool": version.split("\n")[0],
        **timing,
        "published": f"127.0.0.1:{port}",
        "volume": f"{project}_ams-data",
        "restart": info["HostConfig"]["RestartPolicy"]["Name"],
        "device": device,
    }


def compose_down(project: str) -> None:
    """Remove the compose project's container, volume and network, if it made any."""
    if podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={project}", check=False):
        subprocess.run([*_compose(project), "down", "-v"], check=False, capture_output=True, timeout=300)


def check(base: str, scratch: Path, tag: str) -> dict:
    """Steps 1-6 of the module docstring; every measurement, or CheckFailed."""
    result: dict = {"build": build(base, scratch)}
    log(f"built {IMAGE}: {result['build']['size_mb']} MB in {result['build']['seconds']} s")
    volume, port = f"{tag}-data", free_port()
    first, second = f"{tag}-a", f"{tag}-b"
    result["cold_start"] = run_container(first, volume, port)
    log(f"fresh container: {result['cold_start']}")
    url = f"http://127.0.0.1:{port}"
    result["round_trip"] = round_trip(url)
    log(f"round trip: {result['round_trip']}")
    result["inside"] = inside(first)
    log(f"inside: {result['inside']}")
    result["sigterm"] = stop_cleanly(first)
    log(f"SIGTERM: {result['sigterm']}")
    started = time.monotonic()
    podman("start", first)
    result["restart"] = wait_healthy(first, port, started) | read_back(url)
    log(f"stop + start, read back: {result['restart']}")
    podman("rm", "--force", "--time", str(GRACE_S), first)
    port = free_port()
    result["new_container"] = run_container(second, volume, port) | read_back(f"http://127.0.0.1:{port}")
    log(f"new container on the same volume: {result['new_container']}")
    result["sigterm_new_container"] = stop_cleanly(second)
    result["compose"] = compose_up(f"{tag}-compose")
    log(f"compose: {result['compose']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the base image (scripts/container_base.sh prints it)")
    parser.add_argument(
        "--base-made-s", type=float, default=None, help="seconds spent making the base, if made"
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--keep", action="store_true", help="leave the containers and volume for inspection")
    args = parser.parse_args()
    tag = f"ams-check-{os.getpid()}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ams-container-check-") as scratch:
        try:
            result = check(args.base, Path(scratch), tag)
        except (CheckFailed, subprocess.TimeoutExpired, httpx.HTTPError) as error:
            log(f"FAILED: {error}")
            return 1
        finally:
            if not args.keep:
                compose_down(f"{tag}-compose")
                for name in (f"{tag}-a", f"{tag}-b"):
                    podman("rm", "--force", "--time", "0", name, check=False)
                podman("volume", "rm", "--force", f"{tag}-data", check=False)
    record = {
        "command": " ".join(
            ["scripts/container_check.sh"]
            + (["--results", str(args.results)] if args.results != DEFAULT_RESULTS else [])
            + (["--keep"] if args.keep else [])
        ),
        "check_s": round(time.monotonic() - started, 1),
        "total_s": round(time.monotonic() - started + (args.base_made_s or 0), 1),
        "base": {"image": args.base, "made_s": args.base_made_s},
        **result,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "load_average_1min": os.getloadavg()[0],  # other work on the machine slows every step
            "podman": podman("version", "--format", "{{.Client.Version}}"),
            "runc": subprocess.run(
                ["runc", "--version"], check=False, capture_output=True, text=True
            ).stdout.split("\n")[0],
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=2) + "\n")
    b, c = record["build"], record["cold_start"]
    print(
        f"image {b['image']} ({b['image_id']}): {b['size_mb']} MB, built in {b['seconds']} s\n"
        f"cold start (podman run -> ready / healthy): {c['ready_s']} s / {c['healthy_s']} s\n"
        f"restart (podman start -> healthy): {record['restart']['healthy_s']} s, "
        f"{record['restart']['pictures_identical']} pictures read back\n"
        f"user inside: {record['inside']['uid']}:{record['inside']['gid']}; "
        f"SIGTERM: exit {record['sigterm']['exit_code']} in {record['sigterm']['stop_s']} s\n"
        f"compose service healthy in {record['compose']['healthy_s']} s\n"
        f"check took {record['check_s']} s ({record['total_s']} s with the base); results in {args.results}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
