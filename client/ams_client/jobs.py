"""``Job`` and ``AsyncJob``: a background job of the service (training, a demo load) that
can be followed, waited for and cancelled. Its fields are ``JobState``'s, as of the last
call that saw it (``refresh``, ``wait``, ``cancel``)."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from ._ops import Operations, finished
from .models import JobState

if TYPE_CHECKING:
    from .client import AsyncClient, Client

__all__ = ["AsyncJob", "Job"]


class _Handle(JobState):
    def __init__(self, state: JobState) -> None:
        super().__init__(**{f.name: getattr(state, f.name) for f in fields(JobState)})

    def _set(self, state: JobState) -> None:
        for f in fields(JobState):
            setattr(self, f.name, getattr(state, f.name))


class Job(_Handle):
    """A job, seen through a blocking ``Client``."""

    def __init__(self, client: Client, state: JobState) -> None:
        super().__init__(state)
        self._client = client

    def refresh(self) -> Job:
        """Ask the service for the job's state now."""
        self._set(self._client._run(Operations._job_state(self._client, self.id)))
        return self

    def wait(
        self,
        progress: bool = True,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        raise_on_failure: bool = True,
    ) -> Job:
        """Wait until the job finishes, with a tqdm bar (epochs, energy, ETA) when ``progress``.

        Raises:
            JobFailed: the job failed (``job_failed``) or was cancelled (``job_cancelled``),
                unless ``raise_on_failure`` is False; or ``timeout`` s passed (``job_timeout``).
        """
        op = Operations._wait_job(self._client, self.id, progress, timeout, poll_interval)
        self._set(self._client._run(op))
        finished(self, raise_on_failure)
        return self

    def cancel(self) -> Job:
        """Ask the service to cancel the job (it stops after its current epoch)."""
        self._set(self._client._run(Operations._cancel_job(self._client, self.id)))
        return self


class AsyncJob(_Handle):
    """A job, seen through an ``AsyncClient``: the same methods, awaitable."""

    def __init__(self, client: AsyncClient, state: JobState) -> None:
        super().__init__(state)
        self._client = client

    async def refresh(self) -> AsyncJob:
        """Ask the service for the job's state now."""
        self._set(await self._client._run(Operations._job_state(self._client, self.id)))
        return self

    async def wait(
        self,
        progress: bool = True,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        raise_on_failure: bool = True,
    ) -> AsyncJob:
        """As ``Job.wait``."""
        op = Operations._wait_job(self._client, self.id, progress, timeout, poll_interval)
        self._set(await self._client._run(op))
        finished(self, raise_on_failure)
        return self

    async def cancel(self) -> AsyncJob:
        """Ask the service to cancel the job."""
        self._set(await self._client._run(Operations._cancel_job(self._client, self.id)))
        return self
