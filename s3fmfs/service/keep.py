"""What a mount keeps on disk for its life: the metadata cache, the upload journal and the
recovery folder, opened from the mount's options (the fs layer's objects know no options).

Invariants:
- Paths come from :mod:`s3fmfs.config.paths` only (one cache directory).
- ``recovery_for_mount``: the journal's lock is held until the block ends; temporary copies a
  killed earlier mount left in either recovery folder are removed first (warned, with sizes).
- ``metacache_for_mount``: no cache with ``metacache=off`` or ``nometa`` (which makes no HEADs
  to remember); a cache that cannot be opened is none (the fs layer warns).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from ..config import paths
from ..config.options import MountOptions
from ..fs import metacache
from ..fs.journal import UploadJournal
from ..fs.metacache import MetaCache
from ..fs.recovery import RecoveryFolder, sweep_temporaries

log = logging.getLogger("s3fmfs.fs")


def recovery_folder(opts: MountOptions, bucket: str) -> RecoveryFolder:
    """The recovery folder of a mount of ``bucket``: in the cache directory, else the state's."""
    return RecoveryFolder(
        paths.cache_dir(opts.cache_dir) / paths.RECOVERY_FOLDER,
        paths.endpoint_id(opts),
        bucket,
        paths.state_dir() / paths.RECOVERY_FOLDER,
    )


@dataclass
class MountRecovery:
    """What a mount keeps so that nothing is lost: recovery copies and the upload journal."""

    folder: RecoveryFolder
    journal: UploadJournal


@contextlib.asynccontextmanager
async def recovery_for_mount(opts: MountOptions, bucket: str) -> AsyncIterator[MountRecovery]:
    """The recovery folder and the upload journal of a mount of ``bucket``, for its life (the
    journal's lock is held until the end; a journal that cannot be kept is a warning)."""
    journal = await UploadJournal.open(
        paths.cache_dir(opts.cache_dir), paths.endpoint_id(opts), bucket
    )
    folder = recovery_folder(opts, bucket)
    for place in folder.places:
        try:
            removed = await trio.to_thread.run_sync(sweep_temporaries, place)
        except OSError as exc:
            log.warning("cannot look for unfinished recovery copies in %s: %s", place, exc)
            continue
        for path, size in removed:
            log.warning(
                "removed %s (%d bytes): an unfinished recovery copy an earlier mount left "
                "when it was killed (its data was never a whole copy)",
                path,
                size,
            )
    try:
        yield MountRecovery(folder, journal)
    finally:
        with trio.CancelScope(shield=True):
            await journal.close()


def metacache_for_mount(
    opts: MountOptions, bucket: str
) -> contextlib.AbstractAsyncContextManager[MetaCache | None]:
    """The metadata cache a mount of ``bucket`` with ``opts`` uses (see the invariants)."""
    scope = metacache.scope_of(paths.endpoint_id(opts), bucket)
    return metacache.opened(paths.metacache_file(opts), scope, opts.metacache and not opts.nometa)
