"""The ``ams`` command against a real service process: the installed entry point run as a
subprocess for the users' flow (create, store files, retrieve and complete into files,
lookup, train --wait), and ``ams_client.cli.main`` in-process for output formats and exit
codes (the same code, without an interpreter start per case)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ams_client.cli import main
from live_server import free_port
from PIL import Image

pytestmark = pytest.mark.timeout(300)


def save_png(a: np.ndarray, path: Path) -> Path:
    """(1, H, W) or (H, W) in [0, 1] -> an 8-bit grey PNG."""
    Image.fromarray(np.rint(np.asarray(a).reshape(a.shape[-2:]) * 255).astype(np.uint8)).save(path)
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32)[None] / 255.0


@pytest.fixture(scope="module")
def ams_cmd() -> str:
    """The installed ``ams`` entry point of this interpreter's environment."""
    found = shutil.which("ams", path=str(Path(sys.executable).parent))
    assert found, "ams is not installed in this environment: run scripts/setup.sh (pip install -e client)"
    return found


@pytest.fixture
def run(ams_cmd, ams_server, tmp_path):
    """``run("memories", "list")`` -> CompletedProcess of the real command, in tmp_path, with
    the service's URL and key from the environment as a user would set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
    env.update(AMS_URL=ams_server.url, AMS_API_KEY=ams_server.env["AMS_API_KEY"], COLUMNS="200")

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ams_cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    return call


def test_cli_end_to_end(run, fresh, pictures, tmp_path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(10):
        save_png(pictures[i], pics / f"f{i}.png")
    name = fresh("fashion")

    made = run("memories", "create", name, "--shape", "1", "28", "28")
    assert made.returncode == 0, made.stderr
    assert name in made.stdout and "1 28 28" in made.stdout
    stored = run("store", name, *sorted(str(p) for p in pics.glob("*.png")))
    assert stored.returncode == 0, stored.stderr
    assert f"stored 10 patterns in {name} (count now 10)" in stored.stdout
    listed = json.loads(run("patterns", name, "--json").stdout)
    assert [p["id"] for p in listed["patterns"]] == [f"f{i}" for i in range(10)]  # ids: the file names
    table = run("memories", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "KIND", "SHAPE", "COUNT"]
    assert any(line.split()[:4] == [name, "hopfield", "1x28x28", "10"] for line in table)

    rng = np.random.default_rng(3)
    noisy = save_png(
        np.clip(pictures[3] + rng.normal(0, 0.2, pictures[3].shape), 0, 1), tmp_path / "noisy.png"
    )
    got = run("retrieve", name, str(noisy), "-o", "out.png", "-k", "2")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[1].split()[:2] == ["1", "f3"]
    np.testing.assert_allclose(read_png(tmp_path / "out.png"), pictures[3], atol=1 / 255)

    known = np.zeros((28, 28), bool)
    known[:14] = True
    save_png(pictures[5] * known, tmp_path / "cue.png")
    save_png(known.astype(np.float32), tmp_path / "mask.png")
    done = run("complete", name, "cue.png", "--mask", "mask.png", "-o", "done.png")
    assert done.returncode == 0, done.stderr
    assert "filled pixels  392" in done.stdout and done.stdout.splitlines()[1].split()[1] == "f5"
    completed = read_png(tmp_path / "done.png")
    np.testing.assert_array_equal(completed[:, :14], pictures[5][:, :14])
    assert float(np.mean((completed - pictures[5]) ** 2)) < 0.001

    captioned = fresh("captions")
    assert run("memories", "create", captioned, "--shape", "1", "28", "28", "--text").returncode == 0
    captions = ["a short sleeved t-shirt", "long trousers for the legs", "a warm woollen pullover"]
    files = [str(pics / f"f{i}.png") for i in range(3)]
    assert run("store", captioned, *files, "--texts", *captions).returncode == 0
    by_text = run(
        "lookup", captioned, "--text", "trousers to wear on the legs", "-k", "2", "--json", "-o", "seen.png"
    )
    assert by_text.returncode == 0, by_text.stderr
    answer = json.loads(by_text.stdout)
    assert answer["patterns"][0]["id"] == "f1" and answer["output"] == "seen.png"
    assert Image.open(tmp_path / "seen.png").size == (28, 28)
    save_png(pictures[2] * known, tmp_path / "half.png")
    by_image = run("lookup", captioned, "--image", "half.png", "--mask", "mask.png")
    assert by_image.returncode == 0, by_image.stderr
    assert by_image.stdout.splitlines()[1].split()[:2] == ["1", "f2"] and captions[2] in by_image.stdout

    pc = fresh("pc")
    config = json.dumps({"sizes": [8, 16, 16], "epochs": 20})
    assert run("memories", "create", pc, "--shape", "16", "--kind", "pc", "--config", config).returncode == 0
    np.save(tmp_path / "codes.npy", (rng.random((4, 16)) > 0.5).astype(np.float32))
    assert run("store", pc, "codes.npy").returncode == 0
    trained = run("train", pc, "--wait")
    assert trained.returncode == 0, trained.stderr
    assert "succeeded: epoch 20/20" in trained.stdout and "(stop_reason epochs)" in trained.stdout
    jobs = json.loads(run("jobs", "--memory", pc, "--json").stdout)["jobs"]
    assert [(j["status"], j["stop_reason"]) for j in jobs] == [("succeeded", "epochs")]
    table = run("jobs", "--memory", pc).stdout.splitlines()
    assert table[0].split()[-1] == "STOP_REASON" and table[1].split()[-1] == "epochs"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def url_key(ams_server) -> list[str]:
    return ["--url", ams_server.url, "--api-key", ams_server.env["AMS_API_KEY"]]


def test_cli_exit_codes_and_one_line_errors(capsys, url_key, ams_server, fresh, tmp_path) -> None:
    name = fresh("codes")
    assert cli(capsys, *url_key, "memories", "create", name, "--shape", "1", "8", "8")[0] == 0
    wrong = save_png(np.zeros((10, 10)), tmp_path / "wrong.png")
    cases = [
        ((*url_key, "memories", "get", fresh("missing")), 3, "memory_not_found: no memory named"),
        ((*url_key, "memories", "create", name, "--shape", "4"), 4, "memory_exists"),
        (
            (*url_key, "store", name, str(wrong)),
            5,
            "this memory stores 8x8 (pass --fit to centre-crop and resize)",
        ),
        ((*url_key, "store", name, str(tmp_path / "absent.png")), 5, "absent.png"),
        (
            (*url_key, "memories", "create", fresh("c"), "--shape", "4", "--config", "{oops"),
            5,
            "--config is not JSON",
        ),
        (("--url", ams_server.url, "--api-key", "wrong", "memories", "list"), 6, "unauthorized"),
        (("--url", f"http://127.0.0.1:{free_port()}", "memories", "list"), 7, "connection_error"),
    ]
    for args, code, text in cases:
        got, out, err = cli(capsys, *args)
        assert got == code, (args, got, err)
        assert out == "" and err.count("\n") == 1 and err.startswith("ams: error: ") and text in err, err
    with pytest.raises(SystemExit) as stop:  # usage errors: argparse's 2
        main([*url_key, "query", "kb", "borders"])
    assert stop.value.code == 2
    assert "the following arguments are required: args" in capsys.readouterr().err

    pc = fresh("pc")
    cli(
        capsys,
        *url_key,
        "memories",
        "create",
        pc,
        "--shape",
        "4",
        "--kind",
        "pc",
        "--config",
        '{"sizes": [4, 4, 4]}',
    )
    np.save(tmp_path / "four.npy", np.eye(4, dtype=np.float32))
    cli(capsys, *url_key, "store", pc, str(tmp_path / "four.npy"))
    code, out, _ = cli(capsys, *url_key, "train", pc, "--epochs", "100000", "--json")
    job = json.loads(out)["id"]
    assert cli(capsys, *url_key, "jobs", "cancel", job)[0] == 0
    code, out, err = cli(capsys, *url_key, "jobs", "wait", job, "--no-progress")
    assert code == 8 and "job_cancelled" in err


def test_cli_store_errors_name_the_file(capsys, url_key, fresh, tmp_path) -> None:
    """A store's error names the file (or the .npy row) it is about, not the request's
    patterns[i], also in the second request of a split upload (40 patterns a request here)."""
    name = fresh("files")
    assert cli(capsys, *url_key, "memories", "create", name, "--shape", "1", "8", "8")[0] == 0
    files = [str(save_png(np.full((8, 8), i / 50), tmp_path / f"p{i:02}.png")) for i in range(45)]
    files[42] = str(save_png(np.zeros((10, 10)), tmp_path / "wrong-size.png"))
    code, _, err = cli(capsys, *url_key, "store", name, *files)
    assert code == 5 and err.startswith(f"ams: error: shape_mismatch: {files[42]} is 10x10 pixels"), err
    assert "patterns[" not in err and "the first 40 patterns are stored" in err, err
    np.save(tmp_path / "good.npy", np.zeros((3, 64), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((2, 63), np.float32))
    code, _, err = cli(
        capsys, *url_key, "store", name, str(tmp_path / "good.npy"), str(tmp_path / "short.npy")
    )
    assert code == 5 and f"{tmp_path / 'short.npy'} row 0" in err and "patterns[" not in err, err
    code, _, err = cli(capsys, *url_key, "store", name, files[0], files[1], "--ids", "same", "same")
    assert code == 5 and f"{files[1]}: id 'same' appears twice" in err, err


def test_cli_commands_and_json(capsys, url_key, fresh, tmp_path) -> None:
    code, out, _ = cli(capsys, *url_key, "info", "--json")
    assert code == 0 and json.loads(out)["auth"] is True
    code, out, _ = cli(capsys, *url_key, "health")
    assert code == 0 and out.split() == ["live:", "yes", "ready:", "yes"]
    name = fresh("vec")
    code, out, _ = cli(capsys, *url_key, "memories", "create", name, "--shape", "3", "--json")
    assert json.loads(out)["shape"] == [3]
    np.save(tmp_path / "rows.npy", np.eye(3, dtype=np.float32))
    code, out, _ = cli(
        capsys, *url_key, "store", name, str(tmp_path / "rows.npy"), "--metadata", '{"src": "eye"}'
    )
    assert code == 0 and "count now 3" in out
    code, out, _ = cli(capsys, *url_key, "patterns", name, "--limit", "2")
    assert out.splitlines() == [
        "ID      TEXT  METADATA",
        'rows-0  -     {"src":"eye"}',
        'rows-1  -     {"src":"eye"}',
    ]
    code, out, _ = cli(capsys, *url_key, "pattern", "get", name, "rows-1", "-o", str(tmp_path / "one.npy"))
    assert code == 0 and np.array_equal(np.load(tmp_path / "one.npy"), [0, 1, 0])
    np.save(tmp_path / "cue.npy", np.array([0.1, 0.0, 0.9], dtype=np.float32))
    code, out, _ = cli(capsys, *url_key, "search", name, str(tmp_path / "cue.npy"), "-k", "2", "--json")
    assert [m["id"] for m in json.loads(out)["matches"]] == [
        "rows-2",
        "rows-0",
    ]  # rows-0, -1 tie: the lower row
    code, out, err = cli(
        capsys, *url_key, "retrieve", name, str(tmp_path / "cue.npy"), "-o", str(tmp_path / "r.png")
    )
    assert code == 5 and "write it as .npy" in err  # a vector memory's result has no picture
    assert cli(capsys, *url_key, "pattern", "delete", name, "rows-0")[0] == 0
    assert cli(capsys, *url_key, "pattern", "get", name, "rows-0")[0] == 3
    code, out, _ = cli(capsys, *url_key, "demo")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["PRESET", "TITLE"] and "fashion" in out
    code, out, _ = cli(capsys, *url_key, "jobs")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["ID", "MEMORY", "KIND", "STATUS"]
    assert cli(capsys, *url_key, "memories", "delete", name)[0] == 0
    assert cli(capsys, *url_key, "memories", "get", name)[0] == 3


def test_cli_reads_a_picture_result_as_a_file(capsys, url_key, fresh, pictures, tmp_path) -> None:
    name = fresh("img")
    cli(capsys, *url_key, "memories", "create", name, "--shape", "1", "28", "28")
    np.save(tmp_path / "two.npy", pictures[:2])
    cli(capsys, *url_key, "store", name, str(tmp_path / "two.npy"), "--auto-ids")
    code, out, _ = cli(capsys, *url_key, "patterns", name, "--json")
    first = json.loads(out)["patterns"][0]["id"]
    assert len(first) == 32  # the service's ids
    code, _, _ = cli(capsys, *url_key, "pattern", "get", name, first, "-o", str(tmp_path / "p.png"))
    assert code == 0 and np.array_equal(read_png(tmp_path / "p.png"), pictures[0])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_relational_memories(capsys, monkeypatch, url_key, europe, fresh, tmp_path) -> None:
    kb = fresh("kb")
    code, out, _ = cli(capsys, *url_key, "memories", "create", kb, "--kind", "relational", "--json")
    assert code == 0 and (json.loads(out)["kind"], json.loads(out)["shape"]) == ("relational", [])
    assert cli(capsys, *url_key, "memories", "get", kb)[1].splitlines()[2].split() == ["shape", "-"]
    facts = {
        "facts": [{"relation": "borders", "args": ["germany", "france"]}, ["capital_of", "paris", "france"]]
    }
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    (tmp_path / "more.jsonl").write_text(
        '["borders", "france", "spain"]\n\n["borders", "germany", "france"]\n'
    )
    files = [str(tmp_path / "facts.json"), str(tmp_path / "more.jsonl")]
    code, out, err = cli(
        capsys, *url_key, "facts", "add", kb, *files, "--fact", 'capital_of "la paz" bolivia'
    )
    assert code == 0, err
    assert out.strip() == f"stored 5 facts in {kb} (4 new, count now 4)"
    code, out, _ = cli(capsys, *url_key, "facts", "list", kb)
    rows = [line.split(None, 2) for line in out.splitlines()]
    assert rows[0] == ["ID", "RELATION", "ARGS"] and [r[1:] for r in rows[1:]] == [
        ["borders", "germany, france"],
        ["capital_of", "paris, france"],
        ["borders", "france, spain"],
        ["capital_of", "la paz, bolivia"],
    ]
    listed = cli(capsys, *url_key, "facts", "list", kb, "--json")[1]
    first = json.loads(listed)["facts"][0]
    assert first["relation"] == "borders" and first["args"] == ["germany", "france"]
    copy = fresh("copy")
    cli(capsys, *url_key, "memories", "create", copy, "--kind", "relational")
    monkeypatch.setattr("sys.stdin", io.StringIO(listed))  # one memory's facts piped into another
    code, out, _ = cli(capsys, *url_key, "facts", "add", copy, "-", "--json")
    assert code == 0 and (json.loads(out)["new"], json.loads(out)["count"]) == (4, 4)
    code, out, _ = cli(capsys, *url_key, "facts", "get", kb, str(first["id"]), "--json")
    assert json.loads(out) == first
    code, out, _ = cli(capsys, *url_key, "vocabulary", kb)
    assert out.splitlines()[:3] == ["RELATION    ARITY", "borders     2", "capital_of  2"]
    assert out.splitlines()[-1] == "names     germany, france, paris, spain, la paz, bolivia"
    assert cli(capsys, *url_key, "facts", "delete", kb, str(first["id"]))[0] == 0

    code, out, _ = cli(capsys, *url_key, "query", europe, "capital_of", "?", "france", "-k", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["RANK", "ENTITY", "SCORE", "KNOWN"]
    assert lines[1].split()[:2] == ["1", "paris"] and lines[1].split()[-1] == "yes" and len(lines) == 6
    assert lines[4:] == ["state          ready", "trained facts  176"]
    code, out, _ = cli(capsys, *url_key, "query", europe, "borders", "germany", "?", "-k", "1000", "--json")
    candidates = json.loads(out)["candidates"]
    code, out, _ = cli(
        capsys, *url_key, "query", europe, "borders", "germany", "?", "-k", "1000", "--filter-known", "--json"
    )
    assert [c for c in candidates if not c["known"]] == json.loads(out)["candidates"]

    for args, exit_code, text in (
        (("query", europe, "borders", "atlantis", "?"), 5, "unknown_entity: unknown entity 'atlantis'"),
        (("query", europe, "borders", "germany", "france"), 5, "invalid_query"),
        (("query", kb, "borders", "germany", "?"), 4, "not_trained"),
        (("facts", "get", kb, str(first["id"])), 3, "fact_not_found"),
        (("facts", "add", kb, "--fact", "borders germany france spain"), 5, "arity_mismatch"),
        (("facts", "add", kb, "--fact", "lonely"), 5, "a relation and at least one argument"),
        (("facts", "add", kb), 5, "no facts"),
        (("patterns", kb), 5, "wrong_kind"),
        (("memories", "create", fresh("vec")), 5, "invalid_shape: shape is required"),
    ):
        got, out, err = cli(capsys, *url_key, *args)
        assert got == exit_code and out == "" and text in err, (args, got, err)
