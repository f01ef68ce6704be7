"""The journal of multipart uploads: those a mount started and has not finished, on disk, so
that the next mount with the same cache directory aborts what a crash left behind.

Layout, under ``<cache dir>/uploads/<scope>/`` (``scope``: a digest of endpoint and bucket):
``<token>.lock``, locked (``flock``) by the live mount ``token`` for as long as it runs, and
``<token>.<n>.json``, one per upload: key, upload id, local start time, endpoint, bucket.
A mount that ends with nothing left removes its lock file, and the folder once empty.

Invariants:
- An entry is written *before* CreateMultipartUpload is sent (upload id null), gets the id as
  soon as it is known (before any part is sent), and is removed once the upload is completed
  or aborted (``finished``). However the process dies, every upload the service may hold for
  it has an entry: with its id (the next mount aborts it), or without (the crash cut the
  request that created it: such an upload has no part yet; the next mount lists the uploads
  of that key as possibly its own, without aborting them). A creation the service refused
  (a 4xx answer) leaves no entry.
- The kernel releases a ``flock`` when its process dies, however it dies: a mount touches the
  entries of another token only when it can lock that token's lock file (its mount is gone),
  or there is none. Entries of live mounts sharing the cache directory are never touched.
- Entries are written to a temporary name and renamed: whole or absent. They are not synced:
  a killed process's writes are in the page cache; after a power loss, the sweep's listing
  still shows what is left.
- Disk work runs in worker threads. The journal never fails an upload: a disk error is logged
  once and journaling stops for the mount.
- ``sweep`` runs in the background once mounted: one ListMultipartUploads of the mount's
  prefix, then one abort per upload that a dead mount journaled. Incomplete uploads it did
  not journal are logged (key, upload id, initiated), never aborted: they may be another
  client's, still uploading. Its failures are warnings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..client.errors import S3ClientError
from .store import PendingUpload, PendingUploads

log = logging.getLogger("s3fmfs.fs")

FOLDER = "uploads"
#: Uploads not journaled here that the sweep names one by one; the rest are counted.
MAX_LOGGED = 20


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _write(path: Path, data: dict[str, object]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, ensure_ascii=True)
    os.replace(temporary, path)


def _token_of(name: str) -> str:
    return name.split(".", 1)[0]


@dataclass
class Entry:
    """One journaled upload."""

    path: Path
    key: str
    upload_id: str | None
    started: float

    @classmethod
    def read(cls, path: Path) -> Entry | None:
        try:
            data = json.loads(path.read_text())
            key, upload_id, started = data["key"], data["upload_id"], data["started"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(key, str) or not isinstance(upload_id, str | None):
            return None
        return cls(path, key, upload_id, float(started))


@dataclass
class _Claimed:
    """What the sweep took over: dead mounts' entries, their held locks, live mounts' ids."""

    entries: list[Entry] = field(default_factory=list)
    locks: list[tuple[int, Path]] = field(default_factory=list)
    live_ids: set[str] = field(default_factory=set)


class UploadJournal:
    """The multipart uploads one mount started and has not finished."""

    def __init__(self, directory: Path | None, endpoint: str = "", bucket: str = "") -> None:
        self.directory = directory  # None: not journaling
        self.endpoint = endpoint
        self.bucket = bucket
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd: int | None = None
        self._serial = 0
        #: upload id → its entry (this mount's, and during the sweep dead mounts' ones)
        self._entries: dict[str, Path] = {}

    @classmethod
    async def open(cls, cache_dir: Path, endpoint: str, bucket: str) -> UploadJournal:
        """This mount's journal in ``cache_dir`` (its lock taken); not journaling, with a
        warning, when the directory cannot be used."""
        journal = cls(cache_dir / FOLDER / _digest(f"{endpoint}/{bucket}"), endpoint, bucket)
        try:
            await trio.to_thread.run_sync(journal._lock)
        except OSError as exc:
            log.warning("multipart uploads not journaled in %s: %s", journal.directory, exc)
            journal.directory = None
        return journal

    def _lock(self) -> None:
        assert self.directory is not None
        self.directory.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.parent.mkdir(mode=0o700, exist_ok=True)
        lock = self.directory / f"{self.token}.lock"
        for attempt in range(3):  # another mount may remove the empty directory meanwhile
            self.directory.mkdir(mode=0o700, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _disable(self, exc: BaseException) -> None:
        if self.directory is not None:
            log.warning("multipart uploads no longer journaled in %s: %s", self.directory, exc)
        self.directory = None

    async def _run(self, work: Callable[[], object]) -> bool:
        """Run disk work in a thread; False (journaling stopped, logged) on a disk error."""
        try:
            await trio.to_thread.run_sync(work)
        except OSError as exc:
            self._disable(exc)
            return False
        return True

    async def close(self) -> None:
        """End of the mount: release the lock (its file is removed when no entry is left,
        else kept so that the entries stay attached to a dead token)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        directory, ours = self.directory, bool(self._entries)

        def release() -> None:
            try:
                if directory is not None and not ours:
                    (directory / f"{self.token}.lock").unlink(missing_ok=True)
                    with contextlib.suppress(OSError):  # not empty: others' files
                        directory.rmdir()
            finally:
                os.close(fd)

        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(release)

    # -- the uploads ------------------------------------------------------------------------------

    async def create(self, key: str, create: Callable[[], Awaitable[str]]) -> str:
        """Run ``create`` (CreateMultipartUpload of ``key``), journaled before and after."""
        directory = self.directory
        if directory is None:
            return await create()
        self._serial += 1
        path = directory / f"{self.token}.{self._serial}.json"
        entry: dict[str, object] = {
            "key": key,
            "upload_id": None,
            "started": time.time(),
            "endpoint": self.endpoint,
            "bucket": self.bucket,
        }
        journaled = await self._run(lambda: _write(path, entry))
        try:
            upload_id = await create()
        except S3ClientError:  # refused: nothing was created
            if journaled:
                await self._remove(path)
            raise
        if journaled and self.directory is not None:
            entry["upload_id"] = upload_id
            self._entries[upload_id] = path
            await self._run(lambda: _write(path, entry))
        return upload_id

    async def _remove(self, path: Path) -> None:
        await self._run(lambda: path.unlink(missing_ok=True))

    async def finished(self, upload_id: str) -> None:
        """The upload was completed or aborted (or is gone): forget it."""
        path = self._entries.pop(upload_id, None)
        if path is not None:
            await self._remove(path)

    def pending(self) -> set[str]:
        """Ids of the uploads journaled and not finished (tests, the sweep)."""
        return set(self._entries)

    # -- the sweep at mount ---------------------------------------------------------------------

    def _claim(self) -> _Claimed:
        """Take over the entries of mounts that are gone (locking their lock files); note the
        ids of live ones. Runs in a worker thread."""
        claimed = _Claimed()
        directory = self.directory
        if directory is None:
            return claimed
        tokens: dict[str, list[Path]] = {}
        locks: set[str] = set()
        for item in directory.iterdir():
            name = item.name
            token = _token_of(name.lstrip("."))
            if token == self.token:
                continue
            if name.endswith(".lock"):
                locks.add(token)
            elif name.endswith(".json") and not name.startswith("."):
                tokens.setdefault(token, []).append(item)
        for token in sorted(locks | set(tokens)):
            if token in locks:
                lock = directory / f"{token}.lock"
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    fd = -1  # its mount just ended
                if fd >= 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:  # a live mount
                        os.close(fd)
                        for path in tokens.get(token, []):
                            entry = Entry.read(path)
                            if entry is not None and entry.upload_id is not None:
                                claimed.live_ids.add(entry.upload_id)
                        continue
                    claimed.locks.append((fd, lock))
            for path in tokens.get(token, []):
                entry = Entry.read(path)
                if entry is None:
                    log.warning("unreadable upload journal entry %s: left alone", path)
                else:
                    claimed.entries.append(entry)
        return claimed

    def _release(self, claimed: _Claimed) -> None:
        """Let go of the dead mounts' locks, removing those with no entry left."""
        left = {_token_of(e.path.name) for e in claimed.entries if e.path.exists()}
        for fd, lock in claimed.locks:
            try:
                if _token_of(lock.name) not in left:
                    lock.unlink(missing_ok=True)
                    for stale in lock.parent.glob(f".{_token_of(lock.name)}.*.tmp"):
                        stale.unlink(missing_ok=True)
            finally:
                os.close(fd)

    async def sweep(self, store: PendingUploads, prefix: str) -> None:
        """Abort the uploads dead mounts left, log the other incomplete uploads under
        ``prefix``; never raises (but cancellation)."""
        try:
            claimed = await trio.to_thread.run_sync(self._claim)
        except OSError as exc:
            log.warning("upload journal %s not read: %s", self.directory, exc)
            claimed = _Claimed()
        try:
            await self._sweep(store, prefix, claimed)
        except Exception as exc:
            log.warning("checking for incomplete multipart uploads failed: %s", exc)
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                await trio.to_thread.run_sync(self._release, claimed)

    async def _sweep(self, store: PendingUploads, prefix: str, claimed: _Claimed) -> None:
        listing: list[PendingUpload] | None
        try:
            listing = await store.list_multipart(prefix)
        except Exception as exc:
            log.warning("cannot list the incomplete multipart uploads under %r: %s", prefix, exc)
            listing = None
        initiated = {u.upload_id: u.initiated for u in listing or []}
        interrupted: set[str] = set()  # keys whose creation a crash cut
        journaled: set[str] = set()
        for entry in claimed.entries:
            if entry.upload_id is None:
                interrupted.add(entry.key)
                await self._remove(entry.path)
                continue
            journaled.add(entry.upload_id)
            if (
                listing is not None
                and entry.upload_id not in initiated
                and entry.key.startswith(prefix)
            ):
                log.info(
                    "upload %s of %r left by an earlier mount: already completed or aborted",
                    entry.upload_id,
                    entry.key,
                )
                await self._remove(entry.path)
                continue
            self._entries[entry.upload_id] = entry.path
            await store.abort_multipart(entry.key, entry.upload_id)  # finished() when it worked
            if entry.upload_id in self._entries:
                del self._entries[entry.upload_id]  # logged by the store; kept for next time
                continue
            when = initiated.get(entry.upload_id) or time.strftime(
                "%Y-%m-%dT%H:%M:%S%z (started here)", time.localtime(entry.started)
            )
            log.warning(
                "aborted the incomplete multipart upload of %r left by an earlier mount: "
                "upload id %s, initiated %s",
                entry.key,
                entry.upload_id,
                when,
            )
        known = journaled | claimed.live_ids | self.pending()
        others = [u for u in listing or [] if u.upload_id not in known]
        for upload in others[:MAX_LOGGED]:
            why = (
                "possibly left by an earlier mount stopped while creating it"
                if upload.key in interrupted
                else "not journaled in this cache directory: another client's, or still in progress"
            )
            log.warning(
                "incomplete multipart upload of %r (%s), not aborted: upload id %s, initiated %s",
                upload.key,
                why,
                upload.upload_id,
                upload.initiated or "?",
            )
        if len(others) > MAX_LOGGED:
            log.warning(
                "… and %d more incomplete multipart uploads under %r",
                len(others) - MAX_LOGGED,
                prefix,
            )
