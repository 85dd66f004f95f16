"""``ams``: the associative memory service from the command line.

    ams memories create fashion --shape 1 28 28
    ams store fashion pics/*.png
    ams retrieve fashion noisy.png -o out.png
    ams complete fashion cue.png --mask mask.png -o out.png
    ams lookup photos --text "a red motorcycle"
    ams train pc1 --wait
    ams memories create kb --kind relational && ams facts add kb facts.json
    ams query kb borders germany '?'

``--url`` (default ``$AMS_URL`` or http://127.0.0.1:8000) and ``--api-key`` (default
``$AMS_API_KEY``) go anywhere on the line; ``--json`` prints the answer as JSON for scripts.
Errors are one line on stderr; exit codes: 0 ok, 1 other failure, 2 usage, 3 not found,
4 conflict, 5 invalid input, 6 auth, 7 unavailable (503, 429, network), 8 job failed.

argparse (the standard library) rather than click: it takes ``--shape 1 28 28`` (an
option with several values) as it is, and costs no dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from . import _output as out
from ._cli_facts import add_commands as add_fact_commands
from .client import Client
from .codec import array_of
from .errors import ApiError
from .models import RecallReport

SUPPRESS = argparse.SUPPRESS


def _common() -> argparse.ArgumentParser:
    """Options every command takes (also after the command's name)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument("--url", default=SUPPRESS, help="the service (default: $AMS_URL or http://127.0.0.1:8000)")
    g.add_argument("--api-key", default=SUPPRESS, help="API key (default: $AMS_API_KEY)")
    g.add_argument("--timeout", type=float, default=SUPPRESS, help="seconds per request (default 60)")
    g.add_argument("--json", action="store_true", default=SUPPRESS, help="print the answer as JSON")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=SUPPRESS,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    return p


def _config(text: str | None) -> dict[str, Any] | None:
    """``--config``: JSON text, or @file.json."""
    if text is None:
        return None
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TypeError("--config must be a JSON object")
    return value


def _progress(args: argparse.Namespace) -> bool:
    return args.progress if args.progress is not None else sys.stderr.isatty()


# --- commands -------------------------------------------------------------------------------
def cmd_info(ams: Client, args: argparse.Namespace) -> int:
    info = ams.info()
    lim = info.limits
    text = out.pairs(
        [
            ("url", ams.url),
            ("version", info.version),
            ("device", info.device),
            ("auth", info.auth),
            ("kinds", ", ".join(info.kinds)),
            ("similarities", ", ".join(info.similarities)),
            ("separations", ", ".join(info.separations)),
        ]
        + [(f"limits.{k}", getattr(lim, k)) for k in lim.__dataclass_fields__]
    )
    out.emit(args.json, info.raw, text)
    return out.OK


def cmd_health(ams: Client, args: argparse.Namespace) -> int:
    live = ams.live()
    ready = ams.ready()
    out.emit(
        args.json,
        {"live": live, "ready": ready},
        f"live: {'yes' if live else 'no'}\nready: {'yes' if ready else 'no'}",
    )
    return out.OK if ready else out.UNAVAILABLE


def cmd_memories_list(ams: Client, args: argparse.Namespace) -> int:
    memories = ams.list_memories()
    out.emit(
        args.json,
        {"memories": [m.raw for m in memories]},
        out.memory_rows(memories) if memories else "no memories",
    )
    return out.OK


def cmd_memories_get(ams: Client, args: argparse.Namespace) -> int:
    m = ams.get_memory(args.name)
    out.emit(args.json, m.raw, out.memory_text(m))
    return out.OK


def cmd_memories_create(ams: Client, args: argparse.Namespace) -> int:
    m = ams.create_memory(args.name, args.shape, kind=args.kind, text=args.text, config=_config(args.config))
    out.emit(args.json, m.raw, out.memory_text(m))
    return out.OK


def cmd_memories_delete(ams: Client, args: argparse.Namespace) -> int:
    ams.delete_memory(args.name)
    out.emit(args.json, {"deleted": args.name}, f"deleted memory {args.name}")
    return out.OK


def _store_inputs(files: Sequence[str], auto_ids: bool) -> tuple[list[Any], list[str] | None, list[str]]:
    """Files -> patterns, default ids and where each pattern came from: a picture is one
    pattern (id: the file's stem; from: the file), a .npy file a batch (ids: stem-0, stem-1,
    ...; from: "codes.npy row 0", ...)."""
    patterns: list[Any] = []
    ids: list[str] = []
    sources: list[str] = []
    for f in files:
        p = Path(f)
        if p.suffix.lower() == ".npy":
            batch = array_of(p)
            if batch.ndim < 2:
                batch = batch[None]
            patterns.extend(batch)
            ids.extend(f"{p.stem}-{i}" for i in range(len(batch)))
            sources.extend(f"{f} row {i}" for i in range(len(batch)))
        else:
            if not p.is_file():
                raise FileNotFoundError(2, "no such file", f)
            patterns.append(p)
            ids.append(p.stem)
            sources.append(f)
    return patterns, None if auto_ids else ids, sources


def cmd_store(ams: Client, args: argparse.Namespace) -> int:
    patterns, ids, sources = _store_inputs(args.files, args.auto_ids)
    if args.ids is not None:
        ids = args.ids
    texts = args.texts
    if args.texts_file is not None:
        texts = Path(args.texts_file).read_text().splitlines()
    metadata = None
    if args.metadata is not None:
        meta = _config(args.metadata)
        metadata = [meta] * len(patterns)
    try:
        result = ams.store(
            args.name, patterns, ids=ids, texts=texts, metadata=metadata, fit=args.fit, progress=args.progress
        )  # None: a bar on a terminal, for uploads of several requests
    except ApiError as exc:  # name the file, not the request's field: patterns[i] of the failed request
        done = len(exc.stored.ids) if exc.stored else 0
        exc.message = out.name_sources(exc.message, sources, done)
        if done:
            exc.message += f" (the first {done} patterns are stored)"
        raise
    text = f"stored {len(result.ids)} patterns in {args.name} (count now {result.count})"
    out.emit(args.json, {"ids": result.ids, "count": result.count}, text)
    return out.OK


def cmd_patterns(ams: Client, args: argparse.Namespace) -> int:
    items = []
    for p in ams.patterns(args.name):
        items.append(p)
        if args.limit is not None and len(items) >= args.limit:
            break
    data = {"patterns": [{"id": p.id, "text": p.text, "metadata": p.metadata} for p in items]}
    rows = [[p.id, p.text, p.metadata] for p in items]
    out.emit(args.json, data, out.table(["id", "text", "metadata"], rows) if items else "no patterns")
    return out.OK


def cmd_pattern_get(ams: Client, args: argparse.Namespace) -> int:
    p = ams.get_pattern(args.name, args.id)
    written = None if args.output is None else out.write_result(args.output, p.array, p.image)
    data = {k: v for k, v in p.raw.items() if written is None or k not in ("image", "vector")}
    if written:
        data["output"] = written
    a = p.array
    text = out.pairs(
        [
            ("id", p.id),
            ("text", p.text),
            ("metadata", p.metadata),
            ("shape", " ".join(map(str, a.shape))),
            ("min / max", f"{a.min():.4g} / {a.max():.4g}"),
        ]
        + ([("written", written)] if written else [])
    )
    out.emit(args.json, data, text)
    return out.OK


def cmd_pattern_delete(ams: Client, args: argparse.Namespace) -> int:
    ams.delete_pattern(args.name, args.id)
    out.emit(args.json, {"deleted": args.id}, f"deleted pattern {args.id} of {args.name}")
    return out.OK


def _recall_output(
    args: argparse.Namespace,
    raw: dict[str, Any],
    matches: Any,
    energy: float,
    array: np.ndarray | None,
    image: Any,
    extra: Sequence[tuple[str, Any]] = (),
) -> int:
    written = None if args.output is None else out.write_result(args.output, array, image)
    data = dict(raw)
    if written:
        data["output"] = written
    lines = [
        out.match_rows(matches),
        "",
        out.pairs([("energy", energy), *extra] + ([("written", written)] if written else [])),
    ]
    out.emit(args.json, data, "\n".join(lines))
    return out.OK


def _recall_report(report: RecallReport | None) -> list[tuple[str, Any]]:
    """A pc recall's report as one line: which stored pattern it reconstructed, if any."""
    if report is None:
        return []
    near = report.nearest
    if report.stored:
        what = f"stored pattern {near.id}" + ("" if report.unique else " (not unique)")
    else:
        what = f"a reconstruction, not a stored pattern (nearest: {near.id})"
    return [("recall", what)]


def cmd_retrieve(ams: Client, args: argparse.Namespace) -> int:
    r = ams.retrieve(args.name, Path(args.cue), mask=_mask(args.mask), k=args.k, steps=args.steps)
    return _recall_output(args, r.raw, r.matches, r.energy, r.array, r.image, _recall_report(r.recall))


def cmd_complete(ams: Client, args: argparse.Namespace) -> int:
    r = ams.complete(args.name, Path(args.cue), mask=_mask(args.mask), k=args.k)
    extra = [("filled pixels", r.unknown_pixels), *_recall_report(r.recall)]
    return _recall_output(args, r.raw, r.matches, r.energy, r.array, r.image, extra)


def cmd_search(ams: Client, args: argparse.Namespace) -> int:
    matches = ams.search(args.name, Path(args.cue), mask=_mask(args.mask), k=args.k)
    out.emit(
        args.json, {"matches": [{"id": m.id, "score": m.score} for m in matches]}, out.match_rows(matches)
    )
    return out.OK


def cmd_lookup(ams: Client, args: argparse.Namespace) -> int:
    if (args.text is None) == (args.image is None):
        raise ValueError("give --text or --image")
    r = ams.lookup(
        args.name,
        text=args.text,
        image=None if args.image is None else Path(args.image),
        mask=_mask(args.mask),
        k=args.k,
    )
    written = None
    if args.output is not None:
        if r.completion is None:
            raise ValueError("-o writes a text query's completed pattern; an image query answers captions")
        written = out.write_result(args.output, r.completion.array, r.completion.image)
    if r.patterns is not None:
        text = out.table(
            ["rank", "id", "score", "caption"],
            [[i + 1, p.id, p.score, p.text] for i, p in enumerate(r.patterns)],
        )
    else:
        text = out.table(
            ["rank", "id", "score", "caption"],
            [[i + 1, c.id, c.score, c.text] for i, c in enumerate(r.captions or [])],
        )
    if written:
        text += f"\n\ncompletion written to {written}"
    data = dict(r.raw) | ({"output": written} if written else {})
    out.emit(args.json, data, text)
    return out.OK


def _mask(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _wait(job: Any, args: argparse.Namespace) -> int:
    job.wait(progress=_progress(args), timeout=args.wait_timeout)
    took = (
        ""
        if job.started_at is None or job.finished_at is None
        else f" in {(job.finished_at - job.started_at).total_seconds():.1f} s"
    )
    energy = "" if job.energy is None else f", energy {job.energy:.6g}"
    why = "" if job.stop_reason is None else f" (stop_reason {job.stop_reason})"
    out.emit(
        args.json,
        out.job_json(job),
        f"job {job.id} ({job.kind} {job.memory}) {job.status}: "
        f"epoch {job.epoch}/{job.epochs or '?'}{energy}{took}{why}",
    )
    return out.OK


def cmd_train(ams: Client, args: argparse.Namespace) -> int:
    job = ams.train(args.name, epochs=args.epochs)
    if args.wait:
        return _wait(job, args)
    out.emit(
        args.json,
        out.job_json(job),
        f"job {job.id} {job.status}: follow it with 'ams jobs get {job.id}' or 'ams jobs wait {job.id}'",
    )
    return out.OK


def cmd_jobs(ams: Client, args: argparse.Namespace) -> int:
    jobs = ams.jobs(memory=args.memory)
    out.emit(args.json, {"jobs": [out.job_json(j) for j in jobs]}, out.job_rows(jobs) if jobs else "no jobs")
    return out.OK


def cmd_jobs_get(ams: Client, args: argparse.Namespace) -> int:
    job = ams.job(args.id)
    out.emit(args.json, out.job_json(job), out.job_rows([job]))
    return out.OK


def cmd_jobs_wait(ams: Client, args: argparse.Namespace) -> int:
    return _wait(ams.job(args.id), args)


def cmd_jobs_cancel(ams: Client, args: argparse.Namespace) -> int:
    job = ams.cancel_job(args.id)
    out.emit(args.json, out.job_json(job), out.job_rows([job]))
    return out.OK


def cmd_demo(ams: Client, args: argparse.Namespace) -> int:
    if args.preset is None:
        presets = ams.demo_presets()
        rows = [
            [p.name, p.title, p.kind, out.shape_cell(p.shape), p.text, p.default_count, p.description]
            for p in presets
        ]
        data = {"presets": [{k: getattr(p, k) for k in p.__dataclass_fields__} for p in presets]}
        header = ["preset", "title", "kind", "shape", "text", "count", "description"]
        out.emit(args.json, data, out.table(header, rows))
        return out.OK
    memory, job = ams.create_demo(args.preset, name=args.name, kind=args.kind, count=args.count)
    if args.wait:
        return _wait(job, args)
    out.emit(
        args.json,
        {"memory": memory.raw, "job": out.job_json(job)},
        f"memory {memory.name} created; job {job.id} loads it ('ams jobs wait {job.id}')",
    )
    return out.OK


# --- the parser -----------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(
        prog="ams",
        parents=[common],
        description="The associative memory service from the command line.",
        epilog="Exit codes: 0 ok, 1 other failure, 2 usage, 3 not found, 4 conflict, 5 invalid input, "
        "6 auth, 7 unavailable, 8 job failed. Docs: docs/client.md.",
    )
    top.add_argument("--version", action="version", version=f"ams {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    command(sub, "info", cmd_info, "version, device, kinds, limits of the service")
    command(sub, "health", cmd_health, "is the service up and ready (exit 7 when not ready)")

    mem = sub.add_parser("memories", help="create, list, show, delete memories").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command(mem, "list", cmd_memories_list, "every memory")
    command(mem, "get", cmd_memories_get, "one memory's details").add_argument("name")
    p = command(mem, "create", cmd_memories_create, "create a memory")
    p.add_argument("name")
    p.add_argument(
        "--shape", type=int, nargs="+", help="C H W for pictures, D for vectors; none for kind relational"
    )
    p.add_argument("--kind", default="hopfield", help="hopfield (default), pc, pcgraph, relational (facts)")
    p.add_argument("--text", action="store_true", help="a cross-modal memory: patterns carry captions")
    p.add_argument(
        "--config", help="the kind's config as JSON, or @file.json (default: the measured defaults)"
    )
    command(mem, "delete", cmd_memories_delete, "delete a memory and all its patterns").add_argument("name")

    p = command(
        sub, "store", cmd_store, "store pictures (PNG/JPEG) and .npy batches; ids default to file names"
    )
    p.add_argument("name")
    p.add_argument("files", nargs="+", help="pictures (one pattern each) or .npy arrays (a batch each)")
    p.add_argument("--ids", nargs="+", help="one id per pattern (default: the files' stems; .npy: stem-i)")
    p.add_argument("--auto-ids", action="store_true", help="let the service make the ids")
    p.add_argument("--texts", nargs="+", help="one caption per pattern")
    p.add_argument("--texts-file", help="captions, one line per pattern")
    p.add_argument("--metadata", help="JSON object stored with every pattern")
    p.add_argument("--fit", action="store_true", help="centre-crop and resize pictures of another size")

    p = command(sub, "patterns", cmd_patterns, "list a memory's patterns (id, caption, metadata)")
    p.add_argument("name")
    p.add_argument("--limit", type=int, help="at most this many")
    pat = sub.add_parser("pattern", help="get or delete one pattern").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = command(pat, "get", cmd_pattern_get, "one stored pattern; -o writes it (.png, or .npy for numbers)")
    p.add_argument("name")
    p.add_argument("id")
    p.add_argument("-o", "--output", help="file to write the pattern to")
    p = command(pat, "delete", cmd_pattern_delete, "delete one pattern")
    p.add_argument("name")
    p.add_argument("id")

    for name, fn, help_text, k in (
        ("retrieve", cmd_retrieve, "recall a stored pattern from a noisy or partial cue", 3),
        ("complete", cmd_complete, "complete a partial picture (mask picture: white = known; or alpha)", 3),
        ("search", cmd_search, "the stored patterns nearest what the memory recalls from a cue", 10),
    ):
        p = command(sub, name, fn, help_text)
        p.add_argument("name")
        p.add_argument("cue", help="a picture (PNG/JPEG) or a .npy array")
        p.add_argument("--mask", help="mask picture (white = known) or .npy booleans (True = known)")
        p.add_argument("-k", type=int, default=k, help=f"matches to name (default {k})")
        if name == "retrieve":
            p.add_argument("--steps", type=int, default=1, help="iterated retrieval steps (hopfield)")
        if name != "search":
            p.add_argument("-o", "--output", help="file to write the result to (.png, or .npy for numbers)")

    p = command(sub, "lookup", cmd_lookup, "cross-modal lookup in a text memory: a caption or a picture")
    p.add_argument("name")
    p.add_argument("--text", help="a caption: find the pictures (patterns) it describes")
    p.add_argument("--image", help="a picture or .npy: find its captions")
    p.add_argument("--mask", help="for --image: mask picture or .npy booleans")
    p.add_argument("-k", type=int, default=5, help="patterns or captions to return (default 5)")
    p.add_argument("-o", "--output", help="for --text: write the completed pattern here")

    def waits(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait-timeout", type=float, help="give up waiting after this many seconds (exit 8)")

    p = command(sub, "train", cmd_train, "train a memory (kinds pc, pcgraph, relational) as a background job")
    p.add_argument("name")
    p.add_argument("--epochs", type=int, help="training epochs (default: the model's)")
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    waits(p)

    jobs = command(sub, "jobs", cmd_jobs, "list jobs; 'jobs get|wait|cancel ID' for one")
    jobs.add_argument("--memory", help="only this memory's jobs")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION")
    command(jsub, "get", cmd_jobs_get, "one job's state").add_argument("id")
    p = command(jsub, "wait", cmd_jobs_wait, "wait for a job (exit 8 if it fails or is cancelled)")
    p.add_argument("id")
    waits(p)
    command(jsub, "cancel", cmd_jobs_cancel, "cancel a job").add_argument("id")

    add_fact_commands(sub, command)

    p = command(sub, "demo", cmd_demo, "list demo data sets, or create a memory filled from one")
    p.add_argument("preset", nargs="?", help="a preset name (none: list them)")
    p.add_argument("--name", help="the memory's name (default: demo-<preset>)")
    p.add_argument("--kind", help="the memory's kind (default: the preset's)")
    p.add_argument("--count", type=int, help="patterns (facts) to load")
    p.add_argument("--wait", action="store_true", help="wait for the load")
    waits(p)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name, default in (
        ("url", None),
        ("api_key", None),
        ("timeout", 60.0),
        ("json", False),
        ("progress", None),
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as ams:
            return args.fn(ams, args)
    except KeyboardInterrupt:
        out.warn("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 (every failure: one line, and an exit code that says which kind)
        out.warn(f"error: {out.error_line(exc)}")
        return out.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
