"""The ``ams`` commands of relational memories (facts): ``facts add|list|get|delete``,
``query`` and ``vocabulary``.

    ams memories create kb --kind relational
    ams facts add kb facts.json --fact "borders germany france"
    ams train kb --wait
    ams query kb borders germany '?'

Fact files are JSON: a list of facts, each ``[relation, arg, ...]`` or ``{"relation",
"args"}``, or an object ``{"facts": [...]}`` (the REST body, and what ``ams facts list
--json`` prints, so one memory's facts can be piped into another); or JSON Lines, one fact
a line. ``-`` reads standard input.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _output as out
from .client import Client
from .models import Fact

MISSING = "?"  # the argument a query asks for


def read_facts(source: str) -> list[Any]:
    """The facts of a JSON or JSON Lines file (``-``: standard input), as they are written
    (``store_facts`` checks each)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} is neither JSON nor JSON Lines: {exc}") from None
    if isinstance(data, dict) and "facts" in data:
        data = data["facts"]
    if not isinstance(data, list):
        raise TypeError(f'{source}: expected a list of facts or {{"facts": [...]}}')
    return data


def parse_fact(text: str) -> list[str]:
    """``--fact "borders germany france"`` -> relation and arguments (shell quoting keeps a
    name with spaces whole: ``--fact 'capital_of "la paz" bolivia'``)."""
    parts = shlex.split(text)
    if len(parts) < 2:
        raise ValueError(f"--fact {text!r}: a relation and at least one argument")
    return parts


def fact_row(f: Fact) -> list[Any]:
    return [f.id, f.relation, ", ".join(f.args)]


def fact_dict(f: Fact) -> dict[str, Any]:
    return {"id": f.id, "relation": f.relation, "args": list(f.args)}


# --- commands -------------------------------------------------------------------------------
def cmd_facts_add(ams: Client, args: argparse.Namespace) -> int:
    facts: list[Any] = [fact for source in args.files for fact in read_facts(source)]
    facts += [parse_fact(text) for text in args.fact or ()]
    if not facts:
        raise ValueError("no facts: give fact files or --fact")
    result = ams.store_facts(args.name, facts, progress=args.progress)
    text = f"stored {len(result.ids)} facts in {args.name} ({result.new} new, count now {result.count})"
    out.emit(args.json, {"ids": result.ids, "new": result.new, "count": result.count}, text)
    return out.OK


def cmd_facts_list(ams: Client, args: argparse.Namespace) -> int:
    items: list[Fact] = []
    for f in ams.facts(args.name):
        if args.limit is not None and len(items) >= args.limit:
            break
        items.append(f)
    text = out.table(["id", "relation", "args"], [fact_row(f) for f in items]) if items else "no facts"
    out.emit(args.json, {"facts": [fact_dict(f) for f in items]}, text)
    return out.OK


def cmd_facts_get(ams: Client, args: argparse.Namespace) -> int:
    f = ams.get_fact(args.name, args.id)
    out.emit(args.json, fact_dict(f), out.table(["id", "relation", "args"], [fact_row(f)]))
    return out.OK


def cmd_facts_delete(ams: Client, args: argparse.Namespace) -> int:
    ams.delete_fact(args.name, args.id)
    out.emit(args.json, {"deleted": args.id}, f"deleted fact {args.id} of {args.name}")
    return out.OK


def cmd_query(ams: Client, args: argparse.Namespace) -> int:
    given = [None if a == MISSING else a for a in args.args]
    r = ams.query(args.name, args.relation, given, k=args.k, filter_known=args.filter_known)
    rows = [[i + 1, c.entity, c.score, "yes" if c.known else "no"] for i, c in enumerate(r.candidates)]
    text = "\n".join(
        [
            out.table(["rank", "entity", "score", "known"], rows) if rows else "no candidates",
            "",
            out.pairs([("state", r.state), ("trained facts", r.trained_count)]),
        ]
    )
    out.emit(args.json, r.raw, text)
    return out.OK


def cmd_vocabulary(ams: Client, args: argparse.Namespace) -> int:
    v = ams.vocabulary(args.name)
    relations = out.table(["relation", "arity"], [[r.name, r.arity] for r in v.relations])
    entities = out.pairs([("entities", v.entity_count), ("names", ", ".join(v.entities))])
    data = {
        "relations": [{"name": r.name, "arity": r.arity} for r in v.relations],
        "entities": v.entities,
        "entity_count": v.entity_count,
    }
    out.emit(args.json, data, f"{relations}\n\n{entities}" if v.relations else "no facts yet")
    return out.OK


# --- the parser -----------------------------------------------------------------------------
Command = Callable[..., argparse.ArgumentParser]


def add_commands(sub: Any, command: Command) -> None:
    """Add the commands of relational memories to ``ams``'s parser (``command`` makes one)."""
    facts = sub.add_parser("facts", help="add, list, show, delete the facts of a relational memory")
    fsub = facts.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = command(fsub, "add", cmd_facts_add, "store facts from JSON / JSON Lines files and --fact options")
    p.add_argument("name")
    p.add_argument("files", nargs="*", help='JSON or JSON Lines files of facts ("-": standard input)')
    p.add_argument(
        "--fact",
        action="append",
        metavar='"RELATION ARG ..."',
        help="one fact, names separated by spaces (quote a name that has one); repeatable",
    )
    p = command(fsub, "list", cmd_facts_list, "a relational memory's facts in storage order")
    p.add_argument("name")
    p.add_argument("--limit", type=int, help="at most this many")
    for action, fn, help_text in (
        ("get", cmd_facts_get, "one fact"),
        ("delete", cmd_facts_delete, "delete one fact (the model unlearns it at the next training)"),
    ):
        p = command(fsub, action, fn, help_text)
        p.add_argument("name")
        p.add_argument("id", type=int)

    p = command(
        sub, "query", cmd_query, f"complete a fact: which entities fit the argument written {MISSING}"
    )
    p.add_argument("name")
    p.add_argument("relation")
    p.add_argument(
        "args",
        nargs="+",
        help=f"the relation's arguments, exactly one of them {MISSING} (quote it in a shell)",
    )
    p.add_argument("-k", type=int, default=10, help="candidates to name (default 10)")
    p.add_argument(
        "--filter-known", action="store_true", help="leave out entities that complete a stored fact"
    )

    p = command(sub, "vocabulary", cmd_vocabulary, "the relations (with arities) and entities a memory knows")
    p.add_argument("name")
