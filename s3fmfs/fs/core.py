"""The filesystem core: FUSE operations in plain Python types over an ``ObjectStore``.

Tests drive it directly, without a mount; ``adapter`` only translates types and errors.

Invariants:
- Every method either succeeds or raises (``FsError`` or a client error); ``forget`` never
  raises. Nothing here knows pyfuse3.
- The bucket is the truth, except for *local* nodes (``InodeTable.local``): files created and
  not yet uploaded, or holding unsaved writes; lookups and listings consult them first.
- A directory is a marker object ``dir/`` or any key under ``dir/`` (implicit), or one of
  s3fs's older forms (``attrs``): ``dir_$folder$`` (seen in a listing, never an entry itself)
  or an object ``dir`` whose HEAD says it is a directory (with ``nometa``: never known, it
  stays a file unless keys are under ``dir/``). Its metadata comes from the marker, else from
  those objects (``Attr.old_forms``, no HEAD for a directory without them); rmdir and rename
  remove them with it. A directory shadows a file of the same name. Keys that cannot be paths
  are skipped (logged once).
- S3's limits (``limits``) are checked before any request: a name over 255 bytes or a key over
  1,024 is ENAMETOOLONG, a name not in UTF-8 EINVAL (logged), a size past 5 TiB EFBIG.
- Writes go to the inode's ``WriteBuffer`` (filled from the object before the first change
  that needs old bytes) and are uploaded by flush, fsync and release when dirty, never after
  an unlink. Uploads of one inode never overlap its writes: both hold ``Node.lock``.
- A read waits for the writes and truncations of its inode received before it
  (``writeorder``): it never hands the kernel's page cache bytes older than a write it sent.
- An upload that fails for good is EIO, and the buffer's data goes to a recovery copy
  (``recovery.RecoveryFolder``: the cache's folder, else the fallback; logged with path and
  key); a later upload removes that copy. When no copy can be written, the dirty buffer stays
  (``unsaved``), and a stopping mount waits until it is uploaded or copied (``mount._stop``).
- Caches are updated by every change the mount makes before the change returns.
- A directory rename is atomic for the mount: it holds an exclusive claim (``treelock``) on
  its old and new paths, and every operation that changes the namespace or writes a key
  (create, mkdir, symlink, unlink, rmdir, rename, setattr, uploads in ``_save``) holds a
  shared claim on the paths it names, taken before any node lock and never nested on other
  paths. No key is written under a moving tree, so one listing finds every key to move;
  a key found under the old prefix afterwards (another client) is EIO, logged.
- Readdir offsets index a snapshot of the directory, sorted by name and taken when a listing
  starts (offset 0): entries added or removed meanwhile cannot make it skip or repeat.

- HEADs run concurrently where there are many (a directory's entries, started page by page
  while the rest is still being listed; probes), never more than ``CONCURRENCY`` at once for
  the whole mount (``limiter``). A listed object whose
  version (ETag + LastModified) the ``MetaCache`` knows is not HEADed at all; every HEAD
  answer goes to it (it keeps those of listed versions, for later mounts).
- Reads of an unbuffered file are ranged GETs through the handle's ``ReadAhead``: several
  in flight at once ahead of a sequential reader, in the core's nursery, streamed (a read
  waits for its own bytes only; the store's ``get_range_into`` when it has one), the bytes
  held within the mount's ``ReadBudget`` (``readahead_mb``); release and seeks cancel them.
- A new or truncated-to-zero file written sequentially streams its parts to a multipart
  upload while it is written (``uploader.StreamingUpload``, in ``streams``); flush completes
  it. Anything else (a write behind the parts, a truncation, a rename, an unlink, a failed
  part) aborts the stream, and flush uploads the whole buffer as before.
- ``open`` answers ``keep_cache`` (the kernel keeps its page cache) only when the object's
  ETag is the one of the inode's previous open and it was not written here since.
- An inode's open handles read one version of its object, *pinned* (``Pin``: ETag and size,
  from the attributes at the first open, until the last release): every GET for them carries
  ``If-Match``, and getattr, lookup and readdir report that version's attributes while it is
  pinned (the kernel's size of an open file never changes under its readers). A changed object
  (412, gone, or fewer bytes than the version has) moves the pin to the new version (a HEAD)
  only while none of its bytes went to the kernel since its page cache was last dropped (and
  it was not kept at open), and only if the size is the same (the kernel's size of the file
  is the old one); otherwise the pin is stale: every read of its handles is ESTALE (logged
  once per handle) while its attributes are still reported; at its last release the kernel is
  told to forget the inode's attributes, and the next open starts a new pin (the attributes
  of the new version, HEADed when the change was seen). Never two versions spliced.
- A buffer's fill (read-modify-write) is of one version too: the HEADed ETag on every GET, the
  fill started again from a new HEAD on a change (``REPIN_ATTEMPTS``, then EIO).
- Background work (read-ahead, parts) runs in ``nursery`` (``run_background``); without one
  (tests driving the core directly) reads fetch their own blocks and files go up whole.
- Memory: ``run_background`` also runs the housekeeping (``housekeep``, every longest TTL,
  1 s to 1 min): expired cache entries dropped, inode maps compacted, the metadata cache
  flushed, and the C heap trimmed (``malloc_trim``) once ``TRIM_AFTER`` entries were freed.
  Readdir snapshots live in their ``DirHandle`` until releasedir.

Concurrency: all state lives on the trio thread; it may change at every ``await``, so code
re-reads the inode table after awaiting rather than trusting what it read before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import math
import mimetypes
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import trio

from ..client.errors import NoSuchKey, PreconditionFailed
from . import limits
from .attrs import (
    DIRECTORY_CONTENT_TYPE,
    FOLDER_SUFFIX,
    OUR_META,
    Attr,
    Kind,
    attr_from_object,
    folder_name,
    implicit_dir,
    is_dir_object,
    metadata_of,
    truncate_to_seconds,
)
from .cache import Listing, MetadataCache
from .errno_map import FsError
from .inodes import ROOT_INODE, InodeTable, Node
from .keys import KeyMap, encode_name, is_under, join, name_of, parent_of, valid_name
from .metacache import MetaCache
from .readahead import ReadAhead, ReadBudget
from .recovery import RecoveryFolder
from .settings import FsSettings
from .store import ObjectInfo, ObjectStore, Sink, StreamingStore
from .treelock import TreeLock
from .upload import StreamingUpload, Uploader
from .writebuf import MemoryPool, WriteBuffer
from .writeorder import WriteOrder

log = logging.getLogger("s3fmfs.fs")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

#: HEADs in flight at once for one mount (readdirplus, renames of directories).
CONCURRENCY = 16
#: Times a read of an unserved version, or a buffer fill, starts again on a changed object.
REPIN_ATTEMPTS = 3
#: Entries whose attributes are completed (HEADed) at a time by readdir.
READDIR_BATCH = 512
MAX_SKIPPED_LOGGED = 10_000

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

#: readdir's callback: (name, inode, attributes, next offset) → whether the kernel took it.
Emit = Callable[[bytes, int, Attr, int], bool]


@dataclass
class StatFs:
    """statfs answers: a bucket has no size limit, so big round numbers."""

    block_size: int = 4096
    blocks: int = 1 << 36  # 256 TiB of 4 KiB blocks
    blocks_free: int = 1 << 36
    files: int = 1 << 32
    files_free: int = 1 << 32
    name_max: int = 255


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


@dataclass
class Handle:
    """An open file."""

    node: Node
    flags: int
    readahead: ReadAhead = field(default_factory=ReadAhead)
    keep_cache: bool = False  # the kernel may keep its page cache of the file (open's answer)
    pin: Pin | None = None  # the version its reads come from (None: a local file's buffer)
    stale_logged: bool = False


@dataclass
class DirHandle:
    """An open directory and the snapshot its offsets index."""

    ino: int
    snapshot: list[tuple[str, Attr]] | None = None


def _locked(node: Node | None) -> AbstractAsyncContextManager[object]:
    """The node's lock, or nothing when there is no node."""
    return node.lock if node is not None else contextlib.nullcontext()


def _content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(name_of(path), strict=False)
    return guessed or "application/octet-stream"


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
        self.keys = KeyMap(prefix)
        self.clock = clock
        self.tmpdir = tmpdir
        #: what small files' write buffers hold in memory, all together
        self.write_memory = MemoryPool()
        opts = self.settings
        self.defaults = opts.defaults
        self.cache = MetadataCache(opts.stat_ttl, opts.dir_ttl, opts.neg_ttl, timer)
        self.mount_time = self._now()
        self.root_attr = implicit_dir(self.defaults, self.mount_time)
        self.inodes = InodeTable(self.root_attr)
        self.handles: dict[int, Handle] = {}
        self.pins: dict[int, Pin] = {}  # inode → the version its open handles read
        #: makes the kernel forget an inode's cached attributes (the adapter's; None: no kernel)
        self.forget_kernel_attrs: Callable[[int], None] | None = None
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self.limiter = trio.CapacityLimiter(CONCURRENCY)
        self._skipped: set[str] = set()
        #: where read-ahead fetches and streamed parts run (``run_background``)
        self.nursery = nursery
        self.read_budget = ReadBudget(opts.readahead_mb << 20)
        self.streams: dict[int, StreamingUpload] = {}  # inode → its streaming upload
        self.write_order = WriteOrder()  # reads wait for the writes received before them
        #: HEADed metadata of unchanged objects across mounts (unused with nometa: no HEADs).
        self.metacache = None if self.settings.nometa else metacache
        #: where the data of files that could not be uploaded is kept (without a mount: nowhere)
        self.recovery = recovery or RecoveryFolder(None)
        #: the one way content goes up (sized by ``part_size_mb``, ``upload_concurrency``)
        self.uploader = Uploader(store, self.settings, self.recovery)
        #: claims on subtrees: a directory rename excludes every change under its paths
        self.tree = TreeLock()
        self._dropped_seen = 0  # ``inodes.dropped`` at the last housekeeping round

    # -- small helpers -------------------------------------------------------------------------

    def _now(self) -> int:
        """Now, in whole seconds (the resolution metadata keeps) as nanoseconds."""
        return truncate_to_seconds(self.clock())

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _check_writable(self) -> None:
        if self.settings.ro:
            raise FsError(errno.EROFS)

    def _dir_node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.unlinked:
            raise FsError(errno.ENOENT, "directory was removed")
        return node

    def _child_path(self, parent: Node, name: bytes, *, creating: bool = False) -> str:
        """The path of ``name`` in ``parent``: ENAMETOOLONG (name or key too long) or EINVAL
        (not UTF-8) from ``limits``; otherwise ENOENT (creating: EINVAL) for a non-name."""
        text = limits.check_name(name)
        if not valid_name(text):
            raise FsError(errno.EINVAL if creating else errno.ENOENT, "invalid name")
        path = join(parent.path, text)
        limits.check_key(self.keys.file_key(path))
        return path

    def _child_paths(
        self, parent_ino: int, name: bytes, *, creating: bool = False
    ) -> Callable[[], tuple[str]]:
        """The path of ``name`` in directory ``parent_ino`` as it is when called (for
        ``_claim``: the directory may move while a claim waits)."""
        return lambda: (self._child_path(self._dir_node(parent_ino), name, creating=creating),)

    @contextlib.asynccontextmanager
    async def _claim(self, paths: Callable[[], tuple[str, ...]]) -> AsyncIterator[None]:
        """Hold shared claims (``treelock``) on ``paths()``: while held, no directory rename
        moves them. Taken again when a rename moved them meanwhile (they are read again)."""
        while True:
            wanted = paths()
            async with self.tree.shared(wanted):
                if paths() == wanted:
                    yield
                    return

    def _skip_key(self, key: str) -> None:
        """A key that cannot be a path: log it once, never fail a listing for it."""
        if key in self._skipped:
            return
        if len(self._skipped) < MAX_SKIPPED_LOGGED:
            self._skipped.add(key)
        log.warning("skipping key %r: it cannot be a path (empty, '.', '..' or too long)", key)

    def _parent_node(self, node: Node) -> Node:
        """The directory containing ``node`` (the root for the root or when unknown)."""
        return self.inodes.find(parent_of(node.path)) or self.inodes.root

    def _local_attr(self, node: Node) -> Attr:
        """Attributes of a node whose truth is here (size from its buffer)."""
        attr = node.attr or self._blank(node.kind)
        if node.buffer is not None and node.kind is Kind.FILE:
            attr = attr.with_changes(size=node.buffer.size)
        return attr

    def _blank(self, kind: Kind) -> Attr:
        mode = self.defaults.dir_mode if kind is Kind.DIR else self.defaults.file_mode
        return Attr(kind, mode | kind.type_bits, self.defaults.uid, self.defaults.gid, 0, 0)

    def _is_local(self, node: Node) -> bool:
        return node.ino in self.inodes.local or node.unlinked

    def _pinned_attr(self, node: Node) -> Attr | None:
        """The attributes of the version the node's open handles read (None: not pinned), so
        that the kernel's size of an open file never changes under its readers."""
        pin = self.pins.get(node.ino)
        if pin is None or pin.attr is None or node.buffer is not None or self._is_local(node):
            return None
        return pin.attr  # (stale too: a smaller size would make its reads an early EOF)

    # -- resolving paths -----------------------------------------------------------------------

    def _attr_from_info(self, info: ObjectInfo, *, is_dir: bool) -> Attr:
        return attr_from_object(
            is_dir=is_dir,
            size=info.size,
            last_modified_ns=info.last_modified_ns,
            etag=info.etag,
            metadata={} if self.settings.nometa else info.metadata,  # nometa: defaults only
            defaults=self.defaults,
            content_type="" if self.settings.nometa else info.content_type,
            key=info.key,
        )

    async def _head(self, key: str) -> ObjectInfo | None:
        async with self.limiter:
            info = await self.store.head(key)
        if info is not None and self.metacache is not None:
            self.metacache.record(info)  # kept if it is the version a listing showed
        return info

    async def _object_changed(self, key: str) -> None:
        """This mount wrote the object at ``key``: what the metadata cache knows of it may
        look current to a listing (a chmod keeps the ETag, maybe the LastModified second)."""
        if self.metacache is not None:
            self.metacache.forget(key)
            if self.metacache.flush_due:
                await self.metacache.flush()

    async def _head_dir(self, path: str, old_forms: tuple[str, ...] = ()) -> Attr:
        """A directory known to exist: its marker's metadata, else that of its first object
        in an older form (``old_forms``) that is one, else the defaults (implicit)."""
        implicit = implicit_dir(self.defaults, self.mount_time).with_changes(old_forms=old_forms)
        if self.settings.nometa:
            return implicit
        info = await self._head(self.keys.dir_prefix(path))
        for key in old_forms if info is None else ():
            found = await self._head(key)
            if found is not None and (
                key.endswith(FOLDER_SUFFIX) or is_dir_object(found.metadata, found.content_type)
            ):
                info = found
                break
        if info is None:
            return implicit
        attr = self._attr_from_info(info, is_dir=True).with_changes(old_forms=old_forms)
        return attr if attr.mtime_ns else attr.with_changes(mtime_ns=self.mount_time)

    async def _probe(self, path: str) -> Attr | None:
        """Ask the bucket what ``path`` is: HEAD the file key, the marker and ``_$folder$``,
        and list one key under the directory prefix, all at once. A directory wins over a
        file; its metadata: the marker's, the file key's (an older form), the folder's."""
        file_key = self.keys.file_key(path)
        dir_prefix = self.keys.dir_prefix(path)
        folder_key = file_key + FOLDER_SUFFIX
        found: dict[str, object] = {}

        async def head_file() -> None:
            found["file"] = await self._head(file_key)

        async def head_marker() -> None:
            found["marker"] = await self._head(dir_prefix)

        async def head_folder() -> None:
            found["folder"] = await self._head(folder_key)

        async def list_under() -> None:
            page = await self.store.list_page(dir_prefix, None, 1)
            found["under"] = bool(page.objects or page.prefixes)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(head_file)
            nursery.start_soon(list_under)
            nursery.start_soon(head_folder)
            if not self.settings.nometa:
                nursery.start_soon(head_marker)
        info, folder = found.get("file"), found.get("folder")
        file_attr = None
        if isinstance(info, ObjectInfo):
            file_attr = self._complete_file(self._attr_from_info(info, is_dir=False))
        old_forms = (file_attr.old_forms if file_attr is not None else ()) + (
            (folder_key,) if isinstance(folder, ObjectInfo) else ()
        )
        attr: Attr | None = None
        marker = found.get("marker")
        if isinstance(marker, ObjectInfo):
            attr = self._attr_from_info(marker, is_dir=True)
        elif file_attr is not None and file_attr.kind is Kind.DIR:
            attr = file_attr  # an object ``path`` that is a directory (older form)
        elif isinstance(folder, ObjectInfo):
            attr = self._attr_from_info(folder, is_dir=True)
        elif found.get("under"):
            attr = implicit_dir(self.defaults, self.mount_time)
        if attr is None:
            return file_attr
        attr = attr.with_changes(old_forms=old_forms)
        return attr if attr.mtime_ns else attr.with_changes(mtime_ns=self.mount_time)

    def _complete_file(self, attr: Attr) -> Attr:
        """With nometa, listing-grade attributes are all there will ever be."""
        if self.settings.nometa and not attr.complete:
            return attr.with_changes(complete=True)
        return attr

    async def _resolve(self, path: str) -> Attr | None:
        """What ``path`` is now (None: nothing), from local nodes, the caches or the bucket."""
        if path == "":
            return self.root_attr
        node = self.inodes.find(path)
        if node is not None and node.ino in self.inodes.local:
            return self._local_attr(node)
        cached = self.cache.attr(path)
        if cached is not None and (cached.complete or self.settings.nometa):
            return cached
        if cached is None and self.cache.is_missing(path):
            return None
        attr: Attr | None = None
        if cached is not None and cached.kind is Kind.DIR:
            attr = await self._head_dir(path, cached.old_forms)
        elif cached is not None:
            info = await self._head(self.keys.file_key(path))
            if info is not None:
                attr = self._attr_from_info(info, is_dir=False)
        if attr is None:
            attr = await self._probe(path)
        # the node may have become local while we awaited
        node = self.inodes.find(path)
        if node is not None and node.ino in self.inodes.local:
            return self._local_attr(node)
        if attr is None:
            self.cache.store_missing(path)
        else:
            self.cache.store_attr(path, attr)
        return attr

    # -- lookup, getattr, forget ---------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """The entry ``name`` in a directory; takes one lookup reference on its inode."""
        parent = self._dir_node(parent_ino)
        if name == b".":
            node = parent
            attr = await self.getattr(node.ino)
        elif name == b"..":
            node = self._parent_node(parent)
            attr = await self.getattr(node.ino)
        else:
            path = self._child_path(parent, name)
            found = await self._resolve(path)
            if found is None:
                raise FsError(errno.ENOENT)
            attr = found
            node = self.inodes.node_for(path, attr.kind)
            if not self._is_local(node):
                node.attr = attr
                attr = self._pinned_attr(node) or attr
        self.inodes.ref(node)
        return node.ino, attr

    def forget(self, pairs: Iterable[tuple[int, int]]) -> None:
        """The kernel dropped references; never raises."""
        for ino, count in pairs:
            try:
                self.inodes.forget(ino, count)
            except Exception:
                log.exception("forget(%d, %d) failed", ino, count)

    async def getattr(self, ino: int) -> Attr:
        """Attributes of an inode; ENOENT once its entry is gone from the bucket."""
        node = self.inodes.get(ino)
        if ino == ROOT_INODE:
            return self.root_attr
        if self._is_local(node):
            return self._local_attr(node)
        attr = await self._resolve(node.path)  # (for an open file too: it may be gone)
        if node.unlinked or self._is_local(node):  # changed while we awaited
            return self._local_attr(node)
        pin = self.pins.get(node.ino)
        if pin is not None and attr is not None and pin.etag and attr.etag == pin.etag:
            pin.attr = attr  # the pinned version's complete attributes
        pinned = self._pinned_attr(node)
        if pinned is not None:
            if attr is not None and attr.kind is node.kind:
                node.attr = attr
            return pinned
        if attr is None or attr.kind is not node.kind:
            if node.open_count > 0 and node.attr is not None:
                return self._local_attr(node)  # an open file deleted behind our back
            raise FsError(errno.ENOENT)
        node.attr = attr
        if node.buffer is not None and node.kind is Kind.FILE:
            return attr.with_changes(size=node.buffer.size)
        return attr

    # -- directories ----------------------------------------------------------------------------

    async def _list_dir(
        self, path: str, on_page: Callable[[Listing], None] | None = None
    ) -> Listing:
        """Entries of directory ``path`` from the bucket (every page) or the cache.

        ``on_page`` sees each page's entries as soon as it is read (not for a cached listing),
        so that their HEADs can start while the next pages are listed."""
        cached = self.cache.listing(path)
        if cached is not None:
            return cached
        prefix = self.keys.dir_prefix(path)
        dirs: Listing = {}
        files: Listing = {}
        forms: dict[str, tuple[str, ...]] = {}  # name → its ``_$folder$`` key (older form)
        complete = self.settings.nometa
        implicit = implicit_dir(self.defaults, self.mount_time).with_changes(complete=complete)
        async with contextlib.aclosing(self.store.iter_pages(prefix, "/")) as pages:
            async for page in pages:
                page_files: Listing = {}
                page_dirs: Listing = {}
                listed: dict[str, ObjectInfo] = {}  # name → listed version, for the metacache
                for obj in page.objects:
                    name = obj.key[len(prefix) :]
                    if name == "":
                        continue  # the directory's own marker
                    folder = folder_name(name)
                    if folder is not None and valid_name(folder):
                        forms[folder] = (*forms.get(folder, ()), obj.key)  # ``folder_$folder$``
                        continue
                    if not valid_name(name):
                        self._skip_key(obj.key)
                        continue
                    page_files[name] = attr_from_object(
                        is_dir=False,
                        size=obj.size,
                        last_modified_ns=obj.last_modified_ns,
                        etag=obj.etag,
                        metadata={} if complete else None,
                        defaults=self.defaults,
                    )
                    if self.metacache is not None:
                        listed[name] = obj
                for common in page.prefixes:
                    name = common[len(prefix) :].removesuffix("/")
                    if not valid_name(name):
                        self._skip_key(common)
                        continue
                    page_dirs[name] = implicit
                for name in [n for n in forms if n not in dirs and n not in page_dirs]:
                    page_dirs[name] = implicit  # only a ``_$folder$``: a directory
                if self.metacache is not None and listed:
                    # versions HEADed by an earlier mount (or earlier here) need no HEAD
                    known = await self.metacache.lookup(listed.values())
                    for name, obj in listed.items():
                        meta = known.get(obj.key)
                        if meta is not None:
                            page_files[name] = self._attr_from_info(meta.info(obj), is_dir=False)
                files.update(page_files)
                dirs.update(page_dirs)
                if on_page is not None:
                    on_page({**page_files, **page_dirs})
        listing: Listing = {**files, **dirs}  # a directory shadows a file of the same name
        for name, attr in dirs.items():
            # objects in older forms: a ``_$folder$``, an object of the same name (it may be one)
            old = ((prefix + name,) if name in files else ()) + forms.get(name, ())
            if old:
                listing[name] = attr.with_changes(old_forms=old)
        self.cache.store_listing(path, listing)
        return listing

    async def _snapshot(self, node: Node) -> list[tuple[str, Attr]]:
        """The sorted entries of a directory, local nodes merged in; entries listed from the
        bucket come with HEADed attributes (HEADs start with each page of the listing)."""
        headed: Listing = {}
        send, receive = trio.open_memory_channel[tuple[str, Attr]](math.inf)

        async def worker(entries: trio.MemoryReceiveChannel[tuple[str, Attr]]) -> None:
            async with entries:
                async for name, attr in entries:
                    await self._complete_entry(node.path, name, attr, headed)
                    if self.metacache is not None and self.metacache.flush_due:
                        await self.metacache.flush()  # not 100,000 rows queued till the end

        # a few workers, not a task per entry: a folder of 100,000 objects stays small
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(CONCURRENCY):
                    nursery.start_soon(worker, receive.clone())
            async with send:

                def start_heads(page: Listing) -> None:
                    for name, attr in page.items():
                        if not attr.complete and attr.kind is not Kind.DIR:
                            send.send_nowait((name, attr))

                listing = dict(await self._list_dir(node.path, start_heads))
                for name, attr in listing.items():
                    # directories once the whole listing told their older forms, if any
                    if not attr.complete and attr.kind is Kind.DIR:
                        send.send_nowait((name, attr))
        for name, attr in headed.items():
            # a dir shadows a file; a listed object's HEAD may show it is a directory
            if name in listing and (listing[name].kind is attr.kind or attr.kind is Kind.DIR):
                listing[name] = attr
        for child in self.inodes.local_children(node.path):
            listing[name_of(child.path)] = self._local_attr(child)
        here = self.root_attr if node.ino == ROOT_INODE else node.attr or self._blank(Kind.DIR)
        dots = [(".", here.with_changes(complete=True)), ("..", here.with_changes(complete=True))]
        return dots + sorted(listing.items())

    async def _complete_entry(self, directory: str, name: str, attr: Attr, into: Listing) -> None:
        """Put the HEADed attributes of a listed entry into ``into`` (nothing if it is gone
        or the HEAD failed: the listing's attributes stand)."""
        path = join(directory, name)
        try:
            known = self.cache.attr(path)
            if known is not None and known.complete and known.etag == attr.etag:
                into[name] = known
                return
            if attr.kind is Kind.DIR:
                new = await self._head_dir(path, attr.old_forms)
            else:
                info = await self._head(self.keys.file_key(path))
                if info is None:
                    return  # deleted since the listing: keep what the listing said
                new = self._attr_from_info(info, is_dir=False)
            self.cache.store_attr(path, new)
            into[name] = new
        except Exception as exc:
            log.warning("HEAD of %r failed, listing attributes used: %s", path, exc)

    async def _complete_attrs(self, directory: str, batch: list[tuple[str, Attr]]) -> None:
        """Replace listing-grade attributes in ``batch`` by HEADed ones, concurrently."""
        if self.settings.nometa:
            return
        headed: Listing = {}
        async with trio.open_nursery() as nursery:
            for name, attr in batch:
                if not attr.complete:
                    nursery.start_soon(self._complete_entry, directory, name, attr, headed)
        for index, (name, _) in enumerate(batch):
            if name in headed:
                batch[index] = (name, headed[name])
        if self.metacache is not None and self.metacache.flush_due:
            await self.metacache.flush()

    async def opendir(self, ino: int) -> int:
        """Open a directory; its snapshot is taken by the first readdir."""
        self._dir_node(ino)
        fh = self._new_fh()
        self.dirs[fh] = DirHandle(ino)
        return fh

    async def readdir(self, fh: int, start_id: int, emit: Emit) -> None:
        """Report entries from offset ``start_id`` until ``emit`` refuses one; every entry
        the kernel accepts takes one lookup reference (readdirplus)."""
        handle = self.dirs.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        node = self._dir_node(handle.ino)
        if start_id == 0 or handle.snapshot is None:
            handle.snapshot = await self._snapshot(node)
        entries = handle.snapshot
        index = start_id
        while index < len(entries):
            batch = entries[index : index + READDIR_BATCH]
            await self._complete_attrs(node.path, batch)
            entries[index : index + len(batch)] = batch
            for offset, (name, attr) in enumerate(batch):
                if name in (".", ".."):  # reported without taking a reference
                    dot = node if name == "." else self._parent_node(node)
                    if not emit(name.encode(), dot.ino, attr, index + offset + 1):
                        return
                    continue
                path = join(node.path, name)
                child = self.inodes.node_for(path, attr.kind)
                if self._is_local(child):
                    shown = self._local_attr(child)
                else:
                    child.attr = attr
                    shown = self._pinned_attr(child) or attr
                if not emit(encode_name(name), child.ino, shown, index + offset + 1):
                    self.inodes.maybe_drop(child)
                    return
                self.inodes.ref(child)
            index += len(batch)

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def _new_name(self, parent_ino: int, name: bytes) -> str:
        """The path of a name about to be created (EEXIST if it is taken)."""
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._child_path(parent, name, creating=True)
        if await self._resolve(path) is not None:
            raise FsError(errno.EEXIST)
        return path

    async def mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A directory: its marker object ``path/`` carries mode, owner and mtime."""
        async with self._claim(self._child_paths(parent_ino, name, creating=True)):
            return await self._mkdir(parent_ino, name, mode, uid, gid)

    async def _mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        path = await self._new_name(parent_ino, name)
        limits.check_key(self.keys.dir_prefix(path))  # the marker key is one byte longer
        attr = Attr(Kind.DIR, stat.S_IMODE(mode) | stat.S_IFDIR, uid, gid, 0, self._now())
        result = await self.store.put(
            self.keys.dir_prefix(path), b"", metadata_of(attr), DIRECTORY_CONTENT_TYPE
        )
        attr = attr.with_changes(etag=result.etag)
        node = self.inodes.node_for(path, Kind.DIR)
        node.attr = attr
        self.inodes.ref(node)
        self.cache.note_exists(path, attr)
        self.cache.store_listing(path, {})
        return node.ino, attr

    async def _ensure_empty(self, path: str) -> None:
        """ENOTEMPTY when anything is under directory ``path``: local or in the bucket."""
        if self.inodes.local_under(path):
            raise FsError(errno.ENOTEMPTY)
        marker = self.keys.dir_prefix(path)
        page = await self.store.list_page(marker, None, 2)
        if any(obj.key != marker for obj in page.objects) or page.prefixes:
            raise FsError(errno.ENOTEMPTY)

    async def rmdir(self, parent_ino: int, name: bytes) -> None:
        """Remove an empty directory (its marker and its objects in older forms; an implicit
        one has nothing to delete)."""
        async with self._claim(self._child_paths(parent_ino, name)):
            await self._rmdir(parent_ino, name)

    async def _rmdir(self, parent_ino: int, name: bytes) -> None:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._child_path(parent, name)
        attr = await self._resolve(path)
        if attr is None:
            raise FsError(errno.ENOENT)
        if attr.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        await self._ensure_empty(path)
        old = await self._old_form_keys(path, attr)
        if old:
            failed = await self.store.delete_many([self.keys.dir_prefix(path), *old])
            if failed:
                raise FsError(errno.EIO, f"rmdir {path}: could not delete {failed}")
        else:
            await self.store.delete(self.keys.dir_prefix(path))
        self._detach_tree(path)
        self.cache.note_removed(path)

    async def _old_form_keys(self, path: str, attr: Attr) -> list[str]:
        """The objects of directory ``path`` in s3fs's older forms, to remove with it: its
        ``_$folder$`` and an object ``path`` that is a directory (HEADed: it may be a file
        the directory shadows). Nothing when none was seen (no request)."""
        if not attr.old_forms:
            return []
        file_key = self.keys.file_key(path)
        keys = [file_key + FOLDER_SUFFIX]
        if file_key in attr.old_forms:
            info = await self._head(file_key)
            if info is not None and is_dir_object(info.metadata, info.content_type):
                keys.append(file_key)
        return keys

    def _detach_tree(self, path: str) -> None:
        for p, n in list(self.inodes.by_path.items()):
            if p == path or is_under(p, path):
                self.inodes.detach(n)

    # -- symlinks --------------------------------------------------------------------------------

    async def symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A symlink as s3fs-fuse makes it: the body is the target, the mode has S_IFLNK.
        An empty target is ENOENT and one over ``limits.SYMLINK_MAX`` bytes ENAMETOOLONG, as
        on a local filesystem (readlink could not hand a longer one back)."""
        limits.check_symlink_target(target)
        async with self._claim(self._child_paths(parent_ino, name, creating=True)):
            return await self._symlink(parent_ino, name, target, uid, gid)

    async def _symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        path = await self._new_name(parent_ino, name)
        attr = Attr(Kind.SYMLINK, 0o777 | stat.S_IFLNK, uid, gid, len(target), self._now())
        result = await self.store.put(self.keys.file_key(path), target, metadata_of(attr))
        await self._object_changed(self.keys.file_key(path))
        attr = attr.with_changes(etag=result.etag)
        node = self.inodes.node_for(path, Kind.SYMLINK)
        node.attr = attr
        node.link_target = (attr.etag, target)
        self.inodes.ref(node)
        self.cache.note_exists(path, attr)
        return node.ino, attr

    async def readlink(self, ino: int) -> bytes:
        """A symlink's target: its object's body (cached per ETag)."""
        node = self.inodes.get(ino)
        if node.kind is not Kind.SYMLINK:
            raise FsError(errno.EINVAL)
        etag = node.attr.etag if node.attr else ""
        if node.link_target is not None and node.link_target[0] == etag:
            return node.link_target[1]
        target = await self.store.get_range(self.keys.file_key(node.path), 0, None)
        if len(target) > limits.SYMLINK_MAX:  # made by another client: the kernel refuses it
            log.warning("symlink %r: its %d-byte target is too long", node.path, len(target))
            raise FsError(errno.ENAMETOOLONG, "symlink target too long")
        node.link_target = (etag, target)
        return target

    async def link(self, ino: int, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """Hard links cannot exist in a bucket."""
        raise FsError(errno.EPERM)

    # -- files: open, create, read, write ------------------------------------------------------

    def _open_handle(self, node: Node, flags: int) -> int:
        fh = self._new_fh()
        opts = self.settings
        readahead = ReadAhead(self.read_budget, self.nursery, max_inflight=opts.read_concurrency)
        self.handles[fh] = Handle(node, flags, readahead)
        node.open_count += 1
        return fh

    def keep_cache(self, fh: int) -> bool:
        """Whether the kernel may keep its page cache for this open (see ``open``)."""
        handle = self.handles.get(fh)
        return handle is not None and handle.keep_cache

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

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    async def open(self, ino: int, flags: int) -> int:
        """Open a file; nothing is fetched until the first read (O_TRUNC: empties it)."""
        node = self.inodes.get(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing or flags & os.O_TRUNC:
            self._check_writable()
        fh = self._open_handle(node, flags)
        handle = self.handles[fh]
        if not self._is_local(node) and node.buffer is None and not node.dirty:
            # reads come from the bucket: from the version the inode's open handles read, or
            # the one the kernel was last told of; the page cache stays when it is the version
            # the previous open saw, unchanged here (its pages are of that version)
            pin = self._join_pin(node)
            handle.pin = pin
            handle.keep_cache = pin.etag != "" and node.open_etag == pin.etag
            pin.served = pin.served or handle.keep_cache
            node.open_etag = pin.etag
        else:
            node.open_etag = ""
        if flags & os.O_TRUNC and writing:
            handle.keep_cache = False
            try:
                async with node.lock:
                    await self._truncate_locked(node, 0)
            except BaseException:
                await self.release(fh)
                raise
        return fh

    def _join_pin(self, node: Node) -> Pin:
        """The pin of the inode's open handles, made from what the kernel was told of the
        object (``node.attr``) when there is none (or it went stale); counts one more handle."""
        pin = self.pins.get(node.ino)
        if pin is None or pin.stale:
            # after a stale one (its handles stay ESTALE): the version the first read HEADs
            attr = node.attr if pin is None else None
            pin = Pin(attr.etag if attr else "", attr.size if attr else 0, attr)
            self.pins[node.ino] = pin
        pin.handles += 1
        return pin

    async def create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, int, Attr]:
        """Create and open a file: (handle, inode, attributes). Nothing is uploaded before the
        first flush; until then the file lives in its buffer (a local node)."""
        async with self._claim(self._child_paths(parent_ino, name, creating=True)):
            return await self._create(parent_ino, name, mode, flags, uid, gid)

    async def _create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, int, Attr]:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._child_path(parent, name, creating=True)
        existing = await self._resolve(path)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST)
            if existing.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            node = self.inodes.node_for(path, existing.kind)
            if not self._is_local(node):
                node.attr = existing
            self.inodes.ref(node)
            try:
                fh = await self.open(node.ino, flags)
            except BaseException:
                self.inodes.forget(node.ino, 1)
                raise
            return fh, node.ino, await self.getattr(node.ino)
        stale = self.inodes.find(path)
        if stale is not None:  # deleted behind our back, maybe still open: leave it be
            self.inodes.detach(stale)
        buffer = await WriteBuffer.create(self.tmpdir, self.write_memory)
        perms = stat.S_IMODE(mode)
        attr = Attr(Kind.FILE, perms | stat.S_IFREG, uid, gid, 0, self._now())
        node = self.inodes.node_for(path, Kind.FILE)
        node.attr = attr
        node.buffer = buffer
        node.pending = True
        node.dirty = True
        node.version += 1
        node.content_type = _content_type(path)
        node.extra_meta = {}
        self.inodes.set_local(node, True)
        self.inodes.ref(node)
        self.cache.note_exists(path, attr)
        fh = self._open_handle(node, flags)
        self._begin_stream(node)
        return fh, node.ino, attr

    async def _ensure_buffer(self, node: Node, *, need_data: bool) -> WriteBuffer:
        """The node's buffer, created (and with ``need_data`` filled from the object) on first
        use. Caller holds ``node.lock``."""
        if node.buffer is not None:
            return node.buffer
        buffer = await WriteBuffer.create(self.tmpdir, self.write_memory)
        try:
            key = self.keys.file_key(node.path)
            filled = ""  # the ETag of the version the buffer holds
            for _ in range(REPIN_ATTEMPTS):
                info = await self.store.head(key) if not node.pending else None
                if info is None or not need_data or await self._fill(buffer, key, info):
                    break
                await buffer.truncate(0)
                log.warning("%r changed while being read for a write: reading it again", node.path)
            else:
                raise FsError(errno.EIO, f"{node.path} kept changing while it was read")
            if info is not None:
                filled = info.etag
                node.content_type = info.content_type or _content_type(node.path)
                node.extra_meta = {
                    k: v for k, v in (info.metadata or {}).items() if k not in OUR_META
                }
            elif not node.pending and need_data and node.path_attached:
                log.warning("%r vanished from the bucket: writing it anew", node.path)
        except BaseException:
            buffer.close()
            raise
        pin = self.pins.get(node.ino)
        if need_data and pin is not None and pin.served and pin.etag != filled:
            pin.stale = True  # its readers had bytes of another version: not the buffer's
        if node.buffer is not None:  # cannot happen under the lock; keep the first one
            buffer.close()
            return node.buffer
        node.buffer = buffer
        node.version += 1
        return buffer

    async def _fill(self, buffer: WriteBuffer, key: str, info: ObjectInfo) -> bool:
        """Fill ``buffer`` with the version ``info`` HEADed (If-Match on every GET); False
        when the object changed meanwhile (a 412, or fewer bytes than HEADed)."""

        async def get(start: int, end: int) -> bytes:
            return await self.store.get_range(key, start, end, if_match=info.etag)

        try:
            await buffer.fill(info.size, get)
        except PreconditionFailed:
            return False
        return buffer.size >= info.size

    def _touch(self, node: Node) -> None:
        """The node's content changed: dirty, local, new mtime, read-ahead invalid."""
        node.dirty = True
        node.version += 1
        node.open_etag = ""  # written here: the next open drops the page cache
        self.pins.pop(node.ino, None)  # its handles read the buffer from now on
        attr = node.attr or self._blank(node.kind)
        node.attr = attr.with_changes(mtime_ns=self._now())
        self.inodes.set_local(node, True)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer only at the end): from the buffer when the file
        has one, else ranged GETs of the handle's pinned version with a read-ahead window that
        grows while reads are sequential and resets on a seek.

        A changed object (412, gone, or fewer bytes than the version has) is ESTALE once bytes
        of the pinned version were served; before that, the pin moves to the new version (a
        HEAD) and the read starts again, if the size is the same (else ESTALE too)."""
        handle = self._handle(fh)
        node = handle.node
        await self.write_order.wait_earlier(node.ino)  # not older than a write received before
        if handle.pin is not None and handle.pin.stale:
            raise self._stale(handle)
        if node.buffer is not None:
            return await node.buffer.pread(offset, size)
        if handle.pin is None:  # opened on a local file, now saved and its buffer gone
            handle.pin = self._join_pin(node)
            handle.pin.served = True  # the kernel had that version's bytes from the buffer
        pin = handle.pin
        for _ in range(REPIN_ATTEMPTS + 1):
            if pin.stale:
                raise self._stale(handle)
            if not pin.etag:
                await self._repin(node, pin, "")  # (a pin without attributes takes any size)
            etag, known = pin.etag, pin.size
            if offset >= known:
                return b""
            try:
                data = await self._read_version(handle, offset, size, etag, known)
            except (PreconditionFailed, NoSuchKey):
                data = None
            if node.buffer is not None:  # a writer appeared meanwhile: its buffer is the truth
                if pin.stale:
                    raise self._stale(handle)
                return await node.buffer.pread(offset, size)
            if pin.etag != etag:
                continue  # moved to a new version meanwhile: these bytes are of the old one
            if data is not None and len(data) == min(size, known - offset):
                pin.served = pin.served or bool(data)
                return data
            # the object is no longer the pinned version
            if await self._repin(node, pin, etag):
                continue
            pin.stale = True
            raise self._stale(handle)
        raise self._stale(handle)

    async def _read_version(
        self, handle: Handle, offset: int, size: int, etag: str, known: int
    ) -> bytes:
        """Bytes of version ``etag`` (If-Match on every GET) through the handle's read-ahead."""
        key = self.keys.file_key(handle.node.path)
        store = self.store

        async def stream(start: int, length: int, sink: Sink) -> None:
            end = start + length - 1
            if isinstance(store, StreamingStore):  # chunks as they arrive
                await store.get_range_into(key, start, end, sink, if_match=etag)
            else:
                await sink(await store.get_range(key, start, end, if_match=etag))

        return await handle.readahead.read(offset, size, known, handle.node.version, stream)

    async def _repin(self, node: Node, pin: Pin, etag: str) -> bool:
        """The object is no longer version ``etag``: HEAD it (its attributes are kept, for the
        next open) and move the pin there if no byte of ``etag`` was served and the size is the
        same (the kernel's size of the open file is the old one: a short answer against it is
        an early end of file, or zeros). True when the pin is no longer at ``etag``; False: the
        caller says ESTALE. ENOENT for a pin that served nothing, of an object gone. The
        handles on a moved pin drop what they fetched."""
        info = await self._head(self.keys.file_key(node.path))
        if info is None and pin.etag == etag and etag and pin.served:
            return False
        if info is None:
            raise FsError(errno.ENOENT, f"{node.path} is gone from the bucket")
        attr = self._complete_file(self._attr_from_info(info, is_dir=False))
        if not self._is_local(node):
            node.attr = attr
            if node.path_attached:
                self.cache.store_attr(node.path, attr)
        if pin.etag != etag:
            return True  # moved by another read meanwhile
        if pin.etag and (pin.served or info.size != pin.size):
            return False
        pin.etag, pin.size, pin.attr = info.etag, info.size, attr
        if pin is self.pins.get(node.ino):
            node.open_etag = info.etag  # what the page cache will hold
        for other in self.handles.values():
            if other.pin is pin:
                other.readahead.reset(other.readahead.version)
        return True

    def _stale(self, handle: Handle) -> FsError:
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

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write into the inode's buffer (filled from the object first if it has old bytes)."""
        handle = self._handle(fh)
        node = handle.node
        data = data[: limits.writable(offset, len(data))]  # EFBIG past 5 TiB
        ticket = self.write_order.begin(node.ino)  # reads arriving from now on wait for it
        try:
            async with node.lock:
                buffer = await self._ensure_buffer(node, need_data=True)
                await buffer.pwrite(offset, data)
                self._touch(node)
                self.write_order.end(node.ino, ticket)  # applied: reads may go on
                await self._stream_write(node, offset)
        finally:
            self.write_order.end(node.ino, ticket)
        return len(data)

    async def _truncate_locked(self, node: Node, size: int) -> None:
        await self._end_stream(node)
        buffer = await self._ensure_buffer(node, need_data=size > 0)
        await buffer.truncate(size)
        self._touch(node)
        if size == 0:
            self._begin_stream(node)

    # -- streaming uploads (caller holds node.lock) ----------------------------------------------

    def _begin_stream(self, node: Node) -> None:
        """The node's content is known from offset 0 (new, or truncated to zero): its parts
        may go up while it is written."""
        if node.ino in self.streams or not node.path_attached:
            return
        stream = self.uploader.stream(self.keys.file_key(node.path), node.path, self.nursery)
        if stream is not None:
            self.streams[node.ino] = stream

    async def _end_stream(self, node: Node) -> None:
        """Stop streaming the node (the whole buffer goes up at the next flush)."""
        stream = self.streams.pop(node.ino, None)
        if stream is not None:
            await stream.abort()

    def _stream_ok(self, node: Node, stream: StreamingUpload) -> bool:
        return (
            self.nursery is not None
            and node.buffer is not None
            and node.path_attached
            and node.path == stream.path
        )

    async def _stream_write(self, node: Node, offset: int) -> None:
        """After a write at ``offset``: hand the whole parts to the stream, or stop it when the
        write broke the sequence (or the file moved)."""
        stream = self.streams.get(node.ino)
        if stream is None:
            return
        if not stream.accepts(offset) or not self._stream_ok(node, stream):
            await self._end_stream(node)
            return
        buffer = node.buffer
        assert buffer is not None
        try:
            await stream.advance(
                buffer.size,
                buffer.window,
                lambda: (
                    metadata_of(self._local_attr(node), node.extra_meta),
                    node.content_type or _content_type(node.path),
                ),
            )
        except Exception as exc:
            log.warning(
                "streaming upload of %r stopped (%s): it goes up whole at close", node.path, exc
            )
            await self._end_stream(node)

    async def _take_stream(self, node: Node) -> StreamingUpload | None:
        """The node's stream, to complete by the save about to run (None: the buffer goes up
        whole; a stream that can no longer complete is aborted)."""
        stream = self.streams.pop(node.ino, None)
        if stream is not None and not self._stream_ok(node, stream):
            await stream.abort()
            return None
        return stream

    # -- saving ----------------------------------------------------------------------------------

    async def _save(self, node: Node) -> None:
        """Upload the node's buffer if dirty; FsError(EIO) (logged with the path) on failure.
        Under a claim on its path (taken before its lock): a directory rename moving it waits
        for the upload, or the upload for the rename and goes to the new key."""
        async with self._claim(lambda: (node.path,)), node.lock:
            await self._save_locked(node)

    async def _save_locked(self, node: Node) -> None:
        if not node.dirty or node.unlinked or node.buffer is None:
            return
        attr = self._local_attr(node)
        path = node.path
        key = self.keys.file_key(path)
        result = await self.uploader.save(
            key,
            path,
            node.buffer,
            metadata_of(attr, node.extra_meta),
            node.content_type or _content_type(path),
            mtime_ns=attr.mtime_ns,
            stamp=(node.ino, node.version),
            stream=await self._take_stream(node),
        )
        await self._object_changed(key)
        if node.unlinked or node.path != path:
            # unlinked or renamed while uploading: the rename/unlink handled the keys
            return
        attr = attr.with_changes(etag=result.etag, complete=True)
        node.attr = attr
        node.dirty = False
        node.pending = False
        self.inodes.set_local(node, False)
        self.cache.note_exists(path, attr)

    async def flush(self, fh: int) -> None:
        """close(): upload unsaved writes; the error, if any, is close()'s."""
        await self._save(self._handle(fh).node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """fsync(): same as flush."""
        await self._save(self._handle(fh).node)

    async def release(self, fh: int) -> None:
        """The last close of a handle: save if still dirty (errors are only logged: the
        kernel discards them), free the buffer with the last handle."""
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.open_count -= 1
        handle.readahead.close()
        pin = handle.pin
        if pin is not None:
            pin.handles -= 1
            if pin.handles <= 0 and self.pins.get(node.ino) is pin:
                del self.pins[node.ino]
                if pin.stale and self.forget_kernel_attrs is not None:
                    self.forget_kernel_attrs(node.ino)  # the kernel asks for the new version's
        try:
            await self._save(node)
        except FsError:
            pass  # logged by _save; the data stays in the buffer for flush_all
        finally:
            if node.open_count <= 0:
                async with node.lock:
                    await self._end_stream(node)  # before the buffer closes under its parts
            if node.open_count <= 0 and not (node.dirty and node.path_attached):
                if node.buffer is not None:
                    node.buffer.close()
                    node.buffer = None
                node.version += 1
            self.inodes.maybe_drop(node)

    def unsaved(self) -> list[Node]:
        """The files holding data the bucket does not have (dirty, in the tree, buffered)."""
        return [
            node
            for node in self.inodes.all_nodes()
            if node.dirty and node.path_attached and node.buffer is not None
        ]

    async def flush_all(self, nodes: Iterable[Node] | None = None) -> int:
        """Upload every dirty file (or those of ``nodes``: unmount, termination),
        ``CONCURRENCY`` at a time (with the server away, each waits out its retries: not one
        after the other); how many failed (each kept in a recovery copy when one could be
        written: ``recovery.copy_of``)."""
        failed = 0
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def save(node: Node) -> None:
            nonlocal failed
            async with limiter:
                try:
                    await self._save(node)
                except Exception:
                    failed += 1

        async with trio.open_nursery() as nursery:
            for node in self.inodes.all_nodes() if nodes is None else nodes:
                if node.dirty and node.path_attached:
                    nursery.start_soon(save, node)
        return failed

    # -- attributes --------------------------------------------------------------------------------

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
        async with self._claim(lambda: (node.path,)):
            return await self._setattr(
                ino, size=size, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, fh=fh
            )

    async def _setattr(
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
        self._check_writable()
        node = self.inodes.get(ino)
        if size is not None:
            if node.kind is not Kind.FILE:
                raise FsError(errno.EISDIR if node.kind is Kind.DIR else errno.EINVAL)
            limits.check_size(size)  # EFBIG past 5 TiB
            ticket = self.write_order.begin(node.ino)  # a truncation is a write for reads
            try:
                async with node.lock:
                    await self._truncate_locked(node, size)
                    self.write_order.end(node.ino, ticket)
                    if node.open_count == 0:  # truncate(2) of a closed file: save it now
                        await self._save_locked(node)
                        if not node.dirty and node.buffer is not None:
                            node.buffer.close()
                            node.buffer = None
                            node.version += 1
            finally:
                self.write_order.end(node.ino, ticket)
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
        current = await self.getattr(ino)
        new = current.with_changes(**changes)
        if ino == ROOT_INODE:
            if self.keys.prefix:
                await self._write_dir_meta("", new)
            self.root_attr = new
            self.inodes.root.attr = new
            return new
        async with node.lock:
            if self._is_local(node):
                node.attr = new
                return self._local_attr(node)
            if node.kind is Kind.DIR:
                new = await self._write_dir_meta(node.path, new)
            else:
                new = await self._write_file_meta(node.path, new, self.pins.get(node.ino))
            node.attr = new
            if node.path_attached:
                self.cache.note_exists(node.path, new)
        return new

    async def _write_file_meta(self, path: str, attr: Attr, pin: Pin | None = None) -> Attr:
        """Copy the object onto itself with new metadata; a pin on the version copied follows
        it (same bytes; the copy's ETag may differ, as for a multipart object)."""
        key = self.keys.file_key(path)
        info = await self.store.head(key)
        if info is None:
            raise FsError(errno.ENOENT)
        keep = {k: v for k, v in (info.metadata or {}).items() if k not in OUR_META}
        result = await self.store.copy(
            key, key, metadata_of(attr, keep), info.content_type or _content_type(path)
        )
        await self._object_changed(key)
        new = attr.with_changes(etag=result.etag or info.etag, complete=True)
        if pin is not None and pin.etag == info.etag:
            pin.etag, pin.attr = new.etag, new.with_changes(size=pin.size)
        return new

    async def _write_dir_meta(self, path: str, attr: Attr) -> Attr:
        marker = self.keys.dir_prefix(path)
        info = await self.store.head(marker)
        if info is None:  # implicit: make it explicit, with the metadata
            result = await self.store.put(marker, b"", metadata_of(attr), DIRECTORY_CONTENT_TYPE)
        else:
            keep = {k: v for k, v in (info.metadata or {}).items() if k not in OUR_META}
            result = await self.store.copy(
                marker, marker, metadata_of(attr, keep), info.content_type or DIRECTORY_CONTENT_TYPE
            )
        return attr.with_changes(etag=result.etag, complete=True)

    # -- unlink, rename ---------------------------------------------------------------------------

    async def _keep_readable(self, node: Node) -> None:
        """An open file about to lose its object: pull its content into the buffer first, so
        its handles can still read it. Caller holds ``node.lock``."""
        if node.open_count > 0 and node.buffer is None and not node.pending:
            await self._ensure_buffer(node, need_data=True)

    async def unlink(self, parent_ino: int, name: bytes) -> None:
        """Delete a file or symlink; open handles keep working on the buffer until closed."""
        async with self._claim(self._child_paths(parent_ino, name)):
            await self._unlink(parent_ino, name)

    async def _unlink(self, parent_ino: int, name: bytes) -> None:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._child_path(parent, name)
        attr = await self._resolve(path)
        if attr is None:
            raise FsError(errno.ENOENT)
        if attr.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        node = self.inodes.find(path)
        async with _locked(node):
            if node is not None:
                await self._keep_readable(node)
            if node is None or not node.pending:
                await self.store.delete(self.keys.file_key(path))
            if node is not None:
                node.dirty = False
                self.inodes.detach(node)
        self.cache.note_removed(path)

    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int = 0,
    ) -> None:
        """Rename a file (copy keeping metadata, then delete) or a directory (every key under
        it). RENAME_NOREPLACE is honoured; RENAME_EXCHANGE is EINVAL.

        A directory's rename holds an exclusive claim on both paths (``treelock``): for this
        mount it is atomic, every change under either waits for it. A file's holds shared
        claims on both paths, so it waits for a directory rename moving either."""
        self._check_writable()
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")

        def paths() -> tuple[str, str]:
            old_dir, new_dir = self._dir_node(parent_old), self._dir_node(parent_new)
            return (
                self._child_path(old_dir, name_old),
                self._child_path(new_dir, name_new, creating=True),
            )

        while True:
            old, new = paths()
            if old == new:
                return
            src = await self._resolve(old)  # a directory or not: which claim
            directory = src is not None and src.kind is Kind.DIR
            claim = self.tree.exclusive if directory else self.tree.shared
            async with claim((old, new)):
                if paths() != (old, new):
                    continue  # a rename moved them while we waited: again, from the new paths
                src = await self._resolve(old)
                if (src is not None and src.kind is Kind.DIR) != directory:
                    continue  # replaced by the other kind meanwhile
                await self._rename(old, new, flags)
                return

    async def _rename(self, old: str, new: str, flags: int) -> None:
        """``rename`` once its claims are held."""
        src = await self._resolve(old)
        if src is None:
            raise FsError(errno.ENOENT)
        if src.kind is Kind.DIR and is_under(new, old):
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        dst = await self._resolve(new)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise FsError(errno.EEXIST)
            if src.kind is Kind.DIR and dst.kind is not Kind.DIR:
                raise FsError(errno.ENOTDIR)
            if src.kind is not Kind.DIR and dst.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            if dst.kind is Kind.DIR:
                await self._ensure_empty(new)
        if src.kind is Kind.DIR:
            await self._rename_dir(old, new, src)
        else:
            await self._rename_file(old, new, src)

    async def _replace_target(self, new: str) -> None:
        """Whatever node sits at ``new`` is about to be replaced: keep it readable, detach."""
        target = self.inodes.find(new)
        if target is None:
            return
        async with target.lock:
            await self._keep_readable(target)
            target.dirty = False
            self.inodes.detach(target)

    async def _rename_file(self, old: str, new: str, attr: Attr) -> None:
        old_key, new_key = self.keys.file_key(old), self.keys.file_key(new)
        node = self.inodes.find(old)
        async with _locked(node):
            await self._replace_target(new)
            if node is not None:
                await self._end_stream(node)  # its parts went to the old key
            if node is not None and node.dirty and node.buffer is not None:
                local = self._local_attr(node)
                result = await self.uploader.save(
                    new_key,
                    new,
                    node.buffer,
                    metadata_of(local, node.extra_meta),
                    node.content_type or _content_type(new),
                    mtime_ns=local.mtime_ns,
                    stamp=(node.ino, node.version),
                    kept_as=(old_key, old),  # the file stays at its old name
                )
                if not node.pending:
                    await self.store.delete(old_key)
                node.dirty = False
                node.pending = False
                self.inodes.set_local(node, False)
                attr = self._local_attr(node).with_changes(etag=result.etag, complete=True)
                node.attr = attr
            else:
                result = await self.store.copy(old_key, new_key)
                await self.store.delete(old_key)
                if result.etag:
                    if node is not None:
                        self._follow_copy(node, attr.etag, result.etag)
                    attr = attr.with_changes(etag=result.etag)
            self.inodes.move(old, new)
            await self._object_changed(new_key)
        self.cache.note_removed(old)
        self.cache.forget_tree(new)
        self.cache.note_exists(new, attr)

    def _follow_copy(self, node: Node, source_etag: str, copy_etag: str) -> None:
        """``node``'s object was copied to its new key (a rename): a pin on the version copied
        follows it (same bytes; a copy of a multipart object has another ETag), so its open
        handles read on rather than meet ESTALE."""
        pin = self.pins.get(node.ino)
        if pin is not None and source_etag and pin.etag == source_etag:
            pin.etag = copy_etag
            if pin.attr is not None:
                pin.attr = pin.attr.with_changes(etag=copy_etag)
        if node.attr is not None and node.attr.etag == source_etag:
            node.attr = node.attr.with_changes(etag=copy_etag)

    async def _rename_dir(self, old: str, new: str, attr: Attr) -> None:
        """Copy every key under ``old`` to ``new``, move the inodes, delete the old keys.

        Caller holds the exclusive claim on both: nothing under them changes meanwhile, so
        the keys listed at the start are all there are. Inodes move before the deletes, so
        reads of open files never find neither key. A key still under ``old`` at the end
        (another client wrote it) is EIO, logged."""
        old_prefix, new_prefix = self.keys.dir_prefix(old), self.keys.dir_prefix(new)
        local = sorted(self.inodes.local_under(old), key=lambda n: n.ino)
        async with contextlib.AsyncExitStack() as stack:
            for n in local:  # writes of a file inside (not claimed) finish first
                await stack.enter_async_context(n.lock)
                await self._end_stream(n)  # its parts went to the old key
            keys: list[str] = []
            etags: dict[str, tuple[str, str]] = {}  # new key → (ETag listed, ETag of the copy)
            async with contextlib.aclosing(self.store.iter_pages(old_prefix)) as pages:
                async for page in pages:
                    keys.extend(obj.key for obj in page.objects)
                    etags.update(
                        (new_prefix + o.key[len(old_prefix) :], (o.etag, "")) for o in page.objects
                    )
            moved = [k[len(old_prefix) :] for k in keys] + [n.path[len(old) + 1 :] for n in local]
            for rest in ["", *moved]:  # ENAMETOOLONG before anything is copied
                limits.check_key(new_prefix + rest)

            async def copy_one(key: str) -> None:
                target = new_prefix + key[len(old_prefix) :]
                async with self.limiter:
                    result = await self.store.copy(key, target)
                etags[target] = (etags[target][0], result.etag)
                await self._object_changed(target)

            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(copy_one, key)
            old_forms = await self._old_form_keys(old, attr)  # moved as the marker
            if not keys or (old_forms and old_prefix not in keys):
                # only local content (or none), or older forms: the new one needs a marker
                await self.store.put(new_prefix, b"", metadata_of(attr), DIRECTORY_CONTENT_TYPE)
            self._detach_tree(new)
            self.inodes.move(old, new)
            for n in self.inodes.all_nodes():  # open files inside read the copies now
                listed, copied = etags.get(self.keys.file_key(n.path), ("", ""))
                if copied and is_under(n.path, new):
                    self._follow_copy(n, listed, copied)
        self.cache.note_removed(old)
        self.cache.forget_tree(new)
        self.cache.note_exists(new, attr)
        failed = await self.store.delete_many(keys + old_forms)
        if failed:
            log.error("rename %r → %r: could not delete %d old keys", old, new, len(failed))
            raise FsError(errno.EIO, "old keys left behind")
        left = await self.store.list_page(old_prefix, None, 10)
        if left.objects or left.prefixes:
            found = [o.key for o in left.objects] + list(left.prefixes)
            log.error(
                "rename %r → %r: keys appeared under the old prefix during the move (another "
                "client?), left there: %s",
                old,
                new,
                ", ".join(repr(k) for k in found),
            )
            raise FsError(errno.EIO, "keys left behind under the old prefix")

    # -- misc ------------------------------------------------------------------------------------

    def statfs(self) -> StatFs:
        return StatFs()

    async def mknod(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """Regular files only (an empty object); devices, FIFOs and sockets cannot be stored."""
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM)
        fh, ino, _ = await self.create(parent_ino, name, mode, os.O_WRONLY | os.O_EXCL, uid, gid)
        try:
            await self.flush(fh)
        finally:
            await self.release(fh)
        return ino, await self.getattr(ino)

    def timeouts(self) -> tuple[float, float]:
        """(entry_timeout, attr_timeout) for the kernel: the listing and stat TTLs."""
        return self.settings.dir_ttl, self.settings.stat_ttl

    async def destroy(self) -> None:
        """Close every buffer (after flush_all)."""
        for node in self.inodes.all_nodes():
            await self._end_stream(node)
            if node.buffer is not None:
                node.buffer.close()
                node.buffer = None
