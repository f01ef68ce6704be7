"""Extended attributes through the core over an in-memory store (``s3fmfs.fs.xattrs``): where
each ``user.*`` name is kept (its header, or s3fs-fuse's ``x-amz-meta-xattr`` map), exact
values, errors, the 2 KB limit, no request for ``listxattr`` once stat knows the entry, files
with unsaved content, directories, and the read-only ``s3.*`` attributes."""

from __future__ import annotations

import base64
import errno
import os
import urllib.parse
from typing import Any

import httpx
import pytest

from s3fmfs.client import S3fmAuthConnection
from s3fmfs.fs import xattrs
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.s3store import S3Store
from tests.support.core import FakeTime, listdir, make_core, walk, write_file
from tests.support.memstore import MemStore
from tests.support.servers import unique_bucket
from tests.support.stores import CountingStore

TTLS: dict[str, Any] = {"stat_ttl": 60, "dir_ttl": 60, "neg_ttl": 60}


def requests(store: MemStore) -> int:
    return sum(store.calls.values())


async def errno_of(call: Any) -> int:
    with pytest.raises(FsError) as caught:
        await call
    return caught.value.errno


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def store() -> MemStore:
    return MemStore()


def core_of(store: MemStore, time: FakeTime, **options: Any) -> FsCore:
    return make_core(store, time=time, **TTLS, **options)


# -- names and values, pure ------------------------------------------------------------------------

VALUES = [
    b"blue",
    b"",
    b" padded ",
    b"two\nlines",
    b"h\xc3\xa9llo w\xc3\xb6rld",
    b"\x00\x01\xff binary",
    b"=?UTF-8?B?aGk=?=",
    b"=?binary?B?AA==?=",
    bytes(range(256)),
]


@pytest.mark.parametrize("value", VALUES)
def test_values_round_trip_through_header_safe_text(value: bytes) -> None:
    text = xattrs.encode_value(value)
    assert text.isascii() and text == text.strip()
    assert all(0x20 <= ord(c) < 0x7F for c in text)
    assert xattrs.decode_value(text) == value


def test_plain_values_are_stored_as_they_are() -> None:
    assert xattrs.encode_value(b"text/plain; v=1") == "text/plain; v=1"
    assert xattrs.encode_value("é".encode()) == "=?UTF-8?B?w6k=?="
    # what the client gives back after decoding that RFC 2047 word
    assert xattrs.decode_value("é") == "é".encode()


def test_s3fs_map_format_both_ways() -> None:
    # s3fs-fuse writes urlEncodePath('{"user.a":"<base64>",...}')
    raw = '{"user.Tag":"' + base64.b64encode(b"v1").decode() + '","system.x":"AAE="}'
    text = urllib.parse.quote(raw, safe="/")
    assert xattrs.parse_s3fs_map(text) == {"user.Tag": b"v1", "system.x": b"\x00\x01"}
    built = xattrs.build_s3fs_map({"user.Tag": b"v1", "system.x": b"\x00\x01"})
    assert "{" not in built and '"' not in built  # a header-safe value
    assert xattrs.parse_s3fs_map(built) == {"user.Tag": b"v1", "system.x": b"\x00\x01"}
    assert xattrs.parse_s3fs_map("not json") == {}
    assert xattrs.parse_s3fs_map('{"bad,"user.ok":"b2s="}') == {"user.ok": b"ok"}


# -- set, get, list, remove ------------------------------------------------------------------------


async def test_user_attribute_is_a_metadata_header_kept_by_a_copy(
    store: MemStore, time: FakeTime
) -> None:
    store.put_object("f.txt", b"payload", {"mode": "33188", "uid": "7", "other": "x"}, "text/x")
    core = core_of(store, time)
    ino, _ = await walk(core, "f.txt")
    before = requests(store)
    await core.setxattr(ino, b"user.color", b"blue")
    assert store.calls["copy"] == 1 and requests(store) - before == 2  # HEAD + copy
    obj = store.objects["f.txt"]
    assert obj.data == b"payload" and obj.content_type == "text/x"
    assert obj.metadata["color"] == "blue"
    assert obj.metadata["other"] == "x" and obj.metadata["uid"] == "7"
    assert obj.metadata["mode"] == "33188"
    assert await core.getxattr(ino, b"user.color") == b"blue"
    assert await core.listxattr(ino) == [b"user.color", b"user.other"]

    await core.removexattr(ino, b"user.color")
    assert "color" not in store.objects["f.txt"].metadata
    assert await errno_of(core.getxattr(ino, b"user.color")) == errno.ENODATA
    assert await errno_of(core.removexattr(ino, b"user.color")) == errno.ENODATA
    assert await core.listxattr(ino) == [b"user.other"]


async def test_values_and_names_read_back_exactly_after_a_remount(
    store: MemStore, time: FakeTime
) -> None:
    core = core_of(store, time)
    ino = await write_file(core, "f", b"data")
    wanted = {f"user.v{i}".encode(): v for i, v in enumerate(VALUES)}
    wanted[b"user.CamelCase"] = b"kept case"
    wanted["user.ünï cødé".encode()] = b"\xff"
    for name, value in wanted.items():
        await core.setxattr(ino, name, value)
    # the names S3 would lower-case live in s3fs's map, with their case
    assert "xattr" in store.objects["f"].metadata
    again = core_of(store, FakeTime())
    ino2, _ = await walk(again, "f")
    assert sorted(await again.listxattr(ino2)) == sorted(wanted)
    for name, value in wanted.items():
        assert await again.getxattr(ino2, name) == value


async def test_names_refused(store: MemStore, time: FakeTime) -> None:
    store.put_object("f", b"", {"mode": "33188"})
    core = core_of(store, time)
    ino, _ = await walk(core, "f")
    for name in (b"security.selinux", b"trusted.x", b"system.posix_acl_access", b"other.x"):
        assert await errno_of(core.getxattr(ino, name)) == errno.ENOTSUP
        assert await errno_of(core.setxattr(ino, name, b"1")) == errno.ENOTSUP
    for own in (b"user.mode", b"user.uid", b"user.gid", b"user.mtime", b"user.xattr"):
        assert await errno_of(core.setxattr(ino, own, b"1")) == errno.EPERM
        assert await errno_of(core.removexattr(ino, own)) == errno.EPERM
    assert await errno_of(core.getxattr(ino, b"user.mode")) == errno.ENODATA
    for bad in (b"user.", b"user.a,b", b'user.a"b', b"user.a:b", b"user.\xff"):
        assert await errno_of(core.setxattr(ino, bad, b"1")) == errno.EINVAL
    assert await errno_of(core.setxattr(ino, b"user." + b"x" * 300, b"1")) == errno.ERANGE
    assert await core.listxattr(ino) == []  # mode is never an attribute
    assert store.calls["copy"] == 0


async def test_past_two_kilobytes_of_metadata_is_e2big_without_a_copy(
    store: MemStore, time: FakeTime
) -> None:
    core = core_of(store, time)
    ino = await write_file(core, "f", b"x")
    await core.setxattr(ino, b"user.a", b"v" * 1800)
    assert await errno_of(core.setxattr(ino, b"user.b", b"v" * 300)) == errno.E2BIG
    assert await errno_of(core.setxattr(ino, b"user.a", b"v" * 2100)) == errno.E2BIG
    assert store.calls["copy"] == 1
    assert await core.listxattr(ino) == [b"user.a"]
    meta = store.objects["f"].metadata
    assert xattrs.meta_size(meta) <= xattrs.META_LIMIT


async def test_chmod_and_rename_keep_the_attributes(store: MemStore, time: FakeTime) -> None:
    core = core_of(store, time)
    ino = await write_file(core, "f", b"x")
    await core.setxattr(ino, b"user.k", b"v")
    await core.setattr(ino, mode=0o600)
    assert store.objects["f"].metadata["k"] == "v"
    await core.rename(ROOT_INODE, b"f", ROOT_INODE, b"g", 0)
    assert store.objects["g"].metadata["k"] == "v"
    again = core_of(store, FakeTime())
    ino2, _ = await walk(again, "g")
    assert await again.getxattr(ino2, b"user.k") == b"v"


# -- no request once the attributes are known ------------------------------------------------------


async def test_listxattr_after_stat_sends_nothing(store: MemStore, time: FakeTime) -> None:
    store.put_object("d/", b"", {"mode": str(0o40755), "tag": "dir"}, "application/x-directory")
    for i in range(5):
        store.put_object(f"d/f{i}", b"x" * 100_000, {"mode": "33188", "n": str(i)})
    core = core_of(store, time)
    entries = await listdir(core, (await walk(core, "d"))[0])  # ls -l: readdir + stats
    dino, _ = await walk(core, "d")
    before = requests(store)
    for i in range(5):
        ino = entries[f"f{i}"][0]
        assert await core.listxattr(ino) == [b"user.n"]
        assert await core.getxattr(ino, b"user.n") == str(i).encode()
    assert await core.listxattr(dino) == [b"user.tag"]  # a directory marker too
    assert await core.getxattr(dino, b"user.tag") == b"dir"
    assert requests(store) == before


async def test_listxattr_of_a_listed_entry_costs_one_head(store: MemStore, time: FakeTime) -> None:
    store.put_object("big", b"x" * 100_000, {"mode": "33188", "n": "1"})
    core = core_of(store, time)
    entries = await listdir(core, names_only=True)  # readdir only: listing attributes
    ino = entries["big"][0]
    before = requests(store)
    assert await core.listxattr(ino) == [b"user.n"]
    assert requests(store) - before == 1 and store.calls["head"] >= 1


# -- files with unsaved content --------------------------------------------------------------------


async def test_attributes_of_an_unsaved_file_ride_on_its_upload(
    store: MemStore, time: FakeTime
) -> None:
    core = core_of(store, time)
    fh, ino, _ = await core.create(ROOT_INODE, b"new", 0o644, os.O_WRONLY, 0, 0)
    try:
        await core.write(fh, 0, b"hello")
        before = requests(store)
        await core.setxattr(ino, b"user.origin", b"here")
        await core.setxattr(ino, b"user.Gone", b"soon")
        await core.removexattr(ino, b"user.Gone")
        assert await core.listxattr(ino) == [b"user.origin"]
        assert requests(store) == before  # nothing sent: no object yet
        assert await errno_of(core.getxattr(ino, b"s3.etag")) == errno.ENODATA
        await core.flush(fh)
    finally:
        await core.release(fh)
    assert store.calls["copy"] == 0
    obj = store.objects["new"]
    assert obj.data == b"hello" and obj.metadata["origin"] == "here"
    assert "xattr" not in obj.metadata
    before = requests(store)
    assert await core.listxattr(ino) == [b"user.origin"]
    assert requests(store) == before


async def test_an_open_file_written_after_a_change_keeps_it(
    store: MemStore, time: FakeTime
) -> None:
    store.put_object("f", b"old", {"mode": "33188", "keep": "1"})
    core = core_of(store, time)
    ino, _ = await walk(core, "f")
    fh = await core.open(ino, os.O_RDWR)
    try:
        await core.write(fh, 0, b"O")  # buffered, dirty
        await core.setxattr(ino, b"user.late", b"2")
        await core.flush(fh)
        await core.write(fh, 3, b"!")
        await core.setattr(ino, mode=0o600)
        await core.flush(fh)
    finally:
        await core.release(fh)
    obj = store.objects["f"]
    assert obj.data == b"Old!"
    assert obj.metadata["keep"] == "1" and obj.metadata["late"] == "2"


# -- directories and the root ----------------------------------------------------------------------


async def test_directories_keep_them_on_their_marker(store: MemStore, time: FakeTime) -> None:
    store.put_object("implicit/file", b"x")
    core = core_of(store, time)
    dino, _ = await core.mkdir(ROOT_INODE, b"made", 0o755, 0, 0)
    await core.setxattr(dino, b"user.k", b"1")
    assert store.objects["made/"].metadata["k"] == "1"
    iino, _ = await walk(core, "implicit")
    assert await core.listxattr(iino) == []
    await core.setxattr(iino, b"user.k", b"2")  # the marker is made, with the metadata
    assert store.objects["implicit/"].metadata["k"] == "2"
    again = core_of(store, FakeTime())
    assert await again.getxattr((await walk(again, "implicit"))[0], b"user.k") == b"2"
    assert await again.getxattr((await walk(again, "made"))[0], b"user.k") == b"1"


async def test_bucket_root_has_none_and_keeps_none(store: MemStore, time: FakeTime) -> None:
    core = core_of(store, time)
    assert await core.listxattr(ROOT_INODE) == []
    assert await errno_of(core.setxattr(ROOT_INODE, b"user.k", b"1")) == errno.ENOTSUP
    assert await errno_of(core.getxattr(ROOT_INODE, b"s3.etag")) == errno.ENODATA


async def test_prefix_root_keeps_them_on_its_marker(store: MemStore, time: FakeTime) -> None:
    store.put_object("sub/f", b"x")
    core = make_core(store, time=time, prefix="sub/", **TTLS)
    await core.setxattr(ROOT_INODE, b"user.k", b"1")
    assert store.objects["sub/"].metadata["k"] == "1"
    assert await core.listxattr(ROOT_INODE) == [b"user.k"]


# -- s3fs-fuse's use_xattr map ---------------------------------------------------------------------


async def test_s3fs_xattr_map_is_read_and_kept(store: MemStore, time: FakeTime) -> None:
    raw = (
        '{"user.from_s3fs":"'
        + base64.b64encode(b"s3fs \x00 value").decode()
        + '","system.posix_acl_access":"AgAAAA==","user.shared":"b2xk","user.mode":"MQ=="}'
    )
    store.put_object("f", b"x", {"mode": "33188", "xattr": urllib.parse.quote(raw, safe="/")})
    core = core_of(store, time)
    ino, _ = await walk(core, "f")
    assert await core.listxattr(ino) == [b"user.from_s3fs", b"user.shared"]
    assert await core.getxattr(ino, b"user.from_s3fs") == b"s3fs \x00 value"
    # a name set here goes to its header, and leaves the map; the rest of the map stays
    await core.setxattr(ino, b"user.shared", b"new")
    meta = store.objects["f"].metadata
    assert meta["shared"] == "new"
    assert await errno_of(core.getxattr(ino, b"user.mode")) == errno.ENODATA  # hidden, kept
    acl = b"\x02\0\0\0"
    kept = xattrs.parse_s3fs_map(meta["xattr"])
    assert kept == {
        "user.from_s3fs": b"s3fs \x00 value",
        "system.posix_acl_access": acl,
        "user.mode": b"1",
    }
    await core.removexattr(ino, b"user.from_s3fs")
    assert xattrs.parse_s3fs_map(store.objects["f"].metadata["xattr"]) == {
        "system.posix_acl_access": acl,
        "user.mode": b"1",
    }
    assert await core.listxattr(ino) == [b"user.shared"]


# -- s3.* ------------------------------------------------------------------------------------------


async def test_virtual_attributes_are_readable_never_listed_nor_set(
    store: MemStore, time: FakeTime
) -> None:
    etag = store.put_object("f", b"bytes", {"mode": "33188"}, "text/plain")
    core = core_of(store, time)
    ino, _ = await walk(core, "f")
    assert await core.getxattr(ino, b"s3.etag") == etag.strip('"').encode()
    assert await core.getxattr(ino, b"s3.storage-class") == b"STANDARD"
    assert await core.getxattr(ino, b"s3.content-type") == b"text/plain"
    url = await core.getxattr(ino, b"s3.url")
    assert url.startswith(b"memory:///f?expires=") and str(xattrs.URL_EXPIRES).encode() in url
    assert await errno_of(core.getxattr(ino, b"s3.version-id")) == errno.ENODATA
    assert await errno_of(core.getxattr(ino, b"s3.nothing")) == errno.ENODATA
    for name in xattrs.VIRTUAL:
        assert await errno_of(core.setxattr(ino, name.encode(), b"x")) == errno.EPERM
        assert await errno_of(core.removexattr(ino, name.encode())) == errno.EPERM
    assert await core.listxattr(ino) == []
    dino, _ = await core.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
    assert await errno_of(core.getxattr(dino, b"s3.url")) == errno.ENODATA


# -- over moto, through the real store, counted ----------------------------------------------------


async def test_over_moto_stat_then_listxattr_sends_nothing(
    conn: S3fmAuthConnection, s3: Any
) -> None:
    bucket = unique_bucket("xattr")
    await conn.create_bucket(bucket)
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"d/f{i}", Body=b"x" * 50_000, Metadata={"n": str(i)})
    s3.put_object(Bucket=bucket, Key="d/rr", Body=b"rr", StorageClass="REDUCED_REDUNDANCY")
    store = CountingStore(S3Store(conn, bucket))
    core = make_core(store, **TTLS)
    dino, _ = await walk(core, "d")
    entries = await listdir(core, dino)  # ls -l
    before = store.total()
    for i in range(4):
        ino = entries[f"f{i}"][0]
        assert await core.listxattr(ino) == [b"user.n"]
        assert await core.getxattr(ino, b"user.n") == str(i).encode()
        assert await core.getxattr(ino, b"s3.etag")
    assert store.total() == before
    rr = entries["rr"][0]
    heads = store.count("head")
    assert await core.getxattr(rr, b"s3.storage-class") == b"REDUCED_REDUNDANCY"
    assert store.count("head") == heads + 1  # a fact only a HEAD tells
    url = (await core.getxattr(rr, b"s3.url")).decode()
    assert url.startswith(f"http://{conn.server}:{conn.port}/{bucket}/d/rr?")
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(url)).content == b"rr"
    # set through the real store: one HEAD, one copy, the bytes and other metadata kept
    ino = entries["f0"][0]
    heads, copies = store.count("head"), store.count("copy")
    await core.setxattr(ino, "user.ünï".encode(), b"\x00\x01")
    await core.setxattr(ino, b"user.text", "é".encode())
    assert (store.count("head") - heads, store.count("copy") - copies) == (2, 2)
    head = s3.head_object(Bucket=bucket, Key="d/f0")
    assert head["Metadata"]["n"] == "0" and head["ContentLength"] == 50_000
    again = make_core(CountingStore(S3Store(conn, bucket)), **TTLS)
    ino2, _ = await walk(again, "d/f0")
    assert await again.getxattr(ino2, "user.ünï".encode()) == b"\x00\x01"
    assert await again.getxattr(ino2, b"user.text") == "é".encode()


async def test_with_nometa_attributes_are_asked_for(store: MemStore, time: FakeTime) -> None:
    """``nometa`` stats without HEADs: the metadata is unknown, so listxattr asks."""
    store.put_object("f", b"x", {"k": "v"})
    core = core_of(store, time, nometa=True)
    ino, _ = await walk(core, "f")
    heads = store.calls["head"]
    assert await core.listxattr(ino) == [b"user.k"]
    assert store.calls["head"] == heads + 1
