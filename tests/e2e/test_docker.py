"""The Docker deployment, checked without a Docker engine: lint the Dockerfile, validate
the compose file, and run the image's exact entrypoint with the image's environment."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [BIN / "hadolint", "--failure-threshold", "warning", DOCKERFILE], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_config(*args: str) -> dict:
    result = subprocess.run(
        [BIN / "docker-compose", "-f", COMPOSE, *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "AMS_API_KEY": ""},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_with_volume_healthcheck_and_gpu_profile():
    cpu = _compose_config()
    assert set(cpu["services"]) == {"ams"}  # the GPU service only runs with its profile
    ams = cpu["services"]["ams"]
    assert ams["build"]["args"]["VARIANT"] == "cpu"
    assert ams["healthcheck"]["test"] == ["CMD", "python", "-m", "app.healthcheck"]
    assert any(v["target"] == "/data" and v["source"] == "ams-data" for v in ams["volumes"])
    assert ams["ports"][0]["host_ip"] == "127.0.0.1"
    gpu = _compose_config("--profile", "gpu")["services"]["ams-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda" and gpu["environment"]["AMS_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_cluster_profile_runs_a_head_two_workers_and_the_gateway():
    """The Ray mode's profile (docs/scale.md): every node shares the image with Ray and one data
    volume, token auth on; the gateway joins as a node without CPUs and serves the API."""
    services = _compose_config("--profile", "cluster")["services"]
    assert {"ray-head", "ray-worker-1", "ray-worker-2", "ams-gateway"} <= set(services)
    for name in ("ray-head", "ray-worker-1", "ray-worker-2", "ams-gateway"):
        node = services[name]
        assert node["build"]["args"]["EXTRAS"] == "distributed"
        assert node["environment"]["RAY_AUTH_MODE"] == "token"
        assert [(v["source"], v["target"]) for v in node["volumes"]] == [("ams-cluster-data", "/data")]
    assert "--head" in services["ray-head"]["command"] and "--num-cpus=0" in services["ray-head"]["command"]
    for worker in ("ray-worker-1", "ray-worker-2"):
        assert "--address=ray-head:6379" in services[worker]["command"]
    gateway = services["ams-gateway"]
    assert gateway["environment"]["AMS_RAY_ADDRESS"] == "auto"
    assert "ray start --address=ray-head:6379 --num-cpus=0" in gateway["entrypoint"][-1]
    assert gateway["entrypoint"][-1].endswith("exec python -m app")
    assert gateway["ports"][0]["host_ip"] == "127.0.0.1"
    assert gateway["healthcheck"]["test"] == ["CMD", "python", "-m", "app.healthcheck"]


def _runtime_stage() -> tuple[dict[str, str], list[str], list[str], str]:
    """ENV, ENTRYPOINT, HEALTHCHECK command and USER of the Dockerfile's final stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text.split("FROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", final, re.MULTILINE).group(1))
    health = json.loads(re.search(r"HEALTHCHECK .*?CMD (\[.+\])", final).group(1))
    user = re.search(r"^USER (\S+)$", final, re.MULTILINE).group(1)
    return env, entrypoint, health, user


def test_image_runs_as_numeric_non_root_user_with_data_volume():
    env, _, _, user = _runtime_stage()
    uid, gid = user.split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0
    assert env["AMS_DATA_DIR"] == "/data" and env["AMS_HOST"] == "0.0.0.0"
    assert 'VOLUME ["/data"]' in DOCKERFILE.read_text()
    build_stage = DOCKERFILE.read_text().split("AS runtime")[1]
    assert "gcc" not in build_stage and "build-essential" not in build_stage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_command_serves_outside_docker(tmp_path):
    """The entrypoint with the image's environment starts a ready service, and the image's
    own HEALTHCHECK command sees it. Only the data directory (/data in the image) and the
    port are moved, so the test neither writes to / nor collides with another server."""
    env, entrypoint, health, _ = _runtime_stage()
    port = _free_port()
    env.update(
        AMS_DATA_DIR=str(tmp_path / "data"),
        AMS_PORT=str(port),
        AMS_HOST="127.0.0.1",
        XDG_CACHE_HOME=str(Path.home() / ".cache"),
    )
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # python = this virtual environment's
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")} | env
    proc = subprocess.Popen(
        entrypoint, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(health, cwd=ROOT, env=full_env).returncode != 0:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "service never became ready"
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        info = httpx.get(f"{base}/v1/info").json()
        assert info["device"] == ("cuda" if "cuda" in info["device"] else "cpu")
        # It serves for real, and keeps what it stores in the configured data directory.
        created = httpx.post(f"{base}/v1/memories", json={"name": "v", "kind": "hopfield", "shape": [3]})
        assert created.status_code == 201
        stored = httpx.post(
            f"{base}/v1/memories/v/patterns",
            json={"patterns": [{"id": "a", "vector": [1, 0, 1]}, {"id": "b", "vector": [0, 1, 0]}]},
        )
        assert stored.status_code == 201
        recalled = httpx.post(f"{base}/v1/memories/v/retrieve", json={"vector": [0.9, 0.2, 0.8]}).json()
        assert recalled["matches"][0]["id"] == "a"
        assert any((tmp_path / "data").iterdir())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Once the service is gone the health check fails, as Docker needs it to.
    assert subprocess.run(health, cwd=ROOT, env=full_env).returncode == 1


@pytest.mark.parametrize("path", ["memory_core", "app", "pyproject.toml"])
def test_build_context_keeps_what_the_image_needs(path):
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert path not in ignored and ".venv" in ignored and ".git" in ignored
