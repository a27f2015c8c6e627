"""The off-chain store's calls from async handlers, run off the event loop on a bounded executor.

The store is synchronous (SQLAlchemy over psycopg or sqlite3). Called inside an ``async`` gRPC handler, a
slow or hung database would stop the server's one event loop, and with it every other RPC -- Check, health,
token verification included. Handlers therefore await :meth:`StoreExecutor.run` instead.

The executor is the store's own, not asyncio's default one: its threads are bounded by the connections the
pool may hand out (``pool_size`` plus as many overflow), so a slow database fills the store's queue and
nothing else; the default executor (token key fetches, the ledger follower, streams) keeps its threads.
The caller's context variables (the authenticated principal, the current trace span) go along with the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StoreExecutor:
    """At most ``workers`` store calls at a time, each in its own thread; the rest wait their turn."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a store executor needs at least one worker")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the off-chain store is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="offchain-store")
            return self._pool

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on a store thread; its result or its exception, as if called here."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor(), call)

    def close(self) -> None:
        """Stop taking calls; calls not yet started are cancelled, running ones finish on their own."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
