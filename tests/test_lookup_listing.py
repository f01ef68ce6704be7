"""Lookups of new names answered by one listing of their folder (``Namespace.folder_listing``),
counted on an in-memory store: names being created in a folder whose cached listing expired
(an untar that outlasts ``dir_ttl``) cost one listing, not a four-request probe each; a name
polled alone is still probed (objects made behind the mount stay visible at once)."""

from __future__ import annotations

import errno
import os

import pytest

from s3fmfs.fs import namespace
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.core import FakeTime, make_core
from tests.support.memstore import MemStore


async def missing(core: object, parent: int, name: bytes) -> None:
    with pytest.raises(FsError) as caught:
        await core.lookup(parent, name)  # type: ignore[attr-defined]
    assert caught.value.errno == errno.ENOENT


async def test_new_names_in_a_folder_cost_one_listing_after_a_few_probes() -> None:
    store = MemStore()
    store.put_object("d/old", b"x")
    time = FakeTime()
    core = make_core(store, time=time)
    d, _ = await core.lookup(ROOT_INODE, b"d")
    time.advance(10)  # past every TTL: nothing of d is cached
    base = store.calls.copy()
    for i in range(namespace.LIST_AFTER_MISSES):
        await missing(core, d, f"new{i}".encode())
    probes = store.calls - base
    assert probes["list"] == namespace.LIST_AFTER_MISSES  # each probe lists under name/
    assert probes["head"] == 3 * namespace.LIST_AFTER_MISSES
    base = store.calls.copy()
    for i in range(20):  # the next names: one listing of d answers them all
        name = f"more{i}".encode()
        await missing(core, d, name)
        fh, _, _ = await core.create(d, name, 0o644, os.O_WRONLY, 0, 0)
        await core.release(fh)
    spent = store.calls - base
    assert spent["list"] == 1 and spent["head"] == 0, spent
    assert spent["put"] == 20
    # a name in the listing is one request (a GET instead of a HEAD: it is small), not a probe
    base = store.calls.copy()
    _, attr = await core.lookup(d, b"old")
    assert attr.size == 1 and (store.calls - base) == {"get_object": 1}


async def test_names_polled_are_probed_and_objects_made_behind_the_mount_show_at_once() -> None:
    store = MemStore()
    store.put_object("d/x", b"")
    time = FakeTime()
    core = make_core(store, time=time)
    d, _ = await core.lookup(ROOT_INODE, b"d")
    lists = store.calls["list"]
    assert namespace.LIST_AFTER_MISSES > 2
    for i in range(2):  # two names polled: probes, no listing
        await missing(core, d, f"flag{i}".encode())
        await missing(core, d, f"flag{i}".encode())  # (the negative cache: no request)
    assert store.calls["list"] - lists == 2  # one per probe
    store.put_object("d/other", b"made elsewhere")  # behind the mount's back
    _, attr = await core.lookup(d, b"other")  # no listing of d hides it
    assert attr.size == len(b"made elsewhere")


async def test_a_big_folder_is_not_listed_for_lookups() -> None:
    store = MemStore(page_size=1000)
    for i in range(1500):
        store.put_object(f"big/f{i:05d}", b"")
    time = FakeTime()
    core = make_core(store, time=time)
    big, _ = await core.lookup(ROOT_INODE, b"big")
    for i in range(namespace.LIST_AFTER_MISSES):
        await missing(core, big, f"n{i}".encode())
    base = store.calls.copy()
    await missing(core, big, b"n-next")  # lists one page, too big: probes
    await missing(core, big, b"n-after")  # remembered as big: probes only
    spent = store.calls - base
    assert spent["list"] == 1 + 2 and spent["head"] == 6, spent  # one page + two probes
