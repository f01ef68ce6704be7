"""The in-memory store (``tests/support/memstore.py``) answers as S3 does where the core can
tell, and drives the core in-process: listings in pages, multipart uploads streamed while a
file is written, failures injected."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
import trio

from s3fmfs.client import errors
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.store import MultipartStore, ObjectStore, PendingUploads, StreamingStore
from tests.support.core import FakeTime, listdir, make_core, read_all, walk, write_file
from tests.support.memstore import MemStore, multipart_etag, quoted_md5

MiB = 1 << 20


async def all_pages(store: MemStore, prefix: str, delimiter: str | None) -> list[list[str]]:
    pages = []
    async for page in store.iter_pages(prefix, delimiter):
        pages.append([o.key for o in page.objects] + page.prefixes)
    return pages


def test_it_is_every_kind_of_store() -> None:
    store: ObjectStore = MemStore()
    assert isinstance(store, StreamingStore)
    assert isinstance(store, MultipartStore)
    assert isinstance(store, PendingUploads)


async def test_listing_pages_prefixes_and_markers() -> None:
    store = MemStore(page_size=2)
    for key in ("a", "b/", "b/1", "b/2", "b/c/3", "c", "d/x", "e"):
        store.put_object(key, b"")
    pages = await all_pages(store, "", "/")
    assert pages == [["a", "b/"], ["c", "d/"], ["e"]]  # keys under b/ never come back
    assert await all_pages(store, "b/", "/") == [["b/", "b/1"], ["b/2", "b/c/"]]
    flat = [key for page in await all_pages(store, "", None) for key in page]
    assert flat == sorted(store.keys_under())
    first = await store.list_page("b/", None, 1)
    assert [o.key for o in first.objects] == ["b/"] and first.truncated
    assert store.count("list") == 3 + 2 + 4 + 1


async def test_a_listing_reads_the_bucket_page_by_page() -> None:
    store = MemStore(page_size=2)
    for key in ("a", "b", "c"):
        store.put_object(key, b"")
    pages = store.iter_pages("", None)
    first = await pages.__anext__()
    store.put_object("bb", b"")  # after the first page's marker: seen
    store.remove_object("c")
    rest = [page async for page in pages]
    assert [o.key for o in first.objects] == ["a", "b"]
    assert [o.key for p in rest for o in p.objects] == ["bb"]


async def test_etags_metadata_content_type_and_copies() -> None:
    time = FakeTime()
    store = MemStore(clock=time.clock)
    result = await store.put("k", b"body", {"Mode": "33188"}, "text/plain")
    assert result.etag == quoted_md5(b"body") == f'"{hashlib.md5(b"body").hexdigest()}"'
    info = await store.head("k")
    assert info is not None
    assert (info.size, info.metadata, info.content_type) == (4, {"mode": "33188"}, "text/plain")
    assert info.last_modified_ns == int(time.now) * 10**9
    assert await store.head("missing") is None
    await store.copy("k", "kept")  # COPY: metadata and type kept
    kept = await store.head("kept")
    assert kept is not None and (kept.metadata, kept.content_type) == (info.metadata, "text/plain")
    await store.copy("k", "k", {"mode": "1"})  # REPLACE, no type given: the default
    replaced = await store.head("k")
    assert replaced is not None and replaced.metadata == {"mode": "1"}
    assert replaced.content_type == "binary/octet-stream"
    with pytest.raises(errors.S3ClientError, match="InvalidRequest"):
        await store.copy("k", "k")
    with pytest.raises(errors.NoSuchKey):
        await store.copy("missing", "x")


async def test_ranges_and_if_match() -> None:
    store = MemStore(chunk_size=3)
    etag = store.put_object("k", b"0123456789")
    assert await store.get_range("k", 2, 4) == b"234"
    assert await store.get_range("k", 8, None) == b"89"
    assert await store.get_range("k", 10, 20) == b""
    assert await store.get_range("k", 0, None, if_match=etag) == b"0123456789"
    store.put_object("k", b"other")
    with pytest.raises(errors.PreconditionFailed):
        await store.get_range("k", 50, 60, if_match=etag)  # whatever the range
    with pytest.raises(errors.NoSuchKey):
        await store.get_range("missing", 0, None)
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    await store.get_range_into("k", 0, 3, sink)
    assert chunks == [b"oth", b"e"]
    with pytest.raises(errors.PreconditionFailed):
        await store.get_range_into("k", 0, 3, sink, if_match=etag)


async def test_multipart_rules_and_etag() -> None:
    store = MemStore(min_part_size=4)
    upload = await store.create_multipart("big", {"mode": "1"}, "text/x")
    assert [u.upload_id for u in await store.list_multipart("")] == [upload]
    one = await store.upload_part("big", upload, 1, b"aaaa", 4)
    two = await store.upload_part("big", upload, 2, b"bb", 2)
    with pytest.raises(errors.S3ClientError, match="InvalidPartOrder"):
        await store.complete_multipart("big", upload, [two, one])
    result = await store.complete_multipart("big", upload, [one, two])
    assert result.etag == multipart_etag([b"aaaa", b"bb"]) and result.etag.endswith('-2"')
    assert store.body("big") == b"aaaabb" and store.uploads == {}
    with pytest.raises(errors.NoSuchUpload):
        await store.upload_part("big", upload, 3, b"c", 1)
    small = await store.create_multipart("s", {})
    parts = [await store.upload_part("s", small, n, b"x", 1) for n in (1, 2)]
    with pytest.raises(errors.EntityTooSmall):
        await store.complete_multipart("s", small, parts)
    await store.abort_multipart("s", small)
    await store.abort_multipart("s", small)  # gone: no error
    assert await store.list_multipart("") == []


async def test_faults_before_and_after_the_effect() -> None:
    store = MemStore()
    store.fail("put", times=2)
    for _ in range(2):
        with pytest.raises(errors.InternalError):
            await store.put("k", b"1", {})
    assert store.keys_under() == []
    await store.put("k", b"1", {})
    store.fail("delete", errors.S3TimeoutError("read timeout"), applied=True)
    with pytest.raises(errors.S3TimeoutError):
        await store.delete("k")
    assert store.keys_under() == []  # deleted, though the answer was lost
    assert store.count("put") == 3 and store.count("delete") == 1
    with pytest.raises(ValueError):
        store.fail("nonsense")


async def test_delays_are_trio_time(autojump_clock: trio.abc.Clock) -> None:
    store = MemStore()
    store.delay("head", 2.0)
    started = trio.current_time()
    await store.head("k")
    assert trio.current_time() - started == pytest.approx(2.0)


# -- the core over the memory store ----------------------------------------------------------------


async def test_core_lists_every_page_and_reads_and_writes(
    mem_core: FsCore, memstore: MemStore, fake_time: FakeTime
) -> None:
    core, store = mem_core, memstore
    for i in range(7):
        store.put_object(f"d/f{i}", bytes([i]) * i)
    d_ino, _ = await walk(core, "d")
    entries = await listdir(core, d_ino)
    assert sorted(entries) == [f"f{i}" for i in range(7)]
    assert store.count("list") >= 4
    assert await read_all(core, entries["f5"][0]) == b"\5" * 5
    await write_file(core, "d/new", b"fresh")
    assert store.body("d/new") == b"fresh"
    store.put_object("d/behind", b"!")  # behind the core's back: seen once the TTLs passed
    assert "behind" not in await listdir(core, d_ino)
    fake_time.advance(6)
    assert "behind" in await listdir(core, d_ino)


async def test_core_failed_upload_is_eio_then_saved(mem_core: FsCore, memstore: MemStore) -> None:
    core, store = mem_core, memstore
    fh, _, _ = await core.create(ROOT_INODE, b"f", 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh, 0, b"data")
    store.fail("put")
    with pytest.raises(FsError) as caught:
        await core.flush(fh)
    assert caught.value.errno == errno.EIO
    await core.release(fh)  # still dirty: saved now
    assert store.body("f") == b"data"


async def test_core_streams_a_sequential_write_as_a_multipart_upload() -> None:
    store = MemStore()
    data = os.urandom(12 * MiB)
    async with trio.open_nursery() as nursery:
        core = make_core(store, nursery=nursery, part_size_mb=5)
        fh, _, _ = await core.create(ROOT_INODE, b"big", 0o644, os.O_WRONLY, 0, 0)
        for offset in range(0, len(data), MiB):
            await core.write(fh, offset, data[offset : offset + MiB])
        assert store.count("upload_part") >= 2  # parts went up before close
        await core.flush(fh)
        await core.release(fh)
        nursery.cancel_scope.cancel()
    assert store.body("big") == data
    parts = [data[: 5 * MiB], data[5 * MiB : 10 * MiB], data[10 * MiB :]]
    assert store.objects["big"].etag == multipart_etag(parts)
    assert store.count("put") == 0 and store.uploads == {}
