"""Where each shard lives: its node, chosen once and kept (``AMS_SHARD_STORAGE``, docs/scale.md).

In the ``node`` mode (the default) a shard keeps its SQLite file on the local disk of the
node it was first placed on, so it must always run there. ``ShardNodes`` records that node
per shard in the gateway's ``cluster.sqlite3`` the first time the shard is placed, and the
shard's actor asks for the node's own resource ``node:<address>`` (every Ray node has
``1`` of it): Ray starts the actor there, and restarts it there after its process died,
whichever Ray node id the node has today (node ids change on every ``ray start``; node
addresses usually do not). If that node is gone, the actor waits, unplaced, and the
shard's requests get 503 ``shard_unavailable`` until a node of that address joins again:
never a new, empty shard elsewhere.

In the ``shared`` mode nothing is pinned: the shards' files are on a filesystem every node
mounts (``AMS_SHARD_DATA_DIR``) and Ray may place a shard anywhere. The mode of a memory is
fixed when it is first placed (recorded with its nodes, ``""`` for shared): a change of the
setting applies to new memories only, and memories placed before the mode existed stay shared.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..exceptions import ShardUnavailable
from .storage import connect_cluster_file

__all__ = ["NODE_SHARE", "NoNodeForShard", "ShardNodes", "alive_nodes", "pin_options"]

# The amount of a node's own resource ``node:<address>`` a pinned actor asks for: any share
# of its 1.0 pins the actor, and many actors fit.
NODE_SHARE = 0.001


class NoNodeForShard(ShardUnavailable):
    """No alive node can hold a new memory's shard (503: nothing was placed or recorded)."""


def pin_options(address: str) -> dict[str, Any]:
    """Ray actor options that keep an actor on the node at ``address`` (empty: unpinned)."""
    return {"resources": {f"node:{address}": NODE_SHARE}} if address else {}


def alive_nodes(cpus: float, gpus: float) -> list[str]:
    """Addresses of the alive nodes that can hold a shard (``cpus`` CPUs, ``gpus`` GPUs in all)."""
    import ray

    out = []
    for node in ray.nodes():
        total = node.get("Resources", {})
        if node.get("Alive") and total.get("CPU", 0) >= cpus and total.get("GPU", 0) >= gpus:
            out.append(node["NodeManagerAddress"])
    return sorted(set(out))


class ShardNodes:
    """Per memory and shard, the node address it is pinned to (``""``: not pinned).

    Arguments:
        path: the gateway's ``cluster.sqlite3`` (table ``shard_nodes``, created if missing).
    """

    def __init__(self, path: Path) -> None:
        self._conn = connect_cluster_file(
            path,
            "CREATE TABLE IF NOT EXISTS shard_nodes (memory_id INTEGER NOT NULL, shard INTEGER NOT NULL,"
            " node TEXT NOT NULL, PRIMARY KEY (memory_id, shard))",
        )
        self._lock = threading.Lock()

    def nodes(self, memory_id: int, shards: int, mode: str, candidates: list[str]) -> list[str]:
        """The node of each of the memory's ``shards`` shards: the recorded ones; for a memory
        without a record, chosen now (``mode`` node: the ``candidates`` holding fewest pinned
        shards, in turn; shared: ``""``) and recorded before any actor starts. A memory
        with some record is never re-pinned."""
        with self._lock:
            rows = dict(
                self._conn.execute(
                    "SELECT shard, node FROM shard_nodes WHERE memory_id = ?", (memory_id,)
                ).fetchall()
            )
            if rows:
                return [rows.get(i, "") for i in range(shards)]
            if mode == "node" and not candidates:
                raise NoNodeForShard(
                    "no alive Ray node can hold a shard (AMS_SHARD_CPUS, AMS_SHARD_GPUS); retry when one has joined",
                    retry_after=5,
                )
            load = dict.fromkeys(candidates, 0)
            for node, count in self._conn.execute(
                "SELECT node, COUNT(*) FROM shard_nodes WHERE node != '' GROUP BY node"
            ):
                if node in load:
                    load[node] = count
            chosen = []
            for _ in range(shards):
                if mode != "node":
                    chosen.append("")
                    continue
                node = min(load, key=lambda n: (load[n], n))
                load[node] += 1
                chosen.append(node)
            self._conn.executemany(
                "INSERT INTO shard_nodes (memory_id, shard, node) VALUES (?, ?, ?)",
                [(memory_id, i, node) for i, node in enumerate(chosen)],
            )
            return chosen

    def forget(self, memory_id: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM shard_nodes WHERE memory_id = ?", (memory_id,))

    def close(self) -> None:
        self._conn.close()
