"""Running blocking store and policy calls off the reactor thread.

Every call that may touch the database goes through `StoreRunner.run`, which
returns a Deferred fired on the reactor thread with the result (or failure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class StoreRunner:
    def __init__(self, reactor: Any, threads_count: int = 8, name: str = "store") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=threads_count, name=name)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            self._started = True
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        if not self._started:
            self.start()
        return threads.deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


class InlineRunner:
    """Runs calls synchronously: for protocol tests on StringTransport, where
    the result must be there before the next line of the transcript."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        return defer.maybeDeferred(fn, *args, **kwargs)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
