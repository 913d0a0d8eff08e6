"""The job store as the event loop uses it: every SQLite call runs on one worker thread.

The Jupyter server runs every user's requests on one event loop; a SQLite call can wait up to the store's busy
timeout (30 s) for another writer, and every commit is an ``fsync``. :class:`AsyncStore` runs each call of the
:class:`~sparkdock.server.store.JobStore` on a single thread of its own, so that the loop only awaits it.

One thread, not a pool: calls run in the order they were made, so a phase reported by a backend can never land
after the transition that follows it, and the store's listeners (which publish events) see changes in commit
order. :meth:`AsyncStore.submit` queues a call without waiting for it (for the synchronous callbacks through
which backends report progress), in that same order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sparkdock.server.store import Job, JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncStore:
    """Awaitable access to a :class:`JobStore`, off the event loop (see the module's docstring)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparkdock-store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (a function that uses the store) on the store's thread and await it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def queue(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args, **kwargs)`` on the store's thread now (before anything the caller does next) and
        return the future to await (call on the loop)."""
        return asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Queue ``fn(*args, **kwargs)`` on the store's thread without waiting (callable from any thread); a
        failure is logged at debug level (late progress reports of a job that has moved on are expected)."""
        fut = self._pool.submit(fn, *args, **kwargs)
        fut.add_done_callback(_log_failure)
        return fut

    def close(self) -> None:
        """Finish the queued calls and stop the thread."""
        self._pool.shutdown(wait=True)

    # ---- the JobStore's API, awaitable --------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        """:meth:`JobStore.get`."""
        return await self.call(self.store.get, job_id)

    async def find(self, job_id: str) -> Job | None:
        """:meth:`JobStore.find`."""
        return await self.call(self.store.find, job_id)

    async def list(self, **filters: Any) -> tuple[list[Job], int]:
        """:meth:`JobStore.list`."""
        return await self.call(self.store.list, **filters)

    async def history(self, job_id: str) -> list[dict[str, Any]]:
        """:meth:`JobStore.history`."""
        return await self.call(self.store.history, job_id)

    async def non_terminal(self) -> list[Job]:
        """:meth:`JobStore.non_terminal`."""
        return await self.call(self.store.non_terminal)

    async def create(self, *args: Any, **kwargs: Any) -> Job:
        """:meth:`JobStore.create`."""
        return await self.call(self.store.create, *args, **kwargs)

    async def transition(self, *args: Any, **kwargs: Any) -> Job:
        """:meth:`JobStore.transition`."""
        return await self.call(self.store.transition, *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> Job:
        """:meth:`JobStore.update`."""
        return await self.call(self.store.update, *args, **kwargs)

    async def add_event(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`JobStore.add_event`."""
        await self.call(self.store.add_event, *args, **kwargs)

    async def set_last_activity(self, job_id: str, when: str) -> None:
        """:meth:`JobStore.set_last_activity`."""
        await self.call(self.store.set_last_activity, job_id, when)

    async def prunable(self, before: str) -> list[str]:
        """:meth:`JobStore.prunable`."""
        return await self.call(self.store.prunable, before)

    async def delete(self, job_ids: list[str]) -> int:
        """:meth:`JobStore.delete`."""
        return await self.call(self.store.delete, job_ids)


def _log_failure(fut: concurrent.futures.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("queued store call failed: %s", fut.exception())
