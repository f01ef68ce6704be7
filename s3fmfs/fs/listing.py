"""Directory listings and readdir.

Invariants:
- A listing reads every page of the directory's prefix (delimiter ``/``) or answers from the
  cache; a directory shadows a file of the same name, ``_$folder$`` keys and the directory's
  own marker are not entries, keys that cannot be names are skipped (logged once).
- Readdir offsets index a snapshot of the directory (``DirHandle.snapshot``), sorted by name
  and taken when a listing starts (offset 0): entries added or removed meanwhile cannot make
  it skip or repeat. Snapshots live in their ``DirHandle`` until releasedir.
- Entries listed from the bucket come with HEADed attributes: HEADs start with each page of
  the listing while the rest is still being listed, ``CONCURRENCY`` workers for the whole
  directory (not a task per entry); a listed object whose version (ETag + LastModified) the
  ``MetaCache`` knows is not HEADed at all. Nodes of unsaved content are merged in.
- Every entry the kernel accepts takes one lookup reference (readdirplus); ``.`` and ``..``
  take none, and an entry it refuses none either.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable

import trio

from .attrs import Attr, Kind, attr_from_object, folder_name, implicit_dir
from .cache import Listing
from .handles import DirHandle
from .inodes import ROOT_INODE, Node
from .keys import encode_name, join, name_of, valid_name
from .namespace import CONCURRENCY, Namespace
from .store import ObjectInfo

log = logging.getLogger("s3fmfs.fs")

#: Entries whose attributes are completed (HEADed) at a time by readdir.
READDIR_BATCH = 512

#: readdir's callback: (name, inode, attributes, next offset) → whether the kernel took it.
Emit = Callable[[bytes, int, Attr, int], bool]


class Listings:
    """Listings of a mount's directories, and readdir over their snapshots."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    async def list_dir(
        self, path: str, on_page: Callable[[Listing], None] | None = None
    ) -> Listing:
        """Entries of directory ``path`` from the bucket (every page) or the cache.

        ``on_page`` sees each page's entries as soon as it is read (not for a cached listing),
        so that their HEADs can start while the next pages are listed."""
        cached = self.ns.cache.listing(path)
        if cached is not None:
            return cached
        prefix = self.ns.keys.dir_prefix(path)
        dirs: Listing = {}
        files: Listing = {}
        forms: dict[str, tuple[str, ...]] = {}  # name → its ``_$folder$`` key (older form)
        complete = self.ns.settings.nometa
        implicit = implicit_dir(self.ns.defaults, self.ns.mount_time).with_changes(
            complete=complete
        )
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
        listing: Listing = {**files, **dirs}  # a directory shadows a file of the same name
        for name, attr in dirs.items():
            # objects in older forms: a ``_$folder$``, an object of the same name (it may be one)
            old = ((prefix + name,) if name in files else ()) + forms.get(name, ())
            if old:
                listing[name] = attr.with_changes(old_forms=old)
        self.ns.cache.store_listing(path, listing)
        return listing

    async def snapshot(self, node: Node) -> list[tuple[str, Attr]]:
        """The sorted entries of a directory, local nodes merged in; entries listed from the
        bucket come with HEADed attributes (HEADs start with each page of the listing)."""
        headed: Listing = {}
        send, receive = trio.open_memory_channel[tuple[str, Attr]](math.inf)

        async def worker(entries: trio.MemoryReceiveChannel[tuple[str, Attr]]) -> None:
            async with entries:
                async for name, attr in entries:
                    await self.complete_entry(node.path, name, attr, headed)
                    if self.ns.metacache is not None and self.ns.metacache.flush_due:
                        await self.ns.metacache.flush()  # not 100,000 rows queued till the end

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

                listing = dict(await self.list_dir(node.path, start_heads))
                for name, attr in listing.items():
                    # directories once the whole listing told their older forms, if any
                    if not attr.complete and attr.kind is Kind.DIR:
                        send.send_nowait((name, attr))
        for name, attr in headed.items():
            # a dir shadows a file; a listed object's HEAD may show it is a directory
            if name in listing and (listing[name].kind is attr.kind or attr.kind is Kind.DIR):
                listing[name] = attr
        for child in self.ns.inodes.unsaved_children(node.path):
            listing[name_of(child.path)] = self.ns.local_attr(child)
        here = self.ns.root_attr if node.ino == ROOT_INODE else node.attr or self.ns.blank(Kind.DIR)
        dots = [(".", here.with_changes(complete=True)), ("..", here.with_changes(complete=True))]
        return dots + sorted(listing.items())

    async def complete_entry(self, directory: str, name: str, attr: Attr, into: Listing) -> None:
        """Put the HEADed attributes of a listed entry into ``into`` (nothing if it is gone
        or the HEAD failed: the listing's attributes stand)."""
        path = join(directory, name)
        try:
            known = self.ns.cache.attr(path)
            if known is not None and known.complete and known.etag == attr.etag:
                into[name] = known
                return
            if attr.kind is Kind.DIR:
                new = await self.ns.head_dir(path, attr.old_forms)
            else:
                info = await self.ns.head(self.ns.keys.file_key(path))
                if info is None:
                    return  # deleted since the listing: keep what the listing said
                new = self.ns.attr_from_info(info, is_dir=False)
            self.ns.cache.store_attr(path, new)
            into[name] = new
        except Exception as exc:
            log.warning("HEAD of %r failed, listing attributes used: %s", path, exc)

    async def complete_attrs(self, directory: str, batch: list[tuple[str, Attr]]) -> None:
        """Replace listing-grade attributes in ``batch`` by HEADed ones, concurrently."""
        if self.ns.settings.nometa:
            return
        headed: Listing = {}
        async with trio.open_nursery() as nursery:
            for name, attr in batch:
                if not attr.complete:
                    nursery.start_soon(self.complete_entry, directory, name, attr, headed)
        for index, (name, _) in enumerate(batch):
            if name in headed:
                batch[index] = (name, headed[name])
        if self.ns.metacache is not None and self.ns.metacache.flush_due:
            await self.ns.metacache.flush()

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
            await self.complete_attrs(node.path, batch)
            entries[index : index + len(batch)] = batch
            for offset, (name, attr) in enumerate(batch):
                if name in (".", ".."):  # reported without taking a reference
                    dot = node if name == "." else self.ns.parent_node(node)
                    if not emit(name.encode(), dot.ino, attr, index + offset + 1):
                        return
                    continue
                path = join(node.path, name)
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
