"""Side by side with s3fs-fuse itself (issue 13): one bucket mounted by ``s3fs`` and by s3fmfs.

Each side writes and the other reads, both ways: the recursive listing, file types, owners,
modes (setuid and sticky included), symlink targets, mtimes to the second, bytes (empty, small,
12 MiB: a multipart upload on both sides) and directories (nested, empty), then renames and
overwrites of the other's files. Both mounts live at once with every cache off, so each sees
the other's changes at once: s3fs ``max_stat_cache_size=0`` plus libfuse's
``attr_timeout=0,entry_timeout=0,negative_timeout=0``, s3fmfs ``stat_ttl=0,dir_ttl=0,neg_ttl=0``.

Both are mounted from the same fstab-style option string (``url=``, ``use_path_request_style``,
``passwd_file=``), s3fs's spelling, which s3fmfs takes unchanged (the fstab test's two lines
differ only in their type). Where the two deliberately differ (objects written without metadata
by other tools, directories known only from a prefix) the test asserts s3fmfs's side;
docs/SEMANTICS.md ("Objects written by s3fs-fuse") lists the differences.

``test_fstab_lines_side_by_side`` (system tier) mounts both from lines of a private fstab with
mount(8), as ``tests/test_system_mount.py`` does (its ``installed`` fixture: ``make install``).

Needs root (chown, and owners as the metadata says), /dev/fuse, fusermount3 and the ``s3fs``
binary (Debian's ``s3fs``, which ``make deps`` installs); skips without them. Every mount is
unmounted and its process waited for (killed if it lingers) in ``finally``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.mount import is_mounted, mounted, unmount
from tests.support.servers import S3Server, unique_bucket
from tests.test_system_mount import (  # mount(8) and ``make install``, as the system tests do
    NO_DAEMON_MODE,
    Credentials,
    mount_env,
    system_mounted,
    wait_gone,
)
from tests.test_system_mount import (
    installed as installed,  # the fixture, used by name
)

S3FS = shutil.which("s3fs")

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(S3FS is None, reason="needs s3fs-fuse (apt install s3fs; make deps)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="owners and chown need root"),
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3",
    ),
]

MiB = 1 << 20
MOUNT_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0
SEEN_TIMEOUT = 10.0  # until one side shows what the other wrote (caches are off: at once)

#: Caches off, in each tool's own words (everything else is the shared fstab string).
S3FS_ONLY = "max_stat_cache_size=0,attr_timeout=0,entry_timeout=0,negative_timeout=0"
S3FMFS_ONLY = "stat_ttl=0,dir_ttl=0,neg_ttl=0"

#: Fixed times set with utime, read back to the second.
T_FILE = 1_577_934_245  # 2020-01-02 03:04:05 UTC
T_DIR = 1_546_300_800  # 2019-01-01
T_LINK = 1_483_228_800  # 2017-01-01
T_BIG = 1_600_000_000

_LIBC = ctypes.CDLL(None, use_errno=True)


def fstab_options(server: S3Server, passwd: Path) -> str:
    """The options of an s3fs fstab line for ``server``: only the type changes for s3fmfs."""
    return f"url={server.endpoint},use_path_request_style,passwd_file={passwd}"


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def s3fs_mounted(bucket: str, options: str, mnt: Path) -> Iterator[Path]:
    """``s3fs BUCKET MNT -f -o OPTIONS`` for the block; unmounted and waited for whatever
    happens (killed if it lingers)."""
    assert S3FS is not None
    mnt.mkdir(parents=True, exist_ok=True)
    mnt = mnt.resolve()
    log = mnt.with_name(mnt.name + ".log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [S3FS, bucket, str(mnt), "-f", "-o", options],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        # s3fs checks the bucket once mounted, and exits if it cannot reach it
        while not (is_mounted(mnt) and _lists(mnt)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"s3fs did not mount (status {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        yield mnt
    finally:
        problems = unmount(mnt)
        try:
            proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            problems.append("s3fs lingered after the unmount: killed")
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        assert not problems, problems


def _lists(mnt: Path) -> bool:
    try:
        os.listdir(mnt)
    except OSError:
        return False
    return True


@dataclass
class Pair:
    """The bucket mounted by both: ``s3fs`` and ``ours`` (s3fmfs)."""

    s3fs: Path
    ours: Path
    bucket: str


@pytest.fixture
def pair(moto: S3Server, s3: Any, tmp_path: Path) -> Iterator[Pair]:
    bucket = unique_bucket("interop")
    s3.create_bucket(Bucket=bucket)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{moto.access_key_id}:{moto.secret_access_key}\n")
    passwd.chmod(0o600)
    options = fstab_options(moto, passwd)
    (tmp_path / "ours").mkdir()
    with (
        s3fs_mounted(bucket, f"{options},{S3FS_ONLY}", tmp_path / "s3fs") as theirs,
        mounted(
            moto,
            bucket,
            options=[*options.split(","), *S3FMFS_ONLY.split(",")],
            tmp_path=tmp_path / "ours",
        ) as ours,
    ):
        yield Pair(theirs, ours, bucket)


@dataclass(frozen=True)
class Entry:
    """What ``ls -l`` (and ``readlink``, ``sha256sum``) shows of one entry."""

    kind: str  # "f", "d", "l"
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime: int  # seconds
    size: int  # files and symlinks (directories: whatever each shows is not compared)
    target: str | None = None
    digest: str | None = None


def entry(path: Path) -> Entry:
    st = path.lstat()
    kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
    return Entry(
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns // 10**9,
        0 if kind == "d" else st.st_size,
        os.readlink(path) if kind == "l" else None,
        hashlib.sha256(path.read_bytes()).hexdigest() if kind == "f" else None,
    )


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` (not ``root`` itself), by relative path."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            found[str(path.relative_to(root))] = entry(path)
    return found


def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (the reader may see a change a moment late)."""
    deadline = time.monotonic() + SEEN_TIMEOUT
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.2)


def same_everywhere(pair: Pair) -> dict[str, Entry]:
    """Both mounts' snapshots, once they agree (the reader may see a change a moment late)."""
    deadline = time.monotonic() + SEEN_TIMEOUT
    while True:
        theirs, ours = snapshot(pair.s3fs), snapshot(pair.ours)
        if theirs == ours or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    differing = {
        k: (theirs.get(k), ours.get(k))
        for k in theirs.keys() | ours.keys()
        if theirs.get(k) != ours.get(k)
    }
    assert not differing, "s3fs, s3fmfs differ: " + repr(differing)
    return ours


BIG = os.urandom(12 * MiB + 12345)  # above s3fs's 10 MB multipart_size and one 8 MiB part


def write_tree(root: Path) -> None:
    """Files, symlinks and directories with chosen modes, owners and times."""
    (root / "small.txt").write_bytes(b"hello\n")
    os.chmod(root / "small.txt", 0o640)
    os.chown(root / "small.txt", 1234, 5678)
    os.utime(root / "small.txt", (T_FILE, T_FILE))
    (root / "empty").write_bytes(b"")
    os.chmod(root / "empty", 0o600)
    (root / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "tool", 0o4755)
    (root / "big").write_bytes(BIG)
    os.utime(root / "big", (T_BIG, T_BIG))
    (root / "link").symlink_to("small.txt")
    os.utime(root / "link", (T_LINK, T_LINK), follow_symlinks=False)
    (root / "dir" / "nested" / "deeper").mkdir(parents=True)
    (root / "dir" / "nested" / "deeper" / "f").write_bytes(b"deep")
    (root / "dir" / "up").symlink_to("../small.txt")
    (root / "emptydir").mkdir()
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    os.chmod(root / "dir", 0o750)
    os.chown(root / "dir", 7, 8)
    os.utime(root / "dir", (T_DIR, T_DIR))


def check_tree(seen: dict[str, Entry]) -> None:
    """What the reader must show of :func:`write_tree`'s tree (beyond agreeing with the
    writer)."""
    assert sorted(seen) == [
        "big",
        "dir",
        "dir/nested",
        "dir/nested/deeper",
        "dir/nested/deeper/f",
        "dir/up",
        "empty",
        "emptydir",
        "link",
        "small.txt",
        "sticky",
        "tool",
    ]
    small = seen["small.txt"]
    assert (small.kind, small.mode, small.uid, small.gid, small.mtime, small.size) == (
        "f",
        0o640,
        1234,
        5678,
        T_FILE,
        6,
    )
    assert small.digest == hashlib.sha256(b"hello\n").hexdigest()
    assert (seen["empty"].kind, seen["empty"].mode, seen["empty"].size) == ("f", 0o600, 0)
    assert seen["tool"].mode == 0o4755
    assert seen["big"].digest == hashlib.sha256(BIG).hexdigest()
    assert (seen["big"].size, seen["big"].mtime) == (len(BIG), T_BIG)
    assert (seen["link"].kind, seen["link"].target, seen["link"].mtime) == (
        "l",
        "small.txt",
        T_LINK,
    )
    assert (seen["dir/up"].kind, seen["dir/up"].target) == ("l", "../small.txt")
    assert seen["link"].mode == 0o777
    d = seen["dir"]
    assert (d.kind, d.mode, d.uid, d.gid, d.mtime) == ("d", 0o750, 7, 8, T_DIR)
    assert seen["dir/nested/deeper/f"].digest == hashlib.sha256(b"deep").hexdigest()
    assert seen["emptydir"].kind == "d" and seen["sticky"].mode == 0o1777


Side = Callable[[Pair], Path]
SIDES: dict[str, tuple[Side, Side]] = {
    "s3fs-writes": (lambda p: p.s3fs, lambda p: p.ours),
    "s3fmfs-writes": (lambda p: p.ours, lambda p: p.s3fs),
}


@pytest.mark.parametrize("direction", sorted(SIDES))
def test_one_writes_the_other_reads(pair: Pair, direction: str) -> None:
    writer_of, reader_of = SIDES[direction]
    writer, reader = writer_of(pair), reader_of(pair)
    write_tree(writer)
    check_tree(same_everywhere(pair))

    # the reader overwrites the writer's file: owner, group and mode stay, the bytes change
    before = time.time()
    (reader / "small.txt").write_bytes(b"rewritten by the reader\n")
    seen = same_everywhere(pair)
    small = seen["small.txt"]
    assert (small.mode, small.uid, small.gid) == (0o640, 1234, 5678)
    assert small.digest == hashlib.sha256(b"rewritten by the reader\n").hexdigest()
    assert small.mtime >= int(before)
    # s3fs shows its x-amz-meta-ctime: it must not be older than the rewrite (s3fmfs drops it)
    st = (pair.s3fs / "small.txt").stat()
    assert st.st_ctime >= int(before), (st.st_ctime, before)

    # the writer renames a file and a directory with all it holds; the reader follows
    (writer / "small.txt").rename(writer / "renamed.txt")
    (writer / "dir").rename(writer / "dir2")
    seen = same_everywhere(pair)
    assert "small.txt" not in seen and "dir" not in seen
    assert (seen["renamed.txt"].mode, seen["renamed.txt"].uid) == (0o640, 1234)
    assert seen["dir2/nested/deeper/f"].digest == hashlib.sha256(b"deep").hexdigest()
    assert seen["dir2/up"].target == "../small.txt"
    assert (seen["dir2"].mode, seen["dir2"].uid, seen["dir2"].gid) == (0o750, 7, 8)

    # and the reader renames back, chmods and deletes; the writer follows
    (reader / "renamed.txt").rename(reader / "small.txt")
    os.chmod(reader / "tool", 0o755)
    (reader / "empty").unlink()
    (reader / "emptydir").rmdir()
    seen = same_everywhere(pair)
    assert "renamed.txt" not in seen and "empty" not in seen and "emptydir" not in seen
    assert seen["small.txt"].digest == hashlib.sha256(b"rewritten by the reader\n").hexdigest()
    assert seen["tool"].mode == 0o755
    assert (writer / "link").read_bytes() == b"rewritten by the reader\n"


def test_objects_without_metadata(pair: Pair, s3: Any) -> None:
    """Objects other tools wrote: both show the same names, kinds and bytes; owners and
    modes come from each mount's defaults (s3fmfs: 0644/0755 under umask 022, the mounting
    user; s3fs 1.90 shows 0640/0750 and mtime -1 for a directory known only from a prefix)."""
    s3.put_object(Bucket=pair.bucket, Key="plain", Body=b"abc")
    s3.put_object(Bucket=pair.bucket, Key="implicit/inner", Body=b"in")
    s3.put_object(Bucket=pair.bucket, Key="old_$folder$", Body=b"")
    s3.put_object(Bucket=pair.bucket, Key="typed", Body=b"", ContentType="application/x-directory")
    theirs, ours = snapshot(pair.s3fs), snapshot(pair.ours)
    assert sorted(theirs) == sorted(ours) == ["implicit", "implicit/inner", "old", "plain", "typed"]
    for name in ours:
        mine, other = ours[name], theirs[name]
        assert (mine.kind, mine.size, mine.digest) == (other.kind, other.size, other.digest), name
    assert [ours[n].kind for n in ("implicit", "old", "typed", "plain")] == ["d", "d", "d", "f"]
    assert (ours["plain"].mode, ours["plain"].uid) == (0o644, os.getuid())
    assert ours["implicit"].mode == ours["typed"].mode == 0o755

    # s3fs's chmod of a directory it only inferred writes a marker with x-amz-meta-mtime -1
    # (s3fs 1.90); both then show the marker's LastModified, not 1969
    before = int(time.time())
    os.chmod(pair.s3fs / "implicit", 0o700)
    eventually(lambda: entry(pair.ours / "implicit").mode == 0o700)
    mine, other = entry(pair.ours / "implicit"), entry(pair.s3fs / "implicit")
    assert mine == other
    assert before - 2 <= mine.mtime <= time.time() + 2


def test_metadata_written_matches_s3fs(pair: Pair, s3: Any) -> None:
    """The objects s3fmfs writes carry what s3fs writes for the same operations: the same
    ``x-amz-meta-`` mode (type bits included, but s3fs 1.90's directory markers lack them),
    uid, gid and mtime, and the same Content-Type."""
    for side, root in (("s", pair.s3fs), ("o", pair.ours)):
        (root / f"{side}.txt").write_bytes(b"x")
        os.chown(root / f"{side}.txt", 3, 4)
        os.utime(root / f"{side}.txt", (T_FILE, T_FILE))
        (root / f"{side}-link").symlink_to(f"{side}.txt")
        (root / f"{side}-link.txt").symlink_to(f"{side}.txt")
        (root / f"{side}-dir").mkdir()
        os.chmod(root / f"{side}-dir", 0o700)
    for name in (".txt", "-link", "-link.txt", "-dir/"):
        theirs = s3.head_object(Bucket=pair.bucket, Key="s" + name)
        ours = s3.head_object(Bucket=pair.bucket, Key="o" + name)
        assert ours["ContentType"] == theirs["ContentType"], name
        meta_s, meta_o = theirs["Metadata"], ours["Metadata"]
        assert (meta_o["uid"], meta_o["gid"]) == (meta_s["uid"], meta_s["gid"]), name
        if name == ".txt":  # the others' mtime is their creation second on each side
            assert meta_o["mtime"] == meta_s["mtime"] == str(T_FILE)
        mode_s, mode_o = int(meta_s["mode"]), int(meta_o["mode"])
        assert stat.S_IMODE(mode_o) == stat.S_IMODE(mode_s), name
        if name == "-dir/":
            assert stat.S_ISDIR(mode_o)  # s3fs 1.90 may write the bits alone
        else:
            assert mode_o == mode_s, name


@contextmanager
def s3fs_fstab_mounted(fstab: Path, mnt: Path) -> Iterator[Path]:
    """``mount -T FSTAB MNT`` of an s3fs line (mount.fuse3 runs ``s3fs``, which daemonizes);
    unmounted, and its s3fs process waited for (killed if it lingers), whatever happens."""
    done = subprocess.run(
        ["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"mount -T of the s3fs line: {done.stderr}"
    daemons = [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if (cmd := proc.info["cmdline"] or [])
        and os.path.basename(cmd[0]) == "s3fs"
        and str(mnt) in cmd
    ]
    try:
        assert daemons, "no s3fs process serving the mount"
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (is_mounted(mnt) and _lists(mnt)):
            assert time.monotonic() < deadline, "s3fs mounted by mount(8) does not answer"
            time.sleep(0.1)
        yield mnt
    finally:
        if is_mounted(mnt):
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False, timeout=60)
        _, alive = psutil.wait_procs(daemons, timeout=EXIT_TIMEOUT)
        for proc in alive:
            proc.kill()
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        assert not alive, "s3fs lingered after umount: killed"


@pytest.mark.system
@pytest.mark.skipif(not os.path.exists("/sbin/mount.fuse3"), reason="needs /sbin/mount.fuse3")
@pytest.mark.usefixtures("installed")
def test_fstab_lines_side_by_side(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    """A real s3fs fstab line and the same line with the type ``fuse.s3fmfs``, mounted with
    ``mount -T`` (a private fstab): s3fs writes the tree, s3fmfs mounted afterwards shows it
    alike; s3fmfs writes, unmounts, and s3fs shows that."""
    bucket = unique_bucket("fstab")
    s3.create_bucket(Bucket=bucket)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{moto.access_key_id}:{moto.secret_access_key}\n")
    passwd.chmod(0o600)
    theirs, ours = (tmp_path / "s3fs").resolve(), (tmp_path / "ours").resolve()
    theirs.mkdir()
    ours.mkdir()
    options = "_netdev,nofail," + fstab_options(moto, passwd)
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{bucket} {theirs} fuse.s3fs {options} 0 0\n{bucket} {ours} fuse.s3fmfs {options} 0 0\n"
    )
    with s3fs_fstab_mounted(fstab, theirs):
        write_tree(theirs)
        argv = ["mount", "-T", str(fstab), str(ours)]
        with system_mounted(argv, ours, mount_env(Credentials(), tmp_path), tmp_path) as m:
            seen = snapshot(ours)
            check_tree(seen)
            assert snapshot(theirs) == seen
            (ours / "from-ours").mkdir()
            (ours / "from-ours" / "f").write_bytes(b"by s3fmfs")
            os.chmod(ours / "from-ours" / "f", 0o604)
            os.chown(ours / "from-ours" / "f", 9, 10)
            os.utime(ours / "from-ours" / "f", (T_FILE, T_FILE))
            (ours / "from-ours" / "l").symlink_to("f")
            done = subprocess.run(["umount", str(ours)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert not wait_gone(m.daemons), "s3fmfs did not exit after umount"
        f = entry(theirs / "from-ours" / "f")
        assert (f.kind, f.mode, f.uid, f.gid, f.mtime) == ("f", 0o604, 9, 10, T_FILE)
        assert f.digest == hashlib.sha256(b"by s3fmfs").hexdigest()
        assert os.readlink(theirs / "from-ours" / "l") == "f"
    if not m.returned:
        pytest.xfail(NO_DAEMON_MODE)
