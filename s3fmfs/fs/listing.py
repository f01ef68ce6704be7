"""Directory listings and readdir.

Invariants:
- A listing reads every page of the directory's prefix (delimiter ``/``) or answers from the
  cache; a directory shadows a file of the same name, ``_$folder$`` keys and the directory's
  own marker are not entries, keys that cannot be names are skipped (logged once).
- Readdir offsets index a snapshot of the directory (``DirHandle.snapshot``), sorted by name
  and taken when a listing starts (offset 0): entries added or removed meanwhile cannot make
  it skip or repeat. Snapshots live in their ``DirHandle`` until releasedir.
- Readdir sends no HEAD: entries listed from the bucket come with what the listing knows
  (size, mtime, ETag; the default mode and owner; a directory implicit), or with complete
  attributes when known: HEADed before (the TTL cache, same ETag) or a version the
  ``MetaCache`` knows (same ETag + LastModified). Incomplete ones (``Attr.complete`` False)
  reach the kernel with timeouts of 0 (``adapter``): it asks lookup or getattr before using
  them, and the first such HEAD in a folder starts HEADs for the entries after it
  (``prefetch.HeadAhead``: each snapshot records its folder's order). Nodes of unsaved
  content are merged in.
- After a snapshot, the listings of the first subdirectories are fetched ahead
  (``prefetch.ListAhead``) for a tree walk; a listing of a directory already being listed
  waits for that one and answers from the cache.
- Every entry the kernel accepts takes one lookup reference (readdirplus); ``.`` and ``..``
  take none, and an entry it refuses none either.
- A listing still running after ``PROGRESS_AFTER`` seconds says so (``listing PREFIX: 12,000
  entries so far``, INFO), again every ``PROGRESS_EVERY`` seconds, and its total when done:
  a slow first ``ls`` of a big folder is never silent. A quicker one logs nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, MutableMapping

import trio
from cachetools import TTLCache

from .attrs import Attr, Kind, attr_from_object, folder_name, implicit_dir
from .cache import Listing
from .handles import DirHandle
from .inodes import ROOT_INODE, Node
from .keys import encode_name, join, name_of, valid_name
from .namespace import Namespace
from .prefetch import LIST_MAX_ENTRIES, ListAhead
from .store import ObjectInfo

log = logging.getLogger("s3fmfs.fs")

#: Entries reported per slice of a snapshot.
READDIR_BATCH = 512
#: Entries at most of a folder listed to answer lookups (one page of S3's listing); folders
#: remembered as bigger than that.
LOOKUP_LIST_MAX = 1000
MAX_BIG = 1024
#: Seconds a listing runs before it logs its progress, and between two such lines.
PROGRESS_AFTER = 3.0
PROGRESS_EVERY = 5.0

#: readdir's callback: (name, inode, attributes, next offset) → whether the kernel took it.
Emit = Callable[[bytes, int, Attr, int], bool]


class Listings:
    """Listings of a mount's directories, and readdir over their snapshots."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.running: dict[str, trio.Event] = {}  # directories being listed
        #: folders too big to list for a lookup (``list_for_lookups``), for ``dir_ttl``
        self.big: MutableMapping[str, bool] = TTLCache(
            maxsize=MAX_BIG, ttl=max(ns.settings.dir_ttl, 1e-9), timer=ns.cache.timer
        )
        #: listings of a walked tree's subdirectories, fetched ahead into the cache
        self.ahead = ListAhead(self.list_ahead, enabled=ns.settings.dir_ttl > 0)

    async def list_dir(
        self,
        path: str,
        on_page: Callable[[Listing], None] | None = None,
        limit: int | None = None,
    ) -> Listing:
        """Entries of directory ``path`` from the bucket (every page) or the cache.

        ``on_page`` sees each page's entries as soon as it is read (not for a cached listing).
        Past ``limit`` entries the listing stops and is not kept (what was read is returned)."""
        while (running := self.running.get(path)) is not None:
            await running.wait()  # a listing ahead of this readdir: its answer is cached
        cached = self.ns.cache.listing(path)
        if cached is not None:
            return cached
        done = self.running[path] = trio.Event()
        try:
            return await self._list(path, on_page, limit)
        finally:
            del self.running[path]
            done.set()

    async def list_for_lookups(self, path: str) -> None:
        """List folder ``path`` so that lookups of names in it are answered from the listing
        (``Namespace.resolve``): a folder of at most ``LOOKUP_LIST_MAX`` entries, one page.
        A bigger one is remembered for ``dir_ttl`` and its names probed one by one; never
        raises (the probe that follows asks the bucket anyway)."""
        if self.ns.cache.listing(path) is not None or path in self.big:
            return
        try:
            await self.list_dir(path, limit=LOOKUP_LIST_MAX)
        except Exception as exc:
            log.debug("listing %r for lookups failed: %s", path, exc)
            return
        if self.ns.cache.listing(path) is None:
            self.big[path] = True

    async def list_ahead(self, path: str) -> None:
        """List ``path`` into the cache ahead of its readdir (``prefetch``); never raises."""
        if self.ns.cache.listing(path) is not None or path in self.running:
            return
        try:
            await self.list_dir(path, limit=LIST_MAX_ENTRIES)
        except Exception as exc:
            log.debug("listing ahead of %r failed: %s", path, exc)

    async def _list(
        self, path: str, on_page: Callable[[Listing], None] | None, limit: int | None
    ) -> Listing:
        prefix = self.ns.keys.dir_prefix(path)
        dirs: Listing = {}
        files: Listing = {}
        forms: dict[str, tuple[str, ...]] = {}  # name → its ``_$folder$`` key (older form)
        complete = self.ns.settings.nometa
        implicit = implicit_dir(self.ns.defaults, self.ns.mount_time).with_changes(
            complete=complete
        )
        began = trio.current_time()
        report_at = began + PROGRESS_AFTER
        reported = False
        async with contextlib.aclosing(self.ns.store.iter_pages(prefix, "/")) as pages:
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
                        self.ns.skip_key(obj.key)
                        continue
                    page_files[name] = attr_from_object(
                        is_dir=False,
                        size=obj.size,
                        last_modified_ns=obj.last_modified_ns,
                        etag=obj.etag,
                        metadata={} if complete else None,
                        defaults=self.ns.defaults,
                    )
                    if self.ns.metacache is not None:
                        listed[name] = obj
                for common in page.prefixes:
                    name = common[len(prefix) :].removesuffix("/")
                    if not valid_name(name):
                        self.ns.skip_key(common)
                        continue
                    page_dirs[name] = implicit
                for name in [n for n in forms if n not in dirs and n not in page_dirs]:
                    page_dirs[name] = implicit  # only a ``_$folder$``: a directory
                if self.ns.metacache is not None and listed:
                    # versions HEADed by an earlier mount (or earlier here) need no HEAD
                    known = await self.ns.metacache.lookup(listed.values())
                    for name, obj in listed.items():
                        meta = known.get(obj.key)
                        if meta is not None:
                            page_files[name] = self.ns.attr_from_info(meta.info(obj), is_dir=False)
                files.update(page_files)
                dirs.update(page_dirs)
                if on_page is not None:
                    on_page({**page_files, **page_dirs})
                seen = len(files) + len(dirs)
                if page.truncated and trio.current_time() >= report_at:
                    log.info("listing %r: %s entries so far", prefix or "/", f"{seen:,}")
                    report_at = trio.current_time() + PROGRESS_EVERY
                    reported = True
                if limit is not None and (seen > limit or (page.truncated and seen >= limit)):
                    return {**files, **dirs}  # too big to list ahead: not kept
        listing: Listing = {**files, **dirs}  # a directory shadows a file of the same name
        if reported or trio.current_time() >= began + PROGRESS_AFTER:
            log.info(
                "listing %r: %s entries in %.1fs",
                prefix or "/",
                f"{len(listing):,}",
                trio.current_time() - began,
            )
        for name, attr in dirs.items():
            # objects in older forms: a ``_$folder$``, an object of the same name (it may be one)
            old = ((prefix + name,) if name in files else ()) + forms.get(name, ())
            if old:
                listing[name] = attr.with_changes(old_forms=old)
        self.ns.cache.store_listing(path, listing)
        return listing

    async def snapshot(self, node: Node) -> list[tuple[str, Attr]]:
        """The sorted entries of a directory, local nodes merged in: what the listing knows,
        or complete attributes already known (no HEAD). Records the folder's order for HEADs
        ahead and lists its first subdirectories ahead."""
        listing = dict(await self.list_dir(node.path))
        cache = self.ns.cache
        prefix = f"{node.path}/" if node.path else ""
        for name, attr in listing.items():
            if attr.complete:
                continue
            path = prefix + name
            known = cache.attr(path) or cache.ahead_attr(path)
            # a dir shadows a file; a listed object's HEAD may show it is a symlink or a dir
            if (
                known is not None
                and known.complete
                and known.etag == attr.etag
                and (known.kind is attr.kind or attr.kind is Kind.FILE)
            ):
                listing[name] = known
        for child in self.ns.inodes.unsaved_children(node.path):
            listing[name_of(child.path)] = self.ns.local_attr(child)
        entries = sorted(listing.items())
        if not self.ns.settings.nometa:
            self.ns.ahead.record(
                node.path,
                [n for n, a in entries if not a.complete and a.kind is not Kind.DIR],
            )
        self.ahead.subdirs([prefix + n for n, a in entries if a.kind is Kind.DIR])
        here = self.ns.root_attr if node.ino == ROOT_INODE else node.attr or self.ns.blank(Kind.DIR)
        dots = [(".", here.with_changes(complete=True)), ("..", here.with_changes(complete=True))]
        return dots + entries

    def _as_known(self, path: str, attr: Attr) -> Attr:
        """A listed object's attributes of its node's kind when its node was HEADed at this
        version (a symlink stays one, its inode kept), still incomplete: asked again."""
        node = self.ns.inodes.find(path)
        if node is None or node.kind is Kind.DIR or node.attr is None:
            return attr
        if node.kind is attr.kind or node.attr.etag != attr.etag:
            return attr
        return node.attr.with_changes(complete=False)

    async def readdir(self, handle: DirHandle, start_id: int, emit: Emit) -> None:
        """Report entries from offset ``start_id`` until ``emit`` refuses one; every entry
        the kernel accepts takes one lookup reference (readdirplus)."""
        node = self.ns.dir_node(handle.ino)
        if start_id == 0 or handle.snapshot is None:
            handle.snapshot = await self.snapshot(node)
        entries = handle.snapshot
        index = start_id
        while index < len(entries):
            batch = entries[index : index + READDIR_BATCH]
            for offset, (name, attr) in enumerate(batch):
                if name in (".", ".."):  # reported without taking a reference
                    dot = node if name == "." else self.ns.parent_node(node)
                    if not emit(name.encode(), dot.ino, attr, index + offset + 1):
                        return
                    continue
                path = join(node.path, name)
                if not attr.complete and attr.kind is Kind.FILE:
                    attr = self._as_known(path, attr)
                child = self.ns.inodes.node_for(path, attr.kind)
                if self.ns.is_local(child):
                    shown = self.ns.local_attr(child)
                else:
                    child.attr = attr
                    shown = self.ns.pinned_attr(child) or attr
                if not emit(encode_name(name), child.ino, shown, index + offset + 1):
                    self.ns.inodes.maybe_drop(child)
                    return
                self.ns.inodes.ref(child)
            index += len(batch)
