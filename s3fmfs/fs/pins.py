"""Pins: the version of an object that the open handles of one inode read.

Invariants:
- At most one pin per inode (``Pins``), from the first open of its object to the last release
  of the handles on it; every GET for them carries ``If-Match: etag``.
- While pinned, getattr, lookup and readdir report that version's attributes (the kernel's
  size of an open file never changes under its readers), unless the inode has a buffer or its
  truth is here (``attr_for``).
- A changed object (412, gone, or fewer bytes than the version has) moves the pin to the new
  version (a HEAD) only while none of its bytes went to the kernel (``served``) since its page
  cache was last dropped (and it was not kept at open), and only if the size is the same;
  otherwise the pin is ``stale``: every read of its handles is ESTALE while its attributes are
  still reported, and at its last release the kernel is told to forget the inode's attributes.
  Never two versions spliced.
- A rename's copy of the pinned version (same bytes; a copy of a multipart object has another
  ETag) moves the pin with it (``follow_copy``): its readers read on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attrs import Attr
from .inodes import Node

#: Times a read of an unserved version, or a buffer fill, starts again on a changed object.
REPIN_ATTEMPTS = 3


@dataclass(eq=False)
class Pin:
    """The version of an object the open handles of one inode read (one per inode, from the
    first open to the last release): every GET for them carries ``If-Match: etag``."""

    etag: str  # "" until known: the first read HEADs it
    size: int
    attr: Attr | None  # that version's attributes, reported while handles are open
    #: bytes of it went to the kernel (or its page cache was kept): it can no longer change
    served: bool = False
    stale: bool = False  # the object changed after bytes were served: reads are ESTALE
    handles: int = 0


class Pins:
    """The pins of a mount's inodes, by inode number."""

    def __init__(self) -> None:
        self.by_ino: dict[int, Pin] = {}

    def get(self, ino: int) -> Pin | None:
        return self.by_ino.get(ino)

    def attr_for(self, node: Node, local: bool) -> Attr | None:
        """The attributes of the version the node's open handles read (None: not pinned, or
        ``local``/buffered: its truth is here), so that the kernel's size of an open file
        never changes under its readers."""
        pin = self.by_ino.get(node.ino)
        if pin is None or pin.attr is None or node.buffer is not None or local:
            return None
        return pin.attr  # (stale too: a smaller size would make its reads an early EOF)

    def join(self, node: Node) -> Pin:
        """The pin of the inode's open handles, made from what the kernel was told of the
        object (``node.attr``) when there is none (or it went stale); counts one more handle."""
        pin = self.by_ino.get(node.ino)
        if pin is None or pin.stale:
            # after a stale one (its handles stay ESTALE): the version the first read HEADs
            attr = node.attr if pin is None else None
            pin = Pin(attr.etag if attr else "", attr.size if attr else 0, attr)
            self.by_ino[node.ino] = pin
        pin.handles += 1
        return pin

    def leave(self, ino: int, pin: Pin) -> bool:
        """A handle on ``pin`` was released; True when it was the last one of a stale pin (the
        kernel must forget the inode's attributes: the next open reads the new version)."""
        pin.handles -= 1
        if pin.handles <= 0 and self.by_ino.get(ino) is pin:
            del self.by_ino[ino]
            return pin.stale
        return False

    def drop(self, ino: int) -> None:
        """The inode was written here: its handles read the buffer from now on."""
        self.by_ino.pop(ino, None)

    def follow_copy(self, node: Node, source_etag: str, copy_etag: str) -> None:
        """``node``'s object was copied to its new key (a rename): a pin on the version copied
        follows it (same bytes; a copy of a multipart object has another ETag), so its open
        handles read on rather than meet ESTALE."""
        pin = self.by_ino.get(node.ino)
        if pin is not None and source_etag and pin.etag == source_etag:
            pin.etag = copy_etag
            if pin.attr is not None:
                pin.attr = pin.attr.with_changes(etag=copy_etag)
        if node.attr is not None and node.attr.etag == source_etag:
            node.attr = node.attr.with_changes(etag=copy_etag)
