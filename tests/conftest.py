"""Shared fixtures: the local S3 servers (one of each per test session) and the loopback transport.

Invariants:
- Servers are session-scoped and shared: a test creates its own buckets
  (:func:`tests.support.servers.unique_bucket`) and never assumes an empty server.
- Every server is stopped at the end of the session, even after failures (the context managers
  of :mod:`tests.support.servers` stop them in ``finally``).
- Tests talk only to 127.0.0.1 and ``*.s3.test``: those are added to ``NO_PROXY`` at import, so
  an HTTP proxy configured in the environment never sees test traffic (httpx and botocore both
  honour it).
- pytest-trio runs in ``trio_mode`` (pyproject): ``async def`` tests need no marker.
- In-process fixtures (``fake_time``, ``memstore``, ``mem_core``) start no server: the core over
  the in-memory store (``tests/support/memstore.py``), built by ``tests.support.core.make_core``.
- Tiers (markers, pyproject): ``mounted`` (real FUSE mounts), ``soak`` (long runs), ``system``
  (mount(8), systemd, whole processes); ``make test-quick`` leaves out soak and system.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.fs.core import FsCore
from tests.support.core import FakeTime, make_core
from tests.support.loopback import LoopbackTransport, loopback_transport
from tests.support.memstore import MemStore
from tests.support.servers import DOMAIN, S3Server, moto_auth_server, moto_server, s3_client, s3rver


def _bypass_proxies() -> None:
    """Add the test hosts to NO_PROXY/no_proxy, keeping what was there."""
    extra = f"127.0.0.1,localhost,{DOMAIN}"
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        os.environ[name] = f"{current},{extra}" if current else extra


_bypass_proxies()


@pytest.fixture(scope="session")
def moto() -> Iterator[S3Server]:
    """moto's server, no signature checks (any key pair works); V4 and path/vhost styles."""
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def moto_auth() -> Iterator[S3Server]:
    """moto checking Signature V4 headers; ``.access_key_id``/``.secret_access_key`` are valid."""
    with moto_auth_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3(moto: S3Server) -> Any:
    """A boto3 client of the ``moto`` server (path style, no retries), to set up and check
    buckets behind the filesystem's back."""
    return s3_client(moto)


@pytest.fixture
async def conn(moto: S3Server) -> AsyncIterator[S3fmAuthConnection]:
    """The signed client (V4, path style) of the ``moto`` server, for driving the core."""
    async with S3fmAuthConnection(
        "testing", "testing", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
    ) as connection:
        yield connection


@pytest.fixture(scope="session")
def s3rver_server() -> Iterator[S3Server]:
    """s3rver checking Signature V2 (header with ``x-amz-date``, and query); keys S3RVER/S3RVER."""
    with s3rver() as server:
        yield server


@pytest.fixture(scope="session")
def loopback() -> Callable[..., LoopbackTransport]:
    """Factory of httpx transports that connect every host name to 127.0.0.1 (same port)."""
    return loopback_transport


@pytest.fixture
def fake_time() -> FakeTime:
    """A clock moved by hand: the core's timer and clock, and the memory store's."""
    return FakeTime()


@pytest.fixture
def memstore(fake_time: FakeTime) -> MemStore:
    """An empty bucket in memory, listing 3 entries a page (every listing spans pages)."""
    return MemStore(page_size=3, clock=fake_time.clock)


@pytest.fixture
def mem_core(memstore: MemStore, fake_time: FakeTime) -> FsCore:
    """The core over ``memstore`` on ``fake_time`` (no nursery: files go up whole at flush)."""
    return make_core(memstore, time=fake_time, uid=1000, gid=1000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``mounted`` the tests that mount in their own body (``mounted(...)``), in files that
    mix them with in-process tests, so ``-m "not mounted"`` leaves out every real mount."""
    for item in items:
        function = getattr(item, "function", None)
        if function is None or item.get_closest_marker("mounted") is not None:
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if "mounted(" in source:
            item.add_marker(pytest.mark.mounted)
