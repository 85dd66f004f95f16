"""The actors of one memory (its shards, or its replicas) as the gateway holds them.

``ActorGroup`` starts or finds them by name (named, detached, restarted by Ray when their
process dies: ``max_restarts=-1``; a call that was running then fails rather than run
twice: ``max_task_retries=0``), calls them, and turns every way a call can fail for want
of the actor (died, restarting, unreachable, too slow) into ``ShardUnavailable`` (503
with Retry-After) naming the memory and the actor. It also keeps what the health probe
last learnt of each actor, for /readyz, /metrics and /v1/memories/{name}.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from ..exceptions import ShardUnavailable
from ..settings import Settings
from .storage import ShardFileFault

__all__ = ["FAULT_RETRY_AFTER", "ActorGroup", "actor_state", "node_id", "node_ip", "restarted"]

FAULT_RETRY_AFTER = 30  # Retry-After (s) while a shard's file is missing: someone must act

log = logging.getLogger("app.cluster")


class ActorGroup:
    """The named actors of one memory, one per index (see the module docstring).

    Arguments:
        memory: the memory's name (for messages).
        role: "shard" or "replica".
        cls: the actor class (``MemoryShard`` or ``MemoryReplica``).
        names: one actor name per index.
        specs: one constructor argument per index.
        settings: resources, namespace and timeout.
        pins: per index, extra Ray options (``nodes.pin_options``: the node it must run on).
    """

    def __init__(
        self,
        memory: str,
        role: str,
        cls: type,
        names: list[str],
        specs: list[dict[str, Any]],
        settings: Settings,
        pins: list[dict[str, Any]] | None = None,
    ) -> None:
        self.memory, self.role, self.timeout = memory, role, settings.shard_timeout_s
        remote = ray.remote(cls)
        options = dict(
            namespace=settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=4,
            num_cpus=settings.shard_cpus,
            num_gpus=settings.shard_gpus,
        )
        self.names = names
        pins = pins or [{}] * len(names)
        # the node address each actor is pinned to ("node" storage: its file is there), or None
        self.homes = [
            next((r[5:] for r in pin.get("resources", {}) if r.startswith("node:")), None) for pin in pins
        ]
        self.handles = [
            remote.options(name=name, **options, **pin).remote(spec)
            for name, spec, pin in zip(names, specs, pins, strict=True)
        ]
        self.infos: list[dict[str, Any] | None] = [None] * len(names)
        self.down: list[str | None] = ["starting"] * len(names)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.handles)

    # --- calls ----------------------------------------------------------------------------
    def call(self, index: int, method: str, *args: Any) -> ray.ObjectRef:
        return getattr(self.handles[index], method).remote(*args)

    def wait(self, refs: dict[int, ray.ObjectRef], timeout: float | None = None) -> dict[int, Any]:
        """Every answer, or ``ShardUnavailable`` naming the first actor that failed to give one."""
        answers, errors = self.settle(refs, timeout)
        if errors:
            raise next(iter(errors.values()))
        return answers

    def settle(
        self, refs: dict[int, ray.ObjectRef], timeout: float | None = None
    ) -> tuple[dict[int, Any], dict[int, ShardUnavailable]]:
        """Wait for every call: (answers by index, ``ShardUnavailable`` by index for the others).
        Errors raised by the actor's own code (bugs) propagate."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        answers: dict[int, Any] = {}
        errors: dict[int, ShardUnavailable] = {}
        for index, ref in refs.items():
            try:
                answers[index] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except GetTimeoutError:
                errors[index] = self._unavailable(index, f"gave no answer within {self.timeout:g} s")
            except RayActorError as exc:  # died, restarting, or unreachable
                errors[index] = self._unavailable(index, f"is restarting ({type(exc).__name__})")
            except RayTaskError as exc:
                if not isinstance(exc.cause, ShardFileFault):
                    raise
                errors[index] = self._faulted(index, exc.cause)
        return answers, errors

    def _faulted(self, index: int, fault: ShardFileFault) -> ShardUnavailable:
        """503 for a shard that refuses to serve (its file is missing or another's), naming the
        file and its node; ``details``: shard, file, node_ip, reason."""
        with self._lock:
            self.down[index] = fault.message
            info = self.infos[index] or {}
        error = ShardUnavailable(
            f"memory {self.memory!r}: {self.role} {index} of {len(self)} {fault.message}",
            retry_after=FAULT_RETRY_AFTER,
        )
        error.details = {
            "shard": index,
            "file": fault.file,
            "node_ip": info.get("node_ip", self.homes[index]),
            "reason": fault.reason,
        }
        return error

    def _why(self, index: int, why: str) -> str:
        """``why`` with the node a pinned actor waits for (it runs nowhere else)."""
        home = self.homes[index]
        return f"{why}; pinned to node {home}, which holds its file" if home else why

    def _unavailable(self, index: int, why: str) -> ShardUnavailable:
        why = self._why(index, why)
        with self._lock:
            self.down[index] = why
        return ShardUnavailable(
            f"memory {self.memory!r}: {self.role} {index} of {len(self)} {why}; retry shortly",
            retry_after=1,
        )

    # --- health ---------------------------------------------------------------------------
    def probe(self, timeout: float) -> None:
        """Ask every actor for its ``info()``; remember the answers and who did not answer.
        An actor that Ray's control store reports not alive (restarting after its process
        died, or not placed yet) is marked down at once, before the wait."""
        self.mark_not_alive()
        refs = {i: self.call(i, "info") for i in range(len(self))}
        answers, errors = self.settle(refs, timeout)
        with self._lock:
            for i, info in answers.items():
                if self.infos[i] is not None and self.infos[i]["incarnation"] != info["incarnation"]:
                    log.warning(
                        "memory %r: %s %d was restarted (pid %s)", self.memory, self.role, i, info["pid"]
                    )
                fault = info.get("fault")  # its file is missing or another's: it refuses to serve
                if fault and fault != self.down[i]:
                    log.error("memory %r: %s %d of %d %s", self.memory, self.role, i, len(self), fault)
                elif not fault and self.infos[i] is not None and self.infos[i].get("fault"):
                    log.warning("memory %r: %s %d found its file and serves again", self.memory, self.role, i)
                self.infos[i], self.down[i] = info, fault
            for i in errors:
                self.infos[i] = None

    def mark_not_alive(self) -> None:
        """Mark down every actor that Ray's control store reports not alive now (restarting
        after its process died, or not placed yet); the probe marks it up once it answers."""
        for i, handle in enumerate(self.handles):
            state = actor_state(handle)
            if state is not None and state != "ALIVE":
                with self._lock:
                    self.down[i] = self._why(i, f"is {state.lower().replace('_', ' ')} (Ray)")

    def unavailable(self) -> str | None:
        """Why some actor of the group is not up, or None. Asks Ray's control store first, so
        that /readyz is 503 from the moment an actor's process dies, not from the next probe."""
        self.mark_not_alive()
        with self._lock:
            for i, why in enumerate(self.down):
                if why is not None:
                    return f"memory {self.memory!r}: {self.role} {i} of {len(self)} {why}"
        return None

    def placement(self) -> list[dict[str, Any]]:
        """Per actor: index, state, and where it runs (what its last ``info()`` said)."""
        with self._lock:
            out = []
            for i, (info, why) in enumerate(zip(self.infos, self.down)):
                entry: dict[str, Any] = {"role": self.role, "index": i, "actor": self.names[i]}
                entry["state"] = "up" if why is None else "down"
                if info is not None:
                    for key in (
                        "patterns",
                        "bytes",
                        "node",
                        "node_ip",
                        "node_id",
                        "pid",
                        "device",
                        "file",
                        "fault",
                    ):
                        if key in info:  # (a replica has no file)
                            entry[key] = info[key]
                elif self.homes[i]:  # down: where it will run again
                    entry["node_ip"] = self.homes[i]
                out.append(entry)
            return out

    def kill(self) -> None:
        """End the actors for good (their memory was deleted)."""
        for handle in self.handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:  # gone already
                log.info("memory %r: %s already gone (%s)", self.memory, self.role, exc)


def restarted(tries: int = 3) -> bool:
    """Whether the calling actor was restarted by Ray (its process died), not started anew.
    Where Ray's control store cannot tell (``tries`` failed reads), True: a shard then does
    not make a file it may have had (it looks for it, ``MemoryShard``), never the reverse."""
    for attempt in range(tries):
        try:
            with warnings.catch_warnings():  # (it reads the deprecated ``actor_id`` itself)
                warnings.simplefilter("ignore")
                return bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception as exc:  # the control store unreachable for a moment
            log.warning("could not tell whether this actor was restarted (%s)", exc)
            time.sleep(0.5 * (attempt + 1))
    return True


def node_id() -> str | None:
    """The Ray node the calling actor runs on (None outside a Ray worker)."""
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker
        return None


def node_ip() -> str | None:
    """The address of the Ray node the calling actor runs on (None outside a Ray worker)."""
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # not in a Ray worker
        return None


def cpu_share() -> float:
    """The part of its node's CPUs the calling actor reserved, in (0, 1] (1 outside a Ray
    worker or where the node's CPUs cannot be read): Ray packs actors onto a node by their
    CPUs, so this is the most of the node that actors like it may hold at once."""
    try:
        mine = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
        here = ray.get_runtime_context().get_node_id()
        total = next(float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n["NodeID"] == here)
    except Exception:  # not in a Ray worker, or the node's record cannot be read
        return 1.0
    return min(1.0, mine / total) if mine > 0 and total > 0 else 1.0


def actor_state(handle: Any) -> str | None:
    """Ray's control store's state of an actor ("ALIVE", "RESTARTING", "PENDING_CREATION",
    "DEAD", ...), or None where it cannot be read. Ray's public state API (``ray.util.state``)
    needs the dashboard, which a cluster may run without: this reads the GCS's actor table
    directly (``ray._private.state``, a developer API; None should it change)."""
    try:
        from ray._private import state

        return state.actors(actor_id=handle._actor_id.hex()).get("State")
    except Exception:  # not connected, or the private API changed: the info() probe decides
        return None
