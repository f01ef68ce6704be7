"""The data path: read-ahead (window, concurrency, cancellation, memory budget), keep_cache, and
streaming multipart uploads (parts while writing, fallbacks, failures).

Read-ahead is tested alone over a fake fetch with latency, then through the core over moto with
an ``IOStore`` wrapper that counts requests (and GETs in flight) and can fail some of them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Mapping

import pytest
import trio
import trio.testing

from s3fmfs.client import CallingFormat, S3fmAuthConnection, errors
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.options import MountOptions, parse_options
from s3fmfs.fs.readahead import ReadAhead, ReadBudget
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.store import (
    MultipartStore,
    PartBody,
    PutResult,
    UploadedPart,
)
from s3fmfs.fs.uploader import MAX_PART, MAX_PARTS, part_size_for
from tests.servers import S3Server, unique_bucket
from tests.stores import CountingStore

MiB = 1 << 20

# -- read-ahead alone --------------------------------------------------------------------------


class FakeObject:
    """An object behind a fetch with latency, counting fetches and those in flight."""

    def __init__(self, size: int, delay: float = 0.01) -> None:
        self.content = bytes(i % 251 for i in range(size))
        self.delay = delay
        self.fetched: list[tuple[int, int]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.cancelled = 0
        self.fail_next = 0

    async def fetch(self, start: int, length: int) -> bytes:
        self.fetched.append((start, length))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await trio.sleep(self.delay)
            if self.fail_next:
                self.fail_next -= 1
                raise errors.InternalError(500, "InternalError", "injected", method="GET")
            return self.content[start : start + length]
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
        out[offset] = await ra.read(offset, chunk, len(obj.content), 0, obj.fetch)

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
        first = await ra.read(0, 128 << 10, len(obj.content), 0, obj.fetch)
        rest = await read_sequentially(ra, obj, 128 << 10, len(obj.content))
        assert first + rest == obj.content
        lengths = [length for _, length in obj.fetched]
        assert lengths[0] == MiB  # a first read fetches one small block
        assert lengths[1:4] == sorted(lengths[1:4])  # then bigger ones
        assert max(lengths) == 8 * MiB  # parts of at most part_size
        assert ra.window == 64 * MiB
        assert 2 <= obj.max_inflight <= 4
        assert sum(lengths) <= len(obj.content) + MiB  # nothing fetched twice
        # a seek: back to one small block, the window starts again
        obj.fetched.clear()
        assert (
            await ra.read(5 * MiB + 3, 10, len(obj.content), 0, obj.fetch)
            == (obj.content[5 * MiB + 3 : 5 * MiB + 13])
        )
        assert obj.fetched == [(5 * MiB + 3, MiB)] and ra.window == MiB and ra.seeks == 1
        nursery.cancel_scope.cancel()


async def test_readahead_seek_and_close_cancel_fetches_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = FakeObject(64 * MiB, delay=0.5)
    budget = ReadBudget(32 * MiB)
    async with trio.open_nursery() as nursery:
        ra = ReadAhead(budget, nursery, max_inflight=4)
        with trio.move_on_after(0.2):  # a reader whose fetches ahead are still on their way
            await ra.read(0, 4096, len(obj.content), 0, obj.fetch)
        obj.delay = 0.0
        await ra.read(0, 4096, len(obj.content), 0, obj.fetch)
        await ra.read(4096, 4096, len(obj.content), 0, obj.fetch)
        obj.delay = 0.5
        await ra.read(MiB, 4096, len(obj.content), 0, obj.fetch)  # schedules ahead
        await trio.sleep(0.05)
        assert obj.inflight >= 1
        ahead = obj.inflight
        ra.close()  # release
        await trio.sleep(0.01)
        assert obj.inflight == 0 and obj.cancelled >= ahead
        assert budget.used == 0
        # a seek cancels too
        ra2 = ReadAhead(budget, nursery, max_inflight=4)
        obj.delay = 0.0
        await ra2.read(0, 4096, len(obj.content), 0, obj.fetch)
        obj.delay = 0.5
        await ra2.read(4096, 4096, len(obj.content), 0, obj.fetch)
        await trio.sleep(0.05)
        before = obj.cancelled
        assert obj.inflight >= 1
        obj.delay = 0.0
        far = 50 * MiB
        assert (
            await ra2.read(far, 10, len(obj.content), 0, obj.fetch) == obj.content[far : far + 10]
        )
        await trio.sleep(0.01)
        assert obj.cancelled > before and obj.inflight == 0
        ra2.close()
        assert budget.used == 0
        nursery.cancel_scope.cancel()


async def test_readahead_memory_budget_is_shared_and_respected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    objects = [FakeObject(24 * MiB, delay=0.005) for _ in range(3)]
    budget = ReadBudget(6 * MiB)
    peak_held = 0
    async with trio.open_nursery() as nursery:
        handles = [ReadAhead(budget, nursery, max_inflight=4) for _ in objects]

        async def reader(ra: ReadAhead, obj: FakeObject) -> None:
            nonlocal peak_held
            for offset in range(0, len(obj.content), 128 << 10):
                data = await ra.read(offset, 128 << 10, len(obj.content), 0, obj.fetch)
                assert data == obj.content[offset : offset + (128 << 10)]
                peak_held = max(peak_held, sum(h.held for h in handles))

        async with trio.open_nursery() as readers:
            for ra, obj in zip(handles, objects, strict=True):
                readers.start_soon(reader, ra, obj)
        # over the limit only by the blocks readers were waiting for (one small one each)
        assert budget.peak <= budget.limit + len(handles) * MiB
        assert peak_held == budget.peak or peak_held <= budget.peak
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
            await ra.read(0, 10, len(obj.content), 0, obj.fetch)
        assert await ra.read(0, 10, len(obj.content), 0, obj.fetch) == obj.content[:10]
        nursery.cancel_scope.cancel()


async def test_readahead_without_nursery_and_new_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = {"v": b"old" * 100}

    async def fetch(start: int, length: int) -> bytes:
        return data["v"][start : start + length]

    ra = ReadAhead(ReadBudget(MiB), None, min_window=16)
    assert await ra.read(0, 3, 300, 0, fetch) == b"old"
    data["v"] = b"new" * 100
    assert await ra.read(0, 3, 300, 0, fetch) == b"old"  # kept
    assert await ra.read(0, 3, 300, 1, fetch) == b"new"  # the content changed here
    assert await ra.read(298, 10, 300, 1, fetch) == b"ew"  # short at the end
    assert await ra.read(300, 10, 300, 1, fetch) == b""


def test_part_sizes_fit_5_tib_in_10000_parts() -> None:
    for base in (5 * MiB, 8 * MiB, 64 * MiB):
        sizes = [part_size_for(n, base) for n in range(1, MAX_PARTS + 1)]
        assert sizes[0] == base and sizes == sorted(sizes) and max(sizes) <= MAX_PART
        assert sum(sizes) >= 5 << 40
    assert part_size_for(1, 1) == 5 * MiB  # S3's minimum


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
    """The core tests' counting store, plus GETs in flight and multipart calls, able to
    fail parts or PUTs."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.get_delay = 0.0
        self.gets_in_flight = 0
        self.max_gets_in_flight = 0
        self.got = 0
        self.fail_parts = False
        self.part_delay = 0.0

    async def get_range(self, key: str, start: int, end: int | None) -> bytes:
        self._hit("get")
        self.gets_in_flight += 1
        self.max_gets_in_flight = max(self.max_gets_in_flight, self.gets_in_flight)
        try:
            if self.get_delay:
                await trio.sleep(self.get_delay)
            data = await self.inner.get_range(key, start, end)
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
async def conn(moto: S3Server) -> AsyncIterator[S3fmAuthConnection]:
    async with S3fmAuthConnection(
        "testing", "testing", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
    ) as connection:
        yield connection


@pytest.fixture
async def raw(conn: S3fmAuthConnection) -> S3Store:
    bucket = unique_bucket("io")
    await conn.create_bucket(bucket)
    return S3Store(conn, bucket)


@pytest.fixture
async def core(raw: S3Store) -> AsyncIterator[tuple[FsCore, IOStore]]:
    """A core with its background nursery, as a mount runs it (parts of 5 MiB)."""
    store = IOStore(raw)
    assert isinstance(store, MultipartStore)
    opts = MountOptions(uid=1000, gid=1000, part_size_mb=5, readahead_mb=32)
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
    store.get_delay = 1.0
    await fs.read(fh, 3 * MiB, 128 << 10)  # fetches ahead, slowly
    await trio.sleep(0.05)
    assert store.gets_in_flight >= 1
    with trio.fail_after(0.5):  # cancelled, not waited for
        await fs.release(fh)
        while store.gets_in_flight:
            await trio.sleep(0.01)
    assert fs.read_budget.used == 0
    # a seek: the GETs ahead of the old position go
    fh = await fs.open(ino, os.O_RDONLY)
    store.get_delay = 0.0
    for offset in range(0, 2 * MiB, 128 << 10):
        await fs.read(fh, offset, 128 << 10)
    store.get_delay = 1.0
    await fs.read(fh, 2 * MiB, 128 << 10)
    await trio.sleep(0.05)
    assert store.gets_in_flight >= 1
    store.get_delay = 0.0
    with trio.fail_after(0.9):
        assert await fs.read(fh, 30 * MiB, 100) == content[30 * MiB : 30 * MiB + 100]
        while store.gets_in_flight:
            await trio.sleep(0.01)
    await fs.release(fh)


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


async def test_upload_concurrency_is_bounded(core: tuple[FsCore, IOStore]) -> None:
    fs, store = core
    store.part_delay = 0.05
    fh, _ = await create(fs, "conc.bin")
    stream_max = 0
    data = pattern(40 * MiB)
    for offset in range(0, len(data), MiB):
        await fs.write(fh, offset, data[offset : offset + MiB])
        stream = next(iter(fs.streams.values()), None)
        if stream is not None:
            stream_max = max(stream_max, stream.inflight)
    assert 2 <= stream_max <= fs.options.upload_concurrency
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
    fh, _ = await create(fs, "rand.bin")
    await write_seq(fs, fh, bytes(data))
    assert store.count("upload_part") == 2
    await fs.write(fh, 100, b"X" * 10)  # into a part already gone up
    data[100:110] = b"X" * 10
    assert store.count("abort") == 1 and not fs.streams
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
