"""The transport of the engine's own connection pools: httpx's, with larger socket reads.

Invariants:
- A response is read from the socket ``READ_SIZE`` bytes at a time instead of httpcore's
  64 KiB; nothing else differs from the transport ``httpx.AsyncClient`` builds (same TLS
  verification, limits, environment).
- Bytes written leave in order, all before the next read; a write under ``COALESCE_SIZE``
  may wait for the next write or read to leave with it.
- Local: only the pools :func:`pool_transport` builds read so; httpcore's classes are not
  touched, and a transport passed to the client by its user is used as given.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

log = logging.getLogger("s3fmfs.client")


#: Bytes asked of the socket per read of a response. httpcore's HTTP/1.1 connections ask for
#: 64 KiB (``AsyncHTTP11Connection.READ_NUM_BYTES``), and each read of a body goes through h11
#: and four layers of async iterators: a streamed GET at loopback speed spends more time there
#: than copying. 256 KiB reads make a quarter of the passes (measured on big reads through the
#: mount: about 15% less CPU per byte); 1 MiB ones were no faster (their copies miss the CPU
#: cache) and hold more memory per connection.
READ_SIZE = 256 << 10


#: Writes shorter than this are held back and sent with the next write, or before the next
#: read: httpcore writes a request's headers and its body separately, so a small PUT cost two
#: sends (two system calls, two wake-ups of the server); now one. Big writes go at once.
COALESCE_SIZE = 64 << 10


class _LargeReads(httpcore.AsyncNetworkStream):
    """A network stream whose reads ask for at least ``READ_SIZE`` bytes, and whose small
    writes leave together (``COALESCE_SIZE``).

    httpcore feeds whatever a read returns to h11, which takes any amount, so asking the
    socket for more than httpcore's 64 KiB changes only how many passes a body takes. HTTP/1.1
    reads after each request is written, so a held write always leaves before the answer is
    awaited. Only the engine's own pools get it (:func:`pool_transport`): httpcore itself is
    left as it is.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._held = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            held, self._held = self._held, b""
            # as httpcore does when writing a request fails: read the answer all the same
            # (a server may answer early and close); a dead connection then fails the read
            with contextlib.suppress(httpcore.WriteError):
                await self._inner.write(held, timeout)
        return await self._inner.read(max(max_bytes, READ_SIZE), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._held:
            buffer, self._held = self._held + buffer, b""
        if len(buffer) < COALESCE_SIZE:
            self._held = buffer
            return
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        self._held = b""
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _LargeReads(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LargeReadsBackend(httpcore.AsyncNetworkBackend):
    """The network backend httpx picked, its streams wrapped in :class:`_LargeReads`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _LargeReads(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _LargeReads(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pool_transport(
    verify: bool | str | ssl.SSLContext, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """The transport of one of the engine's pools: httpx's own, as ``AsyncClient`` would build
    it, with reads of ``READ_SIZE``. httpx takes no network backend, so the one of the pool it
    built is wrapped (``_pool._network_backend`` is private): if httpx or httpcore change there,
    the transport is left as built (64 KiB reads: slower, never wrong)."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _LargeReadsBackend(backend)  # type: ignore[union-attr]
    else:  # pragma: no cover - another httpx/httpcore
        log.debug("httpx transport without a network backend to wrap: 64 KiB reads")
    return transport
