"""``MemoryShard``: one shard of a sharded hopfield memory, a Ray actor (``ray::MemoryShard`` in ps).

A shard owns the patterns whose ids hash to it (``protocol.shard_of``): in RAM, as a
``HopfieldMemory`` of the memory's config, and on disk, in its own SQLite file
(``ShardStorage``, the service's format). Its constructor reloads its partition from that
file, so when Ray restarts the actor after its process died (``max_restarts``) it comes
back with everything it had made durable.

Writes come in two steps so that a batch spread over several shards is all or nothing:
``stage`` makes a shard's part durable but leaves it invisible to recalls, ``publish`` makes
it visible, ``abort`` deletes it (the gateway's store protocol, ``sharded.py``). Recalls
are ``compute`` calls answering a ``ShardQuery`` with the shard's parts. Actor calls may
run on a few threads at once (reads together), under the memory's own locks.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from memory_core import resolve_device
from memory_core.chunked import stable_topk
from memory_core.partials import Top

from ..budget import available_memory, shard_budget
from ..exceptions import PatternExists
from ..kinds import HopfieldMemory
from ..storage import NewPattern, PatternRow
from .actors import cpu_share, node_id, node_ip, restarted
from .protocol import ShardAnswer, ShardQuery, from_wire, to_wire
from .scratch import sweep, sweep_now_and_then
from .storage import ShardFileFault, open_shard_file

__all__ = ["MemoryShard"]

log = logging.getLogger("app.cluster")


class MemoryShard:
    """One shard (see the module docstring).

    Arguments:
        spec: ``name``, ``shape``, ``text``, ``config`` (the hopfield kind's resolved config),
            ``shard``, ``shards``, ``data_dir`` (this shard's folder), ``device``, ``threads``;
            ``node_dir``: this shard's folder under the node's ``AMS_NODE_DATA_DIR``, which
            replaces ``data_dir`` where the node's environment sets it (``nodes.py``);
            ``file_token``: the identity token its file must hold (None: a shard made before
            tokens, which adopts its existing file); ``create_file``: the shard is new and may
            make its file (never after Ray restarted the actor).

    A shard whose file is missing or another's (``storage.open_shard_file``) makes nothing and
    refuses to serve: ``info()`` reports the fault (and looks for the file again), every other
    call raises ``ShardFileFault``, which the gateway answers 503 naming the file.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        torch.set_num_threads(int(spec["threads"]))
        self.spec = spec
        node_root = os.environ.get("AMS_NODE_DATA_DIR")
        if spec.get("node_dir") and node_root:
            self.data_dir = Path(node_root) / spec["node_dir"]
        else:
            self.data_dir = Path(spec["data_dir"])
        # what its patterns may take (the gateway checks each store against it, sharded.py)
        self.memory_budget = int(spec.get("memory_budget") or shard_budget(*available_memory(), cpu_share()))
        self._order: tuple[int, torch.Tensor] | None = None  # (row count, (N,) seqs), cached
        self._staged: dict[str, tuple[list[int], list[NewPattern]]] = {}
        self.incarnation = secrets.token_hex(8)  # new after every restart
        self.recalls = 0
        self.recall_seconds = 0.0
        self.fault: ShardFileFault | None = None
        self.file_token: str | None = None
        self._opening = threading.Lock()
        self._open(bool(spec.get("create_file")) and not restarted())
        sweep()  # the node's orphaned scratch folders (replicas killed outright; scratch.py)

    def _open(self, may_create: bool) -> None:
        """Open the shard's file (checked: ``open_shard_file``) and load its partition, or keep
        the fault that stops it."""
        spec = self.spec
        try:
            storage, token = open_shard_file(self.data_dir, spec.get("file_token"), may_create)
        except ShardFileFault as exc:
            message = f"refuses to serve on node {node_ip()}: {exc}"
            if self.fault is None:
                log.error("memory %r: shard %s %s", spec["name"], spec["shard"], message)
            self.fault = ShardFileFault(message, exc.file, exc.reason)
            return
        try:  # (a file that cannot be loaded is closed again: info() retries every 2 s)
            record = storage.open_memory(
                spec["name"], "hopfield", tuple(spec["shape"]), bool(spec["text"]), dict(spec["config"])
            )
            live = HopfieldMemory(record, resolve_device(spec["device"]))
            with live.rw.write():
                for seqs, ids, vectors in storage.iter_vectors(record.id):
                    live.add(seqs, ids, torch.from_numpy(vectors))
        except BaseException:
            storage.close()
            raise
        self.storage, self.live, self.file_token = storage, live, token
        self.fault = None  # (last: calls check it, then use what is set above)

    def _serving(self) -> None:
        """``ShardFileFault`` while the shard's file is missing or another's."""
        fault = self.fault
        if fault is not None:
            raise ShardFileFault(*fault.args)

    # --- health -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What /metrics and /v1/memories/{name} show about this shard (with ``fault``, and no
        patterns, while its file is missing or another's: it looks for the file again first)."""
        sweep_now_and_then()  # (the gateway's health probe calls this every 2 s)
        if self.fault is not None:
            with self._opening:
                if self.fault is not None:
                    self._open(False)
        fault = self.fault
        if fault is not None:
            return {
                "shard": self.spec["shard"],
                "incarnation": self.incarnation,
                "fault": fault.message,
                "fault_reason": fault.reason,
                "node": socket.gethostname(),
                "node_ip": node_ip(),
                "node_id": node_id(),
                "file": fault.file,
                "pid": os.getpid(),
            }
        return {
            "shard": self.spec["shard"],
            "incarnation": self.incarnation,
            "patterns": self.live.count,
            "bytes": self.live.nbytes(),
            "memory_budget": self.memory_budget,
            "node": socket.gethostname(),
            "node_ip": node_ip(),
            "node_id": node_id(),
            "file": str(self.storage.path),
            "pid": os.getpid(),
            "device": str(self.live.device),
            "recalls": self.recalls,
            "recall_seconds": self.recall_seconds,
            "max_seq": self.storage.max_seq(self.live.record.id),
            "file_token": self.file_token,
        }

    # --- writes ---------------------------------------------------------------------------
    def stage(self, token: str, patterns: list[NewPattern], seqs: list[int]) -> list[str]:
        """Make a batch's part durable, not yet visible. Returns the ids that are taken already
        (then nothing is stored), else []."""
        self._serving()
        live = self.live
        with live.writing:
            staged = {p.id for _, part in self._staged.values() for p in part}
            taken = [p.id for p in patterns if live.has(p.id) or p.id in staged]
            if taken:
                return taken
            try:
                self.storage.add_patterns_at(live.record.id, patterns, seqs)
            except PatternExists as exc:
                return exc.ids
            self._staged[token] = (seqs, patterns)
            return []

    def publish(self, token: str) -> int:
        """Make a staged part visible to recalls; returns the shard's count. (After a restart the
        part was reloaded from disk already, and this finds nothing left to do.)"""
        self._serving()
        live = self.live
        with live.writing:
            seqs, patterns = self._staged.pop(token, ([], []))
            fresh = [(s, p) for s, p in zip(seqs, patterns) if not live.has(p.id)]
            if fresh:
                vectors = torch.from_numpy(np.stack([p.vector for _, p in fresh]).astype(np.float32))
                with live.rw.write():
                    live.add([s for s, _ in fresh], [p.id for _, p in fresh], vectors)
            return live.count

    def abort(self, token: str, rows: list[tuple[str, int]]) -> int:
        """Call a batch's part off: delete its (id, sequence number) rows from disk and RAM
        wherever they are (a pattern of the same id stored before keeps its own number)."""
        self._serving()
        live = self.live
        with live.writing:
            self._staged.pop(token, None)
            self.storage.delete_staged(live.record.id, rows)
            with live.rw.write():
                for pid, seq in rows:
                    row = live._rows.get(pid)  # (LiveMemory's id -> row map)
                    if row is not None and live.seqs[row] == seq:
                        live.remove(pid)
            return live.count

    def delete(self, pattern_id: str) -> bool:
        """Delete one pattern (durable, then invisible); False when the shard has none of that id."""
        self._serving()
        live = self.live
        with live.writing:
            if not live.has(pattern_id):
                return False
            self.storage.delete_pattern(live.record.id, pattern_id)
            with live.rw.write():
                live.remove(pattern_id)
            return True

    def destroy(self) -> None:
        """The memory is deleted: drop this shard's file (the gateway kills the actor next), or
        whatever is in its folder while its file is missing or another's."""
        with self._opening:
            if self.fault is None:
                with self.live.writing:
                    self.storage.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            try:  # its memory's folder, once its last shard on this disk is gone
                self.data_dir.parent.rmdir()
            except OSError:  # another shard's folder is still in it
                pass

    # --- reads ----------------------------------------------------------------------------
    def compute(self, query: ShardQuery) -> ShardAnswer:
        """This shard's parts of one fan-out (see ``ShardQuery``), tensors as numpy arrays
        (``protocol.to_wire``)."""
        self._serving()
        start = time.perf_counter()
        query = from_wire(query)
        live = self.live
        with live.rw.read():
            n = live.count
            if n == 0:
                return ShardAnswer(count=0)
            index, order = live.index, self._orders()
            state = query.state.to(live.device, torch.float32)  # (B, D')
            mask = None if query.mask is None else query.mask.to(live.device)
            answer = ShardAnswer(count=n)
            if query.output or query.potential:
                answer.partial = index.partial(
                    state,
                    mask if query.output else None,
                    output=query.output,
                    potential=query.potential,
                    order=order,
                )
            if query.top_k > 0:
                top, rows = index.top(
                    state,
                    min(query.top_k, n),
                    mask if query.top_masked else None,
                    values=query.top_values,
                    order=order,
                )
                answer.top, answer.top_ids = top, self._ids(rows)
            if query.captions_k > 0:
                answer.captions, answer.caption_ids = self._captions(state, query, order)
        seconds = time.perf_counter() - start
        self.recalls += 1
        self.recall_seconds += seconds
        answer.seconds = seconds
        return to_wire(answer)

    def _orders(self) -> torch.Tensor:
        """(N,) int64 the rows' storage sequence numbers (their global order)."""
        n = self.live.count
        if self._order is None or self._order[0] != n or int(self._order[1][-1]) != self.live.seqs[-1]:
            self._order = (n, torch.tensor(self.live.seqs, dtype=torch.long))
        return self._order[1]

    def _ids(self, rows: torch.Tensor) -> list[list[str]]:
        ids = self.live.ids
        return [[ids[r] for r in row] for row in rows.tolist()]

    def _captions(self, state: torch.Tensor, query: ShardQuery, order: torch.Tensor) -> tuple[Top, list]:
        """The k stored captions nearest each state's caption part, by cosine (as
        ``memory_core.crossmodal.nearest_captions``)."""
        keys = self.live.index.keys
        stored = F.normalize(keys[:, query.caption_from :].float(), dim=1)  # (N, 384)
        scores = F.normalize(state[:, query.caption_from :], dim=1) @ stored.T  # (B, N)
        best, rows = stable_topk(scores, min(query.captions_k, scores.shape[1]))
        return Top(best, best, order[rows]), self._ids(rows)

    def page(self, after_seq: int, limit: int) -> list[PatternRow]:
        self._serving()
        return self.storage.page_patterns(self.live.record.id, after_seq, limit)

    def get_pattern(self, pattern_id: str) -> PatternRow | None:
        self._serving()
        return self.storage.get_pattern(self.live.record.id, pattern_id)

    def get_texts(self, pattern_ids: list[str]) -> dict[str, str | None]:
        self._serving()
        return self.storage.get_texts(self.live.record.id, pattern_ids)
