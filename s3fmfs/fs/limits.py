"""S3's limits, as the errno a filesystem call gets when it would cross them.

Invariants:
- A name component is at most ``NAME_MAX`` (255) bytes: ENAMETOOLONG. (The kernel itself
  refuses components over 1,024 bytes before asking us.)
- A name that is not valid UTF-8 cannot be a key: EINVAL, and a warning naming it (escaped).
- A key (mount prefix included; a directory's marker key with its trailing ``/``) is at most
  ``KEY_MAX`` (1,024) bytes of UTF-8, S3's limit: ENAMETOOLONG, for lookups as well as
  creations, since such a key can neither exist nor be made.
- An object is at most ``MAX_OBJECT_SIZE`` (5 TiB): a write that starts at or beyond it, or a
  truncate past it, is EFBIG; a write that crosses it is cut short there (POSIX: as many
  bytes as fit).
- A symlink target is 1 to ``SYMLINK_MAX`` (4,095) bytes, PATH_MAX less its NUL, the most
  the kernel's readlink over FUSE can take back: longer is ENAMETOOLONG, empty ENOENT (as
  Linux answers ``symlink("", ...)``). A longer target made by another client reads as
  ENAMETOOLONG, never as a reply the kernel refuses.
- Every check is pure and cheap: no I/O, callable before any request is made.
"""

from __future__ import annotations

import errno
import logging

from ..client.limits import KEY_MAX, MAX_OBJECT_SIZE
from .errno_map import FsError
from .keys import NAME_MAX, decode_name

log = logging.getLogger("s3fmfs.fs")

__all__ = ["KEY_MAX", "MAX_OBJECT_SIZE", "SYMLINK_MAX"]

#: The longest symlink target: PATH_MAX (4,096) less the NUL; what FUSE's readlink can return.
SYMLINK_MAX = 4095


def check_name(name: bytes) -> str:
    """A FUSE name as key text; ENAMETOOLONG over 255 bytes, EINVAL (logged) if not UTF-8."""
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name over {NAME_MAX} bytes")
    text = decode_name(name)
    if text is None:
        log.warning("name %r is not valid UTF-8: refused (EINVAL)", name)
        raise FsError(errno.EINVAL, "name is not valid UTF-8")
    return text


def check_key(key: str) -> str:
    """``key`` itself; ENAMETOOLONG when it is longer than S3 allows."""
    if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX:
        raise FsError(errno.ENAMETOOLONG, f"key over {KEY_MAX} bytes")
    return key


def writable(offset: int, length: int) -> int:
    """How many of ``length`` bytes written at ``offset`` fit in an object; EFBIG if none."""
    if length > 0 and offset >= MAX_OBJECT_SIZE:
        raise FsError(errno.EFBIG, "past the 5 TiB object limit")
    return min(length, MAX_OBJECT_SIZE - offset) if length > 0 else length


def check_size(size: int) -> None:
    """EFBIG for a file size an object cannot have."""
    if size > MAX_OBJECT_SIZE:
        raise FsError(errno.EFBIG, "past the 5 TiB object limit")


def check_symlink_target(target: bytes) -> None:
    """ENOENT for an empty symlink target, ENAMETOOLONG for one readlink could not return."""
    if not target:
        raise FsError(errno.ENOENT, "empty symlink target")
    if len(target) > SYMLINK_MAX:
        raise FsError(errno.ENAMETOOLONG, f"symlink target over {SYMLINK_MAX} bytes")
