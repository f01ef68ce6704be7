"""A seeded random-operation test: every operation is applied with the same ``os`` call to the
mount and to a shadow directory on local disk, and both must answer alike.

What runs (:class:`RandomOps`): creates (``O_CREAT`` with or without ``O_EXCL``, ``O_TRUNC``,
``O_APPEND``), opens kept across many operations (up to ``MAX_OPEN`` at once, several on one
file), writes at random offsets (holes past EOF included), appends, reads (half of them after
dropping the kernel's page cache of the file, ``posix_fadvise``, so that they reach the daemon),
``ftruncate`` and ``truncate`` (shrink and grow), ``fstat``/``stat`` (type, permission bits,
size), ``fsync``, ``chmod``, renames of files and directories (over existing files, across
directories, with files open inside), unlinks (of open files too), ``mkdir``, ``rmdir``,
dangling symlinks, listings, sequential writes of 6 MiB (streamed as multipart uploads), and
remounts at random points: every file closed, the mount unmounted (the daemon must exit 0),
the bucket compared key by key with the shadow (each file an object holding its bytes, each
directory its marker, nothing else), mounted again and the whole tree compared through the
mount. The whole tree is also compared every ``COMPARE_EVERY`` operations, files still open.

Names come from small pools (a name shared by files and directories among them) in a small tree,
and a third of the operations on a path pick one of the open files, so operations collide:
renames replace files, creates find existing ones, open files are renamed, replaced and
unlinked, a file and a directory compete for a name. Results must match exactly: the same
bytes, sizes, permission bits and listings, or the same errno.

What the test found, and the fix, replayed deterministically below:
``test_chmod_right_after_a_listing_survives_a_remount`` (the metadata cache kept the mode a
HEAD saw just before a chmod in the same second: ``MetaCache.forget``).

A mismatch fails with the seed, the operation index and the tail of the history;
``S3FMFS_RANDOM_SEEDS=7 S3FMFS_RANDOM_OPS=800`` replays one seed (default: seeds 1 to 4, 5,000
operations each, about 20 s each). A hang fails too (:class:`~tests.support.daemon_watch.Watchdog`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_watch import Watchdog
from tests.support.mount import MountError, daemon_pid, log_tail, mounted
from tests.support.servers import S3Server, unique_bucket

KiB = 1024
MiB = 1 << 20

SEEDS = [int(s) for s in os.environ.get("S3FMFS_RANDOM_SEEDS", "1,2,3,4").split(",") if s.strip()]
OPS = int(os.environ.get("S3FMFS_RANDOM_OPS", "5000"))
#: part_size_mb=5: the "big" files (6 MiB, written sequentially) go up as multipart uploads.
OPTIONS = ("part_size_mb=5",)
MAX_OPEN = 6
MAX_SIZE = 2 * MiB  # random writes keep files below this (a "big" file is bigger)
BIG_SIZE = 6 * MiB
MAX_DIRS = 12
COMPARE_EVERY = 250
HISTORY_TAIL = 40
SHARED = "x"  # a name both files and directories use
FILE_NAMES = ("f0", "f1", "f2", "f3", "f4", SHARED)
DIR_NAMES = ("d0", "d1", "d2", SHARED)
STALL_SECONDS = 90.0  # one operation taking longer than this is a hang

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.soak,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]


class Mismatch(AssertionError):
    """The mount and the shadow disagreed."""


@dataclass
class Outcome:
    """What an ``os`` call did: its value, or the errno it raised."""

    value: Any = None
    err: int | None = None

    def __str__(self) -> str:
        if self.err is not None:
            return errno.errorcode.get(self.err, str(self.err))
        if isinstance(self.value, bytes):
            return f"{len(self.value)} bytes"
        return "ok" if self.value is None else repr(self.value)


def attempt(call: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(call())
    except OSError as exc:
        return Outcome(err=exc.errno)


@dataclass
class OpenFile:
    """One file open on both sides with the same flags."""

    mount_fd: int
    shadow_fd: int
    flags: int
    label: str  # the path it was opened by (it may have moved since)

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_WRONLY


class Mount:
    """The bucket mounted for the test, again and again (same mountpoint and log)."""

    def __init__(self, server: S3Server, bucket: str, tmp_path: Path) -> None:
        self.server = server
        self.bucket = bucket
        self.tmp_path = tmp_path
        self.path = (tmp_path / "mnt").resolve()
        self.count = 0
        self._stack: contextlib.ExitStack | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        self.path = stack.enter_context(
            mounted(self.server, self.bucket, options=OPTIONS, tmp_path=self.tmp_path)
        )
        self._stack = stack
        self.count += 1

    def stop(self) -> None:
        """Unmount; raises (``MountError``) unless the daemon unmounted and exited 0."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def serving(self) -> tuple[int, Path] | None:
        if self._stack is None:
            return None
        try:
            return daemon_pid(self.path), self.path
        except KeyError:
            return None


class RandomOps:
    """Random operations on the mount and the shadow, compared (see the module docstring)."""

    def __init__(self, seed: int, mount: Mount, shadow: Path, s3: Any, watchdog: Watchdog) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.mount = mount
        self.shadow = shadow
        self.s3 = s3
        self.watchdog = watchdog
        self.open: list[OpenFile] = []
        self.history: list[str] = []
        self.index = 0
        self.counts: dict[str, int] = {}
        self.remounts = 0
        self.bytes_written = 0
        self.bytes_compared = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.history.append(f"#{self.index} {text}")
        del self.history[:-HISTORY_TAIL]

    def fail(self, what: str) -> None:
        tail = "\n".join(self.history)
        raise Mismatch(
            f"seed {self.seed}, operation #{self.index}: {what}\n"
            f"last operations:\n{tail}\ndaemon log tail:\n{log_tail(self.mount.path, 2000)}"
        )

    def same(
        self, what: str, shadow: Callable[[], Any], mount: Callable[[], Any], *, values: bool = True
    ) -> tuple[Outcome, Outcome]:
        """Run ``shadow`` then ``mount``; they must raise the same errno (and, with
        ``values``, return equal values)."""
        s = attempt(shadow)
        m = attempt(mount)
        self.note(f"{what} -> {s}")
        if s.err != m.err or (values and s.err is None and s.value != m.value):
            self.fail(f"{what}: shadow {s}, mount {m}")
        return s, m

    def m(self, rel: str) -> str:
        return os.path.join(self.mount.path, rel)

    def s(self, rel: str) -> str:
        return os.path.join(self.shadow, rel)

    # -- the shadow tells what exists ------------------------------------------------------------

    def tree(self) -> tuple[list[str], list[str]]:
        """(directories, files and symlinks) of the shadow, relative; the root is ``""``."""
        dirs, files = [""], []
        for top, subdirs, names in os.walk(self.shadow):
            rel = os.path.relpath(top, self.shadow)
            rel = "" if rel == "." else rel
            dirs += [os.path.join(rel, d) for d in subdirs]
            files += [os.path.join(rel, f) for f in names]
        return sorted(dirs), sorted(files)

    def some_dir(self) -> str:
        return self.rng.choice(self.tree()[0])

    def path_of(self, f: OpenFile) -> str | None:
        """Where an open file is now (it may have been renamed, or its directory); None once
        it is unlinked or replaced."""
        st = os.fstat(f.shadow_fd)
        for rel in self.tree()[1]:
            there = os.lstat(self.s(rel))
            if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
                return rel
        return None

    def some_file(self) -> str:
        """An existing file mostly, often one that is open; sometimes any name (missing, a
        directory or a symlink)."""
        if self.open and self.rng.random() < 0.3:
            rel = self.path_of(self.rng.choice(self.open))
            if rel is not None:
                return rel
        files = self.tree()[1]
        if files and self.rng.random() < 0.85:
            return self.rng.choice(files)
        return os.path.join(self.some_dir(), self.rng.choice(FILE_NAMES + DIR_NAMES))

    def some_open(self, want: Callable[[OpenFile], bool]) -> OpenFile | None:
        candidates = [f for f in self.open if want(f)]
        return self.rng.choice(candidates) if candidates else None

    def size_of(self, f: OpenFile) -> int:
        return os.fstat(f.shadow_fd).st_size

    def data(self, length: int) -> bytes:
        self.bytes_written += length
        return self.rng.randbytes(length)

    def length(self) -> int:
        roll = self.rng.random()
        if roll < 0.4:
            return self.rng.randint(1, 200)
        if roll < 0.85:
            return self.rng.randint(200, 64 * KiB)
        return self.rng.randint(64 * KiB, 400 * KiB)

    # -- operations ------------------------------------------------------------------------------

    def op_create(self) -> None:
        rel = os.path.join(self.some_dir(), self.rng.choice(FILE_NAMES))
        flags = os.O_CREAT | self.rng.choice((os.O_RDWR, os.O_WRONLY))
        for bit, chance in ((os.O_TRUNC, 0.3), (os.O_EXCL, 0.2), (os.O_APPEND, 0.1)):
            if self.rng.random() < chance:
                flags |= bit
        self._open(rel, flags, "create")

    def op_open(self) -> None:
        rel = self.some_file()
        flags = self.rng.choice(
            (
                os.O_RDONLY,
                os.O_RDONLY,
                os.O_RDWR,
                os.O_RDWR,
                os.O_WRONLY,
                os.O_RDWR | os.O_APPEND,
                os.O_WRONLY | os.O_TRUNC,
                os.O_RDWR | os.O_TRUNC,
            )
        )
        self._open(rel, flags, "open")

    def _open(self, rel: str, flags: int, verb: str) -> None:
        while len(self.open) >= MAX_OPEN:
            self._close(self.rng.choice(self.open))
        s, m = self.same(
            f"{verb} {rel} flags={flags:#o}",
            lambda: os.open(self.s(rel), flags, 0o644),
            lambda: os.open(self.m(rel), flags, 0o644),
            values=False,
        )
        if s.err is None:
            f = OpenFile(m.value, s.value, flags, rel)
            self.open.append(f)
            if verb == "create" and f.writable and self.rng.random() < 0.5:
                self._write(f)  # a file written right after its creation, closed or not
                if self.rng.random() < 0.5:
                    self._close(f)

    def op_close(self) -> None:
        f = self.some_open(lambda f: True)
        if f is not None:
            self._close(f)

    def _close(self, f: OpenFile) -> None:
        self.open.remove(f)
        self.same(f"close {f.label}", lambda: os.close(f.shadow_fd), lambda: os.close(f.mount_fd))

    def op_write(self) -> None:
        f = self.some_open(lambda f: f.writable)
        if f is None:
            return self.op_create()
        self._write(f)

    def _write(self, f: OpenFile) -> None:
        size = self.size_of(f)
        length = self.length()
        if f.flags & os.O_APPEND:  # appends: the kernel picks the offset (the file's end)
            data = self.data(length)
            self.same(
                f"append {f.label} {length}",
                lambda: os.write(f.shadow_fd, data),
                lambda: os.write(f.mount_fd, data),
            )
            return
        roll = self.rng.random()
        if roll < 0.5 or size == 0:
            offset = self.rng.randint(0, size)  # inside (an overwrite), or at the end
        elif roll < 0.7:
            offset = size  # an append by offset
        else:
            offset = size + self.rng.randint(1, 300 * KiB)  # a hole past EOF
        if offset + length > MAX_SIZE:
            offset = self.rng.randint(0, max(0, min(size, MAX_SIZE - length)))
        data = self.data(length)
        if self.rng.random() < 0.8:
            self.same(
                f"pwrite {f.label} @{offset} {length}",
                lambda: os.pwrite(f.shadow_fd, data, offset),
                lambda: os.pwrite(f.mount_fd, data, offset),
            )
        else:  # through the file position
            self.same(
                f"lseek+write {f.label} @{offset} {length}",
                lambda: (os.lseek(f.shadow_fd, offset, os.SEEK_SET), os.write(f.shadow_fd, data)),
                lambda: (os.lseek(f.mount_fd, offset, os.SEEK_SET), os.write(f.mount_fd, data)),
            )

    def op_read(self) -> None:
        f = self.some_open(lambda f: f.readable)
        if f is None:
            return self.op_read_file()
        size = self.size_of(f)
        offset = self.rng.randint(0, size + 1000)
        length = self.rng.choice((1, 100, 4 * KiB, 64 * KiB, 300 * KiB, size + 1))
        if self.rng.random() < 0.5:  # the read then reaches the daemon, not the page cache
            os.posix_fadvise(f.mount_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        s, _ = self.same(
            f"pread {f.label} @{offset} {length}",
            lambda: os.pread(f.shadow_fd, length, offset),
            lambda: os.pread(f.mount_fd, length, offset),
        )
        self.bytes_compared += len(s.value or b"")

    def op_read_file(self) -> None:
        rel = self.some_file()
        s, _ = self.same(
            f"read {rel}", lambda: read_all(self.s(rel)), lambda: read_all(self.m(rel))
        )
        self.bytes_compared += len(s.value or b"")

    def _new_size(self, size: int) -> int:
        roll = self.rng.random()
        if roll < 0.2:
            return 0
        if roll < 0.6:
            return self.rng.randint(0, size)  # shrink
        return min(MAX_SIZE, size + self.rng.randint(1, 300 * KiB))  # grow (zeros)

    def op_ftruncate(self) -> None:
        f = self.some_open(lambda f: f.writable)
        if f is None:
            return self.op_truncate()
        size = self._new_size(self.size_of(f))
        self.same(
            f"ftruncate {f.label} {size}",
            lambda: os.ftruncate(f.shadow_fd, size),
            lambda: os.ftruncate(f.mount_fd, size),
        )

    def op_truncate(self) -> None:
        rel = self.some_file()
        try:
            size = self._new_size(os.stat(self.s(rel)).st_size)
        except OSError:
            size = 10
        self.same(
            f"truncate {rel} {size}",
            lambda: os.truncate(self.s(rel), size),
            lambda: os.truncate(self.m(rel), size),
        )

    def op_fstat(self) -> None:
        f = self.some_open(lambda f: True)
        if f is None:
            return self.op_stat()
        self.same(
            f"fstat {f.label}",
            lambda: kind_and_size(os.fstat(f.shadow_fd)),
            lambda: kind_and_size(os.fstat(f.mount_fd)),
        )

    def op_stat(self) -> None:
        rel = self.rng.choice((self.some_file(), self.some_dir()))
        self.same(
            f"stat {rel}",
            lambda: kind_and_size(os.stat(self.s(rel))),
            lambda: kind_and_size(os.stat(self.m(rel))),
        )

    def op_fsync(self) -> None:
        f = self.some_open(lambda f: True)
        if f is not None:
            self.same(
                f"fsync {f.label}", lambda: os.fsync(f.shadow_fd), lambda: os.fsync(f.mount_fd)
            )

    def op_rename(self) -> None:
        dirs, _ = self.tree()
        names: tuple[str, ...]
        if self.rng.random() < 0.25 and len(dirs) > 1:
            src = self.rng.choice(dirs[1:])
            names = DIR_NAMES
        else:
            src = self.some_file()
            names = FILE_NAMES
        dst = os.path.join(self.some_dir(), self.rng.choice(names))
        self.same(
            f"rename {src} -> {dst}",
            lambda: os.rename(self.s(src), self.s(dst)),
            lambda: os.rename(self.m(src), self.m(dst)),
        )

    def op_unlink(self) -> None:
        rel = self.some_file()
        self.same(f"unlink {rel}", lambda: os.unlink(self.s(rel)), lambda: os.unlink(self.m(rel)))

    def op_mkdir(self) -> None:
        dirs = self.tree()[0]
        parent = self.rng.choice(dirs)
        if parent.count("/") >= 2 or len(dirs) > MAX_DIRS:
            parent = ""  # the tree stays small: names collide, open files get renamed
        rel = os.path.join(parent, self.rng.choice(DIR_NAMES))
        self.same(f"mkdir {rel}", lambda: os.mkdir(self.s(rel)), lambda: os.mkdir(self.m(rel)))

    def op_rmdir(self) -> None:
        dirs, _ = self.tree()
        if len(dirs) < 2:
            return self.op_mkdir()
        rel = self.rng.choice(dirs[1:])
        self.same(f"rmdir {rel}", lambda: os.rmdir(self.s(rel)), lambda: os.rmdir(self.m(rel)))

    def op_chmod(self) -> None:
        # not the root: a bucket's root has no marker to keep a mode in across mounts
        rel = self.rng.choice((self.some_file(), self.some_dir())) or "x"
        mode = self.rng.choice((0o600, 0o640, 0o644, 0o700, 0o755, 0o664))
        if rel in self.tree()[0]:
            mode |= 0o700  # the test (root) keeps walking directories either way
        self.same(
            f"chmod {rel} {mode:o}",
            lambda: os.chmod(self.s(rel), mode),
            lambda: os.chmod(self.m(rel), mode),
        )

    def op_symlink(self) -> None:
        """A dangling symlink: opens, stats and reads through it fail alike (ENOENT)."""
        rel = os.path.join(self.some_dir(), self.rng.choice(FILE_NAMES))
        target = f"nowhere/{self.rng.randint(0, 10**6)}"
        self.same(
            f"symlink {rel} -> {target}",
            lambda: os.symlink(target, self.s(rel)),
            lambda: os.symlink(target, self.m(rel)),
        )

    def op_listdir(self) -> None:
        rel = self.some_dir()
        self.same(
            f"listdir {rel}",
            functools.partial(sorted_listing, self.s(rel)),
            functools.partial(sorted_listing, self.m(rel)),
        )

    def op_big(self) -> None:
        """A few MiB written sequentially into a new (or emptied) file: a streamed multipart
        upload, which later operations then overwrite, truncate or rename."""
        _, files = self.tree()
        if any(os.lstat(self.s(f)).st_size > MAX_SIZE for f in files):
            return self.op_write()  # one big file at a time keeps the test quick
        rel = os.path.join(self.some_dir(), self.rng.choice(FILE_NAMES))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        s, m = self.same(
            f"big {rel}",
            lambda: os.open(self.s(rel), flags, 0o644),
            lambda: os.open(self.m(rel), flags, 0o644),
            values=False,
        )
        if s.err is not None:
            return
        f = OpenFile(m.value, s.value, flags, rel)
        self.open.append(f)
        chunk = 256 * KiB
        for offset in range(0, BIG_SIZE, chunk):
            data = self.data(chunk)
            self.same(
                f"big write {rel} @{offset}",
                functools.partial(os.write, f.shadow_fd, data),
                functools.partial(os.write, f.mount_fd, data),
            )
        self._close(f)

    def unmount(self) -> None:
        try:
            self.mount.stop()
        except MountError as exc:  # not a clean unmount, or the daemon's exit status not 0
            self.fail(f"unmount: {exc}")

    def op_remount(self) -> None:
        """Close everything, unmount, compare the bucket with the shadow, mount, compare."""
        for f in list(self.open):
            self._close(f)
        self.note("unmount")
        self.watchdog.beat("random-ops", f"#{self.index} unmount")
        self.unmount()
        self.compare_bucket()
        self.note("mount")
        self.mount.start()
        self.remounts += 1
        self.compare_tree()

    OPS: tuple[tuple[str, int], ...] = (
        ("create", 10),
        ("open", 8),
        ("close", 8),
        ("write", 22),
        ("read", 10),
        ("read_file", 4),
        ("ftruncate", 5),
        ("truncate", 2),
        ("fstat", 4),
        ("stat", 3),
        ("fsync", 2),
        ("rename", 7),
        ("unlink", 4),
        ("mkdir", 4),
        ("rmdir", 2),
        ("listdir", 3),
        ("chmod", 2),
        ("symlink", 1),
    )

    # -- whole-tree comparisons ------------------------------------------------------------------

    def compare_tree(self) -> None:
        """Every directory and file through the mount, against the shadow."""
        dirs, files = self.tree()
        self.watchdog.beat("random-ops", f"#{self.index} compare tree")
        for rel in dirs:
            self.same(
                f"tree: listdir {rel or '/'}",
                functools.partial(sorted_listing, self.s(rel)),
                functools.partial(sorted_listing, self.m(rel)),
            )
        for rel in files:
            self.same(
                f"tree: lstat {rel}",
                functools.partial(describe, self.s(rel)),
                functools.partial(describe, self.m(rel)),
            )
            if os.path.islink(self.s(rel)):
                continue  # its target went into describe()
            s, _ = self.same(
                f"tree: read {rel}",
                functools.partial(read_all, self.s(rel)),
                functools.partial(read_all, self.m(rel)),
            )
            self.bytes_compared += len(s.value)

    def compare_bucket(self) -> None:
        """Unmounted: the bucket holds every file of the shadow with its bytes, a marker for
        every directory, and nothing else."""
        dirs, files = self.tree()
        expected = {f: bucket_body(self.s(f)) for f in files}
        expected.update({d + "/": b"" for d in dirs if d})
        found: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.mount.bucket):
            found.update(obj["Key"] for obj in page.get("Contents", []))
        if found != set(expected):
            missing = sorted(set(expected) - found)
            extra = sorted(found - set(expected))
            self.fail(f"bucket keys differ: missing {missing}, unexpected {extra}")
        for key, data in expected.items():
            body = self.s3.get_object(Bucket=self.mount.bucket, Key=key)["Body"].read()
            if body != data:
                self.fail(f"bucket object {key!r}: {len(body)} bytes, shadow {len(data)}")
            self.bytes_compared += len(data)
        self.note(f"bucket matches: {len(files)} files, {len(dirs) - 1} directories")

    # -- the run ---------------------------------------------------------------------------------

    def run(self, count: int) -> None:
        names = [name for name, _ in self.OPS]
        weights = [weight for _, weight in self.OPS]
        while self.index < count:
            if self.rng.random() < 1 / 400:
                name = "remount"
            elif self.rng.random() < 1 / 300:
                name = "big"
            else:
                name = self.rng.choices(names, weights)[0]
            self.watchdog.beat("random-ops", f"#{self.index} {name}")
            if self.watchdog.failure is not None:
                self.fail(f"watchdog: {self.watchdog.failure}")
            getattr(self, f"op_{name}")()
            self.counts[name] = self.counts.get(name, 0) + 1
            self.index += 1
            if self.index % COMPARE_EVERY == 0:
                self.compare_tree()
        self.compare_tree()
        for f in list(self.open):
            self._close(f)
        self.watchdog.beat("random-ops", "final unmount")
        self.unmount()
        self.compare_bucket()

    def close_all(self) -> None:
        """Best effort, on the way out of a failed run."""
        for f in self.open:
            for fd in (f.mount_fd, f.shadow_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.open.clear()


def sorted_listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


def read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def kind_and_size(st: os.stat_result) -> tuple[str, int, int]:
    """What is compared of a stat: the type, the permission bits and the size of a file
    (a directory's size, times, owners and link counts legitimately differ)."""
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode), 0)
    kind = "file" if stat.S_ISREG(st.st_mode) else oct(stat.S_IFMT(st.st_mode))
    return (kind, stat.S_IMODE(st.st_mode), st.st_size)


def describe(path: str) -> tuple[Any, ...]:
    """``lstat`` compared (a symlink: its target; its own mode is 0777 on both sides)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", os.readlink(path))
    return kind_and_size(st)


def bucket_body(path: str) -> bytes:
    """What the object of a shadow entry holds: a file's bytes, a symlink's target."""
    if os.path.islink(path):
        return os.fsencode(os.readlink(path))
    return Path(path).read_bytes()


@contextlib.contextmanager
def bucket_mount(server: S3Server, s3: Any, tmp_path: Path) -> Iterator[Mount]:
    bucket = unique_bucket("rnd")
    s3.create_bucket(Bucket=bucket)
    mount = Mount(server, bucket, tmp_path)
    mount.start()
    try:
        yield mount
    finally:
        mount.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_operations_match_a_local_shadow(
    seed: int, moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    started = time.monotonic()
    with bucket_mount(moto, s3, tmp_path) as mount:
        watchdog = Watchdog(STALL_SECONDS, limit=max(600.0, OPS * 0.5), daemon=mount.serving)
        ops = RandomOps(seed, mount, shadow, s3, watchdog)
        with watchdog.running():
            try:
                ops.run(OPS)
            finally:
                ops.close_all()
        assert watchdog.failure is None, watchdog.failure
    assert ops.index == OPS
    elapsed = time.monotonic() - started
    dirs, files = ops.tree()
    print(
        f"\nseed {seed}: {ops.index} operations in {elapsed:.0f}s, {ops.remounts} remounts, "
        f"{ops.bytes_written / MiB:.1f} MiB written, {ops.bytes_compared / MiB:.1f} MiB compared, "
        f"{len(files)} files and {len(dirs) - 1} directories at the end; "
        + ", ".join(f"{k} {v}" for k, v in sorted(ops.counts.items()))
    )


def test_chmod_right_after_a_listing_survives_a_remount(
    moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    """What the random operations found: a file written, listed (its HEAD recorded by the
    metadata cache), then chmod'ed within the same second. The chmod is a copy in place that
    keeps the ETag and the LastModified second, so the cached row still matched the listing
    and the next mount showed the old mode. TTLs of 0 make every listing of the first mount
    reach the bucket, as an expired cache does; the second mount has the default TTLs, so
    ``stat`` shows what its listing said."""
    bucket = unique_bucket("chmod")
    s3.create_bucket(Bucket=bucket)
    options = ("dir_ttl=0", "stat_ttl=0", "neg_ttl=0")
    for attempt in range(3):  # each round within one second, most likely; any round may fail
        name = f"f{attempt}"
        with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
            (mnt / name).write_bytes(b"hello")
            assert name in os.listdir(mnt)  # a listing, then HEADs: recorded
            os.chmod(mnt / name, 0o600)
            assert stat.S_IMODE(os.stat(mnt / name).st_mode) == 0o600
        with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
            assert name in os.listdir(mnt)
            assert stat.S_IMODE(os.stat(mnt / name).st_mode) == 0o600, name
        mode = int(s3.head_object(Bucket=bucket, Key=name)["Metadata"]["mode"])
        assert stat.S_IMODE(mode) == 0o600
