"""Every bucket in one mount (``fs/buckets.py``): in-process over an account of ``MemStore``
buckets (``tests/support/account.py``), then mounted over moto (``s3fmfs s3:// MNT``)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fmfs.client import S3fmAuthConnection
from s3fmfs.client import errors as s3
from s3fmfs.config.options import MountOptions, parse_bucket
from s3fmfs.fs.attrs import Attr, Kind
from s3fmfs.fs.buckets import SLOT_BITS, BucketsCore, outer, split
from s3fmfs.fs.errno_map import to_errno
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.s3store import ObjectHeaders
from s3fmfs.fs.settings import FsSettings
from s3fmfs.service.all_buckets import describe_account_failure, open_all_buckets
from s3fmfs.service.mount import MountConfig
from tests.support.account import MemAccount
from tests.support.core import FakeTime, listdir, read_all
from tests.support.mount import daemon_pid, mount_log, mounted, s3fmfs_command
from tests.support.servers import S3Server, unique_bucket


def make_root(
    account: MemAccount, time: FakeTime, *, allow_mkdir: bool = False, **settings: Any
) -> BucketsCore:
    return BucketsCore(
        account,
        account.opener(**settings),
        FsSettings(**settings),
        allow_mkdir=allow_mkdir,
        timer=time.timer,
        clock=time.clock,
    )


async def errno_of(call: Any) -> int:
    with pytest.raises(Exception) as info:
        await call
    return to_errno(info.value)


async def walk(root: BucketsCore, path: str) -> tuple[int, Attr]:
    ino, attr = ROOT_INODE, await root.getattr(ROOT_INODE)
    for part in [p for p in path.split("/") if p]:
        ino, attr = await root.lookup(ino, part.encode())
    return ino, attr


async def write(root: BucketsCore, path: str, data: bytes) -> int:
    parent, _, name = path.rpartition("/")
    parent_ino = (await walk(root, parent))[0]
    fh, ino, _ = await root.create(parent_ino, name.encode(), 0o644, os.O_WRONLY, 0, 0)
    try:
        await root.write(fh, 0, data)
        await root.flush(fh)
    finally:
        await root.release(fh)
    return ino


@pytest.fixture
def account(fake_time: FakeTime) -> MemAccount:
    account = MemAccount(fake_time)
    account.add("alpha")
    account.add("beta")
    return account


def test_source_s3_alone_means_every_bucket() -> None:
    assert parse_bucket("s3://") == ("", "")
    assert parse_bucket("s3:") == ("", "")
    assert parse_bucket("s3://b/p") == ("b", "p/")


async def test_top_level_lists_buckets_without_opening_them(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time)
    top = await listdir(root, names_only=True)  # type: ignore[arg-type]
    assert sorted(top) == ["alpha", "beta"]
    assert all(attr.kind is Kind.DIR for _, attr in top.values())
    assert account.calls["open"] == 0  # a listing opens no bucket
    assert (await root.getattr(ROOT_INODE)).mode & 0o777 == 0o555  # no bucket_mkdir


async def test_files_land_in_their_bucket_with_unique_inodes(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time)
    a = await write(root, "alpha/f", b"in alpha")
    b = await write(root, "beta/f", b"in beta")
    assert account.buckets["alpha"].objects["f"].data == b"in alpha"
    assert account.buckets["beta"].objects["f"].data == b"in beta"
    assert split(a)[1] == split(b)[1]  # the same inner number in each bucket's core
    assert a != b and a >> SLOT_BITS != b >> SLOT_BITS
    assert await read_all(root, a) == b"in alpha"  # type: ignore[arg-type]
    assert account.calls["open"] == 2  # one core per bucket, opened once
    alpha, _ = await walk(root, "alpha")
    assert await root.lookup(alpha, b"..") == (ROOT_INODE, root.root_attr)
    inside = await listdir(root, alpha)  # type: ignore[arg-type]
    assert list(inside) == ["f"] and inside["f"][0] == a


async def test_xattrs_and_special_files_inside_a_bucket(
    account: MemAccount, fake_time: FakeTime
) -> None:
    """Extended attributes and mknod reach the bucket's core; the top level keeps none."""
    root = make_root(account, fake_time)
    ino = await write(root, "alpha/f", b"x")
    await root.setxattr(ino, b"user.colour", b"blue")
    assert await root.getxattr(ino, b"user.colour") == b"blue"
    assert b"user.colour" in await root.listxattr(ino)
    assert account.buckets["alpha"].objects["f"].metadata.get("colour") == "blue"
    await root.removexattr(ino, b"user.colour")
    assert await errno_of(root.getxattr(ino, b"user.colour")) == errno.ENODATA
    assert await root.listxattr(ROOT_INODE) == []
    assert await errno_of(root.getxattr(ROOT_INODE, b"user.x")) == errno.ENODATA
    assert await errno_of(root.setxattr(ROOT_INODE, b"user.x", b"1")) == errno.ENOTSUP
    alpha, _ = await walk(root, "alpha")
    fifo, attr = await root.mknod(alpha, b"pipe", stat.S_IFIFO | 0o600, 0, 0)
    assert attr.kind is Kind.FIFO and fifo >> SLOT_BITS == alpha >> SLOT_BITS
    dev, attr = await root.mknod(alpha, b"dev", stat.S_IFCHR | 0o600, 0, 0, os.makedev(1, 3))
    assert attr.rdev == os.makedev(1, 3) and dev != fifo


async def test_a_bucket_is_opened_once_runs_in_the_background_and_forgets_outer_inodes(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time)
    forgotten: list[int] = []
    root.forget_kernel_attrs = forgotten.append
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run_background)
        found: list[int] = []

        async def look() -> None:
            found.append((await root.lookup(ROOT_INODE, b"alpha"))[0])

        async with trio.open_nursery() as lookups:
            for _ in range(5):
                lookups.start_soon(look)
        assert account.calls["open"] == 1 and len(set(found)) == 1
        (_, core), *_ = root.cores()
        assert core.nursery is not None  # read-ahead, streamed parts, housekeeping
        assert core.forget_kernel_attrs is not None
        core.forget_kernel_attrs(7)
        assert forgotten == [outer(split(found[0])[0], 7)]
        nursery.cancel_scope.cancel()
    assert root.nursery is None


async def test_top_level_is_read_only_without_bucket_mkdir(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time)
    assert await errno_of(root.mkdir(ROOT_INODE, b"gamma", 0o755, 0, 0)) == errno.EACCES
    assert await errno_of(root.rmdir(ROOT_INODE, b"beta")) == errno.EACCES
    assert "gamma" not in account.buckets and "beta" in account.buckets
    create = root.create(ROOT_INODE, b"file", 0o644, os.O_WRONLY, 0, 0)
    assert await errno_of(create) == errno.EPERM
    assert await errno_of(root.symlink(ROOT_INODE, b"l", b"alpha", 0, 0)) == errno.EPERM
    assert await errno_of(root.unlink(ROOT_INODE, b"alpha")) == errno.EPERM
    alpha, _ = await walk(root, "alpha")
    rename = root.rename(ROOT_INODE, b"alpha", ROOT_INODE, b"delta")
    assert await errno_of(rename) == errno.EPERM
    await write(root, "alpha/x", b"x")
    beta, _ = await walk(root, "beta")
    assert await errno_of(root.rename(alpha, b"x", beta, b"x")) == errno.EXDEV
    ro = make_root(account, fake_time, allow_mkdir=True, ro=True)
    assert await errno_of(ro.mkdir(ROOT_INODE, b"gamma", 0o755, 0, 0)) == errno.EROFS


async def test_bucket_mkdir_creates_and_deletes_buckets(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time, allow_mkdir=True)
    assert (await root.getattr(ROOT_INODE)).mode & 0o777 == 0o755
    ino, attr = await root.mkdir(ROOT_INODE, b"gamma", 0o755, 0, 0)
    assert attr.kind is Kind.DIR and "gamma" in account.buckets
    await write(root, "gamma/f", b"new")
    assert account.buckets["gamma"].objects["f"].data == b"new"
    assert await errno_of(root.mkdir(ROOT_INODE, b"gamma", 0o755, 0, 0)) == errno.EEXIST
    assert await errno_of(root.mkdir(ROOT_INODE, b"Bad_Name", 0o755, 0, 0)) == errno.EINVAL
    refused = root.mkdir(ROOT_INODE, b"xn--reserved", 0o755, 0, 0)  # S3's InvalidBucketName
    assert await errno_of(refused) == errno.EINVAL and account.calls["create_bucket"] == 2
    assert await errno_of(root.rmdir(ROOT_INODE, b"gamma")) == errno.ENOTEMPTY
    await root.unlink(ino, b"f")
    await root.rmdir(ROOT_INODE, b"gamma")
    assert "gamma" not in account.buckets
    assert await errno_of(root.lookup(ROOT_INODE, b"gamma")) == errno.ENOENT
    again, _ = await root.mkdir(ROOT_INODE, b"gamma", 0o755, 0, 0)
    assert again != ino  # a bucket made anew: a new slot, numbers never reused
    assert await errno_of(root.rmdir(ROOT_INODE, b"nosuch")) == errno.ENOENT


async def test_rmdir_refuses_a_bucket_with_files_not_uploaded(
    account: MemAccount, fake_time: FakeTime
) -> None:
    root = make_root(account, fake_time, allow_mkdir=True)
    beta, _ = await walk(root, "beta")
    fh, _, _ = await root.create(beta, b"pending", 0o644, os.O_WRONLY, 0, 0)
    try:
        await root.write(fh, 0, b"unsaved")
        assert await errno_of(root.rmdir(ROOT_INODE, b"beta")) == errno.ENOTEMPTY
        assert "beta" in account.buckets
        progress = root.upload_progress()
        assert [f.path for f in progress.files] == ["beta/pending"]
    finally:
        await root.release(fh)


async def test_bucket_list_is_cached_dir_ttl(account: MemAccount, fake_time: FakeTime) -> None:
    root = make_root(account, fake_time, dir_ttl=5.0)
    await listdir(root, names_only=True)  # type: ignore[arg-type]
    account.add("late")
    assert await errno_of(root.lookup(ROOT_INODE, b"late")) == errno.ENOENT
    assert account.calls["list_buckets"] == 1
    fake_time.advance(6)
    _, attr = await root.lookup(ROOT_INODE, b"late")
    assert attr.kind is Kind.DIR and account.calls["list_buckets"] == 2
    del account.buckets["beta"]  # deleted behind the mount's back
    fake_time.advance(6)
    assert "beta" not in await listdir(root, names_only=True)  # type: ignore[arg-type]


async def test_bucket_in_another_region_is_eio_with_a_line_naming_it(
    account: MemAccount, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(account, fake_time)
    moved = s3.PermanentRedirect(301, "PermanentRedirect", "elsewhere", region="eu-west-3")
    for op in ("head", "list"):
        account.buckets["beta"].fail(op, moved, times=10)
    beta, _ = await walk(root, "beta")
    with caplog.at_level(logging.WARNING, "s3fmfs.fs"):
        assert await errno_of(root.lookup(beta, b"f")) == errno.EIO
        assert await errno_of(root.lookup(beta, b"g")) == errno.EIO
    lines = [r.getMessage() for r in caplog.records if "'beta'" in r.getMessage()]
    assert len(lines) == 1 and "eu-west-3" in lines[0]


# -- mounted over moto ----------------------------------------------------------------------------


@pytest.mark.mounted
def test_mount_every_bucket(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    one, two = unique_bucket("all"), unique_bucket("all")
    for name in (one, two):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=one, Key="hello.txt", Body=b"hello from one")
    new = unique_bucket("new")
    with mounted(moto, "s3://", tmp_path=tmp_path) as mnt:
        assert {one, two} <= set(os.listdir(mnt))
        assert (mnt / one / "hello.txt").read_bytes() == b"hello from one"
        (mnt / two / "dir").mkdir()
        (mnt / two / "dir" / "w.txt").write_bytes(b"written in two")
        body = s3.get_object(Bucket=two, Key="dir/w.txt")["Body"].read()
        assert body == b"written in two"
        assert "Contents" not in s3.list_objects_v2(Bucket=one, Prefix="dir/")
        a, b = os.stat(mnt / one / "hello.txt"), os.stat(mnt / two / "dir" / "w.txt")
        assert a.st_ino != b.st_ino
        with pytest.raises(OSError) as refused:
            os.mkdir(mnt / new)
        assert refused.value.errno == errno.EACCES
        with pytest.raises(OSError) as refused:
            (mnt / "file-at-top").write_bytes(b"x")
        assert refused.value.errno == errno.EPERM
        # a rename from one bucket to another is EXDEV: mv copies then deletes
        subprocess.run(["mv", str(mnt / one / "hello.txt"), str(mnt / two)], check=True)
        assert s3.get_object(Bucket=two, Key="hello.txt")["Body"].read() == b"hello from one"
        assert "Contents" not in s3.list_objects_v2(Bucket=one, Prefix="hello")


@pytest.mark.mounted
def test_mount_every_bucket_with_bucket_mkdir(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    full = unique_bucket("full")
    s3.create_bucket(Bucket=full)
    s3.put_object(Bucket=full, Key="k", Body=b"v")
    new = unique_bucket("new")
    options = ["bucket_mkdir", "dir_ttl=1"]
    with mounted(moto, "s3://", tmp_path=tmp_path, options=options) as mnt:
        os.mkdir(mnt / new)
        s3.head_bucket(Bucket=new)  # created
        late = unique_bucket("late")
        assert new in os.listdir(mnt)  # the list is cached from here
        s3.create_bucket(Bucket=late)  # behind the mount's back: seen once dir_ttl has passed
        deadline = time.monotonic() + 5
        while late not in os.listdir(mnt):
            assert time.monotonic() < deadline, "a new bucket never showed up"
            time.sleep(0.2)
        assert os.listdir(mnt / late) == []
        with pytest.raises(OSError) as exists:
            os.mkdir(mnt / full)
        assert exists.value.errno == errno.EEXIST
        with pytest.raises(OSError) as bad:
            os.mkdir(mnt / "Not_A_Bucket")
        assert bad.value.errno == errno.EINVAL
        with pytest.raises(OSError) as full_one:
            os.rmdir(mnt / full)
        assert full_one.value.errno == errno.ENOTEMPTY
        os.rmdir(mnt / new)
        assert new not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert not (mnt / new).exists()


#: Writes its arguments' files (path, byte, size ...), says so, and keeps them open until stdin
#: closes: the daemon stops with them unsaved.
WRITER = """
import os, sys
args = sys.argv[1:]
fds = []
for path, byte, size in zip(args[0::3], args[1::3], args[2::3]):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, byte.encode() * int(size))
    fds.append(fd)
print("written", flush=True)
sys.stdin.read()
for fd in fds:
    try:
        os.close(fd)
    except OSError:
        pass
"""


@pytest.mark.mounted
def test_unmount_uploads_dirty_files_of_every_bucket(
    moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    one, two = unique_bucket("dirty"), unique_bucket("dirty")
    for name in (one, two):
        s3.create_bucket(Bucket=name)
    with mounted(moto, "s3://", tmp_path=tmp_path) as mnt:
        writer = subprocess.Popen(
            [
                *(sys.executable, "-c", WRITER),
                *(str(mnt / one / "a.bin"), "A", "100000"),
                *(str(mnt / two / "b.bin"), "B", "200000"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "written\n"
            status = subprocess.run(
                [*s3fmfs_command(), "status", str(mnt), "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            pending = json.loads(status.stdout)["uploads"]["pending"]
            assert sorted(f["path"] for f in pending) == sorted([f"{one}/a.bin", f"{two}/b.bin"])
            plain = subprocess.run(
                [*s3fmfs_command(), "status", str(mnt)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert "s3:// (every bucket)" in plain.stdout
            os.kill(daemon_pid(mnt), signal.SIGTERM)  # stops with both files open, unsaved
            deadline = time.monotonic() + 30
            while "uploaded 2 of 2" not in mount_log(mnt).read_text():  # before they close
                assert time.monotonic() < deadline, mount_log(mnt).read_text()[-3000:]
                time.sleep(0.1)
        finally:
            assert writer.stdin is not None
            writer.stdin.close()
            writer.wait(60)
    assert s3.get_object(Bucket=one, Key="a.bin")["Body"].read() == b"A" * 100_000
    assert s3.get_object(Bucket=two, Key="b.bin")["Body"].read() == b"B" * 200_000
    text = mount_log(mnt).read_text()
    assert "uploading 2 files" in text, text[-3000:]
    assert "uploaded 2 of 2 file(s)" in text, text[-3000:]


def test_account_failures_are_one_line_about_the_list() -> None:
    options = MountOptions(endpoint="http://127.0.0.1:9")
    config = MountConfig("", "", "/mnt", options, "AKID", "secret")
    denied = s3.AccessDenied(403, "AccessDenied", "no")
    line = describe_account_failure(denied, config)
    assert "ListBuckets" in line and "AKID" in line and "secret" not in line
    assert "\n" not in describe_account_failure(s3.S3ConnectError("refused"), config)


async def test_buckets_over_moto_through_the_service(
    conn: S3fmAuthConnection, s3: Any, tmp_path: Path
) -> None:
    """The service's opener and ``S3Account`` over the client: S3's answers as errno values."""
    one = unique_bucket("svc")
    s3.create_bucket(Bucket=one)
    s3.put_object(Bucket=one, Key="k", Body=b"v")
    options = MountOptions(cache_dir=str(tmp_path), bucket_mkdir=True, metacache=False)
    config = MountConfig("", "", str(tmp_path / "mnt"), options, "testing", "testing")
    new = unique_bucket("svc")
    async with open_all_buckets(config, conn, ObjectHeaders()) as root:
        bucket, _ = await root.lookup(ROOT_INODE, one.encode())
        ino, attr = await root.lookup(bucket, b"k")
        assert attr.size == 1 and split(ino)[0] == split(bucket)[0]
        await root.mkdir(ROOT_INODE, new.encode(), 0o755, 0, 0)
        s3.head_bucket(Bucket=new)
        assert await errno_of(root.mkdir(ROOT_INODE, one.encode(), 0o755, 0, 0)) == errno.EEXIST
        fake = unique_bucket("svc")
        s3.create_bucket(Bucket=fake)  # made behind the mount's back: the cache does not know
        create = root.mkdir(ROOT_INODE, fake.encode(), 0o755, 0, 0)
        assert await errno_of(create) == errno.EEXIST  # S3's BucketAlreadyOwnedByYou
        bad = root.mkdir(ROOT_INODE, b"Bad_Name", 0o755, 0, 0)
        assert await errno_of(bad) == errno.EINVAL
        assert await errno_of(root.rmdir(ROOT_INODE, one.encode())) == errno.ENOTEMPTY
        await root.rmdir(ROOT_INODE, new.encode())
        assert new not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert [name for name, _ in root.cores()] == [one, new]
