"""Metadata cost of listings, proved by counting requests: the core over moto, and a mount.

The rule: ``ls -l``/``find``/``stat`` over a listed folder cost its LIST requests plus at most one
HEAD per object the mount has not seen (concurrent), and none for an object whose version
(ETag + LastModified as listed) an earlier mount HEADed (the metadata cache); ``nometa``: LIST
only.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.config.options import MountOptions, OptionError, parse_options
from s3fmfs.config.paths import metacache_file
from s3fmfs.fs import metacache as metacache_module
from s3fmfs.fs.attrs import Attr, Kind
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.metacache import MetaCache, scope_of
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import ObjectInfo
from tests.support.core import listdir
from tests.support.mount import log_tail, mounted
from tests.support.servers import S3Server, unique_bucket
from tests.support.stores import CountingStore
from tests.test_fs_core import FakeTimer

PAGE = 10  # listing page size of these tests: N objects cost ceil(N / PAGE) LISTs
N = 25
S3FS = {"mode": str(0o100640), "uid": "7", "gid": "8", "mtime": "1600000000"}


class Env:
    """A bucket of N objects (s3fs metadata, plain, and a symlink), mounts sharing a cache."""

    def __init__(self, conn: S3fmAuthConnection, bucket: str, tmp_path: Path) -> None:
        self.raw = S3Store(conn, bucket, page_size=PAGE)
        self.bucket = bucket
        self.path = tmp_path / "cache" / "metadata.sqlite3"
        self.timer = FakeTimer()

    async def fill(self) -> None:
        for i in range(N - 2):
            await self.raw.put(f"f{i:02d}", b"x" * i, S3FS if i % 2 else {})
        await self.raw.put("link", b"f01", {**S3FS, "mode": str(0o120777)})
        await self.raw.put("d/inner", b"", {})  # a directory (costs a HEAD of its marker)

    async def mount(
        self, *, cache: bool = True, uid: int = 1000, **options: Any
    ) -> tuple[FsCore, CountingStore, MetaCache | None]:
        """A new 'mount': a fresh core, with the cache file opened anew."""
        meta = await MetaCache.open(self.path, scope_of("http://moto", self.bucket))
        store = CountingStore(self.raw)
        opts = FsSettings(uid=uid, gid=uid, **options)
        core = FsCore(store, opts, timer=self.timer, metacache=meta if cache else None)
        return core, store, meta


@pytest.fixture
async def env(conn: S3fmAuthConnection, tmp_path: Path) -> Env:
    bucket = unique_bucket("meta")
    await conn.create_bucket(bucket)
    environment = Env(conn, bucket, tmp_path)
    await environment.fill()
    return environment


def shown(attr: Attr) -> tuple[Kind, int, int, int, int, int]:
    """What ls -l shows (an implicit directory's mtime is its mount's time: left out)."""
    mtime = 0 if attr.kind is Kind.DIR else attr.mtime_ns
    return attr.kind, attr.mode, attr.uid, attr.gid, attr.size, mtime


async def stat_all(core: FsCore, names: list[str]) -> dict[str, Attr]:
    """What ``stat`` of each entry sees: a lookup, then a getattr."""
    found = {}
    for name in names:
        ino, _ = await core.lookup(ROOT_INODE, name.encode())
        found[name] = await core.getattr(ino)
    return found


async def test_first_mount_lists_and_heads_each_object_once(env: Env) -> None:
    core, store, meta = await env.mount()
    store.head_delay = 0.05  # long enough for the HEADs to overlap
    async with trio.open_nursery() as nursery:
        core.nursery = nursery  # HEADs sent ahead of ls -l's lookups
        entries = await listdir(core)
        core.nursery = None
    assert len(entries) == N
    listings = math.ceil(N / PAGE)
    assert store.count("list") == listings + 1  # and d/'s, ahead of a tree walk
    assert store.asked() == N  # 24 objects + the marker of d/ (absent: implicit)
    assert store.count("get") == 0
    assert store.max_heads_in_flight > 1
    assert entries["f01"][1].mode == 0o100640 and entries["f01"][1].uid == 7
    assert entries["f00"][1].mode == 0o100644 and entries["f00"][1].uid == 1000
    assert entries["link"][1].kind is Kind.SYMLINK
    # stat of every entry within stat_ttl: no request at all
    before = store.total()
    seen = await stat_all(core, sorted(entries))
    assert store.total() == before
    assert {n: shown(a) for n, a in seen.items()} == {n: shown(a) for n, (_, a) in entries.items()}
    assert meta is not None
    await meta.close()
    assert meta.written == N - 1  # every object; not the directory


async def test_warm_cache_mount_makes_no_heads(env: Env) -> None:
    core, _, meta = await env.mount()
    first = {n: shown(a) for n, (_, a) in (await listdir(core)).items()}
    assert meta is not None
    await meta.close()

    core, store, meta = await env.mount()
    entries = await listdir(core)
    assert store.count("list") == math.ceil(N / PAGE)
    assert store.asked() == 1  # the directory's marker only: no object HEADed
    assert store.count("get") == 0
    assert {n: shown(a) for n, (_, a) in entries.items()} == first
    await stat_all(core, sorted(entries))
    assert store.asked() == 1 and store.count("list") == math.ceil(N / PAGE)
    assert meta is not None
    await meta.close()

    # the raw metadata is cached, not attributes: another mount's defaults apply
    core, store, meta = await env.mount(uid=2000)
    entries = await listdir(core)
    assert store.asked() == 1
    assert entries["f00"][1].uid == 2000 and entries["f01"][1].uid == 7
    assert meta is not None
    await meta.close()


async def test_changed_objects_are_headed_again(env: Env) -> None:
    core, _, meta = await env.mount()
    await listdir(core)
    assert meta is not None
    await meta.close()
    # behind the mount's back, in a later second (listings show LastModified in seconds):
    # new content, and new metadata with the same content (same ETag, new LastModified)
    await trio.sleep(1.05 - time.time() % 1)
    await env.raw.put("f02", b"changed", {})
    await env.raw.copy("f03", "f03", {**S3FS, "mode": str(0o100600)})

    core, store, meta = await env.mount()
    entries = await listdir(core)
    assert store.asked() == 1 + 2  # the marker, and exactly the two changed objects
    assert entries["f02"][1].size == 7
    assert entries["f03"][1].mode == 0o100600
    assert meta is not None
    await meta.close()

    core, store, meta = await env.mount()  # and their new versions are cached in turn
    entries = await listdir(core)
    assert store.asked() == 1
    assert entries["f03"][1].mode == 0o100600
    assert meta is not None
    await meta.close()


async def test_same_mount_heads_again_only_what_changed(env: Env) -> None:
    core, store, meta = await env.mount(stat_ttl=5, dir_ttl=5)
    await listdir(core)
    heads = store.asked()
    await trio.sleep(1.05 - time.time() % 1)
    await env.raw.copy("f05", "f05", {**S3FS, "mode": str(0o100604)})
    env.timer.advance(6)  # every cache of the mount expired: list again
    entries = await listdir(core)
    assert store.asked() - heads == 1 + 1  # the marker, and f05
    assert entries["f05"][1].mode == 0o100604
    assert meta is not None
    await meta.close()


async def test_nometa_and_metacache_off_make_list_requests_only(env: Env) -> None:
    core, _, meta = await env.mount()
    await listdir(core)
    assert meta is not None
    await meta.close()
    core, store, meta = await env.mount(nometa=True)
    assert core.metacache is None  # nometa: nothing to remember
    entries = await listdir(core)
    await stat_all(core, sorted(entries))
    assert store.asked() == 0 and store.count("get") == 0
    assert store.count("list") == math.ceil(N / PAGE)
    assert entries["f01"][1].mode == 0o100644  # defaults, even though the cache knows better
    assert meta is not None
    await meta.close()

    core, store, _ = await env.mount(cache=False)  # metacache=off: every object HEADed
    await listdir(core)
    assert store.asked() == N


async def test_a_broken_cache_file_is_not_fatal(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.path.parent.mkdir(parents=True)
    env.path.write_bytes(b"this is not a database" * 100)
    core, store, meta = await env.mount()
    assert meta is None  # logged, not used
    assert "metadata cache" in caplog.text
    await listdir(core)
    assert store.asked() == N

    # a cache failing while in use: disabled, the listing goes on
    env.path.unlink()
    core, store, meta = await env.mount()
    assert meta is not None and meta._db is not None
    meta._db.close()
    entries = await listdir(core)
    assert len(entries) == N and store.asked() == N
    assert not meta.enabled
    await meta.close()


async def test_cache_file_private_and_keyed_by_version(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "metadata.sqlite3"
    meta = await MetaCache.open(path, "http://h:1/b")
    assert meta is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    listed = ObjectInfo("k", 3, '"e1"', 1_700_000_000_250_000_000)
    assert await meta.lookup([listed]) == {}
    head = ObjectInfo("k", 3, '"e1"', 1_700_000_000_000_000_000, {"mode": "33188"}, "text/x")
    meta.record(ObjectInfo("k", 3, '"e2"', head.last_modified_ns, {}, ""))  # another version
    assert not meta._pending
    meta.record(ObjectInfo("other", 3, '"e1"', head.last_modified_ns, {}, ""))  # never listed
    assert not meta._pending
    meta.record(head)
    await meta.close()
    assert meta.written == 1

    meta = await MetaCache.open(path, "http://h:1/b")
    assert meta is not None
    hit = await meta.lookup([listed])
    assert hit["k"].metadata == {"mode": "33188"} and hit["k"].content_type == "text/x"
    assert hit["k"].info(listed).last_modified_ns == head.last_modified_ns
    assert await meta.lookup([ObjectInfo("k", 3, '"e1"', listed.last_modified_ns + 1)]) == {}
    assert await meta.lookup([ObjectInfo("k", 3, '"e9"', listed.last_modified_ns)]) == {}
    await meta.close()
    other = await MetaCache.open(path, "http://h:1/other-bucket")
    assert other is not None
    assert await other.lookup([listed]) == {}
    await other.close()
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from objects").fetchone() == (1,)


def test_options() -> None:
    opts = parse_options([])
    assert opts.metacache and opts.metacache_file is None
    opts = parse_options(["metacache=off,metacache_file=/x/m.db"])
    assert not opts.metacache and opts.metacache_file == "/x/m.db"
    for bad in ("metacache=maybe", "metacache", "metacache_file=relative.db"):
        with pytest.raises(OptionError):
            parse_options([bad])
    assert metacache_file(MountOptions(cache_dir="/c")) == Path("/c/metadata.sqlite3")
    assert metacache_file(MountOptions(cache_dir="/c", metacache_file="/f.db")) == Path("/f.db")
    os.environ["XDG_CACHE_HOME"] = "/xdg"
    try:
        assert metacache_file(MountOptions()) == Path("/xdg/s3fmfs/metadata.sqlite3")
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert metacache_module.FILE_NAME == "metadata.sqlite3"


# -- a real mount: `ls -l`, `find -exec stat`, `stat`, counted in the daemon's request log ------

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3",
)

REQUEST = re.compile(r"\b(GET|HEAD|PUT|POST|DELETE) /(\S+) -> ")


def requests_since(mnt: Path, offset: int, bucket: str) -> dict[str, int]:
    """Requests the daemon logged (``-d``) since ``offset`` of its log, by method."""
    counts: dict[str, int] = {}
    for method, path in REQUEST.findall(log_tail(mnt, 10_000_000)[offset:]):
        if path.startswith(bucket):
            counts[method] = counts.get(method, 0) + 1
    return counts


def log_size(mnt: Path) -> int:
    return len(log_tail(mnt, 10_000_000))


@pytest.mark.soak
@needs_fuse
def test_mounted_ls_find_stat_across_remounts(moto: S3Server, tmp_path: Path) -> None:
    bucket = unique_bucket("metamnt")
    count = 1500  # two listing pages

    async def fill() -> None:
        async with S3fmAuthConnection(
            "testing", "testing", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
        ) as conn:
            await conn.create_bucket(bucket)
            store = S3Store(conn, bucket)
            limiter = trio.CapacityLimiter(16)

            async def put(i: int) -> None:
                async with limiter:
                    await store.put(f"f{i:04d}", b"x", S3FS if i % 2 else {})

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(put, i)

    trio.run(fill)
    cache = tmp_path / "cache"
    options = ("debug", f"cache_dir={cache}", "stat_ttl=60", "dir_ttl=60")
    mnt = (tmp_path / "mnt").resolve()

    def ls_l() -> str:
        return subprocess.run(
            ["ls", "-ln", "--time-style=+%s", str(mnt)], capture_output=True, text=True, check=True
        ).stdout

    # the bucket check at mount time (one key), the incomplete multipart uploads (the sweep of
    # fs/journal.py), then the folder's listing
    mount_lists = 1 + 1 + 1
    start = log_size(mnt) if mnt.exists() else 0
    with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
        first = ls_l()
        assert first.count("\n") == count + 1 and "-rw-r----- 1 7 8" in first
        got = requests_since(mnt, start, bucket)
        # 2 pages, one request each: a GET instead of a HEAD (1-byte objects: ``bodies``)
        assert got == {"GET": mount_lists + 1 + count}
        # stat of every file, and find -exec stat: answered from what the listing learned
        after_ls = log_size(mnt)
        subprocess.run(
            ["stat", *sorted(str(p) for p in mnt.iterdir())], check=True, stdout=subprocess.DEVNULL
        )
        out = subprocess.run(
            ["find", str(mnt), "-type", "f", "-exec", "stat", "-c", "%n %a %u", "{}", "+"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.count("\n") == count and f"{mnt}/f0001 640 7" in out
        assert requests_since(mnt, after_ls, bucket) == {}

    start = log_size(mnt)
    with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
        assert ls_l() == first
        assert requests_since(mnt, start, bucket) == {"GET": mount_lists + 1}  # no HEAD
        assert (cache / "metadata.sqlite3").exists()

    start = log_size(mnt)
    with mounted(moto, bucket, tmp_path=tmp_path, options=(*options, "nometa")) as mnt:
        assert ls_l().count("\n") == count + 1
        assert requests_since(mnt, start, bucket) == {"GET": mount_lists + 1}

    start = log_size(mnt)
    with mounted(moto, bucket, tmp_path=tmp_path, options=(*options, "metacache=off")) as mnt:
        assert ls_l() == first
        assert requests_since(mnt, start, bucket) == {"GET": mount_lists + 1 + count}
