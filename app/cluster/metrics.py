"""Per-shard and per-replica gauges for /metrics, read at scrape time from the last health probe."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .actors import ActorGroup

__all__ = ["ShardCollector"]


class ShardCollector:
    """``ams_shard_*`` series labelled (memory, role, index): up, patterns, bytes, and the
    recall time spent in the actor (``..._recall_seconds`` / ``..._recalls``: its mean latency).

    Arguments:
        groups: () -> [(memory name, ``ActorGroup``)], the memories placed on the cluster.
    """

    def __init__(self, groups: Callable[[], list[tuple[str, ActorGroup]]]) -> None:
        self._groups = groups

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["memory", "role", "index"]
        up = GaugeMetricFamily(
            "ams_shard_up", "1 when the shard or replica answered its last probe", labels=labels
        )
        patterns = GaugeMetricFamily("ams_shard_patterns", "patterns a shard or replica holds", labels=labels)
        nbytes = GaugeMetricFamily(
            "ams_shard_bytes", "bytes of the tensors a shard or replica holds", labels=labels
        )
        recalls = CounterMetricFamily(
            "ams_shard_recalls", "recall parts computed by a shard or replica", labels=labels
        )
        seconds = CounterMetricFamily(
            "ams_shard_recall_seconds", "time a shard or replica spent computing recall parts", labels=labels
        )
        for memory, group in self._groups():
            for entry, info in zip(group.placement(), group.infos):
                key = [memory, group.role, str(entry["index"])]
                up.add_metric(key, 1.0 if entry["state"] == "up" else 0.0)
                if info is None or "fault" in info:  # (down, or without its file: nothing known)
                    continue
                patterns.add_metric(key, float(info["patterns"]))
                nbytes.add_metric(key, float(info["bytes"]))
                recalls.add_metric(key, float(info["recalls"]))
                seconds.add_metric(key, float(info["recall_seconds"]))
        yield from (up, patterns, nbytes, recalls, seconds)
