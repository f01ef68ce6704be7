"""Small listed objects: a GET instead of a HEAD, its body kept for the read after
(``s3fmfs.fs.bodies``), counted on an in-memory store through the core: one request for a
lookup, open and read; a HEAD and GETs for a bigger one; the budget, the mount's own changes
and changes behind the mount."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pytest

from s3fmfs.fs import bodies
from s3fmfs.fs.attrs import Kind
from s3fmfs.fs.bodies import SMALL, Bodies
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.core import FakeTime, listdir, make_core
from tests.support.memstore import MemStore

TTLS: dict[str, Any] = {"stat_ttl": 5, "dir_ttl": 5, "neg_ttl": 5}


def content(size: int, seed: int = 0) -> bytes:
    return (bytes((seed + i) % 251 for i in range(251)) * (size // 251 + 1))[:size]


async def cat(core: FsCore, ino: int) -> bytes:
    """Open, read to the end in 4 KiB reads (and once past it), release."""
    fh = await core.open(ino, os.O_RDONLY)
    try:
        out = b""
        while chunk := await core.read(fh, len(out), 4096):
            out += chunk
        return out
    finally:
        await core.release(fh)


def gets(store: MemStore) -> int:
    """Ranged GETs of reads (not the GETs of lookups)."""
    return store.count("get_range") + store.count("get_range_into")


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


async def test_lookup_open_read_of_a_small_listed_file_is_one_get(time: FakeTime) -> None:
    store = MemStore()
    small, edge = content(4096), content(SMALL, 1)
    store.put_object("small", small)
    store.put_object("edge", edge)
    store.put_object("empty", b"")
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    for name, data in (("small", small), ("edge", edge), ("empty", b"")):
        before = store.total()
        ino, attr = await core.lookup(ROOT_INODE, name.encode())
        assert attr.complete and attr.size == len(data)
        assert await cat(core, ino) == data
        assert store.total() - before == 1, (name, store.calls)
    assert store.count("head") == 0 and gets(store) == 0
    assert store.count("get_object") == 3
    assert core.cache.bodies.kept == {} and core.cache.bodies.used == 0  # all served


async def test_a_second_open_reads_through_get_again(time: FakeTime) -> None:
    """The body goes at its first use: a later open GETs (its page cache may hold it)."""
    store = MemStore()
    store.put_object("a", b"hello")
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    ino, _ = await core.lookup(ROOT_INODE, b"a")
    assert await cat(core, ino) == b"hello"
    assert await cat(core, ino) == b"hello"
    assert (store.count("get_object"), gets(store), store.count("head")) == (1, 1, 0)


async def test_a_bigger_file_is_headed_then_read(time: FakeTime) -> None:
    store = MemStore()
    data = content(SMALL + 1)
    store.put_object("big", data)
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    ino, attr = await core.lookup(ROOT_INODE, b"big")
    assert attr.complete and store.count("head") == 1 and store.count("get_object") == 0
    assert await cat(core, ino) == data
    assert gets(store) == 1 and core.cache.bodies.used == 0


async def test_a_file_not_listed_is_probed_with_heads(time: FakeTime) -> None:
    """No listing: no size known, no GET in a HEAD's place."""
    store = MemStore()
    store.put_object("a", b"x")
    core = make_core(store, time=time, stat_ttl=5, dir_ttl=0, neg_ttl=5)
    ino, _ = await core.lookup(ROOT_INODE, b"a")
    assert store.count("get_object") == 0 and store.count("head") >= 1
    assert await cat(core, ino) == b"x"


async def test_over_the_budget_heads_instead(time: FakeTime) -> None:
    store = MemStore()
    store.put_object("a", content(3000))
    store.put_object("b", content(3000, 2))
    core = make_core(store, time=time, **TTLS)
    core.cache.bodies.budget = 4000  # room for one
    await listdir(core, names_only=True)
    ino_a, _ = await core.lookup(ROOT_INODE, b"a")
    ino_b, _ = await core.lookup(ROOT_INODE, b"b")
    assert store.count("get_object") == 1 and store.count("head") == 1
    assert list(core.cache.bodies.kept) == ["a"] and core.cache.bodies.used == 3000
    assert await cat(core, ino_b) == content(3000, 2)
    assert await cat(core, ino_a) == content(3000)
    assert gets(store) == 1  # b's only


def test_bodies_budget_life_and_versions() -> None:
    time = FakeTime()
    kept = Bodies(budget=100, life=bodies.LIFE, timer=time.timer)
    assert kept.reserve(60) and not kept.reserve(60)  # the one in flight counts
    kept.keep("a", '"1"', b"x" * 60, 60)
    assert kept.used == 60
    assert kept.reserve(40)
    kept.keep("b", '"2"', b"y" * 50, 40)  # bigger than announced, past the budget: not kept
    assert "b" not in kept.kept and kept.used == 60
    assert kept.take("a", '"other"') is None and kept.used == 0  # another version: dropped
    assert kept.reserve(10)
    kept.keep("c", '"3"', b"z" * 10, 10)
    time.advance(bodies.LIFE + 0.1)
    assert kept.take("c", '"3"') is None  # too old
    assert kept.reserve(10)
    kept.keep("d", '"4"', b"w" * 10, 10)
    time.advance(bodies.LIFE + 0.1)
    assert kept.reserve(100) and kept.kept == {}  # the expired one made room


async def test_the_mounts_own_changes_drop_the_body(time: FakeTime) -> None:
    store = MemStore()
    for name in ("gone", "moved", "written"):
        store.put_object(name, name.encode())
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    inos = {}
    for name in ("gone", "moved", "written"):
        inos[name], _ = await core.lookup(ROOT_INODE, name.encode())
    assert sorted(core.cache.bodies.kept) == ["gone", "moved", "written"]
    await core.unlink(ROOT_INODE, b"gone")
    await core.rename(ROOT_INODE, b"moved", ROOT_INODE, b"there", 0)
    assert sorted(core.cache.bodies.kept) == ["written"]
    fh = await core.open(inos["written"], os.O_RDWR)
    assert await core.write(fh, 0, b"WRIT") == 4
    assert await core.read(fh, 0, 100) == b"WRITten"  # the buffer, never the kept body
    await core.flush(fh)
    await core.release(fh)
    assert core.cache.bodies.kept == {}
    assert await cat(core, inos["written"]) == b"WRITten"
    assert store.body("written") == b"WRITten"


async def test_a_change_behind_the_mount_is_read_after_stat_ttl(time: FakeTime) -> None:
    store = MemStore()
    store.put_object("f", b"version 1")
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    ino, attr = await core.lookup(ROOT_INODE, b"f")
    store.put_object("f", b"version 2, longer")  # behind the mount's back
    time.advance(max(TTLS["stat_ttl"], bodies.LIFE) + 0.1)
    now = await core.getattr(ino)
    assert now.etag != attr.etag and now.size == len(b"version 2, longer")
    assert await cat(core, ino) == b"version 2, longer"


async def test_a_body_serves_only_the_version_pinned(time: FakeTime) -> None:
    """Within its life, a kept body serves the version the kernel was told of (as a read of
    that version would); once the attributes moved to another version, never."""
    store = MemStore()
    store.put_object("f", b"old")
    store.put_object("g", b"old")
    core = make_core(store, time=time, stat_ttl=1, dir_ttl=60, neg_ttl=60)
    await listdir(core, names_only=True)
    ino_f, _ = await core.lookup(ROOT_INODE, b"f")
    ino_g, _ = await core.lookup(ROOT_INODE, b"g")
    store.put_object("f", b"new")  # same size, behind the mount's back
    store.put_object("g", b"new")
    assert await cat(core, ino_f) == b"old"  # the attributes' version, from its body
    assert gets(store) == 0
    time.advance(1.5)  # past stat_ttl, within the body's life
    now = await core.getattr(ino_g)  # the listed ETag is g's old one: 412, then a HEAD
    assert now.etag == store.objects["g"].etag and "g" in core.cache.bodies.kept
    assert await cat(core, ino_g) == b"new"  # the old body never serves the new pin
    assert gets(store) == 1 and "g" not in core.cache.bodies.kept


async def test_a_symlinks_lookup_brings_its_target(time: FakeTime) -> None:
    store = MemStore()
    store.put_object("link", b"some/target", {"mode": str(stat.S_IFLNK | 0o777)})
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    ino, attr = await core.lookup(ROOT_INODE, b"link")
    assert attr.kind is Kind.SYMLINK
    assert await core.readlink(ino) == b"some/target"
    assert store.total() - store.count("list") == 1 == store.count("get_object")


async def test_nometa_sends_no_get_for_attributes(time: FakeTime) -> None:
    store = MemStore()
    store.put_object("a", b"x")
    core = make_core(store, time=time, nometa=True, **TTLS)
    await listdir(core)
    assert store.count("get_object") == 0 and store.count("head") == 0


async def test_a_missing_object_is_enoent(time: FakeTime) -> None:
    """Deleted between the listing and the lookup: the GET finds nothing."""
    store = MemStore()
    store.put_object("a", b"x")
    core = make_core(store, time=time, **TTLS)
    await listdir(core, names_only=True)
    store.remove_object("a")
    with pytest.raises(FsError) as caught:
        await core.lookup(ROOT_INODE, b"a")
    assert caught.value.errno == errno.ENOENT
    assert core.cache.bodies.used == 0
