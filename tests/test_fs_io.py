"""The data path: read-ahead (streamed blocks, window, concurrency, cancellation, memory budget),
keep_cache, and streaming multipart uploads (parts while writing, fallbacks, failures).

Read-ahead is tested alone over a fake streamed GET with latency and pace, the streamed GET
under it over a scripted server (resumed after a reset, answers longer than asked), then through
the core over moto with an ``IOStore`` wrapper that counts requests (and GETs in flight) and can
fail some of them, and once through a real mount (the kernel's read-ahead of 1 MiB).
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from s3fmfs.client import CallingFormat, RetryPolicy, S3fmAuthConnection, errors
from s3fmfs.client.limits import MAX_PART_SIZE, MAX_PARTS
from s3fmfs.config.options import MountOptions, parse_options
from s3fmfs.fs.content import ContentState
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.readahead import PAUSE_LIMIT, RANGE_SIZE, SLACK, ReadAhead, ReadBudget
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import (
    MultipartStore,
    PartBody,
    PutResult,
    Sink,
    StreamingStore,
    UploadedPart,
)
from s3fmfs.fs.upload import part_ranges, part_size_for
from s3fmfs.service.mount import READ_AHEAD_KB
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket
from tests.support.stores import CountingStore

MiB = 1 << 20

# -- read-ahead alone --------------------------------------------------------------------------

CHUNK = 64 << 10


class FakeObject:
    """An object behind a streamed GET: ``delay`` before the first byte, then chunks of
    ``chunk`` bytes, ``pace`` seconds apart; it counts GETs, those in flight and cancelled,
    and fails when told (before the first byte, or at an offset)."""

    def __init__(
        self, size: int, delay: float = 0.01, *, chunk: int = CHUNK, pace: float = 0.0
    ) -> None:
        self.content = (bytes(range(251)) * (size // 251 + 1))[:size]
        self.delay = delay
        self.chunk = chunk
        self.pace = pace
        self.fetched: list[tuple[int, int]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.cancelled = 0
        self.fail_next = 0
        self.fail_at: int | None = None  # the next GET to reach this offset fails there

    async def stream(self, start: int, length: int, sink: Sink) -> None:
        self.fetched.append((start, length))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await trio.sleep(self.delay)
            if self.fail_next:
                self.fail_next -= 1
                raise errors.InternalError(500, "InternalError", "injected", method="GET")
            pos, end = start, min(start + length, len(self.content))
            while pos < end:
                if self.fail_at is not None and pos == self.fail_at:
                    self.fail_at = None
                    raise errors.S3ProtocolError("connection reset", method="GET")
                stop = min(end, pos + self.chunk)
                if self.fail_at is not None and pos < self.fail_at < stop:
                    stop = self.fail_at
                await sink(self.content[pos:stop])
                pos = stop
                await trio.sleep(self.pace)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1


async def read_sequentially(
    ra: ReadAhead, obj: FakeObject, start: int, stop: int, chunk: int = 128 << 10
) -> bytes:
    """Reads of ``chunk`` bytes, a few at a time (as the kernel sends them)."""
    out: dict[int, bytes] = {}

    async def one(offset: int) -> None:
        out[offset] = await ra.read(offset, chunk, len(obj.content), 0, obj.stream)

    for base in range(start, stop, 4 * chunk):
        async with trio.open_nursery() as nursery:
            for offset in range(base, min(stop, base + 4 * chunk), chunk):
                nursery.start_soon(one, offset)
    return b"".join(out[k] for k in sorted(out))


async def test_readahead_window_grows_fetches_concurrently_and_resets_on_seek(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(80 * MiB)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(ReadBudget(64 * MiB), nursery, max_inflight=4)
        # the kernel's first read comes alone; then several at a time (trio may run those in
        # any order: the detector must not take that for a seek)
        first = await ra.read(0, 128 << 10, len(obj.content), 0, obj.stream)
        rest = await read_sequentially(ra, obj, 128 << 10, len(obj.content))
        assert first + rest == obj.content
        lengths = [length for _, length in obj.fetched]
        assert lengths[0] == MiB  # a first read fetches one small block
        assert lengths[1:4] == sorted(lengths[1:4])  # then bigger ones
        assert max(lengths) == RANGE_SIZE  # parts of at most part_size
        assert ra.window == 64 * MiB
        assert 2 <= obj.max_inflight <= 4
        assert sum(lengths) <= len(obj.content) + MiB  # nothing fetched twice
        # a seek: back to one small block, the window starts again
        obj.fetched.clear()
        assert (
            await ra.read(5 * MiB + 3, 10, len(obj.content), 0, obj.stream)
            == (obj.content[5 * MiB + 3 : 5 * MiB + 13])
        )
        assert obj.fetched == [(5 * MiB + 3, MiB)] and ra.window == MiB and ra.seeks == 1
        nursery.cancel_scope.cancel()


async def test_readahead_read_returns_as_soon_as_its_bytes_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # a block of 64 chunks, one every millisecond after 10 ms: whole after 74 ms
    obj = FakeObject(32 * MiB, delay=0.01, pace=0.001)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(ReadBudget(16 * MiB), nursery, min_window=4 * MiB)
        start = trio.current_time()
        assert await ra.read(0, 4096, len(obj.content), 0, obj.stream) == obj.content[:4096]
        assert trio.current_time() - start < 0.012  # its first chunk, not the block
        assert obj.fetched == [(0, 4 * MiB)] and obj.inflight == 1
        offset = 3 * MiB
        data = await ra.read(offset, 4096, len(obj.content), 0, obj.stream)
        assert data == obj.content[offset : offset + 4096]
        # chunk 49 of the block arrived; the block is still coming
        assert 0.055 < trio.current_time() - start < 0.065
        assert (0, 4 * MiB) in obj.fetched and obj.inflight >= 1
        nursery.cancel_scope.cancel()


async def test_readahead_releases_chunks_as_the_reader_passes_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(64 * MiB, delay=0.001)
    budget = ReadBudget(16 * MiB)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(budget, nursery, max_inflight=4)
        size = 128 << 10
        for offset in range(0, 24 * MiB, size):
            data = await ra.read(offset, size, len(obj.content), 0, obj.stream)
            assert data == obj.content[offset : offset + size]
            # what the reader passed (but SLACK) is gone, block or no block
            assert ra.front >= offset + size - SLACK - CHUNK
            assert budget.used == ra.held <= budget.limit + 4 * CHUNK + size
        assert obj.max_inflight >= 2  # GETs ahead went on while their block was read
        # the reader stops: the GETs ahead stop too, memory stays within the budget
        await trio.sleep(1)
        assert obj.inflight >= 1 and budget.used <= budget.limit + 4 * CHUNK
        assert ra.held == budget.used
        requested = sum(length for _, length in obj.fetched)
        assert requested > 24 * MiB + budget.limit  # asked for more than it may hold
        # a reader gone for good: after PAUSE_LIMIT the GETs ahead give their connections up
        await trio.sleep(PAUSE_LIMIT)
        assert obj.inflight == 0 and ra.gave_up >= 1
        out = await read_sequentially(ra, obj, 24 * MiB, 40 * MiB)
        assert out == obj.content[24 * MiB : 40 * MiB] and ra.seeks == 0
        ra.close()
        assert budget.used == 0
        nursery.cancel_scope.cancel()


async def test_readahead_seek_and_close_cancel_fetches_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(64 * MiB, delay=0.5)
    budget = ReadBudget(32 * MiB)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(budget, nursery, max_inflight=4)
        with trio.move_on_after(0.2):  # a reader whose fetches ahead are still on their way
            await ra.read(0, 4096, len(obj.content), 0, obj.stream)
        obj.delay = 0.0
        await ra.read(0, 4096, len(obj.content), 0, obj.stream)
        await ra.read(4096, 4096, len(obj.content), 0, obj.stream)
        obj.delay = 0.5
        await ra.read(MiB, 4096, len(obj.content), 0, obj.stream)  # schedules ahead
        await trio.sleep(0.05)
        assert obj.inflight >= 1
        ahead = obj.inflight
        ra.close()  # release
        await trio.sleep(0.01)
        assert obj.inflight == 0 and obj.cancelled >= ahead
        assert budget.used == 0 and ra.held == 0
        # a seek cancels too, and what the old GETs streamed is given back
        ra2 = ReadAhead(budget, nursery, max_inflight=4, min_window=4 * MiB)
        obj.delay, obj.pace = 0.0, 0.01
        await ra2.read(0, 4096, len(obj.content), 0, obj.stream)
        await ra2.read(4096, 4096, len(obj.content), 0, obj.stream)
        await trio.sleep(0.05)
        before = obj.cancelled
        assert obj.inflight >= 1 and budget.used > 0
        obj.pace = 0.0
        far = 50 * MiB
        assert (
            await ra2.read(far, 10, len(obj.content), 0, obj.stream) == obj.content[far : far + 10]
        )
        await trio.sleep(0.01)
        assert obj.cancelled > before and obj.inflight == 0
        assert budget.used == ra2.held <= 4 * MiB and ra2.front >= far  # the new block alone
        ra2.close()
        assert budget.used == 0
        nursery.cancel_scope.cancel()


async def test_readahead_memory_budget_is_shared_and_respected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    objects = [FakeObject(24 * MiB, delay=0.005) for _ in range(3)]
    budget = ReadBudget(6 * MiB)
    size = 128 << 10
    async with trio.open_nursery() as nursery:
        handles = [ReadAhead(budget, nursery, max_inflight=4) for _ in objects]

        async def reader(ra: ReadAhead, obj: FakeObject) -> None:
            for offset in range(0, len(obj.content), size):
                data = await ra.read(offset, size, len(obj.content), 0, obj.stream)
                assert data == obj.content[offset : offset + size]
                assert budget.used == sum(h.held for h in handles)

        async with trio.open_nursery() as readers:
            for ra, obj in zip(handles, objects, strict=True):
                readers.start_soon(reader, ra, obj)
        # over the limit by at most a chunk per GET in flight and what the readers waited for
        assert budget.peak <= budget.limit + len(handles) * (4 * CHUNK + size)
        for ra in handles:
            ra.close()
        assert budget.used == 0
        nursery.cancel_scope.cancel()


async def test_readahead_error_surfaces_then_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(4 * MiB, delay=0.0)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(ReadBudget(8 * MiB), nursery)
        obj.fail_next = 1
        with pytest.raises(errors.InternalError):
            await ra.read(0, 10, len(obj.content), 0, obj.stream)
        assert await ra.read(0, 10, len(obj.content), 0, obj.stream) == obj.content[:10]
        nursery.cancel_scope.cancel()


async def test_readahead_error_mid_stream_is_the_error_of_the_reads_past_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(16 * MiB, delay=0.0)
    broken = 3 * MiB + 100
    obj.fail_at = broken
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(ReadBudget(16 * MiB), nursery, min_window=4 * MiB)
        assert await ra.read(0, 4096, len(obj.content), 0, obj.stream) == obj.content[:4096]
        await trio.sleep(0.1)  # the GET broke at `broken`
        assert obj.fetched == [(0, 4 * MiB)]
        # the bytes that arrived before the break are served
        data = await ra.read(2 * MiB, MiB, len(obj.content), 0, obj.stream)
        assert data == obj.content[2 * MiB : 3 * MiB]
        # the read that needs a byte past it gets the error
        with pytest.raises(errors.S3ProtocolError):
            await ra.read(3 * MiB, 4096, len(obj.content), 0, obj.stream)
        assert [start for start, _ in obj.fetched].count(broken) == 0
        # the next read fetches on from where the bytes stopped, the data whole
        data = await ra.read(3 * MiB, MiB, len(obj.content), 0, obj.stream)
        assert data == obj.content[3 * MiB : 4 * MiB]
        assert [start for start, _ in obj.fetched].count(broken) == 1 and ra.seeks == 0
        nursery.cancel_scope.cancel()


async def test_readahead_late_read_behind_the_kept_bytes_is_fetched_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(32 * MiB, delay=0.001)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(ReadBudget(16 * MiB), nursery)
        await read_sequentially(ra, obj, 0, 8 * MiB)
        late = ra.front - 100_000
        assert late > 0
        obj.fetched.clear()
        data = await ra.read(late, 4096, len(obj.content), 0, obj.stream)
        assert data == obj.content[late : late + 4096]
        assert obj.fetched == [(late, 4096)] and ra.seeks == 0
        nursery.cancel_scope.cancel()


async def test_readahead_without_nursery_and_new_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = {"v": b"old" * 100}

    async def stream(start: int, length: int, sink: Sink) -> None:
        await sink(data["v"][start : start + length])

    ra = ReadAhead(ReadBudget(MiB), None, min_window=16)
    assert await ra.read(0, 3, 300, 0, stream) == b"old"
    data["v"] = b"new" * 100
    assert await ra.read(0, 3, 300, 0, stream) == b"old"  # kept
    assert await ra.read(0, 3, 300, 1, stream) == b"new"  # the content changed here
    assert await ra.read(298, 10, 300, 1, stream) == b"ew"  # short at the end
    assert await ra.read(300, 10, 300, 1, stream) == b""
    # the size unknown: the object ends where the bytes stop
    assert await ra.read(250, 100, None, 2, stream) == data["v"][250:]
    assert await ra.read(300, 100, None, 2, stream) == b""


# -- the streamed GET under the read-ahead (S3Store over a scripted server) --------------------


class _ResetAfter(httpx.AsyncByteStream):
    """A body that breaks after its first bytes (a connection reset mid-download)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("[Errno 104] Connection reset by peer")


def scripted_store(
    content: bytes, answer: Callable[[int, int, int], httpx.Response | None]
) -> tuple[S3Store, list[httpx.Request]]:
    """An S3Store whose server answers ranged GETs of ``content``; ``answer(attempt, first,
    last)`` may script an answer (None: the right one)."""
    requests: list[httpx.Request] = []
    etag = '"v1"'

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
        a, b = int(first), int(last) if last else len(content) - 1
        scripted = answer(len(requests), a, b)
        if scripted is not None:
            return scripted
        headers = {"etag": etag, "content-range": f"bytes {a}-{b}/{len(content)}"}
        return httpx.Response(206, headers=headers, stream=httpx.ByteStream(content[a : b + 1]))

    conn = S3fmAuthConnection(
        "AKID",
        "SECRET",
        False,
        "s3.test",
        9000,
        CallingFormat.PATH,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(base_delay=0.001, max_delay=0.01),
    )
    return S3Store(conn, "bucket"), requests


async def collect_range(store: S3Store, start: int, end: int) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await store.get_range_into("key", start, end, sink)
    return b"".join(chunks)


async def test_streamed_get_resumes_after_a_reset_of_the_same_version() -> None:
    content = pattern(MiB)

    def answer(attempt: int, first: int, last: int) -> httpx.Response | None:
        if attempt > 1:
            return None
        headers = {"etag": '"v1"', "content-length": str(last + 1 - first)}
        return httpx.Response(206, headers=headers, stream=_ResetAfter(content[first:300_000]))

    store, requests = scripted_store(content, answer)
    async with store.conn:
        assert await collect_range(store, 1000, 600_000) == content[1000:600_001]
    assert [r.headers["range"] for r in requests] == ["bytes=1000-600000", "bytes=300000-600000"]
    assert "if-match" not in requests[0].headers and requests[1].headers["if-match"] == '"v1"'


async def test_streamed_get_is_not_retried_for_what_its_sink_raised() -> None:
    store, requests = scripted_store(pattern(MiB), lambda attempt, first, last: None)

    async def sink(chunk: bytes) -> None:
        raise errors.S3ProtocolError("the caller's own", method="GET")

    async with store.conn:
        with pytest.raises(errors.S3ProtocolError, match="the caller's own"):
            await store.get_range_into("key", 0, 1000, sink)
    assert len(requests) == 1


async def test_streamed_get_takes_only_the_range_of_a_longer_answer() -> None:
    content = pattern(MiB)

    def whole(attempt: int, first: int, last: int) -> httpx.Response | None:
        return httpx.Response(200, stream=httpx.ByteStream(content))  # Range ignored

    store, _ = scripted_store(content, whole)
    async with store.conn:
        assert await collect_range(store, 5000, 5999) == content[5000:6000]

    def everything(attempt: int, first: int, last: int) -> httpx.Response | None:
        # s3rver answers bytes=0-0 with all of the object
        headers = {"content-range": f"bytes 0-{len(content) - 1}/{len(content)}"}
        return httpx.Response(206, headers=headers, stream=httpx.ByteStream(content))

    store, _ = scripted_store(content, everything)
    async with store.conn:
        assert await collect_range(store, 0, 0) == content[:1]
        assert await collect_range(store, 10, 19) == content[10:20]


def test_part_sizes_fit_5_tib_in_10000_parts() -> None:
    for base in (5 * MiB, 8 * MiB, 64 * MiB):
        sizes = [part_size_for(n, base) for n in range(1, MAX_PARTS + 1)]
        assert sizes[0] == base and sizes == sorted(sizes) and max(sizes) <= MAX_PART_SIZE
        assert sum(sizes) >= 5 << 40
    assert part_size_for(1, 1) == 5 * MiB  # S3's minimum


def test_a_whole_upload_is_cut_by_the_streaming_rule() -> None:
    """One part-size rule: a file uploaded whole at close is cut as a stream of it would be."""
    ranges = list(part_ranges(100 * MiB, 5 * MiB))
    assert len(ranges) == 20 and all(length == 5 * MiB for _, _, length in ranges)
    assert [n for n, _, _ in ranges] == list(range(1, 21))
    # past 625 parts they double, as a stream's do; the pieces tile the body exactly
    size = 700 * 5 * MiB + 3
    ranges = list(part_ranges(size, 5 * MiB))
    assert [length for _, _, length in ranges[:-1]] == [
        part_size_for(n, 5 * MiB) for n, _, _ in ranges[:-1]
    ]
    assert ranges[625][2] == 10 * MiB
    assert sum(length for _, _, length in ranges) == size
    assert all(a[1] + a[2] == b[1] for a, b in itertools.pairwise(ranges))


def test_io_options() -> None:
    opts = parse_options(["readahead_mb=24,part_size_mb=32,upload_concurrency=8"])
    assert (opts.readahead_mb, opts.part_size_mb, opts.upload_concurrency) == (24, 32, 8)
    defaults = MountOptions()
    assert (defaults.readahead_mb, defaults.part_size_mb, defaults.upload_concurrency) == (
        16,
        8,
        4,
    )


# -- through the core, over moto ---------------------------------------------------------------


class IOStore(CountingStore):
    """The core tests' counting store, plus GETs in flight (streamed, as S3Store's) and
    multipart calls, able to fail parts, PUTs, or a streamed GET at an offset."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.get_delay = 0.0
        self.gets_in_flight = 0
        self.max_gets_in_flight = 0
        self.got = 0
        self.fail_parts = False
        self.part_delay = 0.0
        self.fail_get_at: int | None = None  # the next streamed GET past it breaks there

    async def get_range_into(
        self, key: str, start: int, end: int, sink: Sink, *, if_match: str = ""
    ) -> None:
        self._hit("get")
        self.gets_in_flight += 1
        self.max_gets_in_flight = max(self.max_gets_in_flight, self.gets_in_flight)
        pos = start

        async def counted(chunk: bytes) -> None:
            nonlocal pos
            broken = self.fail_get_at
            if broken is not None and pos <= broken < pos + len(chunk):
                self.fail_get_at = None
                await sink(chunk[: broken - pos])
                raise errors.S3ProtocolError("injected reset", method="GET")
            pos += len(chunk)
            self.got += len(chunk)
            await sink(chunk)

        try:
            if self.get_delay:
                await trio.sleep(self.get_delay)
            await self.inner.get_range_into(key, start, end, counted, if_match=if_match)
        finally:
            self.gets_in_flight -= 1

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        self._hit("get")
        self.gets_in_flight += 1
        self.max_gets_in_flight = max(self.max_gets_in_flight, self.gets_in_flight)
        try:
            if self.get_delay:
                await trio.sleep(self.get_delay)
            data = await self.inner.get_range(key, start, end, if_match=if_match)
            self.got += len(data)
            return data
        finally:
            self.gets_in_flight -= 1

    async def create_multipart(
        self, key: str, metadata: Mapping[str, str], content_type: str | None = None
    ) -> str:
        self._hit("create_multipart")
        return await self.inner.create_multipart(key, metadata, content_type)

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: PartBody | bytes, length: int
    ) -> UploadedPart:
        self._hit("upload_part")
        if self.part_delay:
            await trio.sleep(self.part_delay)
        if self.fail_parts:
            raise errors.InternalError(500, "InternalError", "injected", method="PUT")
        part = await self.inner.upload_part(key, upload_id, number, body, length)
        self._hit("part_done")
        return part

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[UploadedPart]
    ) -> PutResult:
        self._hit("complete")
        return await self.inner.complete_multipart(key, upload_id, parts)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._hit("abort")
        await self.inner.abort_multipart(key, upload_id)


@pytest.fixture
async def raw(conn: S3fmAuthConnection) -> S3Store:
    bucket = unique_bucket("io")
    await conn.create_bucket(bucket)
    return S3Store(conn, bucket)


@pytest.fixture
async def core(raw: S3Store) -> AsyncIterator[tuple[FsCore, IOStore]]:
    """A core with its background nursery, as a mount runs it (parts of 5 MiB)."""
    store = IOStore(raw)
    assert isinstance(store, MultipartStore) and isinstance(store, StreamingStore)
    opts = FsSettings(uid=1000, gid=1000, part_size_mb=5, readahead_mb=32)
    fs = FsCore(store, opts)
    async with trio.open_nursery() as nursery:
        await nursery.start(fs.run_background)
        yield fs, store
        nursery.cancel_scope.cancel()


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed) % 256 for i in range(1 << 16))
    return (block * (size // len(block) + 1))[:size]


async def create(fs: FsCore, name: str) -> tuple[int, int]:
    fh, ino, _ = await fs.create(ROOT_INODE, name.encode(), 0o644, os.O_WRONLY, 1000, 1000)
    return fh, ino


async def write_seq(
    fs: FsCore, fh: int, data: bytes, start: int = 0, chunk: int = 128 << 10
) -> None:
    for offset in range(0, len(data), chunk):
        await fs.write(fh, start + offset, data[offset : offset + chunk])


async def test_sequential_read_prefetches_concurrently(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    content = pattern(40 * MiB)
    await raw.put("big", content, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"big")
    store.get_delay = 0.02
    fh = await fs.open(ino, os.O_RDONLY)
    out = bytearray()
    for offset in range(0, len(content), 128 << 10):
        out += await fs.read(fh, offset, 128 << 10)
    assert bytes(out) == content
    assert store.max_gets_in_flight >= 2
    assert store.got <= len(content) + MiB
    assert store.count("get") < 20  # blocks grew from 1 MiB to parts of 5 MiB
    await fs.release(fh)
    assert fs.read_budget.used == 0


#: A GET slowed down this much is one the test sees cancelled, never completed: the waits
#: allowed are a quarter of it, ample for the rest on a loaded machine (moto over loopback).
SLOW_GET = 20.0


async def test_release_and_seek_cancel_pending_gets(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    content = pattern(40 * MiB)
    await raw.put("big", content, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"big")
    fh = await fs.open(ino, os.O_RDONLY)
    for offset in range(0, 3 * MiB, 128 << 10):
        await fs.read(fh, offset, 128 << 10)
    store.get_delay = SLOW_GET
    await fs.read(fh, 3 * MiB, 128 << 10)  # fetches ahead, slowly
    await trio.sleep(0.05)
    assert store.gets_in_flight >= 1
    with trio.fail_after(SLOW_GET / 4):  # cancelled, not waited for
        await fs.release(fh)
        while store.gets_in_flight:
            await trio.sleep(0.01)
    assert fs.read_budget.used == 0
    # a seek: the GETs ahead of the old position go
    fh = await fs.open(ino, os.O_RDONLY)
    store.get_delay = 0.0
    for offset in range(0, 2 * MiB, 128 << 10):
        await fs.read(fh, offset, 128 << 10)
    store.get_delay = SLOW_GET
    await fs.read(fh, 2 * MiB, 128 << 10)
    await trio.sleep(0.05)
    assert store.gets_in_flight >= 1
    store.get_delay = 0.0
    with trio.fail_after(SLOW_GET / 4):  # the GETs ahead of the old position cancelled
        assert await fs.read(fh, 30 * MiB, 100) == content[30 * MiB : 30 * MiB + 100]
        while store.gets_in_flight:
            await trio.sleep(0.01)
    await fs.release(fh)


async def test_read_error_mid_stream_is_the_reads_error_then_retried(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    content = pattern(12 * MiB, seed=3)
    await raw.put("big", content, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"big")
    fh = await fs.open(ino, os.O_RDONLY)
    broken = 6 * MiB + 12345
    store.fail_get_at = broken
    size = 128 << 10
    out = bytearray()
    failed_at = None
    for offset in range(0, len(content), size):
        try:
            out += await fs.read(fh, offset, size)
        except errors.S3ProtocolError:
            assert failed_at is None  # one read fails, the one that needed the lost bytes
            failed_at = offset
            out += await fs.read(fh, offset, size)  # and the same read again works
    assert failed_at is not None and failed_at <= broken < failed_at + size
    assert bytes(out) == content
    await fs.release(fh)
    assert fs.read_budget.used == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the bdi's read_ahead_kb is root's")
def test_mount_reads_ahead_in_1_mib_requests(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("ra")
    s3.create_bucket(Bucket=bucket)
    content = pattern(24 * MiB, seed=5)
    s3.put_object(Bucket=bucket, Key="big", Body=content)
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        dev = os.stat(mnt).st_dev
        bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        deadline = time.monotonic() + 5  # set once the mount is live, just after
        while bdi.read_text().strip() != str(READ_AHEAD_KB) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bdi.read_text().strip() == str(READ_AHEAD_KB)
        with open(mnt / "big", "rb") as f:
            got = b"".join(iter(lambda: f.read(MiB), b""))
        assert got == content


async def test_keep_cache_follows_the_etag(core: tuple[FsCore, IOStore], raw: S3Store) -> None:
    fs, _ = core
    await raw.put("f", b"one", {})
    ino, _ = await fs.lookup(ROOT_INODE, b"f")

    async def opened(flags: int = os.O_RDONLY) -> tuple[int, bool]:
        fh = await fs.open(ino, flags)
        return fh, fs.keep_cache(fh)

    fh, keep = await opened()
    assert not keep  # first open: nothing known of the page cache
    await fs.release(fh)
    fh, keep = await opened()
    assert keep  # same ETag, not written here
    await fs.release(fh)
    # written here: the next open drops the cache, the one after keeps it again
    fh, _ = await opened(os.O_RDWR)
    await fs.write(fh, 0, b"two")
    await fs.flush(fh)
    await fs.release(fh)
    fh, keep = await opened()
    assert not keep
    await fs.release(fh)
    fh, keep = await opened()
    assert keep
    await fs.release(fh)
    # changed behind the mount's back: a new ETag once the attributes are refreshed
    await raw.put("f", b"three", {})
    fs.cache.forget_tree("f")
    await fs.getattr(ino)
    fh, keep = await opened()
    assert not keep
    assert await fs.read(fh, 0, 10) == b"three"
    await fs.release(fh)


async def test_sequential_write_streams_parts_before_close(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    data = pattern(22 * MiB, seed=1)
    fh, ino = await create(fs, "seq.bin")
    await write_seq(fs, fh, data)
    # every whole part went up (or is going up) while writing; nothing is visible yet
    assert store.count("create_multipart") == 1
    assert store.count("upload_part") == 4
    assert await raw.head("seq.bin") is None
    await fs.flush(fh)
    await fs.release(fh)
    assert store.count("upload_part") == 5  # the tail
    assert (store.count("complete"), store.count("put"), store.count("abort")) == (1, 0, 0)
    assert await raw.get_range("seq.bin", 0, None) == data
    info = await raw.head("seq.bin")
    assert info is not None and info.metadata is not None
    assert info.metadata.get("mode") == str(0o100644) and info.metadata.get("uid") == "1000"
    attr = await fs.getattr(ino)
    assert attr.size == len(data)


async def test_write_after_a_flush_of_the_empty_file_still_streams(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    """dd (and any shell redirection) closes a duplicate of the new file before writing: that
    flush makes the empty object (the file exists from its first close); the writes after it
    still stream their parts, and close completes them (no whole upload at close)."""
    fs, store = core
    data = pattern(22 * MiB, seed=4)
    fh, _ = await create(fs, "dd.bin")
    await fs.flush(fh)  # close(3) after dup2(3, 1)
    assert store.count("put") == 1
    info = await raw.head("dd.bin")
    assert info is not None and info.size == 0
    await write_seq(fs, fh, data)
    assert store.count("create_multipart") == 1 and store.count("upload_part") == 4
    await fs.flush(fh)
    await fs.release(fh)
    assert (store.count("put"), store.count("complete"), store.count("abort")) == (1, 1, 0)
    assert store.count("upload_part") == 5
    assert await raw.get_range("dd.bin", 0, None) == data


async def test_upload_concurrency_is_bounded(core: tuple[FsCore, IOStore]) -> None:
    fs, store = core
    store.part_delay = 0.05
    fh, ino = await create(fs, "conc.bin")
    stream_max = 0
    data = pattern(40 * MiB)
    for offset in range(0, len(data), MiB):
        await fs.write(fh, offset, data[offset : offset + MiB])
        content = fs.inodes.get(ino).content
        stream = content.stream
        if stream is not None:
            assert content.state is ContentState.STREAMING
        if stream is not None:
            stream_max = max(stream_max, stream.inflight)
    assert 2 <= stream_max <= fs.settings.upload_concurrency
    await fs.flush(fh)
    await fs.release(fh)
    assert store.count("upload_part") == 8 and store.count("complete") == 1


async def test_small_file_is_one_put(core: tuple[FsCore, IOStore], raw: S3Store) -> None:
    fs, store = core
    fh, _ = await create(fs, "small.txt")
    await write_seq(fs, fh, pattern(3 * MiB))
    await fs.flush(fh)
    await fs.release(fh)
    assert store.count("put") == 1 and store.count("create_multipart") == 0
    assert await raw.get_range("small.txt", 0, None) == pattern(3 * MiB)


async def test_random_write_falls_back_to_whole_upload(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    data = bytearray(pattern(12 * MiB, seed=2))
    fh, ino = await create(fs, "rand.bin")
    await write_seq(fs, fh, bytes(data))
    assert store.count("upload_part") == 2
    content = fs.inodes.get(ino).content
    assert content.state is ContentState.STREAMING
    await fs.write(fh, 100, b"X" * 10)  # into a part already gone up
    data[100:110] = b"X" * 10
    assert store.count("abort") == 1 and content.stream is None
    assert fs.inodes.get(ino).content.state is ContentState.DIRTY
    await fs.write(fh, len(data), b"tail")
    data += b"tail"
    await fs.flush(fh)
    await fs.release(fh)
    assert store.count("put") == 1 and store.count("complete") == 0
    assert await raw.get_range("rand.bin", 0, None) == bytes(data)


async def test_truncate_while_streaming(core: tuple[FsCore, IOStore], raw: S3Store) -> None:
    fs, store = core
    fh, ino = await create(fs, "trunc.bin")
    await write_seq(fs, fh, pattern(11 * MiB))
    await fs.setattr(ino, size=MiB, fh=fh)
    assert store.count("abort") == 1
    await fs.flush(fh)
    await fs.release(fh)
    assert await raw.get_range("trunc.bin", 0, None) == pattern(MiB)


async def test_fsync_mid_stream_then_more_writes(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    data = pattern(12 * MiB, seed=3)
    fh, _ = await create(fs, "sync.bin")
    await write_seq(fs, fh, data[: 7 * MiB])
    await fs.fsync(fh, False)
    assert store.count("complete") == 1
    assert await raw.get_range("sync.bin", 0, None) == data[: 7 * MiB]
    await write_seq(fs, fh, data[7 * MiB :], start=7 * MiB)
    await fs.flush(fh)
    await fs.release(fh)
    assert await raw.get_range("sync.bin", 0, None) == data


async def test_part_failure_falls_back_then_eio_keeps_data(
    core: tuple[FsCore, IOStore], raw: S3Store, caplog: pytest.LogCaptureFixture
) -> None:
    fs, store = core
    store.fail_parts = True
    store.fail_put = True
    data = pattern(12 * MiB, seed=4)
    fh, ino = await create(fs, "fail.bin")
    await write_seq(fs, fh, data)
    with pytest.raises(FsError) as info:
        await fs.flush(fh)
    assert info.value.errno == errno.EIO
    assert "fail.bin" in caplog.text
    assert store.count("abort") >= 1
    assert await raw.head("fail.bin") is None
    # nothing lost: the next flush uploads everything
    store.fail_parts = store.fail_put = False
    await fs.flush(fh)
    await fs.release(fh)
    assert await raw.get_range("fail.bin", 0, None) == data
    assert (await fs.getattr(ino)).size == len(data)


async def test_part_failure_alone_is_repaired_by_a_whole_upload(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    store.fail_parts = True
    data = pattern(12 * MiB, seed=5)
    fh, _ = await create(fs, "repair.bin")
    await write_seq(fs, fh, data)
    await fs.flush(fh)
    await fs.release(fh)
    assert store.count("put") == 1
    assert await raw.get_range("repair.bin", 0, None) == data


async def test_unlink_and_rename_while_streaming(
    core: tuple[FsCore, IOStore], raw: S3Store
) -> None:
    fs, store = core
    fh, _ = await create(fs, "gone.bin")
    await write_seq(fs, fh, pattern(11 * MiB))
    await fs.unlink(ROOT_INODE, b"gone.bin")
    await fs.write(fh, 11 * MiB, b"more")
    await fs.flush(fh)
    await fs.release(fh)
    assert await raw.head("gone.bin") is None and store.count("complete") == 0
    fh, _ = await create(fs, "old.bin")
    data = pattern(11 * MiB, seed=6)
    await write_seq(fs, fh, data)
    await fs.rename(ROOT_INODE, b"old.bin", ROOT_INODE, b"new.bin")
    await fs.write(fh, len(data), b"more")
    await fs.flush(fh)
    await fs.release(fh)
    assert await raw.head("old.bin") is None
    assert await raw.get_range("new.bin", 0, None) == data + b"more"
    assert store.count("complete") == 0


async def test_chmod_while_streaming_is_kept(core: tuple[FsCore, IOStore], raw: S3Store) -> None:
    fs, _ = core
    fh, ino = await create(fs, "mode.bin")
    await write_seq(fs, fh, pattern(11 * MiB))
    await fs.setattr(ino, mode=0o600)
    await fs.flush(fh)
    await fs.release(fh)
    info = await raw.head("mode.bin")
    assert info is not None and info.metadata is not None
    assert info.metadata.get("mode") == str(0o100600)
