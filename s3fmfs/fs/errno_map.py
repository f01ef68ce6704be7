"""The one table from exceptions to errno values.

Invariants:
- ``to_errno`` never raises and always returns a positive errno.
- Filesystem-level failures are ``FsError(errno)``, raised by the core; client failures keep
  their own classes and are translated here, nowhere else. Only the adapter turns the result
  into ``pyfuse3.FUSEError``.
- An exception group (a nursery's failure) maps like its first member.
- Anything not in the table is EIO, and its traceback is logged (it is a bug or a case the
  table should learn).
"""

from __future__ import annotations

import errno
import logging
import os

from ..client import errors as s3
from .integrity import ChecksumMismatch

log = logging.getLogger("s3fmfs.fs")


class FsError(Exception):
    """A filesystem error with its errno (ENOENT, ENOTEMPTY, EEXIST ...)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message or os.strerror(code))
        self.errno = code
        self.message = message or os.strerror(code)

    def __str__(self) -> str:
        return f"[{errno.errorcode.get(self.errno, self.errno)}] {self.message}"


# Checked in order: the first matching class wins (subclasses before their bases).
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (s3.NoSuchKey, errno.ENOENT),
    (s3.NoSuchBucket, errno.ENOENT),
    (s3.AccessDenied, errno.EACCES),
    (s3.SignatureDoesNotMatch, errno.EACCES),
    (s3.InvalidAccessKeyId, errno.EACCES),
    (s3.BucketNotEmpty, errno.ENOTEMPTY),
    (s3.BucketAlreadyOwnedByYou, errno.EEXIST),  # mkdir of a bucket (fs/buckets.py)
    (s3.BucketAlreadyExists, errno.EEXIST),
    (s3.InvalidBucketName, errno.EINVAL),
    (s3.EntityTooLarge, errno.EFBIG),
    (s3.PreconditionFailed, errno.ESTALE),  # If-Match: the version read is gone
    (ChecksumMismatch, errno.EIO),  # bytes not those stored or sent, after the resends
    (s3.S3TransportError, errno.EIO),
    (s3.S3ServerError, errno.EIO),
    (s3.InvalidResponseError, errno.EIO),
    (s3.S3ResponseError, errno.EIO),
)


def cause(exc: BaseException) -> BaseException:
    """What decides a failure: an exception group's first member (recursively), else itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def to_errno(exc: BaseException) -> int:
    """The errno a failed operation reports for ``exc``."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return to_errno(exc.exceptions[0])  # a nursery's failure: its first cause decides
    if isinstance(exc, FsError):
        return exc.errno if exc.errno > 0 else errno.EIO
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno  # local trouble: ENOSPC on the temporary directory, ...
    log.error("unexpected error, reported as EIO", exc_info=exc)
    return errno.EIO
