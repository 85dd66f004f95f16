"""The record of each shard's node (app/cluster/nodes.py): chosen once, spread, kept."""

from __future__ import annotations

import pytest

from app.cluster.nodes import NoNodeForShard, ShardNodes, pin_options


def test_new_shards_spread_over_the_least_loaded_nodes_and_stay_there(tmp_path):
    nodes = ShardNodes(tmp_path / "cluster.sqlite3")
    assert nodes.nodes(1, 3, "node", ["10.0.0.2", "10.0.0.1"]) == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    assert nodes.nodes(2, 1, "node", ["10.0.0.1", "10.0.0.2"]) == ["10.0.0.2"]  # 2 vs 1 held
    # recorded: the same nodes whatever is alive now, and the mode asked for no longer matters
    assert nodes.nodes(1, 3, "shared", ["10.0.0.9"]) == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    nodes.close()
    reopened = ShardNodes(tmp_path / "cluster.sqlite3")  # durable across gateway restarts
    assert reopened.nodes(2, 1, "node", []) == ["10.0.0.2"]
    reopened.forget(2)
    assert reopened.nodes(2, 1, "node", ["10.0.0.3"]) == ["10.0.0.3"]


def test_shared_memories_are_not_pinned_and_a_node_mode_needs_a_node(tmp_path):
    nodes = ShardNodes(tmp_path / "cluster.sqlite3")
    assert nodes.nodes(5, 2, "shared", ["10.0.0.1"]) == ["", ""]
    assert nodes.nodes(5, 2, "node", ["10.0.0.1"]) == ["", ""]  # a memory's mode is kept
    with pytest.raises(NoNodeForShard, match="no alive Ray node") as refused:
        nodes.nodes(6, 1, "node", [])
    assert refused.value.status == 503
    assert nodes.nodes(6, 1, "node", ["10.0.0.1"]) == ["10.0.0.1"]  # nothing was recorded
    assert pin_options("10.0.0.1") == {"resources": {"node:10.0.0.1": 0.001}}
    assert pin_options("") == {}


def test_a_shards_default_budget_is_its_cpu_share_of_the_nodes_memory():
    # (app.budget, not app.cluster.shard: importing Ray here, before a test cluster's
    # RAY_AUTH_MODE is set, would fix Ray's auth mode for the whole test process)
    from app.budget import shard_budget as default_budget

    gib = 1 << 30
    # four 1-CPU shards on a 4-CPU node with 16 GiB free: 2 GiB each, 8 GiB in all (half)
    assert default_budget(16 * gib, "MemAvailable", 0.25) == 2 * gib
    assert default_budget(16 * gib, "cgroup limit", 0.25) == 2 * gib
    # a process's own address-space limit is not shared with the node's other shards
    assert default_budget(16 * gib, "RLIMIT_AS", 0.25) == 8 * gib
    assert default_budget(16 * gib, "MemAvailable", 1.0) == 8 * gib
