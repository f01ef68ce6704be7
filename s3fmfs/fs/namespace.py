"""The namespace: inodes, paths ↔ keys, what each path is, and the caches that remember it.

The part of the core that answers lookup and getattr and resolves paths (``resolve``: local
nodes, then the caches, then the bucket), with the helpers every namespace change shares
(``changes``: mkdir, rmdir, symlink, unlink, rename; ``listing``: readdir).

Invariants:
- The bucket is the truth, except for nodes whose content is unsaved (``InodeTable.unsaved``:
  files created and not yet uploaded, or holding unsaved writes) and unlinked nodes
  (``is_local``: their attributes are kept here); lookups and listings consult them first.
- A directory is a marker object ``dir/`` or any key under ``dir/`` (implicit), or one of
  s3fs's older forms (``attrs``): ``dir_$folder$`` (seen in a listing, never an entry itself)
  or an object ``dir`` whose HEAD says it is a directory (with ``nometa``: never known, it
  stays a file unless keys are under ``dir/``). Its metadata comes from the marker, else from
  those objects (``Attr.old_forms``, no HEAD for a directory without them); rmdir and rename
  remove them with it. A directory shadows a file of the same name. Keys that cannot be paths
  are skipped (logged once).
- S3's limits (``limits``) are checked before any request: a name over 255 bytes or a key over
  1,024 is ENAMETOOLONG, a name not in UTF-8 EINVAL (logged), a size past 5 TiB EFBIG.
- Caches are updated by every change the mount makes before the change returns.
- Every operation that changes the namespace or writes a key (create, mkdir, symlink, unlink,
  rmdir, rename, setattr, uploads) holds a shared claim (``claim``, ``treelock``) on the paths
  it names, taken before any node lock and never nested on other paths; a directory rename
  holds an exclusive one (``changes``).
- HEADs run concurrently where there are many (a folder's entries sent ahead, probes), never
  more than ``HEADS_IN_FLIGHT`` at once for the whole mount (``head_limiter``, within the
  client's connection pool), sized between ``HEADS_LOW`` and that by the throughput HEADs get
  (``prefetch.HeadPace``): many for a far server, few for a near one. One HEAD per path at a time
  (``head_file``): a lookup or getattr of a path whose HEAD is in flight waits for its answer.
  Every HEAD answer goes to the ``MetaCache`` (it keeps those of listed versions, for later
  mounts); an object this mount wrote is forgotten there (``object_changed``).
- A file's HEAD (``head_file``) is a GET of the whole object instead when a listing showed it
  at most ``bodies.SMALL`` bytes (``head_or_get``: If-Match its listed ETag, within the
  bodies' budget, not with nometa): same attributes, counted and limited as a HEAD, and the
  body kept in ``cache.bodies`` for the read that follows (``handles``). A 412 (changed since
  the listing) or no room: a HEAD.
- A lookup or getattr that needs a HEAD for an entry of a folder just read starts HEADs for
  the entries after it (``prefetch.HeadAhead``); it uses an answer HEADed ahead while fresh
  (``cache.AHEAD_FRESH``), and a recently listed name's HEAD instead of a probe.
- While an inode's handles read a pinned version (``pins``), lookup, getattr and readdir
  report that version's attributes.

Concurrency: all state lives on the trio thread; it may change at every ``await``, so code
re-reads the inode table after awaiting rather than trusting what it read before.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping

import trio
from cachetools import TTLCache

from ..client.errors import PreconditionFailed
from . import limits
from .attrs import (
    DIRECTORY_CONTENT_TYPE,
    FOLDER_SUFFIX,
    OUR_META,
    Attr,
    Kind,
    attr_from_object,
    implicit_dir,
    is_dir_object,
    metadata_of,
    truncate_to_seconds,
    user_meta,
)
from .bodies import SMALL
from .cache import Listing, MetadataCache
from .errno_map import FsError
from .inodes import ROOT_INODE, InodeTable, Node
from .keys import KeyMap, is_under, join, name_of, parent_of, valid_name
from .metacache import MetaCache
from .pins import Pin, Pins
from .prefetch import HeadAhead, HeadPace
from .settings import FsSettings
from .store import ObjectInfo, ObjectStore, WholeStore
from .treelock import TreeLock

log = logging.getLogger("s3fmfs.fs")

#: Requests at once of a mount's batch work (renames of directories, flushes).
CONCURRENCY = 16
#: HEADs in flight at once for one mount: from 16 (near servers: more only cost CPU) up to 64
#: (a server 10 ms away answers 64 as fast as 16), as the throughput says (``HeadPace``).
HEADS_LOW = 16
HEADS_IN_FLIGHT = 64
MAX_SKIPPED_LOGGED = 10_000
#: Names probed in vain in a folder (within ``dir_ttl``) before a lookup lists it instead;
#: folders counted at most.
LIST_AFTER_MISSES = 3
MAX_MISS_FOLDERS = 1024

#: Changes an object's other user metadata (given a copy; returns what to keep), or raises
#: ``FsError`` (``xattrs``: a missing name, a map too large).
MetaEdit = Callable[[dict[str, str]], dict[str, str]]


def content_type_of(path: str) -> str:
    """The content type an upload of ``path`` gets, from its name."""
    guessed, _ = mimetypes.guess_type(name_of(path), strict=False)
    return guessed or "application/octet-stream"


class _Pending:
    """A file HEAD in flight: its answer, once ``done`` (``answered`` False: it failed)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answered = False
        self.attr: Attr | None = None


class Namespace:
    """The tree of one mount: inodes, the caches of what paths are, and the bucket behind."""

    def __init__(
        self,
        store: ObjectStore,
        settings: FsSettings,
        pins: Pins,
        *,
        prefix: str = "",
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], int] = time.time_ns,
        metacache: MetaCache | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.pins = pins
        self.keys = KeyMap(prefix)
        self.clock = clock
        self.defaults = settings.defaults
        self.cache = MetadataCache(settings.stat_ttl, settings.dir_ttl, settings.neg_ttl, timer)
        self.mount_time = self.now()
        self.root_attr = implicit_dir(self.defaults, self.mount_time)
        self.inodes = InodeTable(self.root_attr)
        self.limiter = trio.CapacityLimiter(CONCURRENCY)
        self.head_limiter = trio.CapacityLimiter(HEADS_IN_FLIGHT)
        self.head_pace = HeadPace(self.head_limiter, HEADS_LOW, HEADS_IN_FLIGHT, time.monotonic)
        self._heads: dict[str, _Pending] = {}  # path → its file HEAD in flight
        #: folders just read, and the HEADs sent ahead of their getattrs
        self.ahead = HeadAhead(self.fetch_ahead, timer, settings.dir_ttl)
        self._skipped: set[str] = set()
        #: folder → names probed in vain there within ``dir_ttl`` (``folder_listing``)
        self._misses: MutableMapping[str, int] = TTLCache(
            maxsize=MAX_MISS_FOLDERS, ttl=max(settings.dir_ttl, 1e-9), timer=timer
        )
        #: lists a small folder into the cache (``Listings.list_for_lookups``; set by the core)
        self.list_folder: Callable[[str], Awaitable[None]] | None = None
        #: HEADed metadata of unchanged objects across mounts (unused with nometa: no HEADs).
        self.metacache = None if settings.nometa else metacache
        #: claims on subtrees: a directory rename excludes every change under its paths
        self.tree = TreeLock()

    def now(self) -> int:
        """Now, in whole seconds (the resolution metadata keeps) as nanoseconds."""
        return truncate_to_seconds(self.clock())

    def check_writable(self) -> None:
        if self.settings.ro:
            raise FsError(errno.EROFS)

    def dir_node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if node.unlinked:
            raise FsError(errno.ENOENT, "directory was removed")
        return node

    def child_path(self, parent: Node, name: bytes, *, creating: bool = False) -> str:
        """The path of ``name`` in ``parent``: ENAMETOOLONG (name or key too long) or EINVAL
        (not UTF-8) from ``limits``; otherwise ENOENT (creating: EINVAL) for a non-name."""
        text = limits.check_name(name)
        if not valid_name(text):
            raise FsError(errno.EINVAL if creating else errno.ENOENT, "invalid name")
        path = join(parent.path, text)
        limits.check_key(self.keys.file_key(path))
        return path

    def child_paths(
        self, parent_ino: int, name: bytes, *, creating: bool = False
    ) -> Callable[[], tuple[str]]:
        """The path of ``name`` in directory ``parent_ino`` as it is when called (for
        ``_claim``: the directory may move while a claim waits)."""
        return lambda: (self.child_path(self.dir_node(parent_ino), name, creating=creating),)

    @contextlib.asynccontextmanager
    async def claim(self, paths: Callable[[], tuple[str, ...]]) -> AsyncIterator[None]:
        """Hold shared claims (``treelock``) on ``paths()``: while held, no directory rename
        moves them. Taken again when a rename moved them meanwhile (they are read again)."""
        while True:
            wanted = paths()
            async with self.tree.shared(wanted):
                if paths() == wanted:
                    yield
                    return

    def skip_key(self, key: str) -> None:
        """A key that cannot be a path: log it once, never fail a listing for it."""
        if key in self._skipped:
            return
        if len(self._skipped) < MAX_SKIPPED_LOGGED:
            self._skipped.add(key)
        log.warning("skipping key %r: it cannot be a path (empty, '.', '..' or too long)", key)

    def parent_node(self, node: Node) -> Node:
        """The directory containing ``node`` (the root for the root or when unknown)."""
        return self.inodes.find(parent_of(node.path)) or self.inodes.root

    def blank(self, kind: Kind) -> Attr:
        mode = self.defaults.dir_mode if kind is Kind.DIR else self.defaults.file_mode
        return Attr(kind, mode | kind.type_bits, self.defaults.uid, self.defaults.gid, 0, 0)

    def is_local(self, node: Node) -> bool:
        return self.inodes.is_unsaved(node) or node.unlinked

    def local_attr(self, node: Node) -> Attr:
        """Attributes of a node whose truth is here (size from its buffer)."""
        attr = node.attr or self.blank(node.kind)
        if node.buffer is not None and node.kind is Kind.FILE:
            attr = attr.with_changes(size=node.buffer.size)
        return attr

    def pinned_attr(self, node: Node) -> Attr | None:
        """The attributes of the version the node's open handles read (None: not pinned), so
        that the kernel's size of an open file never changes under its readers."""
        return self.pins.attr_for(node, self.is_local(node))

    def attr_from_info(self, info: ObjectInfo, *, is_dir: bool) -> Attr:
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

    async def head(self, key: str) -> ObjectInfo | None:
        async with self.head_limiter:
            try:
                info = await self.store.head(key)
            finally:
                self.head_pace.done()
        if info is not None and self.metacache is not None:
            self.metacache.record(info)  # kept if it is the version a listing showed
        return info

    async def head_file(self, path: str, *, ahead: bool = False) -> Attr | None:
        """The HEADed attributes of the object at ``path`` (None: no such object). One HEAD
        per path at a time: a second caller waits for the first one's answer (and sends its
        own if that one failed). ``ahead``: kept as an answer sent ahead (``store_ahead``)."""
        while (pending := self._heads.get(path)) is not None:
            await pending.done.wait()
            if pending.answered:
                return pending.attr
        pending = _Pending()
        self._heads[path] = pending
        try:
            info = await self.head_or_get(path)
            pending.attr = None if info is None else self.attr_from_info(info, is_dir=False)
            pending.answered = True
        finally:
            if self._heads.get(path) is pending:
                del self._heads[path]
            pending.done.set()
        if ahead and pending.attr is not None:
            node = self.inodes.find(path)
            if node is None or not self.is_local(node):  # not if it became local meanwhile
                self.cache.store_ahead(path, pending.attr)
        return pending.attr

    def listed_file(self, path: str) -> Attr | None:
        """The listing-grade attributes of the file at ``path`` (None: not listed as one, or
        already HEADed)."""
        attr = self.cache.attr(path)
        if attr is None:
            listing = self.cache.listing(parent_of(path))
            attr = None if listing is None else listing.get(name_of(path))
        if attr is None or attr.kind is not Kind.FILE or attr.complete:
            return None
        return attr

    async def head_or_get(self, path: str) -> ObjectInfo | None:
        """The attributes of the object at ``path``: for a listed object of at most
        ``bodies.SMALL`` bytes, a GET of that version (If-Match its listed ETag) whose body is
        kept for the read that may follow (``cache.bodies``); otherwise, or when the bodies'
        budget is full or the object changed since its listing, a HEAD."""
        key = self.keys.file_key(path)
        listed = self.listed_file(path)
        store = self.store
        bodies = self.cache.bodies
        if (
            listed is None
            or not listed.etag
            or listed.size > SMALL
            or self.settings.nometa
            or not isinstance(store, WholeStore)
            or not bodies.reserve(listed.size)
        ):
            return await self.head(key)
        kept = False
        try:
            async with self.head_limiter:
                try:
                    found = await store.get_object(key, if_match=listed.etag)
                except PreconditionFailed:
                    found = None
                    changed = True
                else:
                    changed = False
                finally:
                    self.head_pace.done()
            if changed:
                return await self.head(key)  # not the listed version: maybe a large one now
            if found is None:
                return None
            info, body = found
            if self.metacache is not None:
                self.metacache.record(info)
            if len(body) == info.size:
                bodies.keep(path, info.etag, body, listed.size)
                kept = True
            return info
        finally:
            if not kept:
                bodies.release(listed.size)

    async def fetch_ahead(self, path: str) -> None:
        """HEAD ``path`` ahead of its getattr, unless known or in flight; never raises."""
        cached = self.cache.attr(path)
        if (cached is not None and cached.complete) or path in self._heads:
            return
        if self.cache.ahead_attr(path) is not None:
            return
        try:
            await self.head_file(path, ahead=True)
            if self.metacache is not None and self.metacache.flush_due:
                await self.metacache.flush()  # not 100,000 rows queued till the end
        except Exception as exc:
            log.debug("HEAD ahead of %r failed: %s", path, exc)

    async def object_changed(self, key: str) -> None:
        """This mount wrote the object at ``key``: what the metadata cache knows of it may
        look current to a listing (a chmod keeps the ETag, maybe the LastModified second)."""
        if self.metacache is not None:
            self.metacache.forget(key)
            if self.metacache.flush_due:
                await self.metacache.flush()

    async def head_dir(self, path: str, old_forms: tuple[str, ...] = ()) -> Attr:
        """A directory known to exist: its marker's metadata, else that of its first object
        in an older form (``old_forms``) that is one, else the defaults (implicit)."""
        implicit = implicit_dir(self.defaults, self.mount_time).with_changes(old_forms=old_forms)
        if self.settings.nometa:
            return implicit
        info = await self.head(self.keys.dir_prefix(path))
        for key in old_forms if info is None else ():
            found = await self.head(key)
            if found is not None and (
                key.endswith(FOLDER_SUFFIX) or is_dir_object(found.metadata, found.content_type)
            ):
                info = found
                break
        if info is None:
            return implicit
        attr = self.attr_from_info(info, is_dir=True).with_changes(old_forms=old_forms)
        return attr if attr.mtime_ns else attr.with_changes(mtime_ns=self.mount_time)

    async def probe(self, path: str) -> Attr | None:
        """Ask the bucket what ``path`` is: HEAD the file key, the marker and ``_$folder$``,
        and list one key under the directory prefix, all at once. A directory wins over a
        file; its metadata: the marker's, the file key's (an older form), the folder's."""
        file_key = self.keys.file_key(path)
        dir_prefix = self.keys.dir_prefix(path)
        folder_key = file_key + FOLDER_SUFFIX
        found: dict[str, object] = {}

        async def head_file() -> None:
            found["file"] = await self.head(file_key)

        async def head_marker() -> None:
            found["marker"] = await self.head(dir_prefix)

        async def head_folder() -> None:
            found["folder"] = await self.head(folder_key)

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
            file_attr = self.complete_file(self.attr_from_info(info, is_dir=False))
        old_forms = (file_attr.old_forms if file_attr is not None else ()) + (
            (folder_key,) if isinstance(folder, ObjectInfo) else ()
        )
        attr: Attr | None = None
        marker = found.get("marker")
        if isinstance(marker, ObjectInfo):
            attr = self.attr_from_info(marker, is_dir=True)
        elif file_attr is not None and file_attr.kind is Kind.DIR:
            attr = file_attr  # an object ``path`` that is a directory (older form)
        elif isinstance(folder, ObjectInfo):
            attr = self.attr_from_info(folder, is_dir=True)
        elif found.get("under"):
            attr = implicit_dir(self.defaults, self.mount_time)
        if attr is None:
            return file_attr
        attr = attr.with_changes(old_forms=old_forms)
        return attr if attr.mtime_ns else attr.with_changes(mtime_ns=self.mount_time)

    def complete_file(self, attr: Attr) -> Attr:
        """With nometa, listing-grade attributes are all there will ever be."""
        if self.settings.nometa and not attr.complete:
            return attr.with_changes(complete=True)
        return attr

    async def resolve(self, path: str) -> Attr | None:
        """What ``path`` is now (None: nothing), from local nodes, the caches or the bucket."""
        if path == "":
            return self.root_attr
        node = self.inodes.find(path)
        if node is not None and self.inodes.is_unsaved(node):
            return self.local_attr(node)
        cached = self.cache.attr(path)
        if cached is not None and (cached.complete or self.settings.nometa):
            self.ahead.wanted(path, start=False)  # keep sending ahead of a walk in progress
            return cached
        ready = self.cache.ahead_attr(path)
        if ready is not None:
            self.ahead.wanted(path, start=False)
            return ready
        if cached is None and self.cache.is_missing(path):
            return None
        attr: Attr | None = None
        headed = False
        if cached is not None and cached.kind is Kind.DIR:
            headed = True
            attr = await self.head_dir(path, cached.old_forms)
        elif headed := (cached is not None or self.ahead.listed(path)):
            listed = self.ahead.listed(path)
            self.ahead.wanted(path, start=True)  # the entries after it, while this one waits
            attr = await self.head_file(path)
            if listed and attr is not None:  # the kernel's getattr (or relookup) comes next
                self.cache.store_ahead(path, attr, used=True)
        folder = None if cached is not None or headed else await self.folder_listing(path)
        if folder is not None:
            entry = folder.get(name_of(path))
            if entry is None:
                return self._resolved(path, None)  # not in its folder: nothing there
            if entry.kind is Kind.DIR:
                attr = await self.head_dir(path, entry.old_forms)
            else:
                attr = await self.head_file(path)
        if attr is None:
            attr = await self.probe(path)
            if attr is None and path:
                parent = parent_of(path)
                self._misses[parent] = self._misses.get(parent, 0) + 1
        return self._resolved(path, attr)

    def _resolved(self, path: str, attr: Attr | None) -> Attr | None:
        """What ``resolve`` found, into the caches (unless the node became local meanwhile)."""
        # the node may have become local while we awaited
        node = self.inodes.find(path)
        if node is not None and self.inodes.is_unsaved(node):
            return self.local_attr(node)
        if attr is None:
            self.cache.store_missing(path)
        else:
            self.cache.store_attr(path, attr)
        return attr

    async def folder_listing(self, path: str) -> Listing | None:
        """The fresh listing of the folder of ``path``, after listing it if it is small
        (``list_folder``; None: too big, or listings are not kept): one listing answers the
        lookups of every name in it (an untar into a folder whose cached listing expired: no
        four-request probe per new name). Only once ``LIST_AFTER_MISSES`` names were probed in
        vain there within ``dir_ttl`` (names being created, not one name polled: a listing
        hides every object made behind the mount's back, not just that name, for ``dir_ttl``),
        and not when ``neg_ttl`` is shorter than ``dir_ttl``."""
        ttl = self.settings.dir_ttl
        if self.list_folder is None or path == "" or ttl <= 0 or self.settings.neg_ttl < ttl:
            return None
        parent = parent_of(path)
        if self.cache.listing(parent) is None:
            if self._misses.get(parent, 0) < LIST_AFTER_MISSES:
                return None
            await self.list_folder(parent)
        return self.cache.listing(parent)

    async def lookup(self, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """The entry ``name`` in a directory; takes one lookup reference on its inode."""
        parent = self.dir_node(parent_ino)
        if name == b".":
            node = parent
            attr = await self.getattr(node.ino)
        elif name == b"..":
            node = self.parent_node(parent)
            attr = await self.getattr(node.ino)
        else:
            path = self.child_path(parent, name)
            found = await self.resolve(path)
            if found is None:
                raise FsError(errno.ENOENT)
            attr = found
            node = self.inodes.node_for(path, attr.kind)
            if not self.is_local(node):
                node.attr = attr
                attr = self.pinned_attr(node) or attr
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
        if self.is_local(node):
            return self.local_attr(node)
        attr = await self.resolve(node.path)  # (for an open file too: it may be gone)
        if node.unlinked or self.is_local(node):  # changed while we awaited
            return self.local_attr(node)
        pin = self.pins.get(node.ino)
        if pin is not None and attr is not None and pin.etag and attr.etag == pin.etag:
            pin.attr = attr  # the pinned version's complete attributes
        pinned = self.pinned_attr(node)
        if pinned is not None:
            if attr is not None and attr.kind is node.kind:
                node.attr = attr
            return pinned
        if attr is None or attr.kind is not node.kind:
            if node.open_count > 0 and node.attr is not None:
                return self.local_attr(node)  # an open file deleted behind our back
            raise FsError(errno.ENOENT)
        node.attr = attr
        if node.buffer is not None and node.kind is Kind.FILE:
            return attr.with_changes(size=node.buffer.size)
        return attr

    async def new_name(self, parent_ino: int, name: bytes) -> str:
        """The path of a name about to be created (EEXIST if it is taken)."""
        self.check_writable()
        parent = self.dir_node(parent_ino)
        path = self.child_path(parent, name, creating=True)
        if await self.resolve(path) is not None:
            raise FsError(errno.EEXIST)
        return path

    async def ensure_empty(self, path: str) -> None:
        """ENOTEMPTY when anything is under directory ``path``: local or in the bucket."""
        if self.inodes.unsaved_under(path):
            raise FsError(errno.ENOTEMPTY)
        marker = self.keys.dir_prefix(path)
        page = await self.store.list_page(marker, None, 2)
        if any(obj.key != marker for obj in page.objects) or page.prefixes:
            raise FsError(errno.ENOTEMPTY)

    async def old_form_keys(self, path: str, attr: Attr) -> list[str]:
        """The objects of directory ``path`` in s3fs's older forms, to remove with it: its
        ``_$folder$`` and an object ``path`` that is a directory (HEADed: it may be a file
        the directory shadows). Nothing when none was seen (no request)."""
        if not attr.old_forms:
            return []
        file_key = self.keys.file_key(path)
        keys = [file_key + FOLDER_SUFFIX]
        if file_key in attr.old_forms:
            info = await self.head(file_key)
            if info is not None and is_dir_object(info.metadata, info.content_type):
                keys.append(file_key)
        return keys

    def detach_tree(self, path: str) -> None:
        for p, n in list(self.inodes.by_path.items()):
            if p == path or is_under(p, path):
                self.inodes.detach(n)

    async def readlink(self, ino: int) -> bytes:
        """A symlink's target: its object's body (cached per ETag; the body its lookup's GET
        brought, if kept)."""
        node = self.inodes.get(ino)
        if node.kind is not Kind.SYMLINK:
            raise FsError(errno.EINVAL)
        etag = node.attr.etag if node.attr else ""
        if node.link_target is not None and node.link_target[0] == etag:
            return node.link_target[1]
        kept = self.cache.bodies.take(node.path, etag) if etag else None  # its lookup's GET
        if kept is not None:
            target = kept
        else:
            target = await self.store.get_range(self.keys.file_key(node.path), 0, None)
        if len(target) > limits.SYMLINK_MAX:  # made by another client: the kernel refuses it
            log.warning("symlink %r: its %d-byte target is too long", node.path, len(target))
            raise FsError(errno.ENAMETOOLONG, "symlink target too long")
        node.link_target = (etag, target)
        return target

    async def write_file_meta(
        self, path: str, attr: Attr, pin: Pin | None = None, edit: MetaEdit | None = None
    ) -> Attr:
        """Copy the object onto itself with new metadata; a pin on the version copied follows
        it (same bytes; the copy's ETag may differ, as for a multipart object). ``edit``
        changes the other user metadata kept (extended attributes: ``xattrs``)."""
        key = self.keys.file_key(path)
        info = await self.store.head(key)
        if info is None:
            raise FsError(errno.ENOENT)
        keep = {k: v for k, v in (info.metadata or {}).items() if k not in OUR_META}
        if edit is not None:
            keep = edit(keep)
        result = await self.store.copy(
            key, key, metadata_of(attr, keep), info.content_type or content_type_of(path)
        )
        await self.object_changed(key)
        new = attr.with_changes(etag=result.etag or info.etag, complete=True, meta=user_meta(keep))
        if pin is not None and pin.etag == info.etag:
            pin.etag, pin.attr = new.etag, new.with_changes(size=pin.size)
        return new

    async def write_dir_meta(self, path: str, attr: Attr, edit: MetaEdit | None = None) -> Attr:
        """A directory's metadata on its marker (made when implicit); ``edit`` as for files."""
        marker = self.keys.dir_prefix(path)
        info = await self.store.head(marker)
        if info is None:  # implicit: make it explicit, with the metadata
            keep = {} if edit is None else edit({})
            result = await self.store.put(
                marker, b"", metadata_of(attr, keep), DIRECTORY_CONTENT_TYPE
            )
        else:
            keep = {k: v for k, v in (info.metadata or {}).items() if k not in OUR_META}
            if edit is not None:
                keep = edit(keep)
            result = await self.store.copy(
                marker, marker, metadata_of(attr, keep), info.content_type or DIRECTORY_CONTENT_TYPE
            )
        return attr.with_changes(etag=result.etag, complete=True, meta=user_meta(keep))
