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
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from ..exceptions import ShardUnavailable
from ..settings import Settings

__all__ = ["ActorGroup", "node_id"]

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
    """

    def __init__(
        self,
        memory: str,
        role: str,
        cls: type,
        names: list[str],
        specs: list[dict[str, Any]],
        settings: Settings,
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
        self.handles = [remote.options(name=name, **options).remote(spec) for name, spec in zip(names, specs)]
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
        return answers, errors

    def _unavailable(self, index: int, why: str) -> ShardUnavailable:
        with self._lock:
            self.down[index] = why
        return ShardUnavailable(
            f"memory {self.memory!r}: {self.role} {index} of {len(self)} {why}; retry shortly",
            retry_after=1,
        )

    # --- health ---------------------------------------------------------------------------
    def probe(self, timeout: float) -> None:
        """Ask every actor for its ``info()``; remember the answers and who did not answer."""
        refs = {i: self.call(i, "info") for i in range(len(self))}
        answers, errors = self.settle(refs, timeout)
        with self._lock:
            for i, info in answers.items():
                if self.infos[i] is not None and self.infos[i]["incarnation"] != info["incarnation"]:
                    log.warning(
                        "memory %r: %s %d was restarted (pid %s)", self.memory, self.role, i, info["pid"]
                    )
                self.infos[i], self.down[i] = info, None
            for i in errors:
                self.infos[i] = None

    def unavailable(self) -> str | None:
        """Why some actor of the group is not up, or None."""
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
                    for key in ("patterns", "bytes", "node", "node_id", "pid", "device"):
                        entry[key] = info.get(key)
                out.append(entry)
            return out

    def kill(self) -> None:
        """End the actors for good (their memory was deleted)."""
        for handle in self.handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as exc:  # gone already
                log.info("memory %r: %s already gone (%s)", self.memory, self.role, exc)


def node_id() -> str | None:
    """The Ray node the calling actor runs on (None outside a Ray worker)."""
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker
        return None
