"""The filesystem layer: a bucket (or a prefix of it) as a directory tree through FUSE.

Layers, each importing only the ones below it::

    adapter.S3fmOperations   pyfuse3 types ↔ core calls; the only place FUSEError is raised
    core.FsCore              the operations, over an ObjectStore; drivable without a mount:
                             a facade over the parts below
    listing, changes         readdir; the key work of mkdir, rmdir, symlink, unlink, rename
    handles                  open files and directories, reads of a pinned version
    files                    buffers written and saved: every transition of a ``Content``
    upload                   the upload engine: one PUT, multipart streamed or whole
    namespace, pins          lookup, getattr, resolving paths; versions open handles read
    inodes, content          inode table (identity, counts); a file's content, a state machine
    cache, writebuf          TTL caches, temp-file write buffers
    metacache                HEADed metadata by object version, kept across mounts (sqlite)
    recovery, journal        data of failed uploads kept under the cache directory; the
                             journal of multipart uploads a crash may leave (swept at mount)
    readahead                read-ahead (concurrent ranged GETs, shared memory budget)
    attrs, keys, errno_map   metadata ↔ attributes, paths ↔ keys, exceptions → errno
    settings                 FsSettings: what the layer is configured with (built by
                             s3fmfs.config from the mount options)
    store.ObjectStore        the narrow bucket interface; s3store.S3Store implements it
    s3fmfs.client            the signed S3 client (only s3store calls it)

The adapter is not imported here, so the core can be used where pyfuse3 is not wanted.
"""

from .attrs import Attr, Defaults, Kind
from .core import FsCore
from .errno_map import FsError, to_errno
from .s3store import S3Store
from .store import ListingPage, ObjectInfo, ObjectStore, PutResult

__all__ = [
    "Attr",
    "Defaults",
    "FsCore",
    "FsError",
    "Kind",
    "ListingPage",
    "ObjectInfo",
    "ObjectStore",
    "PutResult",
    "S3Store",
    "to_errno",
]
