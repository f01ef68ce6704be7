"""The daemon's CPU per small request: HEAD, 4 KiB GET and 4 KiB PUT, through the real store.

Each request goes through ``S3Store`` (what the mount's core calls) over the
``S3fmAuthConnection`` a mount builds (``service.connection.connection_for`` with the mount's
retry policy), to a real server on loopback. The figure is this process's CPU time
(``time.process_time``, all threads) over ``n`` operations divided by ``n``, after a warm-up
that opens the connections: the server runs in another process and does not count. Wall time
does not matter here; CPU per request is what bounds a listing's HEADs on loopback and what
the mount's core competes with.

Keys (milliseconds of CPU per operation):
- ``head_ms``, ``get4k_ms``, ``put4k_ms``: one at a time;
- ``head16_ms``, ``head64_ms``, ``get4k16_ms``: 16 or 64 at once (a mount HEADs a folder's
  entries concurrently; more at once needs more connections in the pools).

``python -m tests.bench.micro [n]`` starts its own s3rver (Signature V2, as the bench), and
moto (Signature V4) when it can, and prints the figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

import trio

from s3fmfs.client import NoSuchBucket
from s3fmfs.config.options import MountOptions
from s3fmfs.fs.s3store import S3Store
from s3fmfs.service.connection import connection_for, mount_retry
from tests.support.servers import S3Server

PREFIX = "s3fmfs-micro/"
SMALL = 4096
#: Operations before each measurement, to open the pools' connections and warm the caches.
WARMUP = 100


def options(server: S3Server, signature: str) -> MountOptions:
    """A mount's options for ``server``: path style, the given signature."""
    return MountOptions(
        endpoint=server.endpoint, region=server.region, signature=signature, path_style=True
    )


async def _cpu_per_op(op: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> float:
    """Milliseconds of this process's CPU per call of ``op`` (after ``WARMUP`` calls), with
    ``concurrency`` calls in flight."""

    async def run(count: int) -> None:
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                await op(index)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)

    await run(max(WARMUP, concurrency * 2))
    started = time.process_time()
    await run(n)
    return (time.process_time() - started) * 1000 / n


async def measure_async(
    server: S3Server, bucket: str, n: int = 2000, signature: str = "v2"
) -> dict[str, float]:
    """CPU milliseconds per operation (see the module docstring for the keys)."""
    opts = options(server, signature)
    conn = connection_for(
        opts, server.access_key_id, server.secret_access_key, retry=mount_retry(opts)
    )
    async with conn:
        try:
            await conn.check_bucket_exists(bucket)
        except NoSuchBucket:
            await conn.create_bucket(bucket)
        store = S3Store(conn, bucket)
        body = bytes(range(256)) * (SMALL // 256)
        keys = [f"{PREFIX}{i}" for i in range(16)]
        for key in keys:
            await store.put(key, body, {"mode": "33188"})

        async def head(i: int) -> None:
            if await store.head(keys[i % len(keys)]) is None:
                raise AssertionError("the object just written is missing")

        async def get(i: int) -> None:
            if len(await store.get_range(keys[i % len(keys)], 0, None)) != SMALL:
                raise AssertionError("short read")

        async def put(i: int) -> None:
            await store.put(f"{PREFIX}put-{i % 64}", body, {"mode": "33188"})

        figures = {
            "head_ms": await _cpu_per_op(head, n, 1),
            "head16_ms": await _cpu_per_op(head, n, 16),
            "head64_ms": await _cpu_per_op(head, n, 64),
            "get4k_ms": await _cpu_per_op(get, n, 1),
            "get4k16_ms": await _cpu_per_op(get, n, 16),
            "put4k_ms": await _cpu_per_op(put, max(1, n // 4), 1),
        }
        await store.delete_many([*keys, *(f"{PREFIX}put-{i}" for i in range(64))])
    return figures


def measure(server: S3Server, bucket: str, n: int = 2000) -> dict[str, float]:
    """CPU milliseconds per HEAD, 4 KiB GET and 4 KiB PUT (Signature V2, as the bench), each
    one at a time and (HEAD, GET) concurrently; ``bucket`` is created if missing."""
    return trio.run(measure_async, server, bucket, n, "v2")


def _print(label: str, figures: dict[str, float]) -> None:
    print(label)
    for name, value in figures.items():
        print(f"  {name:12} {value:.3f}")


def main(argv: list[str]) -> int:
    from tests.support.servers import moto_server, s3rver, unique_bucket

    n = int(argv[0]) if argv else 2000
    with s3rver() as server:
        _print("s3rver, Signature V2 (CPU ms per op)", measure(server, unique_bucket("micro"), n))
    try:
        with moto_server() as server:
            figures = trio.run(measure_async, server, unique_bucket("micro"), n, "v4")
        _print("moto, Signature V4 (CPU ms per op)", figures)
    except Exception as exc:  # moto is optional here: the bench's figure is s3rver's
        print(f"moto, Signature V4: not measured ({type(exc).__name__}: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
