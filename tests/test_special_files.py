"""Special files (issue 14): FIFOs, sockets, character and block devices.

In-process (the core over moto): mknod of each type stores an empty object whose metadata is
s3fs-fuse's (``mode`` in decimal with the type bits) plus ``rdev`` for a device; a new core
(a remount) finds the same type, permissions, owner and device number, from a lookup and from
a listing; chmod, chown, utimens and rename keep the type and the number; unlink deletes it.
Mounted: real ``mkfifo``, ``mknod`` and a Python socket's ``bind``, kept across a remount, and
the FIFO works (the kernel serves it). ``tests/test_s3fs_interop.py``'s pair of mounts checks
that s3fs-fuse shows what s3fmfs made and the other way round.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from s3fmfs.fs.attrs import Defaults, Kind, attr_from_object, metadata_of
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.core import listdir
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket
from tests.test_fs_core import Env, expect_errno
from tests.test_fs_core import env as env  # the fixture, used by name
from tests.test_s3fs_interop import S3FS, Pair, eventually
from tests.test_s3fs_interop import pair as pair  # the fixture, used by name

DEFAULTS = Defaults(uid=1, gid=2, file_mode=0o640, dir_mode=0o750)


def _attr(mode: int, **more: str) -> Any:
    return attr_from_object(
        is_dir=False,
        size=0,
        last_modified_ns=10**18,
        etag='"e"',
        metadata={"mode": str(mode), **more},
        defaults=DEFAULTS,
    )


# -- attributes ↔ metadata -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_bits", "kind"),
    [
        (stat.S_IFIFO, Kind.FIFO),
        (stat.S_IFSOCK, Kind.SOCKET),
        (stat.S_IFCHR, Kind.CHAR),
        (stat.S_IFBLK, Kind.BLOCK),
        (stat.S_IFREG, Kind.FILE),
        (stat.S_IFLNK, Kind.SYMLINK),
    ],
)
def test_kind_from_the_mode(type_bits: int, kind: Kind) -> None:
    attr = _attr(type_bits | 0o4751, rdev="2049")
    assert attr.kind is kind
    assert attr.mode == type_bits | 0o4751
    assert attr.rdev == (2049 if kind.device else 0)  # only devices have a number
    meta = metadata_of(attr)
    assert meta["mode"] == str(type_bits | 0o4751)
    assert meta.get("rdev") == ("2049" if kind.device else None)
    # chmod keeps the type, and a device its number
    changed = attr.with_changes(mode=0o600)
    assert changed.mode == type_bits | 0o600 and changed.rdev == attr.rdev


def test_device_numbers_missing_or_malformed_read_as_zero() -> None:
    assert _attr(stat.S_IFCHR | 0o600).rdev == 0  # what s3fs-fuse writes: no rdev
    assert _attr(stat.S_IFCHR | 0o600, rdev="x").rdev == 0
    assert _attr(stat.S_IFBLK | 0o600, rdev="-1").rdev == 0
    assert _attr(stat.S_IFBLK | 0o600, rdev=str(1 << 40)).rdev == 0
    # a stale rdev of some other metadata is not carried over to a non-device
    fifo = _attr(stat.S_IFIFO | 0o600)
    assert "rdev" not in metadata_of(fifo, {"rdev": "5", "other": "kept"})


# -- the core ------------------------------------------------------------------------------------

#: (name, mode, rdev asked, rdev kept)
MADE = [
    ("fifo", stat.S_IFIFO | 0o640, 0, 0),
    ("sock", stat.S_IFSOCK | 0o755, 7, 0),
    ("chr", stat.S_IFCHR | 0o620, os.makedev(4, 64), os.makedev(4, 64)),
    ("blk", stat.S_IFBLK | 0o660, os.makedev(259, 300), os.makedev(259, 300)),
]


async def test_mknod_stores_s3fs_metadata_and_is_kept(env: Env) -> None:
    core, _ = env.core()
    for name, mode, rdev, kept in MADE:
        ino, attr = await core.mknod(ROOT_INODE, name.encode(), mode, 1000, 1001, rdev)
        assert (attr.mode, attr.rdev, attr.uid, attr.gid, attr.size) == (mode, kept, 1000, 1001, 0)
        assert (await core.getattr(ino)).mode == mode
        info = await env.raw.head(name)
        assert info is not None and info.size == 0 and info.metadata is not None
        assert info.metadata["mode"] == str(mode)  # decimal, with the type bits: as s3fs
        device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        assert info.metadata.get("rdev") == (str(kept) if device else None)
        assert await env.body(name) == b""
    with expect_errno(errno.EEXIST):
        await core.mknod(ROOT_INODE, b"fifo", stat.S_IFIFO | 0o600, 0, 0)
    with expect_errno(errno.EINVAL):  # mknod(2) makes no directories
        await core.mknod(ROOT_INODE, b"d", stat.S_IFDIR | 0o700, 0, 0)
    ro, _ = env.core(ro=True)
    with expect_errno(errno.EROFS):
        await ro.mknod(ROOT_INODE, b"x", stat.S_IFIFO | 0o600, 0, 0)

    # a remount: by lookup, and by a listing's entries once the kernel asks their attributes
    again, _ = env.core()
    for name, mode, _, kept in MADE:
        _, attr = await again.lookup(ROOT_INODE, name.encode())
        assert (attr.mode, attr.rdev, attr.uid, attr.gid) == (mode, kept, 1000, 1001)
    listed, _ = env.core()
    entries = await listdir(listed)
    for name, mode, _, kept in MADE:
        ino = entries[name][0]
        attr = await listed.getattr(ino)
        assert (attr.mode, attr.rdev) == (mode, kept)


async def test_attribute_changes_rename_and_unlink_keep_the_type(env: Env) -> None:
    core, _ = env.core()
    dev = os.makedev(8, 1)
    ino, _ = await core.mknod(ROOT_INODE, b"disk", stat.S_IFBLK | 0o600, 0, 0, dev)
    attr = await core.setattr(ino, mode=0o4644, uid=5, gid=6, mtime_ns=1_234_567_890 * 10**9)
    assert (attr.mode, attr.rdev, attr.uid, attr.gid) == (stat.S_IFBLK | 0o4644, dev, 5, 6)
    with expect_errno(errno.EINVAL):  # truncate(2) of a device: the kernel says so first
        await core.setattr(ino, size=0)
    await core.mknod(ROOT_INODE, b"fifo", stat.S_IFIFO | 0o644, 0, 0)
    await core.rename(ROOT_INODE, b"disk", ROOT_INODE, b"moved")
    await core.rename(ROOT_INODE, b"fifo", ROOT_INODE, b"moved-fifo")
    assert sorted(await env.keys()) == ["moved", "moved-fifo"]

    again, _ = env.core()
    _, moved = await again.lookup(ROOT_INODE, b"moved")
    assert (moved.mode, moved.rdev, moved.uid, moved.gid) == (stat.S_IFBLK | 0o4644, dev, 5, 6)
    assert moved.mtime_ns == 1_234_567_890 * 10**9
    _, moved_fifo = await again.lookup(ROOT_INODE, b"moved-fifo")
    assert moved_fifo.kind is Kind.FIFO

    # a file renamed over a FIFO replaces it, and unlink deletes the object
    fh, _, _ = await again.create(ROOT_INODE, b"plain", 0o644, os.O_WRONLY, 0, 0)
    await again.flush(fh)
    await again.release(fh)
    await again.rename(ROOT_INODE, b"plain", ROOT_INODE, b"moved-fifo")
    _, replaced = await again.lookup(ROOT_INODE, b"moved-fifo")
    assert replaced.kind is Kind.FILE
    await again.unlink(ROOT_INODE, b"moved")
    assert await env.keys() == ["moved-fifo"]


# -- mounted -------------------------------------------------------------------------------------


def _fifo_round_trip(path: Path) -> bytes:
    """Write into the FIFO from a thread and read it here: the kernel's pipe, not the bucket."""
    writer = threading.Thread(target=path.write_bytes, args=(b"through the pipe",))
    writer.start()
    try:
        return path.read_bytes()
    finally:
        writer.join(10)


@pytest.mark.mounted
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of devices needs root")
def test_mkfifo_mknod_and_sockets_on_a_mount(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("special")
    s3.create_bucket(Bucket=bucket)
    chr_dev, blk_dev = os.makedev(1, 3), os.makedev(7, 200)
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        os.mkfifo(mnt / "fifo", 0o640)
        os.mknod(mnt / "null", stat.S_IFCHR | 0o666, chr_dev)
        os.mknod(mnt / "loop", stat.S_IFBLK | 0o600, blk_dev)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(mnt / "sock"))
        assert _fifo_round_trip(mnt / "fifo") == b"through the pipe"
        os.chmod(mnt / "fifo", 0o604)
        os.chown(mnt / "null", 12, 34)
        os.utime(mnt / "loop", (1_500_000_000, 1_500_000_000))
        os.rename(mnt / "sock", mnt / "sock2")
    seen = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert seen == {"fifo": 0, "null": 0, "loop": 0, "sock2": 0}
    head = s3.head_object(Bucket=bucket, Key="loop")["Metadata"]
    assert head["mode"] == str(stat.S_IFBLK | 0o600) and head["rdev"] == str(blk_dev)

    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        st = {p.name: p.lstat() for p in mnt.iterdir()}
        assert stat.S_ISFIFO(st["fifo"].st_mode) and stat.S_IMODE(st["fifo"].st_mode) == 0o604
        assert stat.S_ISCHR(st["null"].st_mode) and st["null"].st_rdev == chr_dev
        assert (st["null"].st_uid, st["null"].st_gid) == (12, 34)
        assert stat.S_ISBLK(st["loop"].st_mode) and st["loop"].st_rdev == blk_dev
        assert st["loop"].st_mtime == 1_500_000_000
        assert stat.S_ISSOCK(st["sock2"].st_mode)
        assert _fifo_round_trip(mnt / "fifo") == b"through the pipe"  # a FIFO again
        # FUSE mounts are nodev: a device node is shown, never opened
        with pytest.raises(PermissionError):
            (mnt / "null").open("rb")
        os.unlink(mnt / "fifo")
        os.unlink(mnt / "null")
        assert sorted(p.name for p in mnt.iterdir()) == ["loop", "sock2"]


# -- side by side with s3fs-fuse -----------------------------------------------------------------


@pytest.mark.mounted
@pytest.mark.skipif(S3FS is None, reason="needs s3fs-fuse (apt install s3fs; make deps)")
@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of devices and owners need root")
def test_special_files_with_s3fs(pair: Pair) -> None:
    """Each side makes a FIFO, a socket and both kinds of device; the other shows the same
    type, permissions and owner. Device numbers: s3fs-fuse 1.90 keeps none (its own devices
    read back as 0, on both sides), and ignores the ``rdev`` s3fmfs writes (0 there too)."""
    dev = os.makedev(8, 17)
    made: dict[str, tuple[int, int]] = {}  # name → (mode, rdev as s3fmfs shows it)
    old_umask = os.umask(0)  # the modes asked, unmasked
    try:
        _make_both_sides(pair, dev, made)
    finally:
        os.umask(old_umask)
    sock_mode = (pair.ours / "sock-ours").lstat().st_mode
    made |= {"sock-ours": (sock_mode, 0), "sock-theirs": (sock_mode, 0)}
    assert stat.S_ISSOCK(sock_mode)

    def shown(root: Path) -> dict[str, tuple[int, int]]:
        return {p.name: (p.lstat().st_mode, p.lstat().st_rdev) for p in root.iterdir()}

    def settles(root: Path, want: dict[str, tuple[int, int]]) -> None:
        with contextlib.suppress(AssertionError):
            eventually(lambda: shown(root) == want)
        assert shown(root) == want

    settles(pair.ours, made)
    settles(pair.s3fs, {name: (mode, 0) for name, (mode, _) in made.items()})  # no numbers
    for root in (pair.s3fs, pair.ours):
        for side in ("theirs", "ours"):
            st = (root / f"blk-{side}").lstat()
            assert (st.st_uid, st.st_gid) == (21, 22)
    # s3fs keeps the number s3fmfs wrote when it rewrites the metadata
    os.chmod(pair.s3fs / "blk-ours", 0o600)
    eventually(lambda: shown(pair.ours)["blk-ours"] == (stat.S_IFBLK | 0o600, dev))
    # renamed and removed by the other side, as files are
    os.rename(pair.ours / "fifo-theirs", pair.ours / "fifo-moved")
    os.unlink(pair.s3fs / "chr-ours")
    eventually(lambda: stat.S_ISFIFO((pair.s3fs / "fifo-moved").lstat().st_mode))
    eventually(lambda: not (pair.ours / "chr-ours").exists())


def _make_both_sides(pair: Pair, dev: int, made: dict[str, tuple[int, int]]) -> None:
    """A FIFO, both kinds of device and a socket on each side, into ``made``."""
    for side, root in (("theirs", pair.s3fs), ("ours", pair.ours)):
        os.mkfifo(root / f"fifo-{side}", 0o640)
        os.mknod(root / f"chr-{side}", stat.S_IFCHR | 0o620, dev)
        os.mknod(root / f"blk-{side}", stat.S_IFBLK | 0o660, dev)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(root / f"sock-{side}"))
        os.chown(root / f"blk-{side}", 21, 22)
        kept = dev if side == "ours" else 0
        made |= {
            f"fifo-{side}": (stat.S_IFIFO | 0o640, 0),
            f"chr-{side}": (stat.S_IFCHR | 0o620, kept),
            f"blk-{side}": (stat.S_IFBLK | 0o660, kept),
        }
