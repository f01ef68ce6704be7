"""An httpx transport that connects every request to 127.0.0.1, whatever the URL's host name.

Why: virtual-hosted-style S3 requests put the bucket in the host name
(``http://mybucket.s3.test:PORT/key``). The tests need such names to reach the local test
servers without touching ``/etc/hosts`` or a DNS server, and the name must still travel in the
URL and the ``Host`` header because both the signature and the server's bucket routing use it.

Invariants:
- Only the TCP connect is redirected: same port, address ``127.0.0.1`` (or the ``address``
  given); the URL, ``Host`` header and TLS server name keep the original host name.
- The wrapped backend is the one httpcore picked (its auto backend), so the transport works
  under trio and asyncio alike.
- Connection pooling stays keyed on the original origin: ``a.s3.test`` and ``b.s3.test`` get
  separate connections, as they would against a real server.

Host naming that works with the servers of :mod:`tests.support.servers` (verified in
``tests/test_servers.py``):

- The domain is ``s3.test`` (``.test`` is reserved by RFC 2606, so it never resolves for
  real). Virtual-hosted style uses ``<bucket>.s3.test:PORT``; path style may use
  ``s3.test:PORT`` or ``127.0.0.1:PORT``.
- moto: any host name with a dot that is not an IP address, ``localhost*`` or a custom endpoint
  is read as ``<bucket>.<anything>``: the bucket is the FIRST label (so bucket names with dots
  cannot be virtual-hosted on moto). ``tests.support.servers`` starts moto with
  ``MOTO_S3_CUSTOM_ENDPOINTS=http://s3.test:PORT`` so that the bare ``s3.test:PORT`` is path
  style instead of bucket ``s3``. ``mybucket.localhost`` would also work on moto, but not on
  s3rver (see below), hence ``s3.test``.
- s3rver: started with ``--service-endpoint test``, it matches
  ``^(?:(<bucket>)\\.)?s3(-website)?([-.].+)?\\.test$`` on the host name (port stripped), so
  ``<bucket>.s3.test`` is the bucket (dots allowed) and ``s3.test`` is path style. Any other
  name that is not an IP, ``localhost`` or the machine's host name is taken WHOLE as a bucket
  name (CNAME style).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

LOOPBACK = "127.0.0.1"


class LoopbackBackend(httpcore.AsyncNetworkBackend):
    """Delegates to another network backend, connecting TCP to ``address`` instead of ``host``."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, address: str = LOOPBACK) -> None:
        self._inner = inner
        self._address = address
        self.connected_hosts: list[str] = []  # names asked for, in order: lets tests check routing

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected_hosts.append(host)
        return await self._inner.connect_tcp(
            self._address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class LoopbackTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections all go to ``address``.

    httpx does not let callers pass a network backend, so the backend of the connection pool
    it built is wrapped after construction (``_network_backend`` is httpcore's private
    attribute; the assertion makes an httpcore change fail loudly rather than silently
    connecting to the real host).
    """

    def __init__(self, address: str = LOOPBACK, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        inner = getattr(pool, "_network_backend", None)
        assert isinstance(inner, httpcore.AsyncNetworkBackend), "httpcore internals changed"
        self.backend = LoopbackBackend(inner, address)
        pool._network_backend = self.backend


def loopback_transport(**kwargs: Any) -> LoopbackTransport:
    """A transport for ``httpx.AsyncClient(transport=...)``; kwargs go to the httpx transport."""
    return LoopbackTransport(**kwargs)
