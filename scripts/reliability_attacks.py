"""Run issue 22's attacks against a checkout of the service and write what they saw (JSON), or
print the before/after table of docs/reliability.md from two such files.

Each attack gets a fresh server (``python -m app`` from the checkout, RLIMIT_AS 3 GiB, API
keys set, short body and header timeouts, a rate limit), with /livez probed every 20 ms
and the server's peak RSS read (tests/reliability/attacks.py says what each attack does).
The disk-full attack needs root (it mounts a 4 MiB tmpfs); without it it is left out.

    # main's code, as it was before the hardening (any commit: git archive <commit> | tar -x -C DIR)
    nice .venv/bin/python scripts/reliability_attacks.py --tree /tmp/before --out results/reliability_before.json
    nice .venv/bin/python scripts/reliability_attacks.py --out results/reliability_after.json
    .venv/bin/python scripts/reliability_attacks.py --table results/reliability_before.json results/reliability_after.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability")]

import attacks as A  # noqa: E402
import attacks_state as S  # noqa: E402
import httpx  # noqa: E402
from live_server import LiveServer  # noqa: E402

# (finding, attack, function): the order of the table.
ATTACKS = [
    ("1", "60 connections without a key send 30 MiB bodies", "unauthenticated_stalled_bodies"),
    ("1", "4 clients without a key post 30 MB of JSON to POST /v1/memories", "unauthenticated_big_json"),
    ("1", "the write key posts 30 MB of JSON to POST /v1/memories (x4)", "write_key_big_json"),
    ("1", "the write key sends a body 10 bytes every 0.5 s", "slow_body"),
    ("2", "4 read-key clients send a 30 MB cue vector to a D = 64 memory", "huge_cue"),
    (
        "3",
        "8 read-key clients send a 64 MP ICO cue (334 KB); BMP, GIF, TIFF, WebP, PPM, TGA cues",
        "image_bombs",
    ),
    ("4", "the write key creates and trains a pc memory of sizes [16000, 16000, 4]", "huge_model"),
    ("4", "the write key stores 128 tiny PNGs with ?fit=true into [3, 512, 512]", "upscaled_batch"),
    ("5", "train_steps = 1e9; cancel a long job; delete a training memory", "endless_training"),
    ("5", "another memory's 5-epoch job while one long job trains", "starved_jobs"),
    (
        "6",
        "captions and texts of 3000 chars, cursor 2^64, n = 1e308, seed 2^70, 30 delete/train races",
        "five_hundreds",
    ),
    ("8", "50 idle connections and one sending its headers a byte a second", "header_trickle"),
    ("8", "malformed JSON without a key", "malformed_json_without_key"),
    ("8", "a JPEG with EXIF orientation 6 (a phone photo)", "exif_orientation"),
    ("8", "GET /docs, /redoc, /openapi.json without a key", "docs_open"),
    ("-", "6 read-key clients send 600 requests as fast as they can", "request_flood"),
]


def fresh_server(tree: Path | None, root: Path) -> LiveServer:
    data = Path(tempfile.mkdtemp(dir=root)) / "data"
    return LiveServer(data, main=True, limit_as=A.LIMIT_AS, tree=tree, **A.SERVER_ENV)


def measure(
    tree: Path | None, root: Path, only: set[str], save: Callable[[dict], None] | None = None
) -> dict:
    """Run the attacks (all, or those named in ``only``); ``save`` gets what was measured so far
    after each."""
    out: dict[str, dict] = {}
    for finding, title, name in ATTACKS:
        if only and name not in only:
            continue
        print(f"{name} ...", flush=True)
        server = fresh_server(tree, root)
        try:
            target = A.Target(server)
            S.warm_up(target)  # first uses load code, once per process: not part of an attack
            result = A.run(target, getattr(A, name, None) or getattr(S, name))
        except Exception as exc:  # the attack's own set-up failed against this checkout: say so
            result = {"result": f"attack stopped: {type(exc).__name__}: {exc}", "alive": server.alive}
        finally:
            server.kill()
        out[name] = result | {"finding": finding, "attack": title}
        livez = result.get("livez", {}).get("max_ms")
        print(f"  {result['result']} | livez max {livez} ms | alive {result['alive']}", flush=True)
        if save:
            save(out)
    if not only or "damaged_memories" in only:
        server = fresh_server(tree, root)
        S.build_damaged(server)
        result = A.run(A.Target(server), S.damaged_memories)
        out["damaged_memories"] = result | {
            "finding": "7",
            "attack": "one memory each: a NaN vector, a short vector, a bad config, a flipped checkpoint header, NaN weights",
        }
        if save:
            save(out)
        print(f"damaged_memories: {result['result']}", flush=True)
        server.kill()
    if not only or "emptied_database" in only:
        server = fresh_server(tree, root)
        result = S.emptied_database(server)
        out["emptied_database"] = result | {
            "finding": "7",
            "attack": "the database file emptied beside a checkpoint",
        }
        print(f"emptied_database: {result['result']}", flush=True)
        server.kill()
    if (not only or "disk_full" in only) and os.geteuid() == 0:
        mnt = Path(tempfile.mkdtemp(dir=root))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
        server = None
        try:
            server = LiveServer(
                mnt / "data", log_dir=root, main=True, limit_as=A.LIMIT_AS, tree=tree, **A.SERVER_ENV
            )
            try:
                result = S.disk_full(server, mnt / "ballast")
            except (OSError, httpx.HTTPError) as exc:  # the server went away for good
                result = {"result": f"attack stopped: {type(exc).__name__}: {exc}"}
            out["disk_full"] = result | {"finding": "6", "attack": "stores into a full disk (4 MiB tmpfs)"}
            print(f"disk_full: {result['result']}", flush=True)
        finally:
            if server is not None:
                server.kill()
            subprocess.run(["umount", str(mnt)], check=False)
    return out


def cell(r: dict | None) -> str:
    if r is None:
        return "not run"
    text = r["result"]
    if "livez" in r:
        text += f"; /livez max {r['livez']['max_ms']:.0f} ms"
    if r.get("rss_peak_growth_mib") is not None and r["rss_peak_growth_mib"] >= 50:
        text += f"; RSS +{r['rss_peak_growth_mib']:.0f} MiB"
    if r.get("alive") is False:
        text += "; **server down**"
    return text.replace("|", "/")


def table(before: dict, after: dict) -> str:
    rows = ["| # | attack | before (main) | after |", "|---|---|---|---|"]
    for name in after:
        r = after[name]
        rows.append(f"| {r['finding']} | {r['attack']} | {cell(before.get(name))} | {cell(r)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, help="the checkout to run (default: this one)")
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    parser.add_argument("--only", nargs="*", default=[], help="attack names to run (default: all)")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print the table")
    args = parser.parse_args()
    if args.table:
        before, after = (json.loads(p.read_text()) for p in args.table)
        print(table(before["attacks"], after["attacks"]))
        return
    root = Path(tempfile.mkdtemp(prefix="ams-attacks-"))
    start = time.time()
    kept = json.loads(args.out.read_text())["attacks"] if args.only and args.out and args.out.exists() else {}

    def save(attacks: dict) -> None:
        doc = {
            "tree": str(args.tree or "this checkout"),
            "limit_as_bytes": A.LIMIT_AS,
            "server_env": {k: v for k, v in A.SERVER_ENV.items() if "KEY" not in k},
            "seconds": round(time.time() - start),
            "attacks": {**kept, **attacks},  # a rerun of some attacks (--only) keeps the others
        }
        text = json.dumps(doc, indent=1, default=str)
        if args.out:
            args.out.write_text(text + "\n")
        else:
            print(text)

    try:
        attacks = measure(
            args.tree.resolve() if args.tree else None, root, set(args.only), save if args.out else None
        )
        save(attacks)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
