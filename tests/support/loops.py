"""Running an async test on trio and on asyncio: the client supports both.

``@on_both_loops`` turns ``async def test_x(fixtures...)`` into a plain test parametrized over
``backend`` ("trio", "asyncio") that runs the body with ``anyio.run`` on that loop. pytest-trio
(``trio_mode``) then leaves it alone: it is no longer a coroutine function. Fixtures must be
synchronous (the session servers, ``loopback``), as they are created outside either loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import sniffio

BACKENDS = ["trio", "asyncio"]


def on_both_loops(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """The async test ``fn`` as a synchronous test run once per event loop."""

    @functools.wraps(fn)
    def test(*args: Any, backend: str, **kwargs: Any) -> None:
        async def run() -> None:
            assert sniffio.current_async_library() == backend
            await fn(*args, **kwargs)

        anyio.run(run, backend=backend)

    signature = inspect.signature(fn)
    backend = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, annotation=str)
    test.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), backend]
    )
    marked: Callable[..., None] = pytest.mark.parametrize("backend", BACKENDS)(test)
    return marked
