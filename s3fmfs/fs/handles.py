"""File handles: open files and directories, what their reads come from, and release.

Invariants:
- Every open takes a handle number (``fh``) never given to another open of this mount; an
  open file's handle holds its node (``Node.open_count``) and its own ``ReadAhead``.
- ``open`` answers ``keep_cache`` (the kernel keeps its page cache) only when the object's
  ETag is the one of the inode's previous open (``Content.opened_etag``) and it was not
  written here since.
- Reads of an unbuffered file are ranged GETs of the handle's pinned version (``pins``)
  through its ``ReadAhead``: several in flight at once ahead of a sequential reader, in the
  core's nursery, streamed (a read waits for its own bytes only; the store's
  ``get_range_into`` when it has one), the bytes held within the mount's ``ReadBudget``
  (``readahead_mb``); release and seeks cancel them. Without a nursery (tests driving the core
  directly) reads fetch their own blocks. Reads of a buffered file come from the buffer.
- Requests: an open sends none (the pin is made from the attributes the kernel was given; a
  pin without an ETag HEADs at its first read); a read at or past the pinned size sends none;
  a small object comes whole in the first read's GET (``readahead.WHOLE_OBJECT``), or with
  none when its lookup's GET brought the pinned version's bytes (``bodies``: taken by the
  handle's first read, then held by the handle till release; never for a buffered file).
- Integrity (``integrity``, unless ``no_checksum``): the whole-object GET goes through the
  store's checked ``get_range`` (fetched again on a mismatch); the bytes a handle returns are
  hashed in order (``SequentialCheck``) and the read reaching the end of an object whose MD5
  is not its ETag's is EIO (and the next open drops the kernel's page cache of it).
- A read waits for the writes and truncations of its inode received before it
  (``writeorder``): it never hands the kernel's page cache bytes older than a write it sent.
- A read of a pin gone stale is ESTALE (logged once per handle); at the pin's last release
  the kernel is told to forget the inode's attributes (``forget_kernel_attrs``).
- ``release`` saves a file still unsaved (its errors only logged: the kernel discards them;
  the data stays for ``flush_all``) and frees the buffer with the inode's last handle unless
  it is unsaved; it never raises for an unknown handle.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..client.errors import NoSuchKey, PreconditionFailed
from .attrs import Attr, Kind
from .errno_map import FsError
from .files import Files
from .inodes import Node
from .integrity import ChecksumMismatch, SequentialCheck, sequential_check
from .namespace import Namespace
from .pins import REPIN_ATTEMPTS, Pin, Pins
from .readahead import ReadAhead, ReadBudget
from .store import Sink, StreamingStore

log = logging.getLogger("s3fmfs.fs")


@dataclass
class Handle:
    """An open file."""

    node: Node
    flags: int
    readahead: ReadAhead = field(default_factory=ReadAhead)
    keep_cache: bool = False  # the kernel may keep its page cache of the file (open's answer)
    pin: Pin | None = None  # the version its reads come from (None: a local file's buffer)
    stale_logged: bool = False
    body: tuple[str, bytes] | None = None  # (ETag, bytes) of a small object its GET brought
    check: SequentialCheck | None = None  # MD5 of the bytes read in order (``integrity``)


@dataclass
class DirHandle:
    """An open directory and the snapshot its offsets index."""

    ino: int
    snapshot: list[tuple[str, Attr]] | None = None


class Handles:
    """The open files and directories of a mount."""

    def __init__(self, ns: Namespace, files: Files, pins: Pins, read_budget: ReadBudget) -> None:
        self.ns = ns
        self.files = files
        self.pins = pins
        self.read_budget = read_budget
        self.by_fh: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        #: where read-ahead fetches run (the core's ``run_background``; None: none)
        self.nursery: trio.Nursery | None = None
        #: makes the kernel forget an inode's cached attributes (the adapter's; None: no kernel)
        self.forget_kernel_attrs: Callable[[int], None] | None = None

    def opendir(self, ino: int) -> int:
        """Open a directory; its snapshot is taken by the first readdir."""
        self.ns.dir_node(ino)
        fh = self.new_fh()
        self.dirs[fh] = DirHandle(ino)
        return fh

    def dir(self, fh: int) -> DirHandle:
        handle = self.dirs.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    def new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def open_handle(self, node: Node, flags: int) -> int:
        fh = self.new_fh()
        opts = self.ns.settings
        readahead = ReadAhead(self.read_budget, self.nursery, max_inflight=opts.read_concurrency)
        self.by_fh[fh] = Handle(node, flags, readahead)
        node.open_count += 1
        return fh

    def keep_cache(self, fh: int) -> bool:
        """Whether the kernel may keep its page cache for this open (see ``open``)."""
        handle = self.by_fh.get(fh)
        return handle is not None and handle.keep_cache

    def handle(self, fh: int) -> Handle:
        handle = self.by_fh.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    async def open(self, ino: int, flags: int) -> int:
        """Open a file; nothing is fetched until the first read (O_TRUNC: empties it)."""
        node = self.ns.inodes.get(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing or flags & os.O_TRUNC:
            self.ns.check_writable()
        fh = self.open_handle(node, flags)
        handle = self.by_fh[fh]
        if not self.ns.is_local(node) and node.buffer is None and not node.dirty:
            # reads come from the bucket: from the version the inode's open handles read, or
            # the one the kernel was last told of; the page cache stays when it is the version
            # the previous open saw, unchanged here (its pages are of that version)
            pin = self.pins.join(node)
            handle.pin = pin
            handle.keep_cache = pin.etag != "" and node.content.opened_etag == pin.etag
            pin.served = pin.served or handle.keep_cache
            node.content.opened_etag = pin.etag
        else:
            node.content.opened_etag = ""
        if flags & os.O_TRUNC and writing:
            handle.keep_cache = False
            try:
                async with node.lock:
                    await self.files.truncate_locked(node, 0)
            except BaseException:
                await self.release(fh)
                raise
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end): from the buffer when the file
        has one, else ranged GETs of the handle's pinned version with a read-ahead window that
        grows while reads are sequential and resets on a seek.

        A changed object (412, gone, or fewer bytes than the version has) is ESTALE once bytes
        of the pinned version were served; before that, the pin moves to the new version (a
        HEAD) and the read starts again, if the size is the same (else ESTALE too)."""
        handle = self.handle(fh)
        node = handle.node
        await self.files.write_order.wait_earlier(
            node.ino
        )  # not older than a write received before
        if handle.pin is not None and handle.pin.stale:
            raise self.stale(handle)
        if node.buffer is not None:
            return await node.buffer.pread(offset, size)
        if handle.pin is None:  # opened on a local file, now saved and its buffer gone
            handle.pin = self.pins.join(node)
            handle.pin.served = True  # the kernel had that version's bytes from the buffer
        pin = handle.pin
        for _ in range(REPIN_ATTEMPTS + 1):
            if pin.stale:
                raise self.stale(handle)
            if not pin.etag:
                await self.repin(node, pin, "")  # (a pin without attributes takes any size)
            etag, known = pin.etag, pin.size
            if offset >= known:
                return b""
            body = self.kept_body(handle, etag, known)
            if body is not None:
                pin.served = True
                return body[offset : offset + size]
            try:
                data = await self.read_version(handle, offset, size, etag, known)
            except (PreconditionFailed, NoSuchKey):
                data = None
            if node.buffer is not None:  # a writer appeared meanwhile: its buffer is the truth
                if pin.stale:
                    raise self.stale(handle)
                return await node.buffer.pread(offset, size)
            if pin.etag != etag:
                continue  # moved to a new version meanwhile: these bytes are of the old one
            if data is not None and len(data) == min(size, known - offset):
                pin.served = pin.served or bool(data)
                return data
            # the object is no longer the pinned version
            if await self.repin(node, pin, etag):
                continue
            pin.stale = True
            raise self.stale(handle)
        raise self.stale(handle)

    def kept_body(self, handle: Handle, etag: str, known: int) -> bytes | None:
        """The whole bytes of version ``etag`` if the lookup's GET brought them
        (``cache.bodies``): taken at the handle's first read and kept with it till release."""
        if handle.body is not None and handle.body[0] == etag:
            return handle.body[1]
        handle.body = None
        if not etag:
            return None
        body = self.ns.cache.bodies.take(handle.node.path, etag)
        if body is None or len(body) != known:
            return None
        handle.body = (etag, body)
        return body

    async def read_version(
        self, handle: Handle, offset: int, size: int, etag: str, known: int
    ) -> bytes:
        """Bytes of version ``etag`` (If-Match on every GET) through the handle's read-ahead."""
        key = self.ns.keys.file_key(handle.node.path)
        store = self.ns.store

        check = handle.check
        if check is None or check.etag != etag:
            check = handle.check = await sequential_check(store, key, etag, known, offset)

        async def stream(start: int, length: int, sink: Sink) -> None:
            end = start + length - 1
            whole = check is not None and start == 0 and length >= known
            if isinstance(store, StreamingStore) and not whole:  # chunks as they arrive
                await store.get_range_into(key, start, end, sink, if_match=etag)
            else:  # the whole object (one GET, checked and fetched again by the store)
                data = await store.get_range(key, start, end, if_match=etag)
                if whole and check is not None and len(data) == known:
                    check.done = True  # checked whole: no need to hash it again
                await sink(data)

        data = await handle.readahead.read(offset, size, known, handle.node.version, stream)
        if check is not None:
            try:
                await check.feed(offset, data)  # at the end: ChecksumMismatch (EIO) if wrong
            except ChecksumMismatch:
                # the kernel's page cache holds bytes returned wrong: the next open drops it
                handle.node.content.opened_etag = ""
                raise  # (and every later read of this handle: ``SequentialCheck.failed``)
        return data

    async def repin(self, node: Node, pin: Pin, etag: str) -> bool:
        """The object is no longer version ``etag``: HEAD it (its attributes are kept, for the
        next open) and move the pin there if no byte of ``etag`` was served and the size is the
        same (the kernel's size of the open file is the old one: a short answer against it is
        an early end of file, or zeros). True when the pin is no longer at ``etag``; False: the
        caller says ESTALE. ENOENT for a pin that served nothing, of an object gone. The
        handles on a moved pin drop what they fetched."""
        info = await self.ns.head(self.ns.keys.file_key(node.path))
        if info is None and pin.etag == etag and etag and pin.served:
            return False
        if info is None:
            raise FsError(errno.ENOENT, f"{node.path} is gone from the bucket")
        attr = self.ns.complete_file(self.ns.attr_from_info(info, is_dir=False))
        if not self.ns.is_local(node):
            node.attr = attr
            if node.path_attached:
                self.ns.cache.store_attr(node.path, attr)
        if pin.etag != etag:
            return True  # moved by another read meanwhile
        if pin.etag and (pin.served or info.size != pin.size):
            return False
        pin.etag, pin.size, pin.attr = info.etag, info.size, attr
        if pin is self.pins.get(node.ino):
            node.content.opened_etag = info.etag  # what the page cache will hold
        for other in self.by_fh.values():
            if other.pin is pin:
                other.readahead.reset(other.readahead.version)
        return True

    def stale(self, handle: Handle) -> FsError:
        """ESTALE for a read of a version no longer in the bucket (logged once per handle)."""
        path = handle.node.path
        if not handle.stale_logged:
            handle.stale_logged = True
            etag = handle.pin.etag if handle.pin is not None else ""
            log.warning(
                "%r changed in the bucket while open (read version %s): reads of this open "
                "file fail with ESTALE; open it again for the new version",
                path,
                etag,
            )
        return FsError(errno.ESTALE, f"{path} changed in the bucket while open")

    async def release(self, fh: int) -> None:
        """The last close of a handle: save if still dirty (errors are only logged: the
        kernel discards them), free the buffer with the last handle."""
        handle = self.by_fh.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.open_count -= 1
        handle.readahead.close()
        pin = handle.pin
        stale = pin is not None and self.pins.leave(node.ino, pin)
        if stale and self.forget_kernel_attrs is not None:
            self.forget_kernel_attrs(node.ino)  # the kernel asks for the new version's
        try:
            await self.files.save(node)
        except FsError:
            pass  # logged by the save; the data stays in the buffer for flush_all
        finally:
            if node.open_count <= 0:
                async with node.lock:
                    await self.files.end_stream(node)  # before the buffer closes under its parts
            if node.open_count <= 0 and not node.dirty:
                node.content.close_buffer()
            self.ns.inodes.maybe_drop(node)
