"""``TrioThread``: one trio run in a thread of its own, driven from synchronous code (a
Hypothesis state machine's rules are plain functions).

Invariants:
- Everything submitted runs on the same trio run, one call at a time, so objects bound to a
  run (locks, limiters, the core's state) live across calls.
- ``run`` re-raises in the caller what the coroutine raised; ``close`` stops the run and joins
  the thread (idempotent). A call costs a thread hand-off (~0.1-0.3 ms): do a step's whole work
  in one call.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class TrioThread:
    """A trio run in a daemon thread; ``run(afn, *args)`` awaits ``afn(*args)`` on it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._ready.set()
        await self._stop.wait()

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._token is not None, "closed"
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._token is None:
            return
        token, self._token = self._token, None
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=token)
        self._thread.join()

    def __enter__(self) -> TrioThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
