"""Namespace changes: the key work of mkdir, rmdir, symlink, unlink and rename.

Invariants:
- Every change holds a shared claim (``treelock``) on the paths it names, taken before any
  node lock and never nested on other paths; a directory rename holds an exclusive claim on
  its old and new paths, so it is atomic for the mount: no key is written under a moving
  tree, so one listing finds every key to move; a key found under the old prefix afterwards
  (another client) is EIO, logged.
- A file's rename is a copy keeping metadata, then a delete; an unsaved file goes up to its
  new key through the upload engine instead (``Files.upload``: a failure is EIO with a
  recovery copy under the old name, where the file stays). Open readers follow the copy of
  their pinned version (``Pins.follow_copy``).
- A directory's inodes move before its old keys are deleted, so reads of open files never
  find neither key. RENAME_NOREPLACE is honoured; RENAME_EXCHANGE is EINVAL.
- Unlink and replacement detach the node (its content discarded: never uploaded); an open
  file keeps its content in its buffer for its handles (``Files.keep_readable``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import stat
from contextlib import AbstractAsyncContextManager

import trio

from . import limits
from .attrs import DIRECTORY_CONTENT_TYPE, Attr, Kind, metadata_of
from .errno_map import FsError
from .files import Files
from .inodes import Node
from .keys import is_under
from .namespace import Namespace, content_type_of
from .pins import Pins

log = logging.getLogger("s3fmfs.fs")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _locked(node: Node | None) -> AbstractAsyncContextManager[object]:
    """The node's lock, or nothing when there is no node."""
    return node.lock if node is not None else contextlib.nullcontext()


class Changes:
    """The namespace changes of a mount."""

    def __init__(self, ns: Namespace, files: Files, pins: Pins) -> None:
        self.ns = ns
        self.files = files
        self.pins = pins

    async def mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A directory: its marker object ``path/`` carries mode, owner and mtime."""
        async with self.ns.claim(self.ns.child_paths(parent_ino, name, creating=True)):
            return await self._mkdir(parent_ino, name, mode, uid, gid)

    async def _mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        path = await self.ns.new_name(parent_ino, name)
        limits.check_key(self.ns.keys.dir_prefix(path))  # the marker key is one byte longer
        attr = Attr(Kind.DIR, stat.S_IMODE(mode) | stat.S_IFDIR, uid, gid, 0, self.ns.now())
        result = await self.ns.store.put(
            self.ns.keys.dir_prefix(path), b"", metadata_of(attr), DIRECTORY_CONTENT_TYPE
        )
        attr = attr.with_changes(etag=result.etag)
        node = self.ns.inodes.node_for(path, Kind.DIR)
        node.attr = attr
        self.ns.inodes.ref(node)
        self.ns.cache.note_exists(path, attr)
        self.ns.cache.store_listing(path, {})
        return node.ino, attr

    async def rmdir(self, parent_ino: int, name: bytes) -> None:
        """Remove an empty directory (its marker and its objects in older forms; an implicit
        one has nothing to delete)."""
        async with self.ns.claim(self.ns.child_paths(parent_ino, name)):
            await self._rmdir(parent_ino, name)

    async def _rmdir(self, parent_ino: int, name: bytes) -> None:
        self.ns.check_writable()
        parent = self.ns.dir_node(parent_ino)
        path = self.ns.child_path(parent, name)
        attr = await self.ns.resolve(path)
        if attr is None:
            raise FsError(errno.ENOENT)
        if attr.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        await self.ns.ensure_empty(path)
        old = await self.ns.old_form_keys(path, attr)
        if old:
            failed = await self.ns.store.delete_many([self.ns.keys.dir_prefix(path), *old])
            if failed:
                raise FsError(errno.EIO, f"rmdir {path}: could not delete {failed}")
        else:
            await self.ns.store.delete(self.ns.keys.dir_prefix(path))
        self.ns.detach_tree(path)
        self.ns.cache.note_removed(path)

    async def symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """A symlink as s3fs-fuse makes it: the body is the target, the mode has S_IFLNK.
        An empty target is ENOENT and one over ``limits.SYMLINK_MAX`` bytes ENAMETOOLONG, as
        on a local filesystem (readlink could not hand a longer one back)."""
        limits.check_symlink_target(target)
        async with self.ns.claim(self.ns.child_paths(parent_ino, name, creating=True)):
            return await self._symlink(parent_ino, name, target, uid, gid)

    async def _symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        path = await self.ns.new_name(parent_ino, name)
        attr = Attr(Kind.SYMLINK, 0o777 | stat.S_IFLNK, uid, gid, len(target), self.ns.now())
        key = self.ns.keys.file_key(path)
        # s3fs-fuse types a symlink by its name too (not the store's binary/octet-stream).
        result = await self.ns.store.put(key, target, metadata_of(attr), content_type_of(path))
        await self.ns.object_changed(key)
        attr = attr.with_changes(etag=result.etag)
        node = self.ns.inodes.node_for(path, Kind.SYMLINK)
        node.attr = attr
        node.link_target = (attr.etag, target)
        self.ns.inodes.ref(node)
        self.ns.cache.note_exists(path, attr)
        return node.ino, attr

    async def unlink(self, parent_ino: int, name: bytes) -> None:
        """Delete a file or symlink; open handles keep working on the buffer until closed."""
        async with self.ns.claim(self.ns.child_paths(parent_ino, name)):
            await self._unlink(parent_ino, name)

    async def _unlink(self, parent_ino: int, name: bytes) -> None:
        self.ns.check_writable()
        parent = self.ns.dir_node(parent_ino)
        path = self.ns.child_path(parent, name)
        attr = await self.ns.resolve(path)
        if attr is None:
            raise FsError(errno.ENOENT)
        if attr.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        node = self.ns.inodes.find(path)
        async with _locked(node):
            if node is not None:
                await self.files.keep_readable(node)
            if node is None or not (node.has_content and node.content.new):
                await self.ns.store.delete(self.ns.keys.file_key(path))
            if node is not None:
                self.ns.inodes.detach(node)  # (its content discarded: never uploaded)
        self.ns.cache.note_removed(path)

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
        self.ns.check_writable()
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")

        def paths() -> tuple[str, str]:
            old_dir, new_dir = self.ns.dir_node(parent_old), self.ns.dir_node(parent_new)
            return (
                self.ns.child_path(old_dir, name_old),
                self.ns.child_path(new_dir, name_new, creating=True),
            )

        while True:
            old, new = paths()
            if old == new:
                return
            src = await self.ns.resolve(old)  # a directory or not: which claim
            directory = src is not None and src.kind is Kind.DIR
            claim = self.ns.tree.exclusive if directory else self.ns.tree.shared
            async with claim((old, new)):
                if paths() != (old, new):
                    continue  # a rename moved them while we waited: again, from the new paths
                src = await self.ns.resolve(old)
                if (src is not None and src.kind is Kind.DIR) != directory:
                    continue  # replaced by the other kind meanwhile
                await self._rename(old, new, flags)
                return

    async def _rename(self, old: str, new: str, flags: int) -> None:
        """``rename`` once its claims are held."""
        src = await self.ns.resolve(old)
        if src is None:
            raise FsError(errno.ENOENT)
        if src.kind is Kind.DIR and is_under(new, old):
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        dst = await self.ns.resolve(new)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise FsError(errno.EEXIST)
            if src.kind is Kind.DIR and dst.kind is not Kind.DIR:
                raise FsError(errno.ENOTDIR)
            if src.kind is not Kind.DIR and dst.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            if dst.kind is Kind.DIR:
                await self.ns.ensure_empty(new)
        if src.kind is Kind.DIR:
            await self._rename_dir(old, new, src)
        else:
            await self._rename_file(old, new, src)

    async def _replace_target(self, new: str) -> None:
        """Whatever node sits at ``new`` is about to be replaced: keep it readable, detach."""
        target = self.ns.inodes.find(new)
        if target is None:
            return
        async with target.lock:
            await self.files.keep_readable(target)
            self.ns.inodes.detach(target)  # (its content discarded: never uploaded)

    async def _rename_file(self, old: str, new: str, attr: Attr) -> None:
        old_key, new_key = self.ns.keys.file_key(old), self.ns.keys.file_key(new)
        node = self.ns.inodes.find(old)
        async with _locked(node):
            await self._replace_target(new)
            if node is not None:
                await self.files.end_stream(node)  # its parts went to the old key
            if node is not None and node.dirty:
                # unsaved: it goes up to the new key through the engine (a failure keeps a
                # recovery copy under the old name, where the file stays)
                new_object = node.content.new
                result = await self.files.upload(node, new_key, new, kept_as=(old_key, old))
                if not new_object:
                    await self.ns.store.delete(old_key)
                attr = self.ns.local_attr(node).with_changes(etag=result.etag, complete=True)
                node.attr = attr
            else:
                result = await self.ns.store.copy(old_key, new_key)
                await self.ns.store.delete(old_key)
                if result.etag:
                    if node is not None:
                        self.pins.follow_copy(node, attr.etag, result.etag)
                    attr = attr.with_changes(etag=result.etag)
            self.ns.inodes.move(old, new)
            await self.ns.object_changed(new_key)
        self.ns.cache.note_removed(old)
        self.ns.cache.forget_tree(new)
        self.ns.cache.note_exists(new, attr)

    async def _rename_dir(self, old: str, new: str, attr: Attr) -> None:
        """Copy every key under ``old`` to ``new``, move the inodes, delete the old keys.

        Caller holds the exclusive claim on both: nothing under them changes meanwhile, so
        the keys listed at the start are all there are. Inodes move before the deletes, so
        reads of open files never find neither key. A key still under ``old`` at the end
        (another client wrote it) is EIO, logged."""
        old_prefix, new_prefix = self.ns.keys.dir_prefix(old), self.ns.keys.dir_prefix(new)
        local = sorted(self.ns.inodes.unsaved_under(old), key=lambda n: n.ino)
        async with contextlib.AsyncExitStack() as stack:
            for n in local:  # writes of a file inside (not claimed) finish first
                await stack.enter_async_context(n.lock)
                await self.files.end_stream(n)  # its parts went to the old key
            keys: list[str] = []
            etags: dict[str, tuple[str, str]] = {}  # new key → (ETag listed, ETag of the copy)
            async with contextlib.aclosing(self.ns.store.iter_pages(old_prefix)) as pages:
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
                async with self.ns.limiter:
                    result = await self.ns.store.copy(key, target)
                etags[target] = (etags[target][0], result.etag)
                await self.ns.object_changed(target)

            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(copy_one, key)
            old_forms = await self.ns.old_form_keys(old, attr)  # moved as the marker
            if not keys or (old_forms and old_prefix not in keys):
                # only local content (or none), or older forms: the new one needs a marker
                await self.ns.store.put(new_prefix, b"", metadata_of(attr), DIRECTORY_CONTENT_TYPE)
            self.ns.detach_tree(new)
            self.ns.inodes.move(old, new)
            for n in self.ns.inodes.all_nodes():  # open files inside read the copies now
                listed, copied = etags.get(self.ns.keys.file_key(n.path), ("", ""))
                if copied and is_under(n.path, new):
                    self.pins.follow_copy(n, listed, copied)
        self.ns.cache.note_removed(old)
        self.ns.cache.forget_tree(new)
        self.ns.cache.note_exists(new, attr)
        failed = await self.ns.store.delete_many(keys + old_forms)
        if failed:
            log.error("rename %r → %r: could not delete %d old keys", old, new, len(failed))
            raise FsError(errno.EIO, "old keys left behind")
        left = await self.ns.store.list_page(old_prefix, None, 10)
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
