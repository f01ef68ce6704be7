"""The engine's own pools read responses ``READ_SIZE`` bytes at a time, without patching
httpcore for anyone else (``s3fmfs.client._transport``)."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

from s3fmfs.client import _transport
from s3fmfs.client._transport import READ_SIZE, pool_transport


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.asked: list[int] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.asked.append(max_bytes)
        return b"x"

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return self


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.stream = RecordingStream()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return self.stream


def test_httpcore_is_not_patched_and_our_pools_read_more() -> None:
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == 64 << 10
    transport = pool_transport(True, httpx.Limits(max_connections=2))
    assert isinstance(transport._pool._network_backend, _transport._LargeReadsBackend)


async def test_reads_ask_for_read_size_also_after_tls() -> None:
    inner = RecordingBackend()
    backend = _transport._LargeReadsBackend(inner)
    stream = await backend.connect_tcp("h", 1)
    await stream.read(64 << 10)
    await stream.read(1 << 20)
    tls = await stream.start_tls(None)  # type: ignore[arg-type]
    await tls.read(64 << 10)
    assert inner.stream.asked == [READ_SIZE, 1 << 20, READ_SIZE]


class WritingStream(RecordingStream):
    """Records each write that reaches the socket; ``fail`` makes writes fail."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.fail = fail

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.fail:
            raise httpcore.WriteError("broken pipe")
        self.written.append(buffer)


async def test_small_writes_leave_together_before_the_read() -> None:
    inner = WritingStream()
    stream = _transport._LargeReads(inner)
    await stream.write(b"PUT / HTTP/1.1\r\n\r\n")
    await stream.write(b"body")
    await stream.write(b"")
    assert inner.written == []  # held: nothing read yet
    assert await stream.read(10) == b"x"
    assert inner.written == [b"PUT / HTTP/1.1\r\n\r\nbody"]
    await stream.read(10)
    assert inner.written == [b"PUT / HTTP/1.1\r\n\r\nbody"]  # sent once


async def test_a_big_write_leaves_at_once_with_what_was_held() -> None:
    inner = WritingStream()
    stream = _transport._LargeReads(inner)
    big = b"b" * _transport.COALESCE_SIZE
    await stream.write(b"head")
    await stream.write(big)
    assert inner.written == [b"head" + big]
    await stream.write(big)
    assert inner.written == [b"head" + big, big]


async def test_a_held_write_that_fails_still_lets_the_answer_be_read() -> None:
    """As httpcore does for a request it could not finish writing: the server may have
    answered early; a dead connection fails at the read."""
    inner = WritingStream(fail=True)
    stream = _transport._LargeReads(inner)
    await stream.write(b"head")
    assert await stream.read(10) == b"x"
    assert inner.asked == [READ_SIZE]
