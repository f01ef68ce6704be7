"""A mount of every bucket of the account (``s3fmfs s3:// MNT``): the root over one core per
bucket (``fs/buckets.py``), each bucket opened on first use as a single-bucket mount opens its
one: its metadata cache, recovery folder and upload journal (``keep``), an ``S3Store`` over the
mount's one connection, and the sweep of the multipart uploads a killed mount left.

Invariants:
- Everything a bucket opens is closed when the mount ends (after the final uploads: the
  block of ``open_all_buckets`` ends after ``mount._stop``).
- The account check lists the buckets (ListBuckets) with the short retry budget of the bucket
  check: a wrong secret or an unreachable endpoint is one line within seconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..client import AccessDenied, S3fmAuthConnection
from ..fs.buckets import BucketsCore
from ..fs.core import FsCore
from ..fs.s3store import ObjectHeaders, S3Account, S3Store
from .connection import describe_failure, integrity_of
from .keep import metacache_for_mount, recovery_for_mount

if TYPE_CHECKING:
    from .mount import MountConfig

log = logging.getLogger("s3fmfs")


@contextlib.asynccontextmanager
async def open_all_buckets(
    config: MountConfig, conn: S3fmAuthConnection, headers: ObjectHeaders
) -> AsyncIterator[BucketsCore]:
    """The root of a mount of every bucket, for the life of the block."""
    opts = config.options
    async with contextlib.AsyncExitStack() as stack:
        root: BucketsCore | None = None

        async def open_bucket(name: str) -> FsCore:
            meta = await stack.enter_async_context(metacache_for_mount(opts, name))
            kept = await stack.enter_async_context(recovery_for_mount(opts, name))
            store = S3Store(
                conn,
                name,
                page_size=opts.list_object_max_keys,
                journal=kept.journal,
                headers=headers,
                integrity=integrity_of(opts),
            )
            core = FsCore(
                store,
                opts.fs_settings(),
                tmpdir=opts.cache_dir,
                metacache=meta,
                recovery=kept.folder,
            )
            if root is not None and root.nursery is not None:
                root.nursery.start_soon(kept.journal.sweep, store, "")  # leftovers
            return core

        root = BucketsCore(
            S3Account(conn),
            open_bucket,
            opts.fs_settings(),
            allow_mkdir=opts.bucket_mkdir,
        )
        yield root


def describe_account_failure(exc: BaseException, config: MountConfig) -> str:
    """One line saying why the account's buckets cannot be listed (never the secret)."""
    endpoint = config.options.endpoint
    if isinstance(exc, AccessDenied):
        return (
            f"access denied to the list of buckets (ListBuckets) at {endpoint} for key "
            f"{config.access_key_id!r}: mount one bucket (BUCKET, not s3://) instead"
        )
    return describe_failure(exc, "s3://", endpoint, config.access_key_id)
