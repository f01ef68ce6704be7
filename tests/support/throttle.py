"""A TCP proxy that sends what clients upload at a bounded rate: a slow uplink, for tests that
need an upload to take seconds (unmount progress, status while uploading).

Invariants:
- Binds 127.0.0.1 on a port the kernel picks; each connection gets two threads. The client →
  server direction is cut in ``CHUNK`` pieces and paced so that all connections together send
  at most ``rate`` bytes per second; server → client is forwarded as it comes.
- :func:`throttled` stops it (listener closed, every connection shut) whatever happens.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.support.servers import S3Server

CHUNK = 64 << 10


class Throttle:
    """The proxy; ``port`` is where clients connect."""

    def __init__(self, target: tuple[str, int], rate: int) -> None:
        self.target = target
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the next chunk may go, all connections together
        self._socks: list[socket.socket] = []
        self._closed = False

    def _pace(self, size: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + size / self.rate
        time.sleep(max(0.0, start - now))

    def _pipe(self, src: socket.socket, dst: socket.socket, paced: bool) -> None:
        with suppress(OSError):
            while chunk := src.recv(CHUNK):
                if paced:
                    self._pace(len(chunk))
                dst.sendall(chunk)
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._closed = True
        with suppress(OSError):
            self.listener.close()
        for sock in self._socks:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def throttled(server: S3Server, rate: int) -> Iterator[S3Server]:
    """``server`` behind a proxy sending uploads at ``rate`` bytes/s, for the block."""
    proxy = Throttle((server.host, server.port), rate)
    proxy.start()
    try:
        yield S3Server(
            "127.0.0.1",
            proxy.port,
            server.access_key_id,
            server.secret_access_key,
            server.domain,
            server.region,
        )
    finally:
        proxy.stop()
