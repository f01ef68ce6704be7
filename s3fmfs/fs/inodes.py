"""The inode table: inode numbers ↔ paths, lookup counts, open counts.

Invariants:
- Inode numbers come from a counter that only grows: a number is never given to two nodes
  during the mount's life, whatever is forgotten or deleted. The root is ``ROOT_INODE``.
- At most one node is *attached* to a path (``by_path``); a node unlinked or replaced is
  *detached* (``path_attached`` False) but lives on, under its number, while the kernel still
  holds lookups on it or a handle is open on it.
- ``nlookup`` counts the kernel's references (lookup, create, mkdir, symlink, and readdirplus
  entries it accepted) and only ``forget`` lowers it. A node is dropped from the table once
  it has no lookups, no open handle and no unsaved data (``droppable``); the root never is.
- A node is identity and counts; a file's bytes and upload state are its ``Content``
  (``content``: made on first use). ``unsaved`` holds the inodes whose content is unsaved
  (created and not uploaded yet, or holding unsaved writes): their truth is here rather than
  in the bucket, and listings merge them in. Only ``Content``'s transitions change it; a node
  leaving the namespace (``detach``) discards its content first, so an unsaved node is always
  attached.
- Memory: ``dropped`` counts the nodes dropped (the core's housekeeping gives memory back
  after many), and ``compact`` remakes the two maps once they shrank to a quarter of their
  peak (a dict never shrinks its table).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import trio

from .attrs import Attr, Kind
from .content import Content
from .errno_map import FsError
from .keys import is_under, parent_of
from .writebuf import WriteBuffer

log = logging.getLogger("s3fmfs.fs")

ROOT_INODE = 1


@dataclass(eq=False)
class Node:
    """One inode: identity and counts. ``attr`` is the last known attributes; authoritative
    while its content is unsaved (or it is unlinked).

    Concurrency: ``lock`` serialises everything that touches the content's buffer or uploads
    (writes, truncation, filling, upload); reads of a filled buffer need no lock.
    """

    ino: int
    path: str
    kind: Kind
    attr: Attr | None = None
    nlookup: int = 0
    open_count: int = 0
    path_attached: bool = True
    link_target: tuple[str, bytes] | None = None  # (ETag, target) of a symlink
    #: the mount's index of unsaved inodes, handed to the content (``InodeTable.unsaved``)
    index: set[int] | None = field(default=None, repr=False)
    _lock: trio.Lock | None = field(default=None, repr=False)
    _content: Content | None = field(default=None, repr=False)

    @property
    def lock(self) -> trio.Lock:
        """Made on first use: most nodes (a listing's entries) are never written to, and a
        trio.Lock costs about 300 bytes."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    @property
    def content(self) -> Content:
        """The file's content (made on first use, like the lock: most nodes never need it)."""
        if self._content is None:
            self._content = Content(self.ino, self.index)
        return self._content

    @property
    def has_content(self) -> bool:
        return self._content is not None

    # read-only views of the content, for the lifecycle (``mount``) and tests
    @property
    def dirty(self) -> bool:
        """Holds data the bucket does not have."""
        return self._content is not None and self._content.dirty

    @property
    def buffer(self) -> WriteBuffer | None:
        return None if self._content is None else self._content.buffer

    @property
    def version(self) -> int:
        return 0 if self._content is None else self._content.version

    @property
    def unlinked(self) -> bool:
        """Removed from the namespace while still referenced."""
        return not self.path_attached

    @property
    def droppable(self) -> bool:
        return (
            self.ino != ROOT_INODE
            and self.nlookup <= 0
            and self.open_count <= 0
            and not (self.dirty and self.path_attached)
        )


class InodeTable:
    """Nodes by number and by path."""

    def __init__(self, root_attr: Attr) -> None:
        root = Node(ROOT_INODE, "", Kind.DIR, attr=root_attr, nlookup=1)
        self.by_ino: dict[int, Node] = {ROOT_INODE: root}
        self.by_path: dict[str, Node] = {"": root}
        self.unsaved: set[int] = set()  # inodes whose content is unsaved (``Content``)
        self._next = ROOT_INODE + 1
        self.dropped = 0  # nodes dropped so far
        self._peak = 1  # the most nodes held since the maps were made

    def compact(self) -> None:
        """Remake the maps when they hold a quarter of their peak or less (after many
        forgets), so that their tables shrink."""
        if self._peak >= 1_000 and len(self.by_ino) * 4 <= self._peak:
            self.by_ino = dict(self.by_ino)
            self.by_path = dict(self.by_path)
            self._peak = len(self.by_ino)

    @property
    def root(self) -> Node:
        return self.by_ino[ROOT_INODE]

    def get(self, ino: int) -> Node:
        """The node of ``ino``; ENOENT when the kernel names one we do not know (stale)."""
        node = self.by_ino.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"unknown inode {ino}")
        return node

    def find(self, path: str) -> Node | None:
        """The node attached to ``path``, if any."""
        return self.by_path.get(path)

    def node_for(self, path: str, kind: Kind) -> Node:
        """The node attached to ``path`` when it is of ``kind``; otherwise a new node (the old
        one, if any, is detached: the entry changed type behind our back)."""
        node = self.by_path.get(path)
        if node is not None:
            if node.kind is kind:
                return node
            self.detach(node)
        node = Node(self._next, path, kind, index=self.unsaved)
        self._next += 1
        self.by_ino[node.ino] = node
        self.by_path[path] = node
        self._peak = max(self._peak, len(self.by_ino))
        return node

    def ref(self, node: Node, count: int = 1) -> None:
        """The kernel took ``count`` more references."""
        node.nlookup += count

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references (never raises for unknown numbers)."""
        node = self.by_ino.get(ino)
        if node is None:
            log.debug("forget of unknown inode %d", ino)
            return
        node.nlookup -= count
        if node.nlookup < 0:
            log.debug("inode %d: lookup count below zero (%d)", ino, node.nlookup)
            node.nlookup = 0
        self.maybe_drop(node)

    def maybe_drop(self, node: Node) -> None:
        """Remove ``node`` from the table when nothing refers to it any more."""
        if not node.droppable:
            return
        if self.by_ino.pop(node.ino, None) is not None:
            self.dropped += 1
        if node.path_attached and self.by_path.get(node.path) is node:
            del self.by_path[node.path]
        node.path_attached = False
        if node.has_content:
            node.content.close()

    def detach(self, node: Node) -> None:
        """Take ``node`` out of the namespace (unlink, replaced by rename, type changed)."""
        if node.ino == ROOT_INODE:
            return
        if node.has_content:
            node.content.discard()  # (unsaved content is never uploaded once detached)
        if node.path_attached and self.by_path.get(node.path) is node:
            del self.by_path[node.path]
        node.path_attached = False
        self.maybe_drop(node)

    def move(self, old: str, new: str) -> None:
        """Rename ``old`` (and everything under it) to ``new``; ``new`` must be free."""
        moving = [(p, n) for p, n in self.by_path.items() if p == old or is_under(p, old)]
        for p, _ in moving:
            del self.by_path[p]
        for p, node in moving:
            node.path = new + p[len(old) :]
            self.by_path[node.path] = node

    def is_unsaved(self, node: Node) -> bool:
        """Whether ``node``'s truth is here (new or unsaved content) rather than the bucket."""
        return node.ino in self.unsaved

    def _unsaved_nodes(self) -> list[Node]:
        return [n for n in map(self.by_ino.get, self.unsaved) if n is not None]

    def unsaved_children(self, directory: str) -> list[Node]:
        """Nodes of unsaved content directly inside ``directory``."""
        return [n for n in self._unsaved_nodes() if parent_of(n.path) == directory]

    def unsaved_under(self, directory: str) -> list[Node]:
        """Nodes of unsaved content at any depth inside ``directory``."""
        return [n for n in self._unsaved_nodes() if is_under(n.path, directory)]

    def all_nodes(self) -> list[Node]:
        return list(self.by_ino.values())
