"""Every bucket of an account in one mount: ``BucketsCore``, a root over one ``FsCore`` per
bucket (``s3fmfs s3:// MNT``).

The top-level directory lists the account's buckets; each is a folder that behaves as if
mounted alone (its own ``FsCore`` and store: prefix rules, caches, metadata cache, upload
journal, recovery copies), made on its first lookup by the ``BucketOpener`` the service gives
(which shares the one connection). ``BucketsCore`` has the methods of ``FsCore`` the adapter
calls, so ``adapter.S3fmOperations`` serves it unchanged; the single-bucket mount does not go
through it (no translation there).

Invariants:
- Inode numbers and file handles of the kernel ("outer") are ``slot << SLOT_BITS | inner``: a
  bucket's slot is given once and never again (a bucket deleted and created anew gets a new
  one), and each core's inner numbers never repeat (``inodes``), so an outer number is never
  reused during the mount's life. Slot 0 is the top level: inode ``ROOT_INODE`` and its
  directory handles.
- The list of buckets is cached ``dir_ttl`` seconds, like a directory listing; a lookup or a
  readdir after that lists the buckets again (one request at a time).
- The top level holds buckets only. ``mkdir`` and ``rmdir`` there create and delete buckets
  when ``allow_mkdir`` (option ``bucket_mkdir``), else EACCES (the top level shows mode 0555,
  so the kernel already refuses other users so). A bucket is deleted only when empty
  (``BucketNotEmpty``, or files not yet uploaded: ENOTEMPTY); creating one that exists is
  EEXIST; a name S3 refuses is EINVAL (its rules checked first:
  ``valid_bucket_name``). Files, symlinks, renames and setattr at the top level:
  EPERM. A rename from one bucket to another: EXDEV (``mv`` copies then deletes).
- A bucket that answers with a redirect (another region of AWS): EIO, and one warning naming
  the bucket and its region, once per bucket.
"""

from __future__ import annotations

import errno
import logging
import re
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..client import errors as s3
from .attrs import Attr, Kind, implicit_dir
from .core import FileProgress, FsCore, StatFs, UploadProgress
from .errno_map import FsError, cause
from .inodes import ROOT_INODE
from .listing import Emit
from .settings import FsSettings

log = logging.getLogger("s3fmfs.fs")

#: Bits of an outer inode number (or file handle) that hold the inner one.
SLOT_BITS = 40
INNER_MASK = (1 << SLOT_BITS) - 1
TOP = 0  # the slot of the top level


def outer(slot: int, inner: int) -> int:
    """The kernel's number for ``inner`` of the bucket in ``slot``."""
    if inner > INNER_MASK:  # 10^12 inodes of one bucket: never in practice
        raise FsError(errno.EOVERFLOW, "inode number space of a bucket exhausted")
    return (slot << SLOT_BITS) | inner


def split(number: int) -> tuple[int, int]:
    """(slot, inner) of an outer inode number or file handle."""
    return number >> SLOT_BITS, number & INNER_MASK


#: S3's rules for a new bucket's name: 3 to 63 lower-case letters, digits, dots and hyphens,
#: a letter or digit at each end, no two dots in a row, not an IPv4 address.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def valid_bucket_name(name: str) -> bool:
    """Whether S3 (AWS) accepts ``name`` for a new bucket: checked before the request, since
    some servers (moto) create any name."""
    return bool(_BUCKET_NAME.match(name)) and ".." not in name and not _IPV4.match(name)


@dataclass(frozen=True)
class BucketEntry:
    """One bucket of the account's list."""

    name: str
    created_ns: int = 0


class Account(Protocol):
    """What the top level needs of the account (``s3store.S3Account`` over the client)."""

    async def list_buckets(self) -> list[BucketEntry]: ...

    async def create_bucket(self, name: str) -> None: ...

    async def delete_bucket(self, name: str) -> None: ...


#: Opens a bucket: its core, over the shared connection (the service's; tests': a MemStore's).
BucketOpener = Callable[[str], Awaitable[FsCore]]


@dataclass(eq=False)
class Bucket:
    """A bucket seen in the list, in its slot; its core once opened."""

    name: str
    slot: int
    created_ns: int
    core: FsCore | None = None
    gone: bool = False  # deleted (here, or found missing from the list)
    opening: trio.Lock = field(default_factory=trio.Lock)
    redirect_logged: bool = False


@dataclass
class TopDir:
    """An open handle of the top level: its snapshot, taken by the first readdir."""

    snapshot: list[tuple[str, int, Attr]] | None = None


class BucketsCore:
    """The account as a tree: buckets at the top, each served by its own ``FsCore``."""

    def __init__(
        self,
        account: Account,
        open_bucket: BucketOpener,
        settings: FsSettings | None = None,
        *,
        allow_mkdir: bool = False,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.account = account
        self.open_bucket = open_bucket
        self.settings = settings or FsSettings()
        self.allow_mkdir = allow_mkdir and not self.settings.ro
        self.timer = timer
        self.clock = clock
        bits = 0o755 if self.allow_mkdir else 0o555
        self.root_attr = Attr(
            Kind.DIR,
            stat.S_IFDIR | bits,
            self.settings.uid,
            self.settings.gid,
            0,
            clock(),
        )
        self.by_name: dict[str, Bucket] = {}
        self.by_slot: dict[int, Bucket] = {}
        self._next_slot = 1
        self._listed_at: float | None = None
        self._listing = trio.Lock()
        self._top_dirs: dict[int, TopDir] = {}
        self._next_fh = 1
        self._forget_kernel_attrs: Callable[[int], None] | None = None
        #: where the cores' background work runs (``run_background``); None: none
        self.nursery: trio.Nursery | None = None

    # -- the list of buckets ---------------------------------------------------------------------

    def _add(self, name: str, created_ns: int) -> Bucket:
        bucket = Bucket(name, self._next_slot, created_ns)
        self._next_slot += 1
        self.by_name[name] = bucket
        self.by_slot[bucket.slot] = bucket
        return bucket

    def _drop(self, bucket: Bucket) -> None:
        bucket.gone = True
        if self.by_name.get(bucket.name) is bucket:
            del self.by_name[bucket.name]

    async def buckets(self) -> dict[str, Bucket]:
        """The account's buckets by name, listed again once ``dir_ttl`` has passed."""
        async with self._listing:
            now = self.timer()
            if self._listed_at is not None and now - self._listed_at < self.settings.dir_ttl:
                return self.by_name
            listed = await self.account.list_buckets()
            names = {entry.name for entry in listed}
            for bucket in list(self.by_name.values()):
                if bucket.name not in names:
                    self._drop(bucket)
            for entry in listed:
                if entry.name not in self.by_name:
                    self._add(entry.name, entry.created_ns)
            self._listed_at = self.timer()
            return self.by_name

    def invalidate(self) -> None:
        """The next lookup or readdir lists the buckets again."""
        self._listed_at = None

    async def _bucket_named(self, name: bytes) -> Bucket:
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise FsError(errno.ENOENT) from None
        bucket = (await self.buckets()).get(text)
        if bucket is None:
            raise FsError(errno.ENOENT)
        return bucket

    async def _core(self, bucket: Bucket) -> FsCore:
        """The bucket's core, opened on first use (once, however many ask at once)."""
        if bucket.core is not None:
            return bucket.core
        async with bucket.opening:
            if bucket.core is None:
                core = await self.open_bucket(bucket.name)
                slot = bucket.slot
                forget = self._forget_kernel_attrs
                if forget is not None:
                    core.forget_kernel_attrs = lambda ino: forget(outer(slot, ino))
                if self.nursery is not None:
                    await self.nursery.start(core.run_background)
                bucket.core = core
                log.debug("bucket %r opened (slot %d)", bucket.name, slot)
        return bucket.core

    def _slot(self, number: int) -> tuple[Bucket, int]:
        """The bucket of an outer inode number or handle (not the top level), and the inner."""
        slot, inner = split(number)
        bucket = self.by_slot.get(slot)
        if bucket is None:
            raise FsError(errno.ENOENT)
        return bucket, inner

    async def _inner(self, ino: int) -> tuple[Bucket, FsCore, int]:
        bucket, inner = self._slot(ino)
        return bucket, await self._core(bucket), inner

    def _opened(self, fh: int) -> tuple[Bucket, FsCore, int]:
        """A file handle's bucket and core (open: its core exists), and the inner handle."""
        bucket, inner = self._slot(fh)
        if bucket.core is None:
            raise FsError(errno.EBADF)
        return bucket, bucket.core, inner

    @contextmanager
    def _about(self, bucket: Bucket) -> Iterator[None]:
        """A bucket in another region answers with a redirect: say so once, as EIO."""
        try:
            yield
        except Exception as exc:
            first = cause(exc)
            if not isinstance(first, s3.S3Redirect):
                raise
            if not bucket.redirect_logged:
                bucket.redirect_logged = True
                region = first.region or "another region"
                log.warning(
                    "bucket %r is in %s, not at this endpoint: its folder gives EIO "
                    "(mount it alone with endpoint=/region= of its region)",
                    bucket.name,
                    region,
                )
            raise FsError(errno.EIO, f"bucket {bucket.name!r} is in another region") from None

    def _top_only(self, ino: int) -> bool:
        return ino == ROOT_INODE

    def _check_top_change(self) -> None:
        if self.settings.ro:
            raise FsError(errno.EROFS)
        if not self.allow_mkdir:
            raise FsError(errno.EACCES, "buckets are created and deleted with -o bucket_mkdir")

    def _bucket_attr(self, bucket: Bucket) -> Attr:
        """A bucket's attributes as the top level lists them (its core's once opened)."""
        if bucket.core is not None:
            return bucket.core.root_attr
        return implicit_dir(self.settings.defaults, bucket.created_ns or self.root_attr.mtime_ns)

    # -- namespace -------------------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        if self._top_only(parent_ino):
            if name in (b".", b".."):
                return ROOT_INODE, self.root_attr
            bucket = await self._bucket_named(name)
            with self._about(bucket):
                core = await self._core(bucket)
                return outer(bucket.slot, ROOT_INODE), await core.getattr(ROOT_INODE)
        bucket, core, inner = await self._inner(parent_ino)
        if inner == ROOT_INODE and name == b"..":
            return ROOT_INODE, self.root_attr
        with self._about(bucket):
            ino, attr = await core.lookup(inner, name)
        return outer(bucket.slot, ino), attr

    def forget(self, pairs: Iterable[tuple[int, int]]) -> None:
        """The kernel dropped references; never raises."""
        by_slot: dict[int, list[tuple[int, int]]] = {}
        for ino, count in pairs:
            slot, inner = split(ino)
            if inner != ROOT_INODE:  # a bucket's root is never dropped: it counts no lookups
                by_slot.setdefault(slot, []).append((inner, count))
        for slot, inner_pairs in by_slot.items():
            bucket = self.by_slot.get(slot)
            if bucket is not None and bucket.core is not None:
                bucket.core.forget(inner_pairs)

    async def getattr(self, ino: int) -> Attr:
        if self._top_only(ino):
            return self.root_attr
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return await core.getattr(inner)

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
        if self._top_only(ino):
            raise FsError(errno.EPERM, "the top level lists the buckets")
        bucket, core, inner = await self._inner(ino)
        inner_fh = split(fh)[1] if fh is not None else None
        with self._about(bucket):
            return await core.setattr(
                inner, size=size, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, fh=inner_fh
            )

    async def readlink(self, ino: int) -> bytes:
        if self._top_only(ino):
            raise FsError(errno.EINVAL)
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return await core.readlink(inner)

    # -- directories -----------------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        if self._top_only(ino):
            fh = self._next_fh
            self._next_fh += 1
            self._top_dirs[fh] = TopDir()
            return outer(TOP, fh)
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return outer(bucket.slot, await core.opendir(inner))

    async def _top_snapshot(self) -> list[tuple[str, int, Attr]]:
        buckets = await self.buckets()
        entries = [(".", ROOT_INODE, self.root_attr), ("..", ROOT_INODE, self.root_attr)]
        for name in sorted(buckets):
            bucket = buckets[name]
            entries.append((name, outer(bucket.slot, ROOT_INODE), self._bucket_attr(bucket)))
        return entries

    async def readdir(self, fh: int, start_id: int, emit: Emit) -> None:
        slot, inner = split(fh)
        if slot == TOP:
            top = self._top_dirs.get(inner)
            if top is None:
                raise FsError(errno.EBADF)
            if start_id == 0 or top.snapshot is None:
                top.snapshot = await self._top_snapshot()
            for index in range(start_id, len(top.snapshot)):
                name, ino, attr = top.snapshot[index]
                if not emit(name.encode(), ino, attr, index + 1):
                    return
            return
        bucket, core, inner_fh = self._opened(fh)
        at_root = core.open_files.dir(inner_fh).ino == ROOT_INODE

        def translated(name: bytes, ino: int, attr: Attr, next_id: int) -> bool:
            if at_root and name == b"..":  # the bucket's parent: the top level
                return emit(name, ROOT_INODE, self.root_attr, next_id)
            return emit(name, outer(bucket.slot, ino), attr, next_id)

        with self._about(bucket):
            await core.readdir(inner_fh, start_id, translated)

    async def releasedir(self, fh: int) -> None:
        slot, inner = split(fh)
        if slot == TOP:
            self._top_dirs.pop(inner, None)
            return
        _, core, inner_fh = self._opened(fh)
        await core.releasedir(inner_fh)

    async def mkdir(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        if self._top_only(parent_ino):
            return await self._create_bucket(name)
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            ino, attr = await core.mkdir(inner, name, mode, uid, gid)
        return outer(bucket.slot, ino), attr

    async def _create_bucket(self, name: bytes) -> tuple[int, Attr]:
        self._check_top_change()
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise FsError(errno.EINVAL, "a bucket name is ASCII") from None
        if not valid_bucket_name(text):
            raise FsError(errno.EINVAL, f"{text!r} is not a bucket name S3 accepts")
        self.invalidate()  # asked anew: us-east-1 answers 200 to creating a bucket you own
        if text in await self.buckets():
            raise FsError(errno.EEXIST)
        await self.account.create_bucket(text)  # EEXIST, EINVAL: errno_map
        log.info("created bucket %r", text)
        self.invalidate()
        bucket = self.by_name.get(text)
        if bucket is None or bucket.gone:
            bucket = self._add(text, self.clock())
        core = await self._core(bucket)
        return outer(bucket.slot, ROOT_INODE), await core.getattr(ROOT_INODE)

    async def rmdir(self, parent_ino: int, name: bytes) -> None:
        if self._top_only(parent_ino):
            await self._delete_bucket(name)
            return
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            await core.rmdir(inner, name)

    async def _delete_bucket(self, name: bytes) -> None:
        self._check_top_change()
        bucket = await self._bucket_named(name)
        if bucket.core is not None and bucket.core.unsaved():
            raise FsError(errno.ENOTEMPTY, "files not uploaded yet")
        await self.account.delete_bucket(bucket.name)  # BucketNotEmpty: ENOTEMPTY
        log.info("deleted bucket %r", bucket.name)
        self._drop(bucket)
        self.invalidate()

    async def symlink(
        self, parent_ino: int, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[int, Attr]:
        if self._top_only(parent_ino):
            raise FsError(errno.EPERM, "the top level holds buckets only")
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            ino, attr = await core.symlink(inner, name, target, uid, gid)
        return outer(bucket.slot, ino), attr

    async def link(self, ino: int, parent_ino: int, name: bytes) -> tuple[int, Attr]:
        """Hard links cannot exist in a bucket."""
        raise FsError(errno.EPERM)

    async def unlink(self, parent_ino: int, name: bytes) -> None:
        if self._top_only(parent_ino):
            raise FsError(errno.EPERM, "the top level holds buckets only")
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            await core.unlink(inner, name)

    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int = 0,
    ) -> None:
        if self._top_only(parent_old) or self._top_only(parent_new):
            raise FsError(errno.EPERM, "buckets cannot be renamed")
        bucket, core, old = await self._inner(parent_old)
        other, new = self._slot(parent_new)
        if other is not bucket:
            raise FsError(errno.EXDEV, "a rename from one bucket to another")
        with self._about(bucket):
            await core.rename(old, name_old, new, name_new, flags)

    async def mknod(
        self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int, rdev: int = 0
    ) -> tuple[int, Attr]:
        if self._top_only(parent_ino):
            raise FsError(errno.EPERM, "the top level holds buckets only")
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            ino, attr = await core.mknod(inner, name, mode, uid, gid, rdev)
        return outer(bucket.slot, ino), attr

    # -- extended attributes: a bucket's own; the top level and the mount point have none -------

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        if self._top_only(ino):
            raise FsError(errno.ENODATA)
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return await core.getxattr(inner, name)

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        if self._top_only(ino):
            raise FsError(errno.ENOTSUP, "the top level keeps no extended attributes")
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            await core.setxattr(inner, name, value)

    async def listxattr(self, ino: int) -> list[bytes]:
        if self._top_only(ino):
            return []
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return await core.listxattr(inner)

    async def removexattr(self, ino: int, name: bytes) -> None:
        if self._top_only(ino):
            raise FsError(errno.ENOTSUP, "the top level keeps no extended attributes")
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            await core.removexattr(inner, name)

    # -- files -----------------------------------------------------------------------------------

    def keep_cache(self, fh: int) -> bool:
        _, core, inner = self._opened(fh)
        return core.keep_cache(inner)

    async def open(self, ino: int, flags: int) -> int:
        if self._top_only(ino):
            raise FsError(errno.EISDIR)
        bucket, core, inner = await self._inner(ino)
        with self._about(bucket):
            return outer(bucket.slot, await core.open(inner, flags))

    async def create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, int, Attr]:
        if self._top_only(parent_ino):
            raise FsError(errno.EPERM, "the top level holds buckets only")
        bucket, core, inner = await self._inner(parent_ino)
        with self._about(bucket):
            fh, ino, attr = await core.create(inner, name, mode, flags, uid, gid)
        return outer(bucket.slot, fh), outer(bucket.slot, ino), attr

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        bucket, core, inner = self._opened(fh)
        with self._about(bucket):
            return await core.read(inner, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        _, core, inner = self._opened(fh)
        return await core.write(inner, offset, data)

    async def flush(self, fh: int) -> None:
        bucket, core, inner = self._opened(fh)
        with self._about(bucket):
            await core.flush(inner)

    async def fsync(self, fh: int, datasync: bool) -> None:
        bucket, core, inner = self._opened(fh)
        with self._about(bucket):
            await core.fsync(inner, datasync)

    async def release(self, fh: int) -> None:
        _, core, inner = self._opened(fh)
        await core.release(inner)

    # -- the mount -------------------------------------------------------------------------------

    @property
    def forget_kernel_attrs(self) -> Callable[[int], None] | None:
        return self._forget_kernel_attrs

    @forget_kernel_attrs.setter
    def forget_kernel_attrs(self, forget: Callable[[int], None] | None) -> None:
        """The adapter's, given each core with its inode numbers made outer."""
        self._forget_kernel_attrs = forget
        for bucket in self.by_slot.values():
            if bucket.core is not None:
                slot = bucket.slot
                bucket.core.forget_kernel_attrs = (
                    None if forget is None else (lambda ino, s=slot: forget(outer(s, ino)))
                )

    def statfs(self) -> StatFs:
        return StatFs()

    def timeouts(self, attr: Attr | None = None) -> tuple[float, float]:
        """As ``FsCore.timeouts`` (the same settings for every bucket)."""
        if attr is not None and not attr.complete:
            return (self.settings.dir_ttl if attr.kind is Kind.DIR else 0.0), 0.0
        return self.settings.dir_ttl, self.settings.stat_ttl

    def cores(self) -> list[tuple[str, FsCore]]:
        """(bucket name, core) of every bucket opened so far, deleted ones too."""
        return [(b.name, b.core) for b in self.by_slot.values() if b.core is not None]

    def upload_progress(self) -> UploadProgress:
        """Every bucket's files with data to upload, paths as ``bucket/path``."""
        files: list[FileProgress] = []
        for name, core in self.cores():
            for f in core.upload_progress().files:
                files.append(FileProgress(f"{name}/{f.path}", f.size, f.sent))
        return UploadProgress(tuple(files))

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """The caches' hits and misses, summed over the buckets."""
        total: dict[str, dict[str, int]] = {}
        for _, core in self.cores():
            for cache, counts in core.cache_stats().items():
                into = total.setdefault(cache, {})
                for key, value in counts.items():
                    into[key] = into.get(key, 0) + value
        return total

    async def destroy(self) -> None:
        """Close every bucket's buffers (after their uploads)."""
        for _, core in self.cores():
            await core.destroy()

    async def run_background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every bucket's background work (those opened later too) until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for _, core in self.cores():
                    await nursery.start(core.run_background)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.nursery = None
