"""A plain model of the tree a mount shows: paths → files (bytes), directories, symlinks; and
a "kernel" that drives the core by path the way the kernel would (lookups component by
component, each taking a reference it can later forget).

Invariants:
- A model file is an object (``MFile``): open handles hold the object, not the path, so a
  file renamed, replaced or unlinked while open keeps its content for its handles (POSIX).
- Errors are the core's, called directly (no kernel in between): a component that is a file
  or a symlink is ENOTDIR, a missing one ENOENT (symlinks are never followed here).
"""

from __future__ import annotations

import errno
from collections import Counter
from dataclasses import dataclass, field

from s3fmfs.fs.attrs import Attr, Kind
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.inodes import ROOT_INODE


@dataclass(eq=False)
class MFile:
    data: bytearray = field(default_factory=bytearray)
    mode: int = 0o644


@dataclass(eq=False)
class MDir:
    mode: int = 0o755


@dataclass(eq=False)
class MLink:
    target: bytes


Entry = MFile | MDir | MLink

KINDS = {MFile: Kind.FILE, MDir: Kind.DIR, MLink: Kind.SYMLINK}


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class Model:
    """What the tree should be."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def dirs(self) -> list[str]:
        return ["", *sorted(p for p, e in self.entries.items() if isinstance(e, MDir))]

    def children(self, directory: str) -> dict[str, Entry]:
        return {
            p.rpartition("/")[2]: e for p, e in self.entries.items() if parent_of(p) == directory
        }

    def under(self, directory: str) -> list[str]:
        return [p for p in self.entries if p.startswith(directory + "/")]

    def walk_error(self, path: str) -> int | None:
        """The errno of looking ``path`` up component by component (None: found)."""
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            entry = self.entries.get("/".join(parts[:i]))
            if entry is None:
                return errno.ENOENT
            if i < len(parts) and not isinstance(entry, MDir):
                return errno.ENOTDIR
        return None

    def parent_error(self, path: str) -> int | None:
        """The errno of using ``path``'s directory as one (None when it is one)."""
        return self.walk_error(parent_of(path)) or self.not_dir(parent_of(path))

    def not_dir(self, path: str) -> int | None:
        """ENOTDIR when ``path`` (found) is not a directory."""
        return None if path == "" or isinstance(self.entries.get(path), MDir) else errno.ENOTDIR

    def lookup_error(self, path: str) -> int | None:
        """The errno of walking to ``path`` itself."""
        return self.walk_error(path)

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` (and everything under it) to ``dst``, replacing what is there."""
        moving = [src, *self.under(src)]
        self.entries.pop(dst, None)
        moved = {dst + p[len(src) :]: self.entries.pop(p) for p in moving}
        self.entries.update(moved)


class Kernel:
    """Path operations on a core, taking lookup references as the kernel does."""

    def __init__(self, core: FsCore) -> None:
        self.core = core
        self.refs: Counter[int] = Counter()

    async def lookup(self, parent: int, name: str) -> tuple[int, Attr]:
        ino, attr = await self.core.lookup(parent, name.encode())
        self.refs[ino] += 1
        return ino, attr

    async def walk(self, path: str) -> tuple[int, Attr]:
        ino, attr = ROOT_INODE, await self.core.getattr(ROOT_INODE)
        for part in [p for p in path.split("/") if p]:
            ino, attr = await self.lookup(ino, part)
        return ino, attr

    async def parent(self, path: str) -> tuple[int, bytes]:
        parent, _, name = path.rpartition("/")
        return (await self.walk(parent))[0], name.encode()

    def took(self, ino: int) -> int:
        self.refs[ino] += 1
        return ino

    def forget_all(self) -> None:
        """The kernel dropped its dentries and inodes (memory pressure)."""
        pairs = [(ino, n) for ino, n in self.refs.items() if ino != ROOT_INODE and n > 0]
        self.refs.clear()
        self.core.forget(pairs)

    async def listdir(self, ino: int) -> dict[str, Attr]:
        fh = await self.core.opendir(ino)
        seen: dict[str, Attr] = {}

        inos: dict[str, int] = {}

        def emit(name: bytes, child: int, attr: Attr, next_id: int) -> bool:
            if name not in (b".", b".."):
                seen[name.decode()] = attr
                inos[name.decode()] = child
                self.refs[child] += 1
            return True

        try:
            await self.core.readdir(fh, 0, emit)
        finally:
            await self.core.releasedir(fh)
        for name, attr in list(seen.items()):
            # a listing's attributes alone come with timeouts of 0: the kernel asks again
            if attr.complete:
                continue
            if attr.kind is Kind.DIR:
                seen[name] = await self.core.getattr(inos[name])
            else:
                seen[name] = (await self.lookup(ino, name))[1]
        return seen
