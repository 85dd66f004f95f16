"""Examples cannot rot: every ```sh and ```python block of README.md and docs/ runs here.

Per document, its ``sh`` blocks run in order in one bash process against a real server
started for that document (a fresh data directory, a free port, ``AMS_URL`` pointing at
it), in a working directory where the documented sample command has made ``samples/``,
with the project's ``ams`` command on PATH (as ``.venv/bin/ams``, once the venv is active).
Its ``python`` blocks run in order in one Python process (like a notebook), with the same
``AMS_URL``. A comment ``# -> ...`` after a command is what that command showed in a real
run (the ``#    ...`` or ``#`` lines right after it continue it): for ``curl``,
``# -> 201 {...}`` gives the status code and the JSON answer, of which every field shown
with a value is checked (``...`` stands for what is left out); for ``ams``, what it
printed (stdout and stderr; runs of spaces and line breaks compare as one space), led by
``[exit N]`` when its exit code is not 0; after a Python ``print``, the printed line. In
printed text ``...`` matches anything and a number with a decimal point matches to the
digits shown. Blocks that cannot run here (Docker, make) are fenced as ``text``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)

# curl and ams, wrapped: each call's status (HTTP status; exit code) and output go to $AMS_CALLS
# as one JSON line (in order). ams keeps its exit code, so that `set -e` stops at a failure.
WRAPPERS = r"""
__ams_record() {  # command status output
  python3 -c 'import json, sys; command, status, body = sys.argv[1:]
print(json.dumps({"command": command, "status": int(status), "body": body}))' "$@" >> "$AMS_CALLS"
}
curl() {
  local out status
  out="$(command curl -w '\n%{http_code}' "$@")"
  status="${out##*$'\n'}"
  out="${out%$'\n'*}"
  __ams_record curl "$status" "$out"
  printf '%s\n' "$out"
}
ams() {
  local out status=0
  out="$(command ams "$@" 2>&1)" || status=$?
  __ams_record ams "$status" "$out"
  printf '%s\n' "$out"
  return "$status"
}
__ams_mark() { (test -f "$AMS_CALLS" && wc -l < "$AMS_CALLS" || echo 0) >> "$AMS_MARKS"; }
"""


def blocks(doc: Path, lang: str) -> list[str]:
    return [body for tag, body in FENCE.findall(doc.read_text()) if tag == lang]


def _marked(script: str) -> tuple[str, list[str]]:
    """The script with a ``__ams_mark`` before each ``# -> `` comment (it records how many curl
    calls ran so far, so that the answer shown is checked against the call just before it,
    loops included), and the expectations in order."""
    lines, expectations, in_answer = [], [], False
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -> "):
            lines.append("__ams_mark")
            expectations.append(stripped[5:])
            in_answer = True
        elif in_answer and (stripped == "#" or stripped.startswith("#   ")):  # the answer continued
            expectations[-1] += " " + stripped[4:]
        else:
            in_answer = False
        lines.append(line)
    return "\n".join(lines), expectations


def _loose_json(text: str) -> dict[str, Any]:
    """The scalar (and scalar-list) fields of an abbreviated JSON text: ``"key": value``."""
    fields: dict[str, Any] = {}
    for key, raw in re.findall(
        r'"(\w+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?[\d.eE+-]+|true|false|null|\[[^\[\]{}]*\])', text
    ):
        if "..." in raw:
            continue
        try:
            fields.setdefault(key, []).append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return fields


def _find(value: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a JSON document."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(value, list):
        for v in value:
            found += _find(v, key)
    return found


def _same(shown: Any, actual: Any) -> bool:
    if isinstance(shown, float | int) and not isinstance(shown, bool) and isinstance(actual, float | int):
        digits = len(re.sub(r"[^\d]", "", f"{shown}".split("e")[0]).lstrip("0")) or 1
        return math.isclose(
            shown, actual, rel_tol=10 ** (1 - digits), abs_tol=10 ** (1 - digits) * abs(shown) + 1e-12
        )
    if isinstance(shown, str) and isinstance(actual, str) and shown.endswith("..."):
        return actual.startswith(shown[:-3])
    if isinstance(shown, list) and isinstance(actual, list):
        return len(shown) == len(actual) and all(_same(s, a) for s, a in zip(shown, actual, strict=True))
    return shown == actual


def check_answer(expected: str, call: dict[str, Any], where: str) -> None:
    status = re.match(r"(\d{3})\b", expected)
    if status:
        assert call["status"] == int(status.group(1)), f"{where}: {expected!r} but got {call}"
        expected = expected[status.end() :]
    else:
        assert call["status"] < 400, f"{where}: {call}"
    shown = _loose_json(expected)
    if not shown:
        return
    answer = json.loads(call["body"])
    for key, values in shown.items():
        actual = _find(answer, key)
        for value in values:
            assert any(_same(value, a) for a in actual), (
                f"{where}: {key}={value!r} not in the answer {call['body'][:600]}"
            )


def check_output(expected: str, call: dict[str, Any], where: str) -> None:
    """An ``ams`` call: its exit code (``[exit N]`` first when not 0) and what it printed."""
    exit_code = re.match(r"\[exit (\d+)\]\s*", expected)
    want = int(exit_code.group(1)) if exit_code else 0
    assert call["status"] == want, f"{where}: exit code {call['status']}, not {want}: {call['body']}"
    shown = " ".join(expected[exit_code.end() if exit_code else 0 :].split())
    printed = " ".join(call["body"].split())
    assert _printed_matches(shown, printed), f"{where}: printed {call['body']!r}, the text shows {shown!r}"


def _printed_matches(expected: str, line: str) -> bool:
    pattern = ""
    for part in re.split(r"(\.\.\.|-?\d+\.\d+(?:e-?\d+)?)", expected):
        if part == "...":
            pattern += ".*"
        elif re.fullmatch(r"-?\d+\.\d+(?:e-?\d+)?", part):
            pattern += r"(-?\d+\.\d+(?:e-?\d+)?)"
        else:
            pattern += re.escape(part)
    m = re.fullmatch(pattern, line.strip())
    if not m:
        return False
    numbers = [
        p
        for p in re.split(r"(\.\.\.|-?\d+\.\d+(?:e-?\d+)?)", expected)
        if re.fullmatch(r"-?\d+\.\d+(?:e-?\d+)?", p)
    ]
    return all(_same(float(s), float(a)) for s, a in zip(numbers, m.groups(), strict=True))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where the examples run: ``.venv`` and ``scripts`` of this checkout, and the sample
    pictures made by the documented command."""
    work = tmp_path_factory.mktemp("examples")
    for name in (".venv", "scripts"):
        (work / name).symlink_to(ROOT / name)
    (work / "bin").mkdir()
    (work / "bin" / "ams").symlink_to(ROOT / ".venv" / "bin" / "ams")  # only ams: python3 stays the system's
    done = subprocess.run(
        [".venv/bin/python", "scripts/export_fashion_pngs.py", "--out", "samples"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return work


def _env(url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
    env.update(AMS_URL=url, PYTHONUNBUFFERED="1", TORCH_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{workdir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


DOCS_WITH_SH = [d for d in DOCS if blocks(d, "sh")]
DOCS_WITH_PY = [d for d in DOCS if blocks(d, "python")]


def test_the_documents_have_examples() -> None:
    assert ROOT / "README.md" in DOCS_WITH_SH and ROOT / "README.md" in DOCS_WITH_PY
    assert any(d.name == "rest.md" for d in DOCS_WITH_SH)
    client = ROOT / "docs" / "client.md"  # the Python client and the ams command
    assert len(blocks(client, "python")) >= 8 and len(blocks(client, "sh")) >= 2


@pytest.mark.parametrize("doc", DOCS_WITH_SH, ids=lambda d: str(d.relative_to(ROOT)))
def test_shell_examples(doc: Path, workdir: Path, tmp_path: Path) -> None:
    script = "\n".join(blocks(doc, "sh"))
    server = LiveServer(tmp_path / "data")
    try:
        calls_file, marks_file = tmp_path / "calls.jsonl", tmp_path / "marks.txt"
        env = _env(server.url, workdir) | {"AMS_CALLS": str(calls_file), "AMS_MARKS": str(marks_file)}
        marked, expectations = _marked(script)
        done = subprocess.run(
            ["bash", "-c", WRAPPERS + "set -e -o pipefail\n" + marked],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert done.returncode == 0, f"{doc.name}: exit {done.returncode}\n{done.stderr[-3000:]}"
        calls = (
            [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
        )
        marks = [int(m) for m in marks_file.read_text().split()] if marks_file.exists() else []
        assert expectations and len(marks) == len(expectations), f"{doc.name}: {len(marks)} marks"
        for count, expected in zip(marks, expectations, strict=True):
            assert count > 0, f"{doc.name}: the answer {expected!r} follows no curl or ams call"
            call = calls[count - 1]
            check = check_output if call["command"] == "ams" else check_answer
            check(expected, call, f"{doc.name}, {call['command']} call {count}")
    finally:
        server.stop()


@pytest.mark.parametrize("doc", DOCS_WITH_PY, ids=lambda d: str(d.relative_to(ROOT)))
def test_python_examples(doc: Path, workdir: Path, tmp_path: Path) -> None:
    script = "\n".join(blocks(doc, "python"))
    needs_server = "AMS_URL" in script or "ams_client" in script
    server = LiveServer(tmp_path / "data") if needs_server else None
    try:
        url = server.url if server else "http://127.0.0.1:9"
        done = subprocess.run(
            [sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + script],
            cwd=workdir,
            env=_env(url, workdir),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert done.returncode == 0, f"{doc.name}: exit {done.returncode}\n{done.stderr[-3000:]}"
        printed = [line for line in done.stdout.splitlines() if line.strip()]
        expected = [
            line.split("# -> ", 1)[1] for line in script.splitlines() if line.lstrip().startswith("# -> ")
        ]
        assert len(printed) == len(expected), (
            f"{doc.name}: every print shows its line: {printed} vs {expected}"
        )
        for want, got in zip(expected, printed, strict=True):
            assert _printed_matches(want, got), f"{doc.name}: printed {got!r}, the text shows {want!r}"
    finally:
        if server:
            server.stop()
