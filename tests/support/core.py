"""Building the filesystem core for in-process tests, and path-level helpers to drive it.

Invariants:
- ``make_core`` is the one place tests here build an ``FsCore``: a change of its constructor is
  one edit.
- ``FakeTime`` is both the core's ``timer`` (monotonic seconds, for the TTL caches) and its
  ``clock`` (wall time, ns), and the ``MemStore``'s clock: it moves only when a test advances
  it, so cache expiry and LastModified are deterministic.
- The helpers take lookup references as the kernel would and release every handle they open.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from s3fmfs.fs.attrs import Attr, Kind
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import ObjectStore

NS = 1_000_000_000


class FakeTime:
    """A clock the test moves by hand: ``timer()`` in seconds, ``clock()`` in nanoseconds."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def timer(self) -> float:
        return self.now

    def clock(self) -> int:
        return int(self.now * NS)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_core(
    store: ObjectStore,
    *,
    time: FakeTime | None = None,
    prefix: str = "",
    nursery: trio.Nursery | None = None,
    tmpdir: str | None = None,
    **settings: Any,
) -> FsCore:
    """An ``FsCore`` over ``store`` with ``FsSettings(**settings)``, on ``time`` when given."""
    extra: dict[str, Any] = {}
    if time is not None:
        extra.update(timer=time.timer, clock=time.clock)
    return FsCore(
        store, FsSettings(**settings), prefix=prefix, nursery=nursery, tmpdir=tmpdir, **extra
    )


async def walk(core: FsCore, path: str) -> tuple[int, Attr]:
    """Look a path up component by component (one lookup reference per component)."""
    ino, attr = ROOT_INODE, await core.getattr(ROOT_INODE)
    for part in [p for p in path.split("/") if p]:
        ino, attr = await core.lookup(ino, part.encode())
    return ino, attr


async def parent_and_name(core: FsCore, path: str) -> tuple[int, bytes]:
    """The inode of ``path``'s directory and its last component."""
    parent, _, name = path.rpartition("/")
    return (await walk(core, parent))[0] if parent else ROOT_INODE, name.encode()


async def listdir(
    core: FsCore, ino: int = ROOT_INODE, *, names_only: bool = False
) -> dict[str, tuple[int, Attr]]:
    """Every entry of a directory (dots left out), as ``ls -l`` sees them: an entry readdir
    reports with a listing's attributes alone is asked again as the kernel would (timeouts
    of 0: a lookup, or a getattr for a directory), unless ``names_only`` (``ls``)."""
    seen = await _readdir(core, ino)
    if names_only:
        return seen
    for name, (child, attr) in list(seen.items()):
        if attr.complete:
            continue
        if attr.kind is Kind.DIR:
            seen[name] = (child, await core.getattr(child))
        else:
            seen[name] = await core.lookup(ino, name.encode())  # a reference, as the kernel's
    return seen


async def _readdir(core: FsCore, ino: int) -> dict[str, tuple[int, Attr]]:
    fh = await core.opendir(ino)
    seen: dict[str, tuple[int, Attr]] = {}

    def emit(name: bytes, child: int, attr: Attr, next_id: int) -> bool:
        seen[name.decode()] = (child, attr)
        return True

    try:
        await core.readdir(fh, 0, emit)
    finally:
        await core.releasedir(fh)
    seen.pop(".", None)
    seen.pop("..", None)
    return seen


async def write_file(core: FsCore, path: str, data: bytes, mode: int = 0o644) -> int:
    """Create (or replace) a file with ``data``, flushed and closed; its inode."""
    parent, name = await parent_and_name(core, path)
    fh, ino, _ = await core.create(parent, name, mode, os.O_WRONLY | os.O_TRUNC, 0, 0)
    try:
        await core.write(fh, 0, data)
        await core.flush(fh)
    finally:
        await core.release(fh)
    return ino


async def read_all(core: FsCore, ino: int) -> bytes:
    """A file's whole content through a new handle."""
    fh = await core.open(ino, os.O_RDONLY)
    try:
        size = (await core.getattr(ino)).size
        return await core.read(fh, 0, size + 10)
    finally:
        await core.release(fh)
