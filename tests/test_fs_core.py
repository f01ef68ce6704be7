"""The filesystem core driven directly (no mount) over moto, through the real S3 store.

Each test makes its own bucket; a ``CountingStore`` wraps the store to count requests (to
prove caches and "nothing uploaded" claims) and to inject failures or delays.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Any

import pytest
import trio

from s3fmfs.client import S3fmAuthConnection
from s3fmfs.fs.attrs import Attr, Kind
from s3fmfs.fs.core import RENAME_EXCHANGE, RENAME_NOREPLACE, FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.namespace import HEADS_IN_FLIGHT
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from tests.support.core import listdir
from tests.support.servers import unique_bucket
from tests.support.stores import CountingStore

# -- fixtures and helpers -------------------------------------------------------------------------


class FakeTimer:
    """A monotonic clock the test moves by hand (for the TTL caches)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Env:
    """A bucket, its raw store (behind the mount's back) and helpers to build cores."""

    def __init__(self, conn: S3fmAuthConnection, bucket: str, page_size: int) -> None:
        self.conn = conn
        self.bucket = bucket
        self.raw = S3Store(conn, bucket, page_size=page_size)
        self.timer = FakeTimer()

    def core(self, prefix: str = "", **options: Any) -> tuple[FsCore, CountingStore]:
        store = CountingStore(self.raw)
        opts = FsSettings(uid=1000, gid=1000, **options)
        return FsCore(store, opts, prefix=prefix, timer=self.timer), store

    async def put(self, key: str, body: bytes = b"", **meta: str) -> None:
        await self.raw.put(key, body, meta)

    async def body(self, key: str) -> bytes:
        return await self.raw.get_range(key, 0, None)

    async def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        async for page in self.raw.iter_pages(prefix):
            found.extend(o.key for o in page.objects)
        return found


@pytest.fixture
async def env(conn: S3fmAuthConnection) -> Env:
    bucket = unique_bucket("fs")
    await conn.create_bucket(bucket)
    return Env(conn, bucket, page_size=3)  # small pages: every listing spans several


async def walk(core: FsCore, path: str) -> tuple[int, Attr]:
    """Look a path up component by component (taking lookup references like the kernel)."""
    ino, attr = ROOT_INODE, await core.getattr(ROOT_INODE)
    for part in [p for p in path.split("/") if p]:
        ino, attr = await core.lookup(ino, part.encode())
    return ino, attr


async def write_file(core: FsCore, path: str, data: bytes, mode: int = 0o644) -> int:
    parent, _, name = path.rpartition("/")
    parent_ino = (await walk(core, parent))[0] if parent else ROOT_INODE
    fh, ino, _ = await core.create(parent_ino, name.encode(), mode, os.O_WRONLY, 1000, 1000)
    await core.write(fh, 0, data)
    await core.flush(fh)
    await core.release(fh)
    return ino


async def read_all(core: FsCore, ino: int) -> bytes:
    fh = await core.open(ino, os.O_RDONLY)
    size = (await core.getattr(ino)).size
    data = await core.read(fh, 0, size + 10)
    await core.release(fh)
    return data


def expect_errno(code: int) -> Any:
    return pytest.raises(FsError, match=errno.errorcode[code])


# -- namespace: directories from listings ---------------------------------------------------------


async def test_implicit_dirs_and_markers(env: Env) -> None:
    await env.put("a/b/c", b"deep")
    await env.put("m/")
    core, _ = env.core()
    root = await listdir(core)
    assert sorted(root) == ["a", "m"]
    assert root["a"][1].kind is Kind.DIR and root["m"][1].kind is Kind.DIR
    a_ino, a_attr = await core.lookup(ROOT_INODE, b"a")
    assert a_attr.kind is Kind.DIR and stat.S_ISDIR(a_attr.mode)
    b_ino, b_attr = await core.lookup(a_ino, b"b")
    assert b_attr.kind is Kind.DIR
    c_ino, c_attr = await core.lookup(b_ino, b"c")
    assert c_attr.kind is Kind.FILE and c_attr.size == 4
    assert await read_all(core, c_ino) == b"deep"
    assert await listdir(core, (await walk(core, "m"))[0]) == {}


async def test_directory_shadows_file(env: Env) -> None:
    await env.put("x", b"file")
    await env.put("x/inner", b"inner")
    core, _ = env.core()
    assert (await listdir(core))["x"][1].kind is Kind.DIR
    fresh, _ = env.core()  # no listing cached: the lookup probes
    _, attr = await fresh.lookup(ROOT_INODE, b"x")
    assert attr.kind is Kind.DIR


async def test_invalid_keys_are_skipped_and_logged_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    long = "L" * 256
    for key in ("ok", "bad//k", "d/./e", "d/../f", f"{long}", f"g/{long}/h", "d/fine"):
        await env.put(key, b"1")
    core, _ = env.core()
    with caplog.at_level(logging.WARNING, logger="s3fmfs.fs"):
        assert sorted(await listdir(core)) == ["bad", "d", "g", "ok"]
        d_ino, _ = await core.lookup(ROOT_INODE, b"d")
        assert sorted(await listdir(core, d_ino)) == ["fine"]
        core.cache.clear()
        await listdir(core, d_ino)  # listed again: not logged again
        bad_ino, _ = await core.lookup(ROOT_INODE, b"bad")
        assert await listdir(core, bad_ino) == {}
        g_ino, _ = await core.lookup(ROOT_INODE, b"g")
        assert await listdir(core, g_ino) == {}
    skipped = [r for r in caplog.records if "skipping key" in r.getMessage()]
    assert len(skipped) == 5  # long, d/./, d/../, bad//, g/long/
    with expect_errno(errno.ENOENT):
        await core.lookup(d_ino, b".hidden")


async def test_prefix_mount_shows_the_subtree_only(env: Env) -> None:
    await env.put("some/prefix/a", b"A")
    await env.put("some/prefix/sub/b", b"B")
    await env.put("some/prefixed", b"no")
    await env.put("other", b"no")
    core, _ = env.core(prefix="/some/prefix/")
    assert sorted(await listdir(core)) == ["a", "sub"]
    ino = await write_file(core, "sub/new", b"N")
    assert await env.body("some/prefix/sub/new") == b"N"
    assert await read_all(core, ino) == b"N"


async def test_listing_spans_every_page(env: Env) -> None:
    names = [f"f{i:02d}" for i in range(10)] + [f"d{i}/x" for i in range(4)]
    for name in names:
        await env.put(name, b"")
    core, store = env.core()
    entries = await listdir(core)
    assert len(entries) == 14
    assert store.count("list") >= 5  # page size 3


# -- attributes -----------------------------------------------------------------------------------


async def test_s3fs_metadata_and_defaults(env: Env) -> None:
    await env.put("meta", b"12345", mode=str(0o100750), uid="7", gid="8", mtime="1600000000")
    await env.put("plain", b"abc")
    await env.put("dir/", b"", mode=str(0o40700), uid="9", gid="10", mtime="1500000000")
    core, _ = env.core(file_mode=0o640, dir_mode=0o750)
    entries = await listdir(core)
    meta = entries["meta"][1]
    assert (meta.mode, meta.uid, meta.gid, meta.size) == (0o100750, 7, 8, 5)
    assert meta.mtime_ns == 1_600_000_000 * 10**9
    plain = entries["plain"][1]
    assert (plain.mode, plain.uid, plain.gid) == (0o100640, 1000, 1000)
    assert plain.mtime_ns > 1_600_000_000 * 10**9  # LastModified
    d = entries["dir"][1]
    assert (d.mode, d.uid, d.gid, d.mtime_ns) == (0o40700, 9, 10, 1_500_000_000 * 10**9)


async def test_readdir_heads_nothing_then_ahead_concurrently_and_caches(env: Env) -> None:
    for i in range(20):
        await env.put(f"f{i:02d}", b"x")
    core, store = env.core()
    store.head_delay = 0.2
    names = await listdir(core, names_only=True)
    assert sorted(names) == [f"f{i:02d}" for i in range(20)]
    assert store.asked() == 0  # a names-only ls costs the listing
    assert not any(attr.complete for _, attr in names.values())
    async with trio.open_nursery() as nursery:
        core.nursery = nursery  # HEADs ahead of the getattrs
        started = trio.current_time()
        await listdir(core)
        elapsed = trio.current_time() - started
        core.nursery = None
    assert store.asked() == 20
    assert 1 < store.max_heads_in_flight <= HEADS_IN_FLIGHT
    assert elapsed < 20 * 0.2 / 2  # far from one after another
    before = store.total()
    await listdir(core)
    for i in range(20):
        await core.lookup(ROOT_INODE, f"f{i:02d}".encode())
    assert store.total() == before  # listing, attributes and lookups all from the caches


async def test_nometa_skips_heads(env: Env) -> None:
    await env.put("a", b"x", mode=str(0o100600))
    await env.put("d/b", b"y")
    core, store = env.core(nometa=True)
    entries = await listdir(core)
    assert store.count("head") == 0
    assert entries["a"][1].mode == 0o100644  # metadata unknown: defaults
    await core.lookup(ROOT_INODE, b"a")
    await core.getattr(entries["d"][0])
    assert store.count("head") == 0


# -- caches ---------------------------------------------------------------------------------------


async def test_stat_and_negative_caches_follow_the_timer(env: Env) -> None:
    await env.put("f", b"1")
    core, store = env.core(stat_ttl=5, dir_ttl=5, neg_ttl=3)
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    with expect_errno(errno.ENOENT):
        await core.lookup(ROOT_INODE, b"missing")
    before = store.total()
    await core.lookup(ROOT_INODE, b"f")
    await core.getattr(ino)
    with expect_errno(errno.ENOENT):
        await core.lookup(ROOT_INODE, b"missing")
    assert store.total() == before

    await env.raw.delete("f")  # behind the mount's back
    await env.put("missing", b"now here")
    env.timer.advance(2)
    assert (await core.getattr(ino)).size == 1  # still cached
    with expect_errno(errno.ENOENT):
        await core.lookup(ROOT_INODE, b"missing")
    env.timer.advance(1.5)  # past neg_ttl, not stat_ttl
    _, attr = await core.lookup(ROOT_INODE, b"missing")
    assert attr.size == 8
    env.timer.advance(2)  # past stat_ttl
    with expect_errno(errno.ENOENT):
        await core.getattr(ino)


async def test_dir_cache_expires_and_own_changes_show_at_once(env: Env) -> None:
    await env.put("a", b"")
    core, _ = env.core(dir_ttl=10, stat_ttl=10)
    assert sorted(await listdir(core)) == ["a"]
    await env.put("b", b"")  # behind the mount's back
    await write_file(core, "c", b"mine")  # the mount's own: visible at once
    assert sorted(await listdir(core)) == ["a", "c"]
    c_ino, _ = await core.lookup(ROOT_INODE, b"c")
    await core.unlink(ROOT_INODE, b"a")
    assert sorted(await listdir(core)) == ["c"]
    env.timer.advance(11)
    assert sorted(await listdir(core)) == ["b", "c"]
    assert (await core.getattr(c_ino)).size == 4


async def test_ttl_zero_disables_caching(env: Env) -> None:
    await env.put("f", b"1")
    core, store = env.core(stat_ttl=0, dir_ttl=0, neg_ttl=0)
    await core.lookup(ROOT_INODE, b"f")
    before = store.total()
    await core.lookup(ROOT_INODE, b"f")
    assert store.total() > before


# -- readdir offsets, inodes, lookup counts -------------------------------------------------------


async def test_readdir_offsets_survive_concurrent_changes(env: Env) -> None:
    names = [f"n{i:02d}" for i in range(12)]
    for name in names:
        await env.put(name, b"")
    core, _ = env.core(dir_ttl=0)
    fh = await core.opendir(ROOT_INODE)
    got: list[str] = []
    offsets: list[int] = []

    def take(limit: int) -> Any:
        def emit(name: bytes, ino: int, attr: Attr, next_id: int) -> bool:
            if len(got) >= limit:
                return False
            got.append(name.decode())
            offsets.append(next_id)
            return True

        return emit

    await core.readdir(fh, 0, take(6))
    assert len(got) == 6
    # the directory changes between two readdir calls, through the mount and behind it
    await core.unlink(ROOT_INODE, b"n05")
    await core.unlink(ROOT_INODE, b"n08")
    await env.put("n00a", b"")
    await write_file(core, "n09a", b"")
    await core.readdir(fh, offsets[-1], take(100))
    await core.releasedir(fh)
    assert got == [".", "..", *names]  # no entry skipped, none repeated
    # the same offset asked twice answers the same entries
    fh = await core.opendir(ROOT_INODE)
    first: list[str] = []
    again: list[str] = []

    def collect(into: list[str], limit: int) -> Any:
        def emit(name: bytes, ino: int, attr: Attr, next_id: int) -> bool:
            if len(into) >= limit:
                return False
            into.append(name.decode())
            return True

        return emit

    await core.readdir(fh, 0, collect(first, 4))
    await core.readdir(fh, 3, collect(again, 100))
    await core.releasedir(fh)
    assert again[0] == first[3]
    assert len(again) == len(names) + 2 - 3 - 2 + 2  # two removed, two added since


async def test_lookup_counts_only_for_accepted_entries(env: Env) -> None:
    for name in ("a", "b", "c", "d"):
        await env.put(name, b"")
    core, _ = env.core()
    fh = await core.opendir(ROOT_INODE)
    accepted: list[int] = []

    def emit(name: bytes, ino: int, attr: Attr, next_id: int) -> bool:
        if name in (b".", b".."):
            return True
        if len(accepted) == 2:
            return False
        accepted.append(ino)
        return True

    await core.readdir(fh, 0, emit)
    await core.releasedir(fh)
    assert [core.inodes.get(i).nlookup for i in accepted] == [1, 1]
    assert core.inodes.get(ROOT_INODE).nlookup == 1  # dots take no reference
    # the refused entry holds no inode; the others live until forgotten
    assert sorted(core.inodes.by_path) == ["", "a", "b"]
    core.forget([(accepted[0], 1)])
    assert sorted(core.inodes.by_path) == ["", "b"]


async def test_inode_numbers_are_never_reused(env: Env) -> None:
    core, _ = env.core()
    seen: set[int] = set()
    for _ in range(3):
        ino = await write_file(core, "f", b"x")
        assert ino not in seen
        seen.add(ino)
        looked, _ = await core.lookup(ROOT_INODE, b"f")
        assert looked == ino
        await core.unlink(ROOT_INODE, b"f")
        core.forget([(ino, 2)])  # create + lookup
        assert ino not in core.inodes.by_ino
    d_ino, _ = await core.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
    assert d_ino not in seen and d_ino > max(seen)


async def test_forget_never_raises(env: Env) -> None:
    core, _ = env.core()
    core.forget([(999_999, 1), (ROOT_INODE, 5), (-1, 1)])
    assert core.inodes.get(ROOT_INODE)  # the root is never dropped
    await env.put("f", b"")
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    await core.lookup(ROOT_INODE, b"f")
    core.forget([(ino, 1)])
    assert core.inodes.get(ino).nlookup == 1
    core.forget([(ino, 7)])  # more than held: clamped, dropped
    assert ino not in core.inodes.by_ino


# -- reading and writing --------------------------------------------------------------------------


async def test_ranged_reads(env: Env) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    await env.put("big", data)
    core, store = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"big")
    fh = await core.open(ino, os.O_RDONLY)
    assert await core.read(fh, 1000, 10) == data[1000:1010]
    assert await core.read(fh, len(data) - 5, 100) == data[-5:]
    assert await core.read(fh, len(data) + 5, 100) == b""
    chunks = [await core.read(fh, off, 131072) for off in range(0, len(data), 131072)]
    assert b"".join(chunks) == data
    assert store.count("get") < 8  # read-ahead grew: fewer GETs than reads
    await core.release(fh)
    assert store.count("put") == 0


async def test_writes_at_any_offset(env: Env) -> None:
    await env.put("f", b"0123456789", mode=str(0o100600), custom="kept")
    core, store = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    fh = await core.open(ino, os.O_RDWR)
    await core.write(fh, 2, b"ab")  # overwrite
    await core.write(fh, 10, b"XY")  # append
    await core.write(fh, 20, b"Z")  # sparse
    assert (await core.getattr(ino)).size == 21
    assert await core.read(fh, 0, 100) == b"01ab456789XY" + b"\0" * 8 + b"Z"
    await core.flush(fh)
    await core.release(fh)
    assert await env.body("f") == b"01ab456789XY" + b"\0" * 8 + b"Z"
    info = await env.raw.head("f")
    assert info is not None and info.metadata is not None
    assert info.metadata["mode"] == str(0o100600)
    assert info.metadata["custom"] == "kept"
    assert store.count("put") == 1


async def test_truncate_grow_shrink_and_o_trunc(env: Env) -> None:
    await env.put("f", b"abcdef")
    core, _ = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    await core.setattr(ino, size=3)  # truncate(2) of a closed file: saved at once
    assert await env.body("f") == b"abc"
    await core.setattr(ino, size=5)
    assert await env.body("f") == b"abc\0\0"
    fh = await core.open(ino, os.O_WRONLY | os.O_TRUNC)
    assert (await core.getattr(ino)).size == 0
    await core.write(fh, 0, b"new")
    await core.flush(fh)
    await core.release(fh)
    assert await env.body("f") == b"new"
    fh = await core.open(ino, os.O_WRONLY | os.O_TRUNC)  # O_TRUNC and close: empty
    await core.release(fh)
    assert await env.body("f") == b""


async def test_open_and_close_uploads_nothing(env: Env) -> None:
    await env.put("f", b"data")
    core, store = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    fh = await core.open(ino, os.O_RDWR)
    await core.flush(fh)
    await core.fsync(fh, False)
    await core.release(fh)
    assert store.count("put") == 0


async def test_handles_share_one_buffer(env: Env) -> None:
    core, store = env.core()
    fh1, ino, _ = await core.create(ROOT_INODE, b"f", 0o644, os.O_RDWR, 0, 0)
    fh2 = await core.open(ino, os.O_RDWR)
    await core.write(fh1, 0, b"hello")
    assert await core.read(fh2, 0, 5) == b"hello"
    await core.write(fh2, 5, b" world")
    assert await core.read(fh1, 0, 100) == b"hello world"
    await core.flush(fh1)
    await core.flush(fh2)  # nothing new: not uploaded twice
    assert store.count("put") == 1
    await core.release(fh1)
    await core.release(fh2)
    assert await env.body("f") == b"hello world"


async def test_failed_upload_is_eio_and_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    core, store = env.core()
    fh, _, _ = await core.create(ROOT_INODE, b"doomed", 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh, 0, b"data")
    store.fail_put = True
    with caplog.at_level(logging.ERROR, logger="s3fmfs.fs"), expect_errno(errno.EIO):
        await core.flush(fh)
    assert any("doomed" in r.getMessage() for r in caplog.records)
    with expect_errno(errno.EIO):
        await core.fsync(fh, False)
    store.fail_put = False
    await core.release(fh)  # still dirty: saved now
    assert await env.body("doomed") == b"data"


async def test_unlinked_open_file_stays_usable(env: Env) -> None:
    await env.put("f", b"before")
    core, store = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    fh = await core.open(ino, os.O_RDWR)
    await core.unlink(ROOT_INODE, b"f")
    assert await env.keys() == []
    with expect_errno(errno.ENOENT):
        await core.lookup(ROOT_INODE, b"f")
    assert await core.read(fh, 0, 100) == b"before"
    await core.write(fh, 6, b"+after")
    assert await core.read(fh, 0, 100) == b"before+after"
    assert (await core.getattr(ino)).size == 12
    puts = store.count("put")
    await core.flush(fh)
    await core.release(fh)
    assert store.count("put") == puts  # never uploaded again
    assert await env.keys() == []


# -- directories, renames, links ------------------------------------------------------------------


async def test_mkdir_rmdir(env: Env) -> None:
    await env.put("imp/deep/file", b"")
    core, _ = env.core()
    d_ino, attr = await core.mkdir(ROOT_INODE, b"d", 0o750, 5, 6)
    assert attr.mode == stat.S_IFDIR | 0o750
    assert "d/" in await env.keys()
    info = await env.raw.head("d/")
    assert info is not None and info.metadata == {
        "mode": str(stat.S_IFDIR | 0o750),
        "uid": "5",
        "gid": "6",
        "mtime": str(attr.mtime_ns // 10**9),
    }
    with expect_errno(errno.EEXIST):
        await core.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
    await write_file(core, "d/f", b"")
    with expect_errno(errno.ENOTEMPTY):
        await core.rmdir(ROOT_INODE, b"d")
    await core.unlink(d_ino, b"f")
    await core.rmdir(ROOT_INODE, b"d")
    assert "d/" not in await env.keys()
    with expect_errno(errno.ENOTEMPTY):  # implicit keys count
        await core.rmdir(ROOT_INODE, b"imp")
    with expect_errno(errno.ENOTDIR):
        await core.rmdir((await walk(core, "imp/deep"))[0], b"file")


async def test_rename_file_keeps_metadata_and_replaces(env: Env) -> None:
    await env.put("a", b"A", mode=str(0o100640), uid="3", gid="4", mtime="1600000000")
    await env.put("b", b"B")
    core, _ = env.core()
    await core.lookup(ROOT_INODE, b"a")
    with expect_errno(errno.EEXIST):
        await core.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", RENAME_NOREPLACE)
    with expect_errno(errno.EINVAL):
        await core.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", RENAME_EXCHANGE)
    await core.rename(ROOT_INODE, b"a", ROOT_INODE, b"b")
    assert await env.keys() == ["b"]
    assert await env.body("b") == b"A"
    info = await env.raw.head("b")
    assert info is not None and info.metadata is not None
    assert info.metadata["mode"] == str(0o100640) and info.metadata["mtime"] == "1600000000"
    _, attr = await core.lookup(ROOT_INODE, b"b")
    assert attr.uid == 3
    with expect_errno(errno.ENOENT):
        await core.lookup(ROOT_INODE, b"a")
    await core.rename(ROOT_INODE, b"b", ROOT_INODE, b"c", RENAME_NOREPLACE)
    assert await env.keys() == ["c"]


async def test_rename_of_a_file_being_written(env: Env) -> None:
    core, _ = env.core()
    fh, _, _ = await core.create(ROOT_INODE, b"tmp", 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh, 0, b"content")
    await core.rename(ROOT_INODE, b"tmp", ROOT_INODE, b"final")
    await core.write(fh, 7, b"+more")
    await core.flush(fh)
    await core.release(fh)
    assert await env.keys() == ["final"]
    assert await env.body("final") == b"content+more"


async def test_rename_directory_moves_every_key(env: Env) -> None:
    await env.put("d/", b"", mode=str(0o40700))
    for key in ("d/a", "d/sub/b", "d/sub/deeper/c", "d/bad//x"):
        await env.put(key, key.encode())
    await env.put("e/", b"")
    await env.put("f/x", b"")
    core, _ = env.core()
    d_ino, _ = await core.lookup(ROOT_INODE, b"d")
    sub_ino, _ = await core.lookup(d_ino, b"sub")
    with expect_errno(errno.ENOTEMPTY):
        await core.rename(ROOT_INODE, b"d", ROOT_INODE, b"f")
    with expect_errno(errno.EINVAL):
        await core.rename(ROOT_INODE, b"d", sub_ino, b"inside")
    await core.rename(ROOT_INODE, b"d", ROOT_INODE, b"e")  # over an empty directory
    assert sorted(await env.keys()) == [
        "e/",
        "e/a",
        "e/bad//x",
        "e/sub/b",
        "e/sub/deeper/c",
        "f/x",
    ]
    assert await env.body("e/sub/b") == b"d/sub/b"
    info = await env.raw.head("e/")
    assert info is not None and info.metadata is not None
    assert info.metadata["mode"] == str(0o40700)
    # the inodes moved with it
    assert core.inodes.get(sub_ino).path == "e/sub"
    assert sorted(await listdir(core, sub_ino)) == ["b", "deeper"]
    assert sorted(await listdir(core)) == ["e", "f"]


async def test_symlinks_as_s3fs(env: Env) -> None:
    core, _ = env.core()
    ino, attr = await core.symlink(ROOT_INODE, b"ln", b"../target/file", 0, 0)
    assert attr.kind is Kind.SYMLINK and stat.S_ISLNK(attr.mode)
    assert await core.readlink(ino) == b"../target/file"
    assert await env.body("ln") == b"../target/file"
    info = await env.raw.head("ln")
    assert info is not None and info.metadata is not None
    assert stat.S_ISLNK(int(info.metadata["mode"]))
    # typed by name as s3fs-fuse types it (not the server's default binary/octet-stream)
    assert info.content_type == "application/octet-stream"
    await core.symlink(ROOT_INODE, b"ln.txt", b"x", 0, 0)
    named = await env.raw.head("ln.txt")
    assert named is not None and named.content_type == "text/plain"
    remount, _ = env.core()
    entries = await listdir(remount)
    ino2, attr2 = entries["ln"]
    assert attr2.kind is Kind.SYMLINK
    assert await remount.readlink(ino2) == b"../target/file"


async def test_chmod_chown_utimens_survive_remount(env: Env) -> None:
    await env.raw.put("f", b"body", {}, "text/x-custom")
    await env.put("d/inside", b"")
    core, _ = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    attr = await core.setattr(ino, mode=0o600, uid=11, gid=12, mtime_ns=1_234_567_890_123_456_789)
    assert (attr.mode, attr.uid, attr.gid) == (stat.S_IFREG | 0o600, 11, 12)
    assert attr.mtime_ns == 1_234_567_890 * 10**9
    d_ino, _ = await core.lookup(ROOT_INODE, b"d")
    await core.setattr(d_ino, mode=0o711)  # implicit directory: gets a marker
    remount, _ = env.core()
    _, again = await remount.lookup(ROOT_INODE, b"f")
    assert (again.mode, again.uid, again.gid, again.mtime_ns) == (
        stat.S_IFREG | 0o600,
        11,
        12,
        1_234_567_890 * 10**9,
    )
    info = await env.raw.head("f")
    assert info is not None and info.content_type == "text/x-custom"
    assert await env.body("f") == b"body"
    _, d_attr = await remount.lookup(ROOT_INODE, b"d")
    assert d_attr.mode == stat.S_IFDIR | 0o711


async def test_link_statfs_and_read_only(env: Env) -> None:
    await env.put("f", b"")
    core, _ = env.core()
    ino, _ = await core.lookup(ROOT_INODE, b"f")
    with expect_errno(errno.EPERM):
        await core.link(ino, ROOT_INODE, b"g")
    stats = core.statfs()
    assert stats.blocks * stats.block_size >= 1 << 40 and stats.name_max == 255
    ro, _ = env.core(ro=True)
    with expect_errno(errno.EROFS):
        await ro.mkdir(ROOT_INODE, b"x", 0o755, 0, 0)


async def test_flush_all_saves_dirty_files(env: Env) -> None:
    core, _ = env.core()
    fh, _, _ = await core.create(ROOT_INODE, b"pending", 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh, 0, b"unsaved")
    assert await env.keys() == []
    assert await core.flush_all() == 0
    assert await env.body("pending") == b"unsaved"


async def test_big_files_go_up_in_parts(env: Env) -> None:
    store = S3Store(env.conn, env.bucket)
    core = FsCore(store, FsSettings(part_size_mb=5), timer=env.timer)
    core.uploader.multipart_threshold = 6 << 20  # (64 MiB: a long test)
    data = os.urandom(12 << 20)
    fh, _, _ = await core.create(ROOT_INODE, b"big", 0o644, os.O_WRONLY, 0, 0)
    for offset in range(0, len(data), 1 << 20):
        await core.write(fh, offset, data[offset : offset + (1 << 20)])
    await core.flush(fh)
    await core.release(fh)
    info = await env.raw.head("big")
    assert info is not None and info.size == len(data)
    assert info.etag.strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert info.metadata is not None and info.metadata["mode"] == str(stat.S_IFREG | 0o644)
    assert await env.body("big") == data
    assert await env.conn.list_multipart_uploads(env.bucket) == []


async def test_a_file_uploaded_whole_is_cut_by_the_mounts_part_size(env: Env) -> None:
    """The part size is the mount's (``part_size_mb``), also for a file uploaded whole at close
    (written tail first: not streamed). It used to be 16 MiB whatever the mount said."""
    store = S3Store(env.conn, env.bucket)
    core = FsCore(store, FsSettings(part_size_mb=5), timer=env.timer)
    chunk = 1 << 20
    data = os.urandom(chunk) * 100  # 100 MiB
    fh, _, _ = await core.create(ROOT_INODE, b"tail-first", 0o644, os.O_WRONLY, 0, 0)
    for offset in reversed(range(0, len(data), chunk)):
        await core.write(fh, offset, data[offset : offset + chunk])
    await core.flush(fh)
    await core.release(fh)
    info = await env.raw.head("tail-first")
    assert info is not None and info.size == len(data)
    assert info.etag.strip('"').endswith("-20")  # 20 parts of 5 MiB
    assert await env.conn.list_multipart_uploads(env.bucket) == []


async def test_keys_xml_cannot_carry_do_not_break_listings(env: Env) -> None:
    for key in ("c/a", "c/b", "c/bad\x01name", "c/d", "c/e", "c/f%41", "c/g+h", "c/sub\x02/x"):
        await env.put(key, b"1")
    core, _ = env.core()
    c_ino, _ = await core.lookup(ROOT_INODE, b"c")
    names = sorted(await listdir(core, c_ino))
    assert names == ["a", "b", "bad\x01name", "d", "e", "f%41", "g+h", "sub\x02"]
    ino, _ = await core.lookup(c_ino, b"bad\x01name")
    assert await read_all(core, ino) == b"1"


# -- a random walk against a model -------------------------------------------------------------


#: More seeds for a longer walk: S3FMFS_SEEDS=1,2,...,50 pytest -k random
SEEDS = [int(s) for s in os.environ.get("S3FMFS_SEEDS", "1,2,3").split(",")]


class Model:
    """What the tree should be: directories and file contents by path."""

    def __init__(self) -> None:
        self.dirs: set[str] = {""}
        self.files: dict[str, bytes] = {}

    def children(self, directory: str) -> set[str]:
        prefix = f"{directory}/" if directory else ""
        return {
            p[len(prefix) :]
            for p in (self.dirs | set(self.files))
            if p != directory and p.startswith(prefix) and "/" not in p[len(prefix) :]
        }

    def under(self, directory: str) -> list[str]:
        return [p for p in (self.dirs | set(self.files)) if p.startswith(directory + "/")]


async def _check_against(core: FsCore, model: Model) -> None:
    for directory in sorted(model.dirs):
        ino = (await walk(core, directory))[0] if directory else ROOT_INODE
        assert set(await listdir(core, ino)) == model.children(directory), directory
    for path, data in model.files.items():
        ino, attr = await walk(core, path)
        assert attr.size == len(data), path
        assert await read_all(core, ino) == data, path


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_operations_match_a_model(env: Env, seed: int) -> None:
    import random

    rng = random.Random(seed)
    core, _ = env.core(stat_ttl=5, dir_ttl=5, neg_ttl=5)
    model = Model()
    names = ["a", "b", "c", "d"]

    def some_dir() -> str:
        return rng.choice(sorted(model.dirs))

    async def parent_ino(path: str) -> int:
        parent = path.rpartition("/")[0]
        return (await walk(core, parent))[0] if parent else ROOT_INODE

    for _ in range(60):
        op = rng.choice(["create", "write", "truncate", "unlink", "mkdir", "rmdir", "rename"] * 2)
        op = op if rng.random() > 0.08 else "behind"
        target = "/".join(p for p in (some_dir(), rng.choice(names)) if p)
        if op == "create" and target not in model.dirs:
            data = rng.randbytes(rng.randrange(0, 300))
            if target in model.files:
                ino, _ = await walk(core, target)
                fh = await core.open(ino, os.O_WRONLY | os.O_TRUNC)
            else:
                fh, _, _ = await core.create(
                    await parent_ino(target), target.rpartition("/")[2].encode(), 0o644, 1, 0, 0
                )
            await core.write(fh, 0, data)
            await core.flush(fh)
            await core.release(fh)
            model.files[target] = data
        elif op == "write" and model.files:
            path = rng.choice(sorted(model.files))
            ino, _ = await walk(core, path)
            offset, chunk = rng.randrange(0, 400), rng.randbytes(rng.randrange(1, 50))
            fh = await core.open(ino, os.O_RDWR)
            await core.write(fh, offset, chunk)
            await core.release(fh)
            old = model.files[path].ljust(offset, b"\0")
            model.files[path] = old[:offset] + chunk + old[offset + len(chunk) :]
        elif op == "truncate" and model.files:
            path = rng.choice(sorted(model.files))
            ino, _ = await walk(core, path)
            size = rng.randrange(0, 500)
            await core.setattr(ino, size=size)
            model.files[path] = model.files[path][:size].ljust(size, b"\0")
        elif op == "unlink" and model.files:
            path = rng.choice(sorted(model.files))
            await core.unlink(await parent_ino(path), path.rpartition("/")[2].encode())
            del model.files[path]
        elif op == "mkdir" and target not in model.dirs and target not in model.files:
            await core.mkdir(
                await parent_ino(target), target.rpartition("/")[2].encode(), 493, 0, 0
            )
            model.dirs.add(target)
        elif op == "rmdir" and len(model.dirs) > 1:
            path = rng.choice(sorted(model.dirs - {""}))
            parent, name = await parent_ino(path), path.rpartition("/")[2].encode()
            if model.under(path):
                with expect_errno(errno.ENOTEMPTY):
                    await core.rmdir(parent, name)
            else:
                await core.rmdir(parent, name)
                model.dirs.discard(path)
        elif op == "rename" and len(model.files) + len(model.dirs) > 1:
            src = rng.choice(sorted((model.dirs - {""}) | set(model.files)))
            if target == src or target.startswith(src + "/") or target in model.dirs:
                continue
            if target in model.files and src in model.dirs:
                continue
            await core.rename(
                await parent_ino(src),
                src.rpartition("/")[2].encode(),
                await parent_ino(target),
                target.rpartition("/")[2].encode(),
            )
            moved = [src, *model.under(src)]
            for path in moved:
                new = target + path[len(src) :]
                if path in model.files:
                    model.files[new] = model.files.pop(path)
                else:
                    model.dirs.discard(path)
                    model.dirs.add(new)
        elif op == "behind":  # another client writes a file; we see it after the TTLs
            directory = some_dir()
            path = "/".join(p for p in (directory, f"ext{rng.randrange(3)}") if p)
            if path not in model.dirs and directory in model.dirs:
                data = rng.randbytes(rng.randrange(0, 100))
                await env.put(path, data)
                model.files[path] = data
                env.timer.advance(6)
        await _check_against(core, model)
    assert core.handles == {} and core.dirs == {}
