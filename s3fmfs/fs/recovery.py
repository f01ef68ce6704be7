"""Recovery copies: the data of files whose upload failed for good, kept under the cache
directory, so that a write the bucket refused is never lost with the process.

Invariants:
- The folder is ``<cache dir>/recovery`` (``cache_dir=``, else ``~/.cache/s3fmfs``), created
  mode 0700; its files are created mode 0600.
- A copy is named ``<UTC time of its first failure>-<digest>-<tail>``: the digest (of endpoint,
  bucket and key) tells keys apart, the tail (the key's last component, only ``A-Za-z0-9._-``,
  at most 64 bytes) tells a person which file it is. Keys may hold any character and be 1,024
  bytes long; the name stays under 100 bytes, without ``/``, control characters or a leading
  ``.``. Next to it, ``NAME.json`` says which key it belongs to: endpoint, bucket, key, path in
  the mount, size, time and error.
- One copy per key and mount: a later failure of the same key overwrites it (repeated
  failures never pile up), and one whose content is unchanged (same inode and version) is not
  copied again. Names of other mounts' copies are never reused (a taken name gets a suffix).
- A copy this mount made is removed once the key is uploaded after all (the bucket then
  holds that data or newer); copies of earlier mounts are left for the user.
- Both files are written under a temporary name, synced and renamed: a copy is whole or
  absent, never half written.
- Disk work runs in worker threads. Nothing here raises but cancellation: a copy that cannot
  be written is logged as such (then the data lives only in the write buffer).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from .journal import UploadJournal
from .metacache import default_cache_dir
from .options import MountOptions
from .writebuf import WriteBuffer

log = logging.getLogger("s3fmfs.fs")

FOLDER = "recovery"
TAIL_MAX = 64
CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

#: Writes a file's content to a descriptor (in a worker thread).
Fill = Callable[[int], None]


def cache_root(opts: MountOptions) -> Path:
    """The mount's cache directory: ``cache_dir=``, else ``~/.cache/s3fmfs``."""
    return Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()


def endpoint_of(opts: MountOptions) -> str:
    """``scheme://host:port`` of the mount's endpoint (what a key's scope is named by)."""
    secure, host, port = opts.endpoint_parts
    return f"{'https' if secure else 'http'}://{host}:{port}"


def safe_name(endpoint: str, bucket: str, key: str, when: datetime.datetime) -> str:
    """A short file name for the copy of ``key`` (see the module's invariants)."""
    scope = f"{endpoint}\n{bucket}\n{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(scope).hexdigest()[:16]
    tail = _UNSAFE.sub("_", key.rsplit("/", 1)[-1])[:TAIL_MAX] or "_"
    return f"{when:%Y%m%dT%H%M%SZ}-{digest}-{tail}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _make_folder(directory: Path) -> None:
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)


def _fresh(directory: Path, name: str) -> Path:
    """``directory/name``, or with a suffix when that name (or its sidecar) is taken."""
    candidate = directory / name
    number = 1
    while candidate.exists() or _sidecar(candidate).exists():
        number += 1
        candidate = directory / f"{name}-{number}"
    return candidate


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace(path: Path, fill: Fill) -> None:
    """Write ``path`` through a synced temporary file and a rename; ``fill(fd)`` writes it."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            fill(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _copy(source: bytes | IO[bytes], size: int) -> Fill:
    """The ``fill`` of a copy: the bytes, or ``size`` bytes of the buffer's file (``pread``:
    its position is left alone)."""

    def fill(fd: int) -> None:
        if isinstance(source, bytes):
            _write_all(fd, source)
            return
        src = source.fileno()
        offset = 0
        while offset < size:
            chunk = os.pread(src, min(CHUNK, size - offset), offset)
            if not chunk:
                break
            _write_all(fd, chunk)
            offset += len(chunk)

    return fill


def _json(data: dict[str, object]) -> Fill:
    text = json.dumps(data, ensure_ascii=True, indent=1).encode() + b"\n"
    return lambda fd: _write_all(fd, text)


@dataclass
class _Copy:
    path: Path
    stamp: tuple[int, int]  # (inode, version) of the content copied


class RecoveryFolder:
    """Where one mount keeps the data of files it could not upload."""

    def __init__(self, directory: Path | None, endpoint: str = "", bucket: str = "") -> None:
        self.directory = directory  # None: no copies (a core driven without a mount)
        self.endpoint = endpoint
        self.bucket = bucket
        self._copies: dict[str, _Copy] = {}  # key → this mount's copy of it

    @classmethod
    def for_options(cls, opts: MountOptions, bucket: str) -> RecoveryFolder:
        return cls(cache_root(opts) / FOLDER, endpoint_of(opts), bucket)

    async def keep(
        self,
        buffer: WriteBuffer | None,
        key: str,
        path: str,
        stamp: tuple[int, int],
        error: BaseException,
    ) -> Path | None:
        """The upload of ``path`` (``key``) failed for good: copy ``buffer`` here and log one
        error line saying where (caller holds the inode's lock). The copy, or None."""
        where = await self._keep(buffer, key, path, stamp, error)
        if where is not None:
            log.error(
                "upload of %r (key %r) failed: %s; its data is kept in %s", path, key, error, where
            )
        return where

    async def _keep(
        self,
        buffer: WriteBuffer | None,
        key: str,
        path: str,
        stamp: tuple[int, int],
        error: BaseException,
    ) -> Path | None:
        directory = self.directory
        if directory is None or buffer is None or buffer.closed:
            log.error("upload of %r (key %r) failed: %s (no recovery copy)", path, key, error)
            return None
        known = self._copies.get(key)
        now = datetime.datetime.now(datetime.UTC)
        info: dict[str, object] = {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "key": key,
            "path": "/" + path,
            "size": buffer.size,
            "failed_at": now.isoformat(timespec="seconds"),
            "error": str(error).splitlines()[0] if str(error) else type(error).__name__,
        }
        try:
            source = await buffer.upload_source()
            size = buffer.size

            def write() -> Path:
                if known is not None and known.stamp == stamp and known.path.exists():
                    return known.path  # this very content is there already
                _make_folder(directory)
                if known is not None:
                    target = known.path
                else:
                    target = _fresh(directory, safe_name(self.endpoint, self.bucket, key, now))
                info["data"] = target.name
                _replace(target, _copy(source, size))
                _replace(_sidecar(target), _json(info))
                return target

            target = await trio.to_thread.run_sync(write)
        except Exception as exc:  # disk full, read-only cache directory...
            log.error(
                "upload of %r (key %r) failed: %s; and no recovery copy could be written in "
                "%s (%s): the data is only in the write buffer until the mount ends",
                path,
                key,
                error,
                directory,
                exc,
            )
            return None
        self._copies[key] = _Copy(target, stamp)
        return target

    async def uploaded(self, key: str) -> None:
        """``key`` was uploaded: this mount's copy of it, if any, is stale; remove it."""
        copy = self._copies.pop(key, None)
        if copy is None:
            return

        def remove() -> None:
            for path in (copy.path, _sidecar(copy.path)):
                path.unlink(missing_ok=True)

        try:
            await trio.to_thread.run_sync(remove)
        except OSError as exc:
            log.warning("recovery copy %s of %r not removed: %s", copy.path, key, exc)
            return
        log.info("%r uploaded after all: recovery copy %s removed", key, copy.path)


@dataclass
class MountRecovery:
    """What a mount keeps so that nothing is lost: recovery copies and the upload journal."""

    folder: RecoveryFolder
    journal: UploadJournal


@contextlib.asynccontextmanager
async def for_mount(opts: MountOptions, bucket: str) -> AsyncIterator[MountRecovery]:
    """The recovery folder and the upload journal of a mount of ``bucket``, for its life (the
    journal's lock is held until the end; a journal that cannot be kept is a warning)."""
    journal = await UploadJournal.open(cache_root(opts), endpoint_of(opts), bucket)
    try:
        yield MountRecovery(RecoveryFolder.for_options(opts, bucket), journal)
    finally:
        with trio.CancelScope(shield=True):
            await journal.close()
