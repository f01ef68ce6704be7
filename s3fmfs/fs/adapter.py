"""The thin ``pyfuse3.Operations`` adapter: pyfuse3 types in, core calls, pyfuse3 types out.

Invariants:
- This is the only place that raises ``pyfuse3.FUSEError``; every handler turns any
  ``Exception`` into one through ``errno_map.to_errno`` (``BaseException``s such as
  ``trio.Cancelled`` propagate untouched). ``forget`` never raises.
- Kernel caching follows the mount's TTLs: ``entry_timeout`` = ``dir_ttl``, ``attr_timeout``
  = ``stat_ttl``; a missing name is answered as a negative entry cached ``neg_ttl``. An
  entry readdir reports with a listing's attributes alone (not complete) gets timeouts of 0
  (``FsCore.timeouts``; a directory keeps its entry timeout): the kernel asks lookup or
  getattr before using it, and a listed object may turn out a symlink.
- No logic lives here: anything worth testing is in ``core``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator, Sequence

import pyfuse3

from .attrs import Attr, Kind
from .buckets import BucketsCore
from .core import RENAME_EXCHANGE, RENAME_NOREPLACE, FsCore
from .errno_map import FsError, cause, to_errno

log = logging.getLogger("s3fmfs.fs")


@contextlib.contextmanager
def _fuse_errors(operation: str) -> Iterator[None]:
    """Translate whatever the core raised into ``FUSEError``."""
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except Exception as exc:
        code = to_errno(exc)
        first = cause(exc)  # a nursery's failure: say what failed
        # the filesystem's own answers (ENOENT, ENOTEMPTY, EPERM...) are routine
        level = logging.DEBUG if isinstance(first, FsError) else logging.WARNING
        log.log(level, "%s: %s → %s", operation, first, errno.errorcode.get(code, code))
        raise pyfuse3.FUSEError(code) from None


def _forget_kernel_attrs(ino: int) -> None:
    """The kernel's cached attributes of ``ino`` are wrong (an open file's object changed):
    it asks again at the next stat or read. Attributes only: no page lock is taken, and without
    the writeback cache this never blocks, so it is safe from a request handler."""
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError as exc:  # not supported, or the inode already forgotten
        log.debug("could not invalidate the attributes of inode %d: %s", ino, exc)


def _rename_flags(flags: int) -> int:
    """pyfuse3's rename flags as the core's (an unknown bit stays set: the core refuses it)."""
    known = pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE
    result = flags & ~known
    if flags & pyfuse3.RENAME_NOREPLACE:
        result |= RENAME_NOREPLACE
    if flags & pyfuse3.RENAME_EXCHANGE:
        result |= RENAME_EXCHANGE
    return result


class S3fmOperations(pyfuse3.Operations):
    """FUSE requests → ``FsCore``."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, core: FsCore | BucketsCore) -> None:
        super().__init__()
        self.core = core  # BucketsCore: every bucket of the account (fs/buckets.py)
        core.forget_kernel_attrs = _forget_kernel_attrs
        self.entry_timeout, self.attr_timeout = core.timeouts()
        self.neg_timeout = core.settings.neg_ttl
        self.forced = core.settings.forced  # s3fs's uid=, gid=, umask=: what is shown

    def _entry(self, ino: int, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.generation = 0
        if attr.complete:
            entry.entry_timeout = self.entry_timeout
            entry.attr_timeout = self.attr_timeout
        else:  # a listing's attributes: the kernel asks again before using them
            entry.entry_timeout, entry.attr_timeout = self.core.timeouts(attr)
        entry.st_mode, entry.st_uid, entry.st_gid = self.forced.shown(
            attr, root=ino == pyfuse3.ROOT_INODE
        )
        entry.st_nlink = 2 if attr.kind is Kind.DIR else 1
        entry.st_rdev = attr.rdev
        entry.st_size = attr.size
        entry.st_blksize = 4096
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = attr.mtime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.mtime_ns
        return entry

    # -- names and attributes ------------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            ino, attr = await self.core.lookup(parent_inode, name)
        except Exception as exc:
            code = to_errno(exc)
            if code == errno.ENOENT and self.neg_timeout > 0:
                negative = pyfuse3.EntryAttributes()
                negative.st_ino = 0
                negative.entry_timeout = self.neg_timeout
                return negative
            first = cause(exc)  # a nursery's failure: say what failed
            level = logging.DEBUG if isinstance(first, FsError) else logging.WARNING
            log.log(level, "lookup %r: %s → %s", name, first, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        return self._entry(ino, attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.core.forget(inode_list)
        except Exception:
            log.exception("forget failed")

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        with _fuse_errors("getattr"):
            return self._entry(inode, await self.core.getattr(inode))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        with _fuse_errors("setattr"):
            new = await self.core.setattr(
                inode,
                size=attr.st_size if fields.update_size else None,
                mode=attr.st_mode if fields.update_mode else None,
                uid=attr.st_uid if fields.update_uid else None,
                gid=attr.st_gid if fields.update_gid else None,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                fh=fh,
            )
            return self._entry(inode, new)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        with _fuse_errors("readlink"):
            return await self.core.readlink(inode)

    # -- directories ---------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        with _fuse_errors("opendir"):
            return await self.core.opendir(inode)

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def emit(name: bytes, ino: int, attr: Attr, next_id: int) -> bool:
            return bool(pyfuse3.readdir_reply(token, name, self._entry(ino, attr), next_id))

        with _fuse_errors("readdir"):
            await self.core.readdir(fh, start_id, emit)

    async def releasedir(self, fh: int) -> None:
        with _fuse_errors("releasedir"):
            await self.core.releasedir(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None  # directories have nothing unsaved

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with _fuse_errors("mkdir"):
            ino, attr = await self.core.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid)
            return self._entry(ino, attr)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with _fuse_errors("rmdir"):
            await self.core.rmdir(parent_inode, name)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with _fuse_errors("unlink"):
            await self.core.unlink(parent_inode, name)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        with _fuse_errors("rename"):
            await self.core.rename(
                parent_inode_old, name_old, parent_inode_new, name_new, _rename_flags(flags)
            )

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with _fuse_errors("symlink"):
            ino, attr = await self.core.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
            return self._entry(ino, attr)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with _fuse_errors("link"):
            ino, attr = await self.core.link(inode, new_parent_inode, new_name)
            return self._entry(ino, attr)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with _fuse_errors("mknod"):
            ino, attr = await self.core.mknod(parent_inode, name, mode, ctx.uid, ctx.gid, rdev)
            return self._entry(ino, attr)

    # -- files ---------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        with _fuse_errors("open"):
            fh = await self.core.open(inode, flags)
            return pyfuse3.FileInfo(fh=fh, keep_cache=self.core.keep_cache(fh))

    async def create(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        with _fuse_errors("create"):
            fh, ino, attr = await self.core.create(
                parent_inode, name, mode, flags, ctx.uid, ctx.gid
            )
            return pyfuse3.FileInfo(fh=fh), self._entry(ino, attr)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with _fuse_errors("read"):
            return await self.core.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _fuse_errors("write"):
            return await self.core.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        with _fuse_errors("flush"):
            await self.core.flush(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _fuse_errors("fsync"):
            await self.core.fsync(fh, datasync)

    async def release(self, fh: int) -> None:
        with _fuse_errors("release"):
            await self.core.release(fh)

    # -- extended attributes (``xattrs``; pyfuse3 does ERANGE, XATTR_CREATE and XATTR_REPLACE)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        with _fuse_errors("getxattr"):
            return await self.core.getxattr(inode, name)

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        with _fuse_errors("setxattr"):
            await self.core.setxattr(inode, name, value)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        with _fuse_errors("listxattr"):
            return await self.core.listxattr(inode)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with _fuse_errors("removexattr"):
            await self.core.removexattr(inode, name)

    # -- the filesystem ------------------------------------------------------------------------

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        with _fuse_errors("statfs"):
            stats = self.core.statfs()
            data = pyfuse3.StatvfsData()
            data.f_bsize = stats.block_size
            data.f_frsize = stats.block_size
            data.f_blocks = stats.blocks
            data.f_bfree = stats.blocks_free
            data.f_bavail = stats.blocks_free
            data.f_files = stats.files
            data.f_ffree = stats.files_free
            data.f_favail = stats.files_free
            data.f_namemax = stats.name_max
            return data
