"""Recovery copies: the data of files whose upload failed for good, kept on disk, so that a
write the bucket refused is never lost with the process.

Invariants:
- The folder is ``<cache dir>/recovery``; when no copy can be written there (full,
  read-only), the fallback ``<state dir>/recovery`` (the directories are the configuration's:
  ``s3fmfs.config.paths``, which opens a mount's folder: ``s3fmfs.service.keep``). Both are
  created mode 0700; files mode 0600.
- A copy is named ``<UTC time of its first failure>-<digest>-<tail>``: the digest (of endpoint,
  bucket and key) tells keys apart, the tail (the key's last component, only ``A-Za-z0-9._-``,
  at most 64 bytes) tells a person which file it is. Keys may hold any character and be 1,024
  bytes long; the name stays under 100 bytes, without ``/``, control characters or a leading
  ``.``. Next to it, ``NAME.json`` says which key it belongs to: endpoint, bucket, key, path in
  the mount, size, time and error.
- One copy per key and mount: a later failure of the same key overwrites it (or, written to
  the other folder, removes it: repeated failures never pile up), and one whose content is
  unchanged (same inode and version) is not copied again. Names of other mounts' copies are
  never reused (a taken name gets a suffix).
- A copy keeps the holes of the buffer's file (``SEEK_DATA``/``SEEK_HOLE``: only data extents
  are written, the size is set by ``ftruncate``), and is not started unless the folder's
  filesystem has room for its data bytes (``statvfs``): a sparse 5 TiB file costs its data,
  and a full disk costs no time.
- A copy this mount made is removed once the key is uploaded after all (the bucket then
  holds that data or newer); copies of earlier mounts are left for the user.
- Both files are written under a temporary name ``.NAME.tmp`` (``flock``-ed while written),
  synced and renamed: a copy is whole or absent, never half written. A failed copy removes
  its temporary file; one a killed mount left is removed by the next mount
  (``sweep_temporaries``: those no live process holds locked).
- Disk work runs in worker threads. Nothing here raises but cancellation: a copy that cannot
  be written anywhere is logged as such (the data then lives only in the write buffer, which
  the mount keeps, and a stopping mount waits for: ``mount._stop``). The log never names a
  place that does not hold the data.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from .writebuf import FileWindow, WriteBuffer

log = logging.getLogger("s3fmfs.fs")

FOLDER = "recovery"
TAIL_MAX = 64
CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Room a copy needs beyond its data bytes (the sidecar, directory entries).
SLACK = 64 << 10
#: The temporary name of a copy being written.
_TEMPORARY = re.compile(r"^\..+\.tmp$")

#: Writes a file's content to a descriptor (in a worker thread).
Fill = Callable[[int], None]


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
    """Write ``path`` through a synced temporary file and a rename; ``fill(fd)`` writes it.
    The temporary file is locked while written (the next mount's sweep leaves it alone) and
    removed when anything fails."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fill(fd)
            os.fsync(fd)
            os.replace(temporary, path)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def data_extents(fd: int, size: int, base: int = 0) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of the ``size`` bytes of ``fd`` from ``base`` that hold data
    (the rest are holes), relative to ``base``; the whole range where the filesystem cannot
    tell."""
    return [(start - base, end - base) for start, end in _extents(fd, base, base + size)]


def _extents(fd: int, offset: int, stop: int) -> list[tuple[int, int]]:
    extents: list[tuple[int, int]] = []
    while offset < stop:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data from offset on
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [*extents, (offset, stop)]
            raise
        if start >= stop:
            break
        end = min(stop, os.lseek(fd, start, os.SEEK_HOLE))
        extents.append((start, end))
        offset = end
    return extents


def _check_room(directory: Path, needed: int) -> None:
    """ENOSPC, before anything is written, when ``directory`` lacks ``needed`` bytes."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise OSError(
            errno.ENOSPC, f"no room for the copy: it needs {needed} bytes, {free} are free"
        )


def _copy(source: bytes | FileWindow, extents: list[tuple[int, int]]) -> Fill:
    """The ``fill`` of a copy: the bytes, or the ``extents`` of the buffer's file (``pread``)
    at their offsets in a file of the window's length (holes stay holes)."""

    def fill(fd: int) -> None:
        if isinstance(source, bytes):
            _write_all(fd, source)
            return
        os.ftruncate(fd, source.length)
        for start, end in extents:
            offset = start
            while offset < end:
                chunk = os.pread(source.fd, min(CHUNK, end - offset), source.start + offset)
                if not chunk:
                    return
                view = memoryview(chunk)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], offset + done)
                offset += len(chunk)

    return fill


def sweep_temporaries(directory: Path) -> list[tuple[Path, int]]:
    """Remove the unfinished copies (``.NAME.tmp``) in ``directory`` that no live process
    holds locked; what was removed, with sizes."""
    removed: list[tuple[Path, int]] = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return removed
    for path in entries:
        if not _TEMPORARY.match(path.name):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a live mount is writing it
            size = os.fstat(fd).st_size
            path.unlink()
            removed.append((path, size))
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _json(data: dict[str, object]) -> Fill:
    text = json.dumps(data, ensure_ascii=True, indent=1).encode() + b"\n"
    return lambda fd: _write_all(fd, text)


@dataclass
class _Copy:
    path: Path
    stamp: tuple[int, int]  # (inode, version) of the content copied


class RecoveryFolder:
    """Where one mount keeps the data of files it could not upload."""

    def __init__(
        self,
        directory: Path | None,
        endpoint: str = "",
        bucket: str = "",
        fallback: Path | None = None,
    ) -> None:
        self.directory = directory  # None: no copies (a core driven without a mount)
        self.fallback = fallback if directory is not None else None
        self.endpoint = endpoint
        self.bucket = bucket
        self._copies: dict[str, _Copy] = {}  # key → this mount's copy of it

    @property
    def places(self) -> list[Path]:
        """Where copies go, in order of preference."""
        found: list[Path] = []
        for place in (self.directory, self.fallback):
            if place is not None and place not in found:
                found.append(place)
        return found

    def copy_of(self, key: str, stamp: tuple[int, int]) -> Path | None:
        """This mount's copy of ``key`` if it holds the content ``stamp`` (else None)."""
        known = self._copies.get(key)
        if known is None or known.stamp != stamp:
            return None
        return known.path

    async def keep(
        self,
        buffer: WriteBuffer | None,
        key: str,
        path: str,
        stamp: tuple[int, int],
        error: BaseException,
    ) -> Path | None:
        """The upload of ``path`` (``key``) failed for good: copy ``buffer`` here (else to the
        fallback) and log one error line saying where, or that no copy could be made (caller
        holds the inode's lock). The copy, or None."""
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not self.places or buffer is None or buffer.closed:
            log.error("upload of %r (key %r) failed: %s (no recovery copy)", path, key, reason)
            return None
        where, refused = await self._keep(buffer, key, path, stamp, reason)
        if where is None:
            log.error(
                "upload of %r (key %r) failed: %s; and no recovery copy could be written (%s): "
                "its %d bytes are only in this mount's write buffer, kept until they are "
                "uploaded or copied (a stopping mount waits for that)",
                path,
                key,
                reason,
                "; ".join(f"{place}: {why}" for place, why in refused),
                buffer.size,
            )
        elif refused:
            log.error(
                "upload of %r (key %r) failed: %s; its data is kept in %s (not in %s)",
                path,
                key,
                reason,
                where,
                "; ".join(f"{place}: {why}" for place, why in refused),
            )
        else:
            log.error(
                "upload of %r (key %r) failed: %s; its data is kept in %s", path, key, reason, where
            )
        return where

    async def _keep(
        self,
        buffer: WriteBuffer,
        key: str,
        path: str,
        stamp: tuple[int, int],
        reason: str,
    ) -> tuple[Path | None, list[tuple[Path, str]]]:
        """Write the copy in the first place that takes it; (the copy or None, the places that
        refused it, with why)."""
        known = self._copies.get(key)
        now = datetime.datetime.now(datetime.UTC)
        info: dict[str, object] = {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "key": key,
            "path": "/" + path,
            "size": buffer.size,
            "failed_at": now.isoformat(timespec="seconds"),
            "error": reason,
        }
        refused: list[tuple[Path, str]] = []
        source = await buffer.upload_source()

        def write(directory: Path) -> Path:
            if known is not None and known.stamp == stamp and known.path.exists():
                return known.path  # this very content is there already
            _make_folder(directory)
            if isinstance(source, bytes):
                extents = [(0, len(source))]
            else:
                extents = data_extents(source.fd, source.length, source.start)
            _check_room(directory, sum(end - start for start, end in extents) + SLACK)
            if known is not None and known.path.parent == directory:
                target = known.path
            else:
                target = _fresh(directory, safe_name(self.endpoint, self.bucket, key, now))
            info["data"] = target.name
            try:
                _replace(target, _copy(source, extents))
                _replace(_sidecar(target), _json(info))
            except BaseException:
                for leftover in (target, _sidecar(target)):  # no copy without its sidecar
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                raise
            return target

        for directory in self.places:
            try:
                target = await trio.to_thread.run_sync(write, directory)
            except Exception as exc:  # disk full, read-only directory...
                refused.append((directory, str(exc) or type(exc).__name__))
                if known is not None and known.path.parent == directory:
                    self._copies.pop(key, None)  # overwriting it failed: it is gone
                    known = None
                continue
            if known is not None and known.path != target:
                await self._remove(key, known.path)  # older content, in the other folder
            self._copies[key] = _Copy(target, stamp)
            return target, refused
        return None, refused

    async def _remove(self, key: str, copy: Path) -> None:
        def remove() -> None:
            for path in (copy, _sidecar(copy)):
                path.unlink(missing_ok=True)

        try:
            await trio.to_thread.run_sync(remove)
        except OSError as exc:
            log.warning("stale recovery copy %s of %r not removed: %s", copy, key, exc)

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
