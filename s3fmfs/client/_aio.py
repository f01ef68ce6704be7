"""The async library the client runs on: trio or asyncio, found per call (sniffio).

Invariants:
- Under trio these call trio directly (the mount's path: no anyio layer per request, and
  ``trio.to_thread`` keeps trio's one default thread limiter, shared with the fs layer);
  under any other library anyio's (asyncio).
- Only what the client needs: a monotonic clock, sleep, and running blocking work in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
import sniffio
import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def current_time() -> float:
    """The running loop's clock (trio's own under trio: its tests' mock clocks apply)."""
    if sniffio.current_async_library() == "trio":
        return trio.current_time()
    return anyio.current_time()


async def sleep(seconds: float) -> None:
    """Sleep on the running loop."""
    if sniffio.current_async_library() == "trio":
        await trio.sleep(seconds)
    else:
        await anyio.sleep(seconds)


async def run_sync(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """``fn(*args)`` in a worker thread, never on the loop."""
    if sniffio.current_async_library() == "trio":
        return await trio.to_thread.run_sync(fn, *args)
    return await anyio.to_thread.run_sync(fn, *args)
