"""The filesystem core: FUSE operations in plain Python types over an ``ObjectStore``.

Tests drive it directly, without a mount; ``adapter`` only translates types and errors.
``FsCore`` is a facade over the parts, each with its own invariants:

    namespace.Namespace   inodes, caches, paths ↔ keys; lookup, getattr, resolving paths
    listing.Listings      directory listings, readdir snapshots
    changes.Changes       mkdir, rmdir, symlink, unlink, rename (the key work, tree claims)
    xattrs.Xattrs         extended attributes: user.* as object metadata, s3.* read-only
    handles.Handles       open files and directories, reads (pins, read-ahead), release
    files.Files           buffers written and saved; every ``content.Content`` transition
    upload.Uploader       the one upload engine (PUT, multipart streamed or whole, recovery)

Invariants:
- Every method either succeeds or raises (``FsError`` or a client error); ``forget`` never
  raises. Nothing here knows pyfuse3.
- Background work (read-ahead, streamed parts, HEADs and listings sent ahead: ``prefetch``)
  runs in ``nursery`` (``run_background``); without one (tests driving the core directly)
  reads fetch their own blocks, files go up whole and nothing is fetched ahead.
- Memory: ``run_background`` also runs the housekeeping (``housekeep``, every longest TTL,
  1 s to 1 min): expired cache entries dropped, inode maps compacted, the metadata cache
  flushed, and the C heap trimmed (``malloc_trim``) once ``TRIM_AFTER`` entries were freed.

Concurrency: all state lives on the trio thread; it may change at every ``await``, so code
re-reads the inode table after awaiting rather than trusting what it read before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from . import limits, special
from .attrs import Attr, Kind, truncate_to_seconds
from .changes import RENAME_EXCHANGE, RENAME_NOREPLACE, Changes
from .errno_map import FsError
from .files import Files
from .handles import Handle, Handles
from .inodes import ROOT_INODE, Node
from .listing import Emit, Listings
from .metacache import MetaCache
from .namespace import Namespace
from .pins import Pins
from .readahead import ReadBudget
from .recovery import RecoveryFolder
from .settings import FsSettings
from .store import ObjectStore
from .upload import Uploader
from .xattrs import Xattrs

__all__ = [
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "FileProgress",
    "FsCore",
    "StatFs",
    "UploadProgress",
]

#: Entries (cache rows, inodes) freed since the last trim of the C heap before the next one.
TRIM_AFTER = 1_000
#: Longest time between two housekeeping rounds (shorter with short TTLs).
HOUSEKEEPING_MAX = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``: gives the free pages of the C heap back to the system (the
    allocator keeps them otherwise); None without glibc."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


MALLOC_TRIM = _malloc_trim()


@dataclass
class StatFs:
    """statfs answers: a bucket has no size limit, so big round numbers."""

    block_size: int = 4096
    blocks: int = 1 << 36  # 256 TiB of 4 KiB blocks
    blocks_free: int = 1 << 36
    files: int = 1 << 32
    files_free: int = 1 << 32
    name_max: int = 255


@dataclass(frozen=True)
class FileProgress:
    """One file with data to upload: its size and the bytes of it sent so far."""

    path: str
    size: int
    sent: int


@dataclass(frozen=True)
class UploadProgress:
    """Files with data the bucket does not have yet, and how far their uploads are."""

    files: tuple[FileProgress, ...]

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_done(self) -> int:
        return sum(f.sent for f in self.files)

    @property
    def percent(self) -> int:
        """Whole percent sent (100 when there is nothing to send); never over 100."""
        total = self.bytes_total
        return 100 if total == 0 else min(100, self.bytes_done * 100 // total)


class FsCore:
    """A bucket (or a prefix of it) as a tree of files, directories and symlinks."""

    def __init__(
        self,
        store: ObjectStore,
        settings: FsSettings | None = None,
        *,
        prefix: str = "",
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], int] = time.time_ns,
        tmpdir: str | None = None,
        metacache: MetaCache | None = None,
        nursery: trio.Nursery | None = None,
        recovery: RecoveryFolder | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or FsSettings()
        self.pins = Pins()
        self.ns = Namespace(
            store,
            self.settings,
            self.pins,
            prefix=prefix,
            timer=timer,
            clock=clock,
            metacache=metacache,
        )
        #: where the data of files that could not be uploaded is kept (without a mount: nowhere)
        self.recovery = recovery or RecoveryFolder(None)
        #: the one way content goes up (sized by ``part_size_mb``, ``upload_concurrency``)
        self.uploader = Uploader(store, self.settings, self.recovery)
        self.files = Files(self.ns, self.uploader, self.pins, tmpdir=tmpdir)
        self.read_budget = ReadBudget(self.settings.readahead_mb << 20)
        self.open_files = Handles(self.ns, self.files, self.pins, self.read_budget)
        self.listings = Listings(self.ns)
        self.ns.list_folder = self.listings.list_for_lookups  # lookups answered by listings
        self.changes = Changes(self.ns, self.files, self.pins)
        self.xattrs = Xattrs(self.ns, self.pins)  # extended attributes (``xattrs``)
        # what tests and the lifecycle look at
        self.keys = self.ns.keys
        self.inodes = self.ns.inodes
        self.cache = self.ns.cache
        self.metacache = self.ns.metacache
        self.handles: dict[int, Handle] = self.open_files.by_fh
        self.dirs = self.open_files.dirs
        self.nursery = nursery
        self._dropped_seen = 0  # ``inodes.dropped`` at the last housekeeping round

    # -- shared settings of the parts ------------------------------------------------------------

    @property
    def nursery(self) -> trio.Nursery | None:
        """Where read-ahead fetches and streamed parts run (``run_background``)."""
        return self.files.nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self.files.nursery = self.open_files.nursery = nursery
        self.ns.ahead.nursery = self.listings.ahead.nursery = nursery  # requests sent ahead

    @property
    def forget_kernel_attrs(self) -> Callable[[int], None] | None:
        """Makes the kernel forget an inode's cached attributes (the adapter's; None: no
        kernel)."""
        return self.open_files.forget_kernel_attrs

    @forget_kernel_attrs.setter
    def forget_kernel_attrs(self, forget: Callable[[int], None] | None) -> None:
        self.open_files.forget_kernel_attrs = forget

    @property
    def root_attr(self) -> Attr:
        return self.ns.root_attr

    # -- namespace -------------------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """The entry ``name`` in a directory; takes one lookup reference on its inode."""
        return await self.ns.lookup(parent_ino, name)

    def forget(self, pairs: Iterable[tuple[int, int]]) -> None:
        """The kernel dropped references; never raises."""
        self.ns.forget(pairs)

    async def getattr(self, ino: int) -> Attr:
        """Attributes of an inode; ENOENT once its entry is gone from the bucket."""
        return await self.ns.getattr(ino)

    async def opendir(self, ino: int) -> int:
        """Open a directory; its snapshot is taken by the first readdir."""
        return self.open_files.opendir(ino)

    async def readdir(self, fh: int, start_id: int, emit: Emit) -> None:
        """Report entries from offset ``start_id`` until ``emit`` refuses one (``listing``)."""
        await self.listings.readdir(self.open_files.dir(fh), start_id, emit)

    async def releasedir(self, fh: int) -> None:
        self.open_files.releasedir(fh)

    async def mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A directory: its marker object ``path/`` carries mode, owner and mtime."""
        return await self.changes.mkdir(parent_ino, name, mode, uid, gid)

    async def rmdir(self, parent_ino: int, name: bytes) -> None:
        """Remove an empty directory."""
        await self.changes.rmdir(parent_ino, name)

    async def symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A symlink as s3fs-fuse makes it: the body is the target, the mode has S_IFLNK."""
        return await self.changes.symlink(parent_ino, name, target, uid, gid)

    async def readlink(self, ino: int) -> bytes:
        """A symlink's target: its object's body (cached per ETag)."""
        return await self.ns.readlink(ino)

    async def link(self, ino: int, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """Hard links cannot exist in a bucket."""
        raise FsError(errno.EPERM)

    async def unlink(self, parent_ino: int, name: bytes) -> None:
        """Delete a file or symlink; open handles keep working on the buffer until closed."""
        await self.changes.unlink(parent_ino, name)

    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int = 0,
    ) -> None:
        """Rename a file or a directory (``changes``)."""
        await self.changes.rename(parent_old, name_old, parent_new, name_new, flags)

    # -- files -----------------------------------------------------------------------------------

    def keep_cache(self, fh: int) -> bool:
        """Whether the kernel may keep its page cache for this open (``handles.open``)."""
        return self.open_files.keep_cache(fh)

    async def open(self, ino: int, flags: int) -> int:
        """Open a file; nothing is fetched until the first read (O_TRUNC: empties it)."""
        return await self.open_files.open(ino, flags)

    async def create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, int, Attr]:
        """Create and open a file: (handle, inode, attributes). Nothing is uploaded before the
        first flush; until then the file lives in its buffer (unsaved content)."""
        async with self.ns.claim(self.ns.child_paths(parent_ino, name, creating=True)):
            return await self._create(parent_ino, name, mode, flags, uid, gid)

    async def _create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, int, Attr]:
        ns = self.ns
        ns.check_writable()
        parent = ns.dir_node(parent_ino)
        path = ns.child_path(parent, name, creating=True)
        existing = await ns.resolve(path)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            if existing.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            node = ns.inodes.node_for(path, existing.kind)
            if not ns.is_local(node):
                node.attr = existing
            ns.inodes.ref(node)
            try:
                fh = await self.open(node.ino, flags)
            except BaseException:
                ns.inodes.forget(node.ino, 1)
                raise
            return fh, node.ino, await self.getattr(node.ino)
        stale = ns.inodes.find(path)
        if stale is not None:  # deleted behind our back, maybe still open: leave it be
            ns.inodes.detach(stale)
        buffer = await self.files.new_buffer()
        attr = Attr(Kind.FILE, stat.S_IMODE(mode) | stat.S_IFREG, uid, gid, 0, ns.now())
        node = ns.inodes.node_for(path, Kind.FILE)
        node.attr = attr
        self.files.new_file(node, buffer)
        ns.inodes.ref(node)
        ns.cache.note_exists(path, attr)
        fh = self.open_files.open_handle(node, flags)
        self.files.begin_stream(node)
        return fh, node.ino, attr

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end): ``handles.read``."""
        return await self.open_files.read(fh, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write into the inode's buffer (filled from the object first if it has old bytes)."""
        return await self.files.write(self.open_files.handle(fh).node, offset, data)

    async def flush(self, fh: int) -> None:
        """close(): upload unsaved writes; the error, if any, is close()'s."""
        await self.files.save(self.open_files.handle(fh).node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """fsync(): same as flush."""
        await self.files.save(self.open_files.handle(fh).node)

    async def release(self, fh: int) -> None:
        """The last close of a handle: save if still unsaved (errors only logged), free the
        buffer with the last handle."""
        await self.open_files.release(fh)

    def unsaved(self) -> list[Node]:
        """The files holding data the bucket does not have (unsaved, in the tree, buffered)."""
        return self.files.unsaved()

    async def flush_all(self, nodes: Iterable[Node] | None = None) -> int:
        """Upload every unsaved file (or those of ``nodes``); how many failed."""
        return await self.files.flush_all(nodes)

    def upload_progress(self, nodes: Iterable[Node] | None = None) -> UploadProgress:
        """How far the uploads of the unsaved files are (or of ``nodes``, those unsaved when a
        stop began: one saved since counts as sent whole). Bytes sent are those of the
        save under way, else of the stream while written (``upload.Sent``)."""
        chosen = self.unsaved() if nodes is None else list(nodes)
        sending = self.uploader.sending
        files = []
        for node in chosen:
            buffer = node.buffer
            size = buffer.size if buffer is not None else node.attr.size if node.attr else 0
            if not node.dirty:
                sent = size
            else:
                counted = sending.get(node.ino)
                stream = node.content.stream
                if counted is None and stream is not None:
                    counted = stream.sent
                sent = min(size, counted.bytes) if counted is not None else 0
            files.append(FileProgress(node.path, size, sent))
        return UploadProgress(tuple(files))

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Hits and misses of the mount's caches since it started (``s3fmfs status``)."""
        stats = self.cache.stats()
        bodies = self.cache.bodies
        stats["bodies"] = {"hits": bodies.served, "misses": bodies.missed}
        if self.metacache is not None:
            stats["metacache"] = {"hits": self.metacache.hits, "misses": self.metacache.misses}
        return stats

    # -- attributes ------------------------------------------------------------------------------

    async def setattr(
        self,
        ino: int,
        *,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        fh: int | None = None,
    ) -> Attr:
        """truncate, chmod, chown, utimens. Metadata changes of a saved object are a copy in
        place (REPLACE, content type kept); of a local one, they ride on its next upload."""
        node = self.inodes.get(ino)  # its keys are written: not while a rename moves them
        async with self.ns.claim(lambda: (node.path,)):
            self.ns.check_writable()
            if size is not None:
                await self._truncate(ino, size)
            changes: dict[str, object] = {}
            if mode is not None:
                changes["mode"] = mode
            if uid is not None:
                changes["uid"] = uid
            if gid is not None:
                changes["gid"] = gid
            if mtime_ns is not None:
                changes["mtime_ns"] = truncate_to_seconds(mtime_ns)
            if not changes:
                return await self.getattr(ino)
            return await self._change_attrs(ino, changes)

    async def _truncate(self, ino: int, size: int) -> None:
        node = self.inodes.get(ino)
        if node.kind is not Kind.FILE:
            raise FsError(errno.EISDIR if node.kind is Kind.DIR else errno.EINVAL)
        limits.check_size(size)  # EFBIG past 5 TiB
        write_order = self.files.write_order
        ticket = write_order.begin(node.ino)  # a truncation is a write for reads
        try:
            async with node.lock:
                await self.files.truncate_locked(node, size)
                write_order.end(node.ino, ticket)
                if node.open_count == 0:  # truncate(2) of a closed file: save it now
                    await self.files.save_locked(node)
                    if not node.dirty and node.buffer is not None:
                        node.content.close_buffer()
        finally:
            write_order.end(node.ino, ticket)

    async def _change_attrs(self, ino: int, changes: dict[str, object]) -> Attr:
        ns = self.ns
        node = ns.inodes.get(ino)
        new = (await self.getattr(ino)).with_changes(**changes)
        if ino == ROOT_INODE:
            if ns.keys.prefix:
                await ns.write_dir_meta("", new)
            ns.root_attr = new
            ns.inodes.root.attr = new
            return new
        async with node.lock:
            if ns.is_local(node):
                node.attr = new
                return ns.local_attr(node)
            if node.kind is Kind.DIR:
                new = await ns.write_dir_meta(node.path, new)
            else:
                new = await ns.write_file_meta(node.path, new, self.pins.get(node.ino))
            node.attr = new
            if node.path_attached:
                ns.cache.note_exists(node.path, new)
        return new

    # -- extended attributes (``xattrs``) ------------------------------------------------------

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return await self.xattrs.getxattr(ino, name)

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        await self.xattrs.setxattr(ino, name, value)

    async def listxattr(self, ino: int) -> list[bytes]:
        return await self.xattrs.listxattr(ino)

    async def removexattr(self, ino: int, name: bytes) -> None:
        await self.xattrs.removexattr(ino, name)

    # -- misc ------------------------------------------------------------------------------------

    def statfs(self) -> StatFs:
        return StatFs()

    async def mknod(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int, rdev: int = 0
    ) -> tuple[int, Attr]:
        """A regular file (an empty object), or a FIFO, socket or device as s3fs-fuse stores
        them (``special``: an empty object, the type in its mode)."""
        if not stat.S_ISREG(mode):
            return await special.make(self.ns, parent_ino, name, mode, rdev, uid, gid)
        fh, ino, _ = await self.create(parent_ino, name, mode, os.O_WRONLY | os.O_EXCL, uid, gid)
        try:
            await self.flush(fh)
        finally:
            await self.release(fh)
        return ino, await self.getattr(ino)

    def timeouts(self, attr: Attr | None = None) -> tuple[float, float]:
        """(entry_timeout, attr_timeout) for the kernel: the listing and stat TTLs; 0 for an
        entry whose attributes come from a listing alone (``attr`` incomplete), so that the
        kernel asks again before using them (a listed object may be a symlink: not a DIR's
        entry, whose kind is sure)."""
        if attr is not None and not attr.complete:
            return (self.settings.dir_ttl if attr.kind is Kind.DIR else 0.0), 0.0
        return self.settings.dir_ttl, self.settings.stat_ttl

    async def destroy(self) -> None:
        """Close every buffer (after flush_all)."""
        await self.files.close_all()

    # -- background ------------------------------------------------------------------------------

    async def run_background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve as the core's nursery (read-ahead, streamed parts, housekeeping) until
        cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._housekeeping)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.nursery = None
            for handle in self.handles.values():
                handle.readahead.nursery = None

    def housekeeping_period(self) -> float:
        """Seconds between housekeeping rounds: the longest TTL, within 1 s and a minute."""
        opts = self.settings
        longest = max(opts.stat_ttl, opts.dir_ttl, opts.neg_ttl)
        return min(HOUSEKEEPING_MAX, max(1.0, longest))

    async def housekeep(self, freed: int = 0) -> int:
        """One round: drop expired cache entries, shrink the inode maps, and trim the C heap
        when at least ``TRIM_AFTER`` entries (with ``freed``, those of rounds since the last
        trim) were freed; the count carried to the next round."""
        dropped = self.inodes.dropped
        freed += self.cache.expire() + dropped - self._dropped_seen
        self._dropped_seen = dropped
        self.inodes.compact()
        if self.metacache is not None:
            if self.metacache.flush_due:
                await self.metacache.flush()  # the rows of a listing's last HEADs
            self.metacache.compact()
        if freed >= TRIM_AFTER and MALLOC_TRIM is not None:
            await trio.to_thread.run_sync(MALLOC_TRIM, 0)
            return 0
        return freed

    async def _housekeeping(self) -> None:
        """Every few seconds, give back the memory of what expired or was forgotten: after a
        listing of 50,000 entries the daemon returns near its idle size."""
        freed = 0
        while True:
            await trio.sleep(self.housekeeping_period())
            freed = await self.housekeep(freed)
