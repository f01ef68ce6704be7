"""Object metadata ↔ file attributes, as s3fs-fuse stores them.

Invariants:
- ``Attr.mode`` always carries the file type bits, and they agree with ``Attr.kind``.
- Metadata written is exactly s3fs-fuse's: ``mode`` (decimal, WITH type bits), ``uid``,
  ``gid``, ``mtime`` (integer seconds), for a device ``rdev`` (its number, decimal: s3fs-fuse
  keeps none and shows 0); everything else a reader finds missing or malformed
  falls back to the mount's defaults (modes, owner) and LastModified (mtime; also for an
  mtime at or before the epoch, like s3fs's ``-1``).
- Times are integer nanoseconds since the epoch (pyfuse3's ``st_*_ns``).
- ``Attr.meta`` is the object's other user metadata (``user_meta``: all but s3fs-fuse's own
  names), kept with the attributes so that ``listxattr`` needs no request; None when unknown
  (a listing's attributes, a directory without an object, a node made here).
- s3fs's older directory forms are read: an object without a trailing slash is a directory
  when its ``mode`` says so or its Content-Type is ``application/x-directory`` (or
  ``httpd/unix-directory``), known only from a HEAD; ``name_$folder$`` is a directory
  ``name`` (``folder_name``). ``Attr.old_forms`` lists the keys of such objects making up a
  directory (its metadata comes from the marker ``name/`` first, then from them).
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import logging
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace

log = logging.getLogger("s3fmfs.fs")

NS = 1_000_000_000

META_MODE = "mode"
META_UID = "uid"
META_GID = "gid"
META_MTIME = "mtime"
#: A device's number, decimal (the ``dev_t`` FUSE hands over); s3fs-fuse 1.90 writes none.
META_RDEV = "rdev"
OUR_META = (META_MODE, META_UID, META_GID, META_MTIME, META_RDEV)
#: s3fs-fuse also writes ``atime`` and ``ctime``; we read neither, and drop ``ctime`` on write.
META_CTIME = "ctime"
#: Names s3fs-fuse gives its own metadata: never user metadata (extended attributes).
S3FS_META = (*OUR_META, META_CTIME, "atime", "rdev", "xattr")

DIRECTORY_CONTENT_TYPE = "application/x-directory"
#: Content types that make an object without a trailing slash a directory (s3fs reads both).
DIRECTORY_CONTENT_TYPES = (DIRECTORY_CONTENT_TYPE, "httpd/unix-directory")
#: ``name_$folder$``: a directory ``name`` as older tools (and s3fs) wrote it.
FOLDER_SUFFIX = "_$folder$"


def folder_name(name: str) -> str | None:
    """The directory a ``name_$folder$`` entry stands for, or None for any other name."""
    if name.endswith(FOLDER_SUFFIX) and len(name) > len(FOLDER_SUFFIX):
        return name[: -len(FOLDER_SUFFIX)]
    return None


def is_dir_object(metadata: Mapping[str, str] | None, content_type: str) -> bool:
    """Whether an object without a trailing slash is a directory (s3fs's older form): its
    ``mode`` has the directory type, or its Content-Type is a directory's."""
    mode = _int_meta(metadata or {}, META_MODE)
    if mode is not None and 0 <= mode < 1 << 32:
        return stat.S_ISDIR(mode)
    return content_type.split(";")[0].strip().lower() in DIRECTORY_CONTENT_TYPES


class Kind(enum.Enum):
    """What an entry is; decided by the key (``x/`` or a common prefix: DIR) and the mode."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    # special files (``special``): an empty object whose mode carries the type
    FIFO = "fifo"
    SOCKET = "socket"
    CHAR = "char"
    BLOCK = "block"

    @property
    def type_bits(self) -> int:
        return _TYPE_BITS[self]

    @property
    def device(self) -> bool:
        """A character or block device: it has a device number (``Attr.rdev``)."""
        return self in (Kind.CHAR, Kind.BLOCK)


_TYPE_BITS = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCKET: stat.S_IFSOCK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
}
#: File type bits → the kind of a non-directory object.
_KIND_OF_TYPE = {bits: kind for kind, bits in _TYPE_BITS.items() if kind is not Kind.DIR}


@dataclass(frozen=True)
class Defaults:
    """What objects without metadata get: the mount's owner and permission bits."""

    uid: int
    gid: int
    file_mode: int  # permission bits only
    dir_mode: int


@dataclass(frozen=True)
class Forced:
    """Owner and mode shown for every entry whatever its metadata (s3fs's ``uid=``, ``gid=``,
    ``umask=``, ``mp_umask=``, applied as libfuse applies them for s3fs: to what is *shown*,
    never to the metadata stored). None: not forced."""

    uid: int | None = None
    gid: int | None = None
    umask: int | None = None  # every entry's permission bits: 0777 & ~umask
    root_umask: int | None = None  # the mount point's (mp_umask), unless umask is given

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.uid, self.gid, self.umask, self.root_umask))

    def shown(self, attr: Attr, *, root: bool = False) -> tuple[int, int, int]:
        """(mode, uid, gid) to report for ``attr`` (``root``: the mount point)."""
        mode = attr.mode
        umask = self.umask if self.umask is not None else (self.root_umask if root else None)
        if umask is not None:
            mode = stat.S_IFMT(attr.mode) | (0o777 & ~umask)
        return (
            mode,
            attr.uid if self.uid is None else self.uid,
            attr.gid if self.gid is None else self.gid,
        )


@dataclass(frozen=True)
class Attr:
    """Attributes of one entry, without its inode number (that belongs to the inode table).

    ``complete`` is False when the attributes come from a listing alone (no HEAD yet, so mode,
    owner and mtime may still be defaults standing in for real metadata).
    """

    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    etag: str = ""
    complete: bool = True
    old_forms: tuple[str, ...] = ()  # a directory's objects in s3fs's older forms (keys)
    meta: tuple[tuple[str, str], ...] | None = None  # other user metadata (``user_meta``)
    rdev: int = 0  # a device's number (``Kind.device``); 0 for everything else

    def with_changes(self, **changes: object) -> Attr:
        """A copy with some fields changed (type bits of a new mode follow ``kind``)."""
        new = replace(self, **changes)  # type: ignore[arg-type]
        if "mode" in changes:
            new = replace(new, mode=stat.S_IMODE(new.mode) | new.kind.type_bits)
        return new


def parse_s3_time(text: str | datetime.datetime | None) -> int:
    """LastModified → ns; 0 if absent or unreadable. The client gives a datetime (None when
    absent); text is ISO 8601 (listings) or an HTTP date (HEAD)."""
    if text is None:
        return 0
    if isinstance(text, datetime.datetime):
        when = text
    else:
        text = text.strip()
        if not text:
            return 0
        try:
            if text[0].isdigit():
                when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp()) * NS + when.microsecond * 1000


def _int_meta(metadata: Mapping[str, str], name: str) -> int | None:
    value = metadata.get(name)
    if value is None:
        return None
    try:
        return int(value.strip(), 10)
    except ValueError:
        return None


def _mtime_meta(metadata: Mapping[str, str]) -> int | None:
    """``x-amz-meta-mtime``: integer seconds (s3fs), tolerating a decimal fraction. None (the
    object's LastModified) for a time at or before the epoch, as s3fs-fuse reads it: s3fs
    writes ``-1`` for the unknown mtime of a directory it only inferred from a prefix."""
    value = metadata.get(META_MTIME)
    if value is None:
        return None
    seconds, _, fraction = value.strip().partition(".")
    try:
        whole = int(seconds, 10)
        nanos = int((fraction + "000000000")[:9], 10) if fraction else 0
    except ValueError:
        return None
    if whole < 0 or whole * NS + nanos <= 0:
        return None
    return whole * NS + nanos


def user_meta(metadata: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The user metadata an object keeps besides s3fs-fuse's own (``mode``, ``uid``, ``gid``,
    ``mtime``, ``ctime``), sorted: what ``Attr.meta`` holds (s3fs's ``xattr`` map included)."""
    return tuple(sorted((k, v) for k, v in metadata.items() if k not in (*OUR_META, META_CTIME)))


def kind_from_mode(mode: int | None, default: Kind) -> Kind:
    """A non-directory object is a symlink, FIFO, socket or device when its mode says so
    (any other type, a directory's included, is a file); keys decide directories."""
    if default is Kind.DIR or mode is None:
        return default
    return _KIND_OF_TYPE.get(stat.S_IFMT(mode), Kind.FILE)


def attr_from_object(
    *,
    is_dir: bool,
    size: int,
    last_modified_ns: int,
    etag: str,
    metadata: Mapping[str, str] | None,
    defaults: Defaults,
    content_type: str = "",
    key: str = "",
) -> Attr:
    """Attributes of an object (``metadata`` None: not known yet, from a listing). An object
    ``key`` without a trailing slash that is a directory (``is_dir_object``; known from a
    HEAD) gives a directory, with ``key`` in its ``old_forms``."""
    meta = metadata or {}
    raw_mode = _int_meta(meta, META_MODE)
    old_forms: tuple[str, ...] = ()
    if not is_dir and metadata is not None and is_dir_object(metadata, content_type):
        is_dir = True
        old_forms = (key,) if key else ()
    kind = kind_from_mode(raw_mode, Kind.DIR if is_dir else Kind.FILE)
    if raw_mode is not None and 0 <= raw_mode < 1 << 32:
        perms = stat.S_IMODE(raw_mode)
    else:
        perms = defaults.dir_mode if kind is Kind.DIR else defaults.file_mode
    uid = _int_meta(meta, META_UID)
    gid = _int_meta(meta, META_GID)
    mtime = _mtime_meta(meta)
    rdev = _int_meta(meta, META_RDEV) if kind.device else None
    return Attr(
        kind=kind,
        mode=perms | kind.type_bits,
        uid=uid if uid is not None and uid >= 0 else defaults.uid,
        gid=gid if gid is not None and gid >= 0 else defaults.gid,
        size=0 if kind is Kind.DIR else size,
        mtime_ns=mtime if mtime is not None else last_modified_ns,
        etag=etag,
        complete=metadata is not None,
        old_forms=old_forms,
        meta=None if metadata is None else user_meta(metadata),
        rdev=rdev if rdev is not None and 0 <= rdev < 1 << 32 else 0,
    )


def implicit_dir(defaults: Defaults, mtime_ns: int) -> Attr:
    """A directory that exists only because keys are under it (no marker, no metadata)."""
    return Attr(
        kind=Kind.DIR,
        mode=defaults.dir_mode | stat.S_IFDIR,
        uid=defaults.uid,
        gid=defaults.gid,
        size=0,
        mtime_ns=mtime_ns,
        complete=True,
    )


def metadata_of(attr: Attr, keep: Mapping[str, str] | None = None) -> dict[str, str]:
    """s3fs-fuse's metadata for ``attr``, over any other user metadata in ``keep``.

    s3fs's ``ctime`` is dropped: whatever writes metadata changes the file's status, and
    s3fs-fuse reads a missing ctime as LastModified, the time of this very write (a kept one
    would show a change time older than the change)."""
    meta = {k: v for k, v in (keep or {}).items() if k != META_CTIME}
    meta[META_MODE] = str(attr.mode)
    meta[META_UID] = str(attr.uid)
    meta[META_GID] = str(attr.gid)
    meta[META_MTIME] = str(attr.mtime_ns // NS)
    meta.pop(META_RDEV, None)
    if attr.kind.device:
        meta[META_RDEV] = str(attr.rdev)
    return meta


def truncate_to_seconds(ns: int) -> int:
    """What an mtime will read back as after a remount (metadata holds whole seconds)."""
    return ns - ns % NS
