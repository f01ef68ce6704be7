"""Requests sent ahead (``s3fmfs.fs.prefetch``), counted on an in-memory store through the core:
readdir sends no HEAD, the first getattr of a folder HEADs the entries after it (bounded, one HEAD
per path; a GET instead for a small listed object), a walked tree's subdirectories are listed
ahead (bounded, not with dir_ttl 0)."""

from __future__ import annotations

import errno
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from s3fmfs.fs import cache, prefetch
from s3fmfs.fs.attrs import Kind
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.core import FakeTime, listdir, make_core
from tests.support.memstore import MemStore

OFF: dict[str, Any] = {"stat_ttl": 0, "dir_ttl": 0, "neg_ttl": 0}


@asynccontextmanager
async def running(
    store: MemStore, time: FakeTime | None = None, **settings: Any
) -> AsyncIterator[FsCore]:
    """A core with its background nursery (requests ahead run there), stopped after."""
    core = make_core(store, time=time or FakeTime(), **settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run_background)
        try:
            yield core
        finally:
            nursery.cancel_scope.cancel()


def asked(store: MemStore) -> int:
    """Requests for objects' attributes: HEADs, and GETs of small listed objects in their
    place (``bodies``; not with the caches off: no listed size to tell small ones)."""
    return store.count("head") + store.count("get_object")


def folder(store: MemStore, n: int, prefix: str = "") -> list[str]:
    names = [f"{prefix}f{i:05d}" for i in range(n)]
    for name in names:
        store.put_object(name, b"x")
    return names


async def test_names_only_readdir_costs_the_listing_with_every_cache_off() -> None:
    store = MemStore(page_size=100)
    names = folder(store, 250)
    async with running(store, **OFF) as core:
        entries = await listdir(core, names_only=True)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(entries) == names
        assert store.count("list") == 3 and asked(store) == 0
        # a listing's attributes: the kernel is told to ask again before using them
        _, attr = entries[names[0]]
        assert not attr.complete and core.timeouts(attr) == (0.0, 0.0)


async def test_ls_l_heads_each_object_once_and_shows_modes_and_symlinks() -> None:
    store = MemStore()
    names = folder(store, 40)
    store.put_object("f00007", b"x", {"mode": str(0o100600), "uid": "7"})
    store.put_object("link", b"f00001", {"mode": str(stat.S_IFLNK | 0o777)})
    store.put_object("d/inner", b"")
    async with running(store, **OFF) as core:
        entries = await listdir(core)  # readdir, then what the kernel asks again
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(entries) == sorted([*names, "link", "d"])
        # each object once; d, every cache off: a probe's three (file, marker, _$folder$)
        assert asked(store) <= len(names) + 1 + 3
        assert entries["f00007"][1].mode == 0o100600 and entries["f00007"][1].uid == 7
        assert entries["f00008"][1].mode == 0o100644
        assert entries["link"][1].kind is Kind.SYMLINK
        assert await core.readlink(entries["link"][0]) == b"f00001"
        assert entries["d"][1].kind is Kind.DIR
        # a getattr right after (the kernel's, with attr_timeout 0): the answer HEADed ahead
        heads = asked(store)
        assert (await core.getattr(entries["f00003"][0])).size == 1
        assert asked(store) == heads


async def test_first_getattr_heads_the_entries_after_it_in_order() -> None:
    store = MemStore()
    names = folder(store, 30)
    async with running(store, stat_ttl=5, dir_ttl=5) as core:
        await listdir(core, names_only=True)
        assert asked(store) == 0
        await core.lookup(ROOT_INODE, names[10].encode())
        await trio.testing.wait_all_tasks_blocked()
        assert asked(store) == 20  # f10 and the 19 after it, not those before
        for name in names[10:]:
            attr = core.cache.attr(name)
            assert attr is not None and attr.complete
        before = core.cache.attr(names[9])
        assert before is not None and not before.complete
        for name in names[10:]:  # ls -l / stat in order: all answered ahead
            await core.lookup(ROOT_INODE, name.encode())
        assert asked(store) == 20


async def test_heads_ahead_are_bounded_per_folder() -> None:
    store = MemStore()
    names = folder(store, prefetch.AHEAD + 300)
    async with running(store, **OFF) as core:
        await listdir(core, names_only=True)
        await core.lookup(ROOT_INODE, names[0].encode())
        await trio.testing.wait_all_tasks_blocked()
        assert asked(store) == 1 + prefetch.AHEAD  # not the whole folder
        # the walk moving on extends the window by as much
        await core.lookup(ROOT_INODE, names[100].encode())
        await trio.testing.wait_all_tasks_blocked()
        assert asked(store) == 1 + prefetch.AHEAD + 100


async def test_a_getattr_waits_for_the_head_in_flight_instead_of_a_second() -> None:
    store = MemStore()
    folder(store, 3)
    store.delay("head", 0.5)
    async with running(store, **OFF) as core:
        found: list[Any] = []

        async def look(name: bytes) -> None:
            found.append(await core.lookup(ROOT_INODE, name))

        await listdir(core, names_only=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(look, b"f00000")  # starts f00001 and f00002 ahead
            await trio.sleep(0.1)
            nursery.start_soon(look, b"f00001")
            nursery.start_soon(look, b"f00001")
        assert asked(store) == 3
        assert len(found) == 3 and all(attr.complete for _, attr in found)


async def test_without_a_nursery_nothing_is_sent_ahead() -> None:
    store = MemStore()
    names = folder(store, 10)
    store.put_object("d/x", b"")
    core = make_core(store, time=FakeTime())
    await listdir(core, names_only=True)
    await core.lookup(ROOT_INODE, names[0].encode())
    assert asked(store) == 1 and store.count("list") == 1


async def test_subdirectories_are_listed_ahead_bounded() -> None:
    store = MemStore()
    subdirs = [f"d{i:03d}" for i in range(prefetch.LIST_AHEAD + 10)]
    for name in subdirs:
        store.put_object(f"{name}/a", b"")
        store.put_object(f"{name}/b", b"")
    async with running(store) as core:
        await listdir(core, names_only=True)
        await trio.testing.wait_all_tasks_blocked()
        assert store.count("list") == 1 + prefetch.LIST_AHEAD
        for name in subdirs[: prefetch.LIST_AHEAD]:
            assert core.cache.listing(name) is not None
        # the walk goes on into a subdirectory: its listing is there, no request
        ino, _ = await core.lookup(ROOT_INODE, subdirs[0].encode())
        lists = store.count("list")
        assert sorted(await listdir(core, ino, names_only=True)) == ["a", "b"]
        assert store.count("list") == lists


async def test_no_listing_ahead_with_dir_ttl_0_or_past_the_budget() -> None:
    store = MemStore(page_size=100)
    for i in range(3):
        store.put_object(f"d{i}/x", b"")
    async with running(store, dir_ttl=0) as core:
        await listdir(core, names_only=True)
        await trio.testing.wait_all_tasks_blocked()
        assert store.count("list") == 1
    big = MemStore(page_size=1000)
    for i in range(prefetch.LIST_MAX_ENTRIES + 1500):
        big.put_object(f"big/f{i:06d}", b"")
    async with running(big) as core:
        await listdir(core, names_only=True)
        await trio.testing.wait_all_tasks_blocked()
        assert core.cache.listing("big") is None  # too big to keep ahead
        # stops once a truncated page brings it to the budget: no page past it
        assert big.count("list") == 1 + prefetch.LIST_MAX_ENTRIES // 1000


async def test_an_answer_headed_ahead_is_dropped_by_the_mounts_own_change() -> None:
    store = MemStore()
    names = folder(store, 5)
    async with running(store, **OFF) as core:
        await listdir(core, names_only=True)
        await core.lookup(ROOT_INODE, names[0].encode())
        await trio.testing.wait_all_tasks_blocked()
        assert core.cache.ahead_attr(names[1]) is not None
        await core.unlink(ROOT_INODE, names[1].encode())
        assert core.cache.ahead_attr(names[1]) is None
        with pytest.raises(FsError) as caught:
            await core.lookup(ROOT_INODE, names[1].encode())
        assert caught.value.errno == errno.ENOENT


class FakeLimiter:
    """A limiter always full (``HeadPace`` judges only windows where HEADs waited)."""

    def __init__(self, full: bool = True) -> None:
        self.total_tokens = 0
        self.full = full

    @property
    def borrowed_tokens(self) -> int:
        return self.total_tokens if self.full else 1


def paced(rate_of: Any, heads: int, full: bool = True) -> tuple[prefetch.HeadPace, list[int]]:
    """Answer ``heads`` HEADs at ``rate_of(size)`` per second; the sizes seen."""
    clock = FakeTime()
    limiter = FakeLimiter(full)
    pace = prefetch.HeadPace(limiter, 16, 64, clock.timer)  # type: ignore[arg-type]
    sizes = []
    for _ in range(heads):
        size = limiter.total_tokens
        clock.advance(1 / rate_of(size))
        pace.done()
        sizes.append(size)
    return pace, sizes


def test_head_pace_grows_for_a_far_server_and_stays_low_for_a_near_one() -> None:
    far, sizes = paced(lambda size: size * 50.0, 5_000)  # each HEAD a round trip away
    assert far.base == 64 and sizes[-1] == 64
    near, sizes = paced(lambda size: 600.0 if size <= 16 else 450.0, 20_000)  # CPU-bound
    assert near.base == 16
    assert sum(1 for s in sizes if s > 16) < len(sizes) / 4  # tries more, now and then
    idle, sizes = paced(lambda size: size * 50.0, 5_000, full=False)  # few HEADs wanted
    assert idle.base == 16 and set(sizes) == {16}


async def test_an_answer_ahead_serves_its_first_use_then_a_short_grace() -> None:
    store = MemStore()
    names = folder(store, 3)
    time = FakeTime()
    async with running(store, time, **OFF) as core:

        async def size(name: str) -> int:
            return (await core.lookup(ROOT_INODE, name.encode()))[1].size

        await listdir(core, names_only=True)
        await core.lookup(ROOT_INODE, names[0].encode())  # f00001 and f00002 HEADed ahead
        await trio.testing.wait_all_tasks_blocked()
        assert asked(store) == 3
        store.put_object(names[1], b"changed")  # behind the mount's back
        store.put_object(names[2], b"changed")
        time.advance(cache.AHEAD_FRESH - 1)
        assert await size(names[1]) == 1  # the answer ahead, at its first use
        time.advance(cache.AHEAD_GRACE / 2)
        assert await size(names[1]) == 1  # the kernel's getattr right after
        assert asked(store) == 3
        time.advance(cache.AHEAD_GRACE)
        assert await size(names[1]) == 7  # no longer: HEADed again
        time.advance(2)  # f00002's answer waited too long for its first use
        assert await size(names[2]) == 7
        assert asked(store) == 5
