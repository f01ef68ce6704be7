"""The engine's many small pools and its direct path to them (``s3fmfs.client._engine``):
how many pools, which one a request takes, that every request leaves its pool's count, and
that sending past ``AsyncClient.send`` still sends what it sent (headers, waits, target)."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
import trio

from s3fmfs.client import CallingFormat, NoSuchKey, RetryPolicy, S3ConnectError, S3fmAuthConnection
from s3fmfs.client._engine import POOL_CONNECTIONS
from s3fmfs.config.options import MountOptions
from s3fmfs.service.connection import MAX_CONNECTIONS, connection_for
from tests.support.servers import S3Server, unique_bucket


def _conn(server: S3Server, **kwargs: Any) -> S3fmAuthConnection:
    return S3fmAuthConnection(
        server.access_key_id,
        server.secret_access_key,
        False,
        server.host,
        server.port,
        CallingFormat.PATH,
        signature="v2",
        **kwargs,
    )


def _pool_connections(conn: S3fmAuthConnection) -> list[int]:
    """Connections held by each of the engine's pools."""
    return [len(c._transport._pool.connections) for c in conn._engine._clients]  # type: ignore[attr-defined]


@pytest.mark.parametrize("connections", [1, 3, 4, 5, 32, 64])
async def test_pools_hold_at_most_pool_connections_each(connections: int) -> None:
    async with S3fmAuthConnection("k", "s", max_connections=connections) as conn:
        pools = conn._engine._clients
        assert len(pools) == math.ceil(connections / POOL_CONNECTIONS)
        limits = [c._transport._pool._max_connections for c in pools]  # type: ignore[attr-defined]
        assert all(limit <= POOL_CONNECTIONS for limit in limits)
        assert sum(limits) >= connections


async def test_a_transport_of_the_caller_is_one_pool() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    async with S3fmAuthConnection("k", "s", max_connections=64, transport=transport) as conn:
        assert len(conn._engine._clients) == 1


def test_a_mount_has_max_connections() -> None:
    opts = MountOptions(endpoint="http://127.0.0.1:9", signature="v4")
    conn = connection_for(opts, "k", "s")
    assert sum(c._transport._pool._max_connections for c in conn._engine._clients) == 64  # type: ignore[attr-defined]
    assert MAX_CONNECTIONS == 64


async def test_one_at_a_time_stays_on_one_connection(s3rver_server: S3Server) -> None:
    """The least busy pool, ties to the first: sequential requests reuse one connection
    (turn by turn, they would open one in every pool). s3rver keeps connections alive."""
    bucket = unique_bucket()
    async with _conn(s3rver_server, max_connections=32) as conn:
        await conn.create_bucket(bucket)
        await conn.put(bucket, "k", b"x")
        for _ in range(20):
            await conn.head(bucket, "k")
        held = _pool_connections(conn)
        assert len(held) > 1
        assert held == [1] + [0] * (len(held) - 1)
        assert not any(conn._engine._busy)


async def test_concurrent_requests_spread_over_pools_and_all_leave(s3rver_server: S3Server) -> None:
    bucket = unique_bucket()
    async with _conn(s3rver_server, max_connections=16) as conn:
        await conn.create_bucket(bucket)
        await conn.put(bucket, "k", b"x" * 100)
        peak: list[int] = []

        async def head() -> None:
            await conn.head(bucket, "k")
            peak.append(max(conn._engine._busy))

        async def missing() -> None:
            with pytest.raises(NoSuchKey):
                await conn.head(bucket, "none")

        async with trio.open_nursery() as nursery:
            for _ in range(8):  # 16 in flight: no more than the connections
                nursery.start_soon(head)
                nursery.start_soon(missing)
        resp = await conn._engine.stream("GET", bucket, "k")  # closed by its reader
        assert sum(conn._engine._busy) == 1
        await resp.aclose()
        assert not any(conn._engine._busy)
        assert all(n > 0 for n in _pool_connections(conn))
        assert max(peak) <= POOL_CONNECTIONS  # spread evenly: none waits for a connection


async def test_a_cancelled_or_failed_request_leaves_its_pool() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/hang"):
            await trio.sleep_forever()
        raise httpx.ConnectError("refused", request=request)

    conn = S3fmAuthConnection(
        "k", "s", False, "s3.test", 9000, CallingFormat.PATH,
        transport=httpx.MockTransport(handler), retry=RetryPolicy.never(),
    )  # fmt: skip
    async with conn:
        with trio.move_on_after(0.05):
            await conn.head("bucket", "hang")
        assert conn._engine._busy == [0]
        with pytest.raises(S3ConnectError):
            await conn.head("bucket", "refused")
        assert conn._engine._busy == [0]


async def test_requests_carry_the_clients_headers_and_capped_waits() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"etag": '"e"'})

    conn = S3fmAuthConnection(
        "k", "s", False, "s3.test", 9000, CallingFormat.PATH, signature="v2",
        transport=httpx.MockTransport(handler), timeout=60.0,
        retry=RetryPolicy(total_timeout=5.0),
    )  # fmt: skip
    async with conn:
        resp = await conn.head("bucket", "a/./b")
        await conn.head("bucket", "plain")
    assert resp.etag == '"e"'
    first, second = seen
    for request in seen:
        assert request.headers["accept"] == "*/*"
        assert request.headers["accept-encoding"] == "identity"
        assert request.headers["connection"] == "keep-alive"
        assert request.headers["user-agent"].startswith("s3fmfs/")
        assert request.headers["host"] == "s3.test:9000"
        assert request.headers["authorization"].startswith("AWS k:")
        waits = request.extensions["timeout"]
        assert set(waits) == {"connect", "read", "write", "pool"}
        assert all(0 < wait <= 5.0 for wait in waits.values())
    assert first.extensions["target"] == b"/bucket/a/./b"
    assert "target" not in second.extensions
