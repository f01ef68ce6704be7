"""A read handle pins the version it opened: never bytes of two versions of an object.

An object is replaced behind an open file's back (by boto3, or by a second mount); what the
reader gets must be bytes of the first version only, then ESTALE (or the whole first version),
never a byte of the second and never an early end of file. Each version's content is random
from its own seed, so a byte-exact comparison tells them apart. The core is driven directly
over moto where that proves the point (If-Match on every GET, the re-pin of a handle that
served nothing, getattr of an open file, the read-modify-write fill); the rest is mounted.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fmfs.client import S3fmAuthConnection, errors
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError, to_errno
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import Sink
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket
from tests.support.stores import CountingStore

MiB = 1 << 20
SIZE = 30_000_000
SHORT = 10_000_000


def version(size: int, seed: int) -> bytes:
    """Content of one version: random bytes from its own seed."""
    return random.Random(seed).randbytes(size)


def test_a_failed_if_match_is_estale() -> None:
    """A 412 reaching the errno table (If-Match: the version read is gone) is ESTALE."""
    failed = errors.PreconditionFailed(412, "PreconditionFailed", "no", method="GET")
    assert to_errno(failed) == errno.ESTALE


# -- the core over moto ------------------------------------------------------------------------


class PinStore(CountingStore):
    """Records the If-Match of every GET; can replace an object after a given GET."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.if_match: list[str] = []
        self.replace_after: tuple[int, str, bytes] | None = None  # (GETs, key, new content)

    async def _after_get(self) -> None:
        if self.replace_after is not None and len(self.if_match) >= self.replace_after[0]:
            _, key, body = self.replace_after
            self.replace_after = None
            await self.inner.put(key, body, {})

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        self._hit("get")
        self.if_match.append(if_match)
        pinned = {"if_match": if_match} if if_match else {}  # (as a store before if_match)
        data = await self.inner.get_range(key, start, end, **pinned)
        await self._after_get()
        return data

    async def get_range_into(
        self, key: str, start: int, end: int, sink: Sink, *, if_match: str = ""
    ) -> None:
        self._hit("get")
        self.if_match.append(if_match)
        pinned = {"if_match": if_match} if if_match else {}
        await self.inner.get_range_into(key, start, end, sink, **pinned)
        await self._after_get()


@pytest.fixture
async def raw(conn: S3fmAuthConnection) -> S3Store:
    bucket = unique_bucket("pin")
    await conn.create_bucket(bucket)
    return S3Store(conn, bucket)


@pytest.fixture(params=["readahead", "no-nursery"])
async def core(request: Any, raw: S3Store) -> AsyncIterator[tuple[FsCore, PinStore]]:
    """A core with its background nursery (read-ahead), or without one (each read GETs its
    own block); attributes never cached (``stat_ttl=0``), as a kernel asking every time."""
    store = PinStore(raw)
    fs = FsCore(store, FsSettings(uid=1000, gid=1000, stat_ttl=0))
    if request.param == "no-nursery":
        yield fs, store
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(fs.run_background)
        yield fs, store
        nursery.cancel_scope.cancel()


async def read_rest(fs: FsCore, fh: int, offset: int, chunk: int = 128 << 10) -> tuple[bytes, int]:
    """Read on from ``offset`` to the end of file or an error: (bytes, errno or 0)."""
    out = bytearray()
    while True:
        try:
            data = await fs.read(fh, offset + len(out), chunk)
        except FsError as exc:
            return bytes(out), exc.errno
        if not data:
            return bytes(out), 0
        out += data


@pytest.mark.parametrize("v2_size", [SIZE, SHORT])
async def test_core_read_of_a_replaced_object_is_estale_never_v2(
    core: tuple[FsCore, PinStore], raw: S3Store, v2_size: int, caplog: Any
) -> None:
    fs, store = core
    v1, v2 = version(SIZE, 1), version(v2_size, 2)
    await raw.put("sp", v1, {})
    ino, attr = await fs.lookup(ROOT_INODE, b"sp")
    fh = await fs.open(ino, os.O_RDONLY)
    first = b""
    for offset in range(0, MiB, 128 << 10):
        first += await fs.read(fh, offset, 128 << 10)
    await raw.put("sp", v2, {})
    # an open file keeps the attributes of the version it reads (no shrinking under it)
    assert (await fs.getattr(ino)).size == SIZE
    assert (await fs.lookup(ROOT_INODE, b"sp"))[1].size == SIZE
    fs.forget([(ino, 1)])
    caplog.set_level(logging.WARNING, "s3fmfs.fs")
    rest, err = await read_rest(fs, fh, len(first))
    got = first + rest
    assert got == v1[: len(got)]  # v1 only, byte for byte
    assert err == errno.ESTALE or got == v1
    assert err == errno.ESTALE  # read-ahead holds far less than the 29 MB left
    # a random read of the stale handle: ESTALE too, logged once for the handle
    with pytest.raises(FsError) as failed:
        await fs.read(fh, 20 * MiB, 4096)
    assert failed.value.errno == errno.ESTALE
    logged = [r for r in caplog.records if "ESTALE" in r.getMessage()]
    assert len(logged) == 1 and "'sp'" in logged[0].getMessage()
    await fs.release(fh)
    # every GET was of the version opened
    assert store.if_match and set(store.if_match) == {attr.etag}
    # closed: the next open reads v2, whole
    fh = await fs.open(ino, os.O_RDONLY)
    got, err = await read_rest(fs, fh, 0, MiB)
    assert (got, err) == (v2, 0)
    assert (await fs.getattr(ino)).size == v2_size
    await fs.release(fh)


async def test_core_random_reads_of_a_replaced_object_are_v1_or_estale(
    core: tuple[FsCore, PinStore], raw: S3Store
) -> None:
    fs, _ = core
    v1, v2 = version(SIZE, 3), version(SIZE, 4)
    await raw.put("sp", v1, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"sp")
    fh = await fs.open(ino, os.O_RDONLY)
    rng = random.Random(7)
    offsets = [rng.randrange(0, SIZE - 65536) for _ in range(12)]
    for offset in offsets[:4]:
        assert await fs.read(fh, offset, 65536) == v1[offset : offset + 65536]
    await raw.put("sp", v2, {})
    stale = 0
    for offset in offsets[4:]:
        try:
            data = await fs.read(fh, offset, 65536)
        except FsError as exc:
            assert exc.errno == errno.ESTALE
            stale += 1
            continue
        assert data == v1[offset : offset + 65536], f"not v1's bytes at {offset}"
    assert stale == len(offsets[4:])  # nothing of them was fetched before the change
    await fs.release(fh)


async def test_core_open_after_a_change_behind_cached_attributes_reads_v2(
    raw: S3Store,
) -> None:
    """Nothing of v1 was served: the handle moves to v2 (HEAD) and reads it whole, and the
    open file's attributes are v2's. A v2 of another size is ESTALE instead (the kernel's size
    of the file is v1's), with v2's attributes, and the next open reads it whole."""
    store = PinStore(raw)
    fs = FsCore(store, FsSettings(uid=1000, gid=1000, stat_ttl=60))
    forgotten: list[int] = []
    fs.forget_kernel_attrs = forgotten.append
    v1, v2 = version(4 * MiB, 5), version(4 * MiB, 6)
    await raw.put("sp", v1, {})
    ino, attr = await fs.lookup(ROOT_INODE, b"sp")  # v1's attributes, cached for 60 s
    await raw.put("sp", v2, {})
    fh = await fs.open(ino, os.O_RDONLY)
    assert not fs.keep_cache(fh)
    got, err = await read_rest(fs, fh, 0)
    assert (got, err) == (v2, 0)
    now = await fs.getattr(ino)
    assert now.size == len(v2) and now.etag != attr.etag
    assert store.if_match[0] == attr.etag and set(store.if_match[1:]) == {now.etag}
    await fs.release(fh)
    assert not forgotten
    # another size, nothing read: ESTALE (the kernel's size is v1's), the kernel told to
    # forget the attributes at the last close; the next open reads the new version whole
    await raw.put("sz", v1, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"sz")
    v3 = version(3 * MiB, 7)
    await raw.put("sz", v3, {})
    fh = await fs.open(ino, os.O_RDONLY)
    assert await read_rest(fs, fh, 0) == (b"", errno.ESTALE)
    assert (await fs.getattr(ino)).size == len(v1)  # still open: v1's, never shrinking
    await fs.release(fh)
    assert forgotten == [ino]
    assert (await fs.getattr(ino)).size == len(v3)
    fh = await fs.open(ino, os.O_RDONLY)
    assert await read_rest(fs, fh, 0) == (v3, 0)
    await fs.release(fh)


async def test_core_write_fill_is_of_one_version(raw: S3Store) -> None:
    """A read-modify-write fills its buffer (8 MiB GETs) from one version: the object replaced
    after the first GET makes the fill start again from a fresh HEAD."""
    store = PinStore(raw)
    fs = FsCore(store, FsSettings(uid=1000, gid=1000))
    v1, v2 = version(20 * MiB, 8), version(20 * MiB, 9)
    await raw.put("f", v1, {})
    ino, _ = await fs.lookup(ROOT_INODE, b"f")
    fh = await fs.open(ino, os.O_RDWR)
    store.replace_after = (1, "f", v2)
    await fs.write(fh, 5, b"hello")
    await fs.flush(fh)
    await fs.release(fh)
    expected = v2[:5] + b"hello" + v2[10:]
    assert await raw.get_range("f", 0, None) == expected
    assert "" not in store.if_match


async def test_core_write_fill_gives_up_on_an_object_that_keeps_changing(raw: S3Store) -> None:
    class Changing(PinStore):
        async def _after_get(self) -> None:
            await self.inner.put("f", os.urandom(9 * MiB), {})

    store = Changing(raw)
    fs = FsCore(store, FsSettings(uid=1000, gid=1000))
    await raw.put("f", version(9 * MiB, 10), {})
    ino, _ = await fs.lookup(ROOT_INODE, b"f")
    fh = await fs.open(ino, os.O_RDWR)
    with pytest.raises(FsError) as failed:
        await fs.write(fh, 5, b"hello")
    assert failed.value.errno == errno.EIO
    await fs.release(fh)


# -- mounted, reads from this process ----------------------------------------------------------


def read_on(fd: int, offset: int, chunk: int = MiB) -> tuple[bytes, int]:
    """pread on from ``offset`` to end of file or an error: (bytes, errno or 0)."""
    out = bytearray()
    while True:
        try:
            data = os.pread(fd, chunk, offset + len(out))
        except OSError as exc:
            return bytes(out), exc.errno or -1
        if not data:
            return bytes(out), 0
        out += data


def check_sequential(fd: int, v1: bytes, first: bytes) -> None:
    """What follows ``first`` is more of v1 then ESTALE, or the rest of v1; never v2 bytes,
    never an early end of file."""
    rest, err = read_on(fd, len(first))
    got = first + rest
    assert got == v1[: len(got)], f"bytes of another version after {len(first)}"
    if err == 0:
        assert len(got) == len(v1), f"early end of file at {len(got)} of {len(v1)}"
    else:
        assert err == errno.ESTALE, os.strerror(err)


def check_random(fd: int, v1: bytes, offsets: list[int], size: int = 65536) -> None:
    """Each pread is v1's bytes there, whole, or ESTALE."""
    for offset in offsets:
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            assert exc.errno == errno.ESTALE, os.strerror(exc.errno or 0)
            continue
        assert data == v1[offset : offset + size], f"not v1's bytes at {offset}"


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("pin")
    s3.create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize(
    "options",
    [("stat_ttl=0",), ("stat_ttl=0", "readahead_mb=0")],
    ids=["readahead", "no-readahead"],
)
@pytest.mark.parametrize("v2_size", [SIZE, SHORT], ids=["same-size", "shorter"])
def test_mounted_reader_never_sees_a_replacing_version(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path, options: tuple[str, ...], v2_size: int
) -> None:
    """boto3 replaces the objects while they are open: sequential and scattered reads."""
    seq1, seq2 = version(SIZE, 11), version(v2_size, 12)
    rnd1, rnd2 = version(SIZE, 13), version(v2_size, 14)
    s3.put_object(Bucket=bucket, Key="seq", Body=seq1)
    s3.put_object(Bucket=bucket, Key="rnd", Body=rnd1)
    rng = random.Random(v2_size)
    offsets = [rng.randrange(0, SIZE - 65536) for _ in range(16)]
    with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
        seq = os.open(mnt / "seq", os.O_RDONLY)
        rnd = os.open(mnt / "rnd", os.O_RDONLY)
        try:
            assert os.fstat(seq).st_size == SIZE
            first = os.read(seq, MiB)
            check_random(rnd, rnd1, offsets[:4])
            s3.put_object(Bucket=bucket, Key="seq", Body=seq2)
            s3.put_object(Bucket=bucket, Key="rnd", Body=rnd2)
            assert os.fstat(seq).st_size == SIZE  # the open file's size stays v1's
            check_sequential(seq, seq1, first)
            check_random(rnd, rnd1, offsets[4:])
        finally:
            os.close(seq)
            os.close(rnd)
        # closed and opened again: v2, whole
        assert (mnt / "seq").read_bytes() == seq2


def test_mounted_reader_never_sees_a_version_written_by_another_mount(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    v1, v2 = version(SIZE, 21), version(SHORT, 22)
    s3.put_object(Bucket=bucket, Key="sp", Body=v1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ExitStack() as stack:
        reader = stack.enter_context(
            mounted(moto, bucket, tmp_path=tmp_path / "a", options=("stat_ttl=0",))
        )
        writer = stack.enter_context(mounted(moto, bucket, tmp_path=tmp_path / "b"))
        fd = os.open(reader / "sp", os.O_RDONLY)
        try:
            first = os.read(fd, MiB)
            assert first == v1[:MiB]
            (writer / "sp").write_bytes(v2)  # O_TRUNC, written, uploaded at close
            assert os.fstat(fd).st_size == SIZE
            check_sequential(fd, v1, first)
        finally:
            os.close(fd)


def test_mounted_open_after_a_change_behind_cached_attributes_reads_v2(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """The attributes (v1's) are cached here and in the kernel; nothing of v1 was read: the
    open reads v2 whole. A v2 of another size is ESTALE at the first open (the kernel's size
    is v1's: never an early end of file or zeros), then stat shows v2's size and the next open
    reads v2 whole."""
    same1, same2 = version(SIZE, 31), version(SIZE, 32)
    short1, short2 = version(SIZE, 33), version(SHORT, 34)
    s3.put_object(Bucket=bucket, Key="same", Body=same1)
    s3.put_object(Bucket=bucket, Key="short", Body=short1)
    with mounted(moto, bucket, tmp_path=tmp_path, options=("stat_ttl=60",)) as mnt:
        assert (mnt / "same").stat().st_size == SIZE
        assert (mnt / "short").stat().st_size == SIZE
        s3.put_object(Bucket=bucket, Key="same", Body=same2)
        s3.put_object(Bucket=bucket, Key="short", Body=short2)
        assert (mnt / "same").read_bytes() == same2
        fd = os.open(mnt / "short", os.O_RDONLY)
        try:
            got, err = read_on(fd, 0)
        finally:
            os.close(fd)
        assert (got, err) == (b"", errno.ESTALE)
        # the last close makes the kernel forget its attributes (long before stat_ttl)
        deadline = time.monotonic() + 10
        while (mnt / "short").stat().st_size != SHORT and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (mnt / "short").stat().st_size == SHORT
        assert (mnt / "short").read_bytes() == short2


async def _multipart(raw: S3Store, key: str, parts: list[bytes]) -> None:
    """An object uploaded in parts: its ETag (``md5-of-md5s-N``) is not its copy's."""
    upload = await raw.create_multipart(key, {})
    done = [await raw.upload_part(key, upload, n, p, len(p)) for n, p in enumerate(parts, 1)]
    await raw.complete_multipart(key, upload, done)


@pytest.mark.parametrize("what", ["file", "folder"])
async def test_an_open_reader_follows_a_rename_of_its_object(
    core: tuple[FsCore, PinStore], raw: S3Store, what: str
) -> None:
    """A rename through the mount copies the object (a multipart one gets a new ETag): the
    open reader's pin follows the copy, same bytes, so it reads on, no ESTALE."""
    fs, _ = core
    parts = [version(5 * MiB, 7), version(5 * MiB, 8), version(MiB, 9)]
    await _multipart(raw, "d/mp", parts)
    whole = b"".join(parts)
    d_ino, _ = await fs.lookup(ROOT_INODE, b"d")
    ino, attr = await fs.lookup(d_ino, b"mp")
    assert attr.etag.strip('"').endswith("-3")
    fh = await fs.open(ino, os.O_RDONLY)
    first = await fs.read(fh, 0, MiB)
    if what == "file":
        await fs.rename(d_ino, b"mp", d_ino, b"moved")
    else:
        await fs.rename(ROOT_INODE, b"d", ROOT_INODE, b"e")
    rest, err = await read_rest(fs, fh, MiB)
    await fs.release(fh)
    assert err == 0, os.strerror(err)
    assert first + rest == whole
