"""A TCP proxy that puts a server N ms away: every byte is delayed N ms each way (the bench's
latency mode, ``BENCH_LATENCY_MS``; the kernel's netem is not available here).

Run as its own process (so it never shares a GIL or an event loop with what is measured)::

    python -m tests.support.latency_proxy --listen 127.0.0.1:0 --target HOST:PORT --delay-ms N

It prints ``latency proxy listening on HOST:PORT`` once it accepts connections;
:func:`latency_proxy` starts it for a block and stops it after.

Invariants:
- Per connection and direction, a queue of ``(due, chunk)``: a chunk read at ``t`` is written
  at ``t + N`` (never earlier, and in order), so a stream keeps flowing at the rate of its
  ends with N ms added, as on a long fat link.
- A connection's first N ms each way are its handshake: the upstream connection is opened
  N ms after the client's, and nothing the client sent goes out before the handshake's
  answer would have come back (``accepted + 2N``), so a new connection's first round trip
  costs 2N more than the next ones, like a TCP connect.
- Memory is bounded: a direction stops reading while more than ``MAX_QUEUED`` bytes wait in
  its queue (the sender then blocks on its socket), so a 1 GiB transfer holds at most that.
- An EOF is forwarded after the delay as a half-close (``shutdown(SHUT_WR)``); the
  connection is closed once both directions ended, or at once when either side fails
  (reset, error): the other side is then closed too.
- Only the standard library: the file also runs as a plain script.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 256 * 1024
MAX_QUEUED = 16 << 20  # bytes per direction: 1.6 GB/s per connection at 10 ms
READY = re.compile(rb"latency proxy listening on [^\s:]+:(\d+)")


class _Direction:
    """One direction of a connection: read ``src``, write each chunk to ``dst`` when due."""

    def __init__(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        delay: float,
        not_before: float,
    ) -> None:
        self.src = src
        self.dst = dst
        self.delay = delay
        self.not_before = not_before  # the emulated handshake's end
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.changed = asyncio.Event()

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.queued > MAX_QUEUED:
                self.changed.clear()
                await self.changed.wait()
            data = await self.src.read(CHUNK)
            due = max(loop.time(), self.not_before) + self.delay
            self.queue.append((due, data or None))
            self.queued += len(data)
            self.changed.set()
            if not data:
                return

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.changed.clear()
                await self.changed.wait()
            due, data = self.queue[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.queue.popleft()
            if data is None:
                if self.dst.can_write_eof():
                    self.dst.write_eof()
                return
            self.queued -= len(data)
            self.changed.set()
            self.dst.write(data)
            await self.dst.drain()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.read())
            group.create_task(self.write())


class Proxy:
    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        uwriter: asyncio.StreamWriter | None = None
        try:
            await asyncio.sleep(self.delay)  # the SYN's way there
            ureader, uwriter = await asyncio.open_connection(*self.target, limit=CHUNK * 2)
            _nodelay(uwriter)
            start = accepted + 2 * self.delay  # the handshake's answer is back
            async with asyncio.TaskGroup() as group:
                group.create_task(_Direction(creader, uwriter, self.delay, start).run())
                group.create_task(_Direction(ureader, cwriter, self.delay, start).run())
        except (OSError, ExceptionGroup):
            pass  # a side failed (reset, refused): both are closed below
        finally:
            for writer in (cwriter, uwriter):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_ms: float) -> None:
    proxy = Proxy(target, delay_ms / 1000)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        await proxy.handle(reader, writer)

    server = await asyncio.start_server(handle, *listen, limit=CHUNK * 2, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"latency proxy listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--target", type=_address, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.target, args.delay_ms))
    return 0


@dataclass(frozen=True)
class RunningProxy:
    host: str
    port: int
    pid: int
    delay_ms: float


@contextlib.contextmanager
def latency_proxy(target_host: str, target_port: int, delay_ms: float) -> Iterator[RunningProxy]:
    """The proxy in its own process for the block (stopped after, whatever happens)."""
    import tempfile

    from s3fmfs.commands import demo_server  # the launcher the test servers use

    with tempfile.TemporaryDirectory(prefix="s3fmfs-latency-") as tmp:
        log = Path(tmp) / "proxy.log"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"{target_host}:{target_port}",
            "--delay-ms",
            str(delay_ms),
        ]
        found: list[int] = []

        def ready() -> bool:
            match = READY.search(log.read_bytes())
            if match:
                found.append(int(match.group(1)))
            return bool(match)

        with demo_server.process(argv, log, ready) as proc:
            yield RunningProxy("127.0.0.1", found[0], proc.pid, delay_ms)


if __name__ == "__main__":
    sys.exit(main())
