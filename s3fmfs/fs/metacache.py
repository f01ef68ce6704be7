"""The persistent metadata cache: what HEAD answered for an object version, kept across mounts.

A listing tells an object's key, size, ETag and LastModified, but not its metadata (mode,
owner, mtime, symlink): that takes a HEAD per object. This cache keeps the HEAD's answer in an
sqlite file under the cache directory, so a later mount that lists the same, unchanged objects
needs no HEAD for them.

Invariants:
- A row is keyed by (scope, key), scope being the endpoint and bucket, and holds the ETag and
  LastModified **as the listing reported them** (nanoseconds) with the metadata and content
  type a HEAD answered. It is used only when a listing reports exactly that ETag and
  LastModified: an object changed by anyone has a new LastModified (and mostly a new ETag), so
  a changed object misses and is HEADed again; nothing can serve stale metadata, and no
  invalidation is ever needed for others' changes (but for a metadata-only change within the
  second of the version it replaces). The mount's own writes ``forget`` the key: a chmod is a
  copy in place that keeps the ETag, and may keep the LastModified second, so a row recorded
  just before it would look current (queued rows are dropped, written ones deleted at the
  next flush). The new version is recorded the first time a listing shows it and a HEAD
  confirms it (a PUT answer has no LastModified).
- A HEAD is recorded only when the same key was listed in this mount (``lookup`` remembers the
  versions it missed) and the HEAD answers that version: the same ETag and the same
  LastModified second (a HEAD's date has one-second resolution, a listing's may have more).
- Directory markers are not cached: a parent's listing reports a subdirectory as a common
  prefix, without the marker's ETag, so there is nothing to check a row against.
- The cache is an optimisation, never a source of errors: any sqlite failure is logged once,
  and the cache then answers nothing and records nothing for the rest of the mount.
- Concurrency: one sqlite connection, used from one worker thread at a time
  (``trio.to_thread.run_sync`` under ``_lock``). Recorded rows are queued on the trio thread and
  written in batches (``flush``: when ``BATCH`` rows wait or the oldest waited ``FLUSH_AFTER``
  seconds, and at close). Several mounts may share the file (WAL, busy timeout).
- The file and its directory are created private (0600 in a 0700 directory). It is bounded:
  beyond ``MAX_ROWS`` rows the least recently written half is dropped when a mount opens it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from .attrs import NS
from .store import ObjectInfo

log = logging.getLogger("s3fmfs.fs")

FILE_NAME = "metadata.sqlite3"
#: Rows written in one transaction; also the queue length that triggers a write.
BATCH = 512
#: Seconds a recorded row may wait before a write is due anyway.
FLUSH_AFTER = 2.0
#: Keys per ``IN (...)`` query (far below sqlite's variable limit).
QUERY_CHUNK = 500
#: Rows kept at most; beyond, the least recently written half goes (checked at open).
MAX_ROWS = 2_000_000
#: Listed-but-unknown versions remembered per mount (for ``record``); cleared when exceeded.
MAX_LISTED = 500_000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    meta TEXT NOT NULL,
    written INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_written ON objects (written);
"""


@dataclass(frozen=True)
class CachedMeta:
    """What a HEAD answered beyond the listing: user metadata and content type."""

    metadata: Mapping[str, str]
    content_type: str

    def info(self, listed: ObjectInfo) -> ObjectInfo:
        """The HEAD answer this stands for, for the listed version (LastModified in whole
        seconds, as a HEAD reports it)."""
        return ObjectInfo(
            key=listed.key,
            size=listed.size,
            etag=listed.etag,
            last_modified_ns=listed.last_modified_ns - listed.last_modified_ns % NS,
            metadata=self.metadata,
            content_type=self.content_type,
        )


def _encode(meta: CachedMeta) -> str:
    return json.dumps(
        {"m": dict(meta.metadata), "t": meta.content_type},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _decode(text: str) -> CachedMeta | None:
    try:
        data = json.loads(text)
        meta = data["m"]
        content_type = data["t"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(meta, dict) or not isinstance(content_type, str):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return None
    return CachedMeta(meta, content_type)


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating private) the file and its schema. Runs in a worker thread."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            db.execute("DROP TABLE IF EXISTS objects")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        _prune(db)
    except BaseException:
        db.close()
        raise
    return db


def _prune(db: sqlite3.Connection) -> None:
    (count,) = db.execute("SELECT count(*) FROM objects").fetchone()
    if count <= MAX_ROWS:
        return
    row = db.execute(
        "SELECT written FROM objects ORDER BY written LIMIT 1 OFFSET ?", (count - MAX_ROWS // 2,)
    ).fetchone()
    if row is not None:
        db.execute("DELETE FROM objects WHERE written < ?", (row[0],))
        log.info("metadata cache: dropped %d old entries", count - MAX_ROWS // 2)


class MetaCache:
    """Object metadata by (key, ETag, LastModified) for one bucket of one endpoint."""

    def __init__(self, db: sqlite3.Connection, scope: str, path: Path) -> None:
        self._db: sqlite3.Connection | None = db
        self.scope = scope
        self.path = path
        self._lock = trio.Lock()
        #: key → (etag, last_modified_ns) of versions listed and not found (for ``record``).
        self._listed: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, tuple[str, int, CachedMeta]] = {}
        self._forgotten: set[str] = set()  # keys the mount changed: rows deleted at flush
        self._pending_since = 0.0
        #: Counters, for tests and the log: rows answered, missed, written.
        self.hits = 0
        self.misses = 0
        self.written = 0

    @classmethod
    async def open(cls, path: Path, scope: str) -> MetaCache | None:
        """The cache in ``path`` (None, logged, when it cannot be opened)."""
        try:
            db = await trio.to_thread.run_sync(_connect, path)
        except (OSError, sqlite3.Error) as exc:
            log.warning("metadata cache %s not used: %s", path, exc)
            return None
        return cls(db, scope, path)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _failed(self, exc: BaseException) -> None:
        log.warning("metadata cache %s disabled after an error: %s", self.path, exc)
        db, self._db = self._db, None
        self._pending.clear()
        self._forgotten.clear()
        self._listed.clear()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    async def lookup(self, listed: Iterable[ObjectInfo]) -> dict[str, CachedMeta]:
        """The cached metadata of the listed objects whose version (ETag and LastModified as
        listed) is known; the others are remembered so that ``record`` can store them."""
        wanted = {o.key: (o.etag, o.last_modified_ns) for o in listed}
        if not wanted or self._db is None:
            return {}
        found: dict[str, CachedMeta] = {}
        for key, version in wanted.items():  # recorded, not written yet
            queued = self._pending.get(key)
            if queued is not None and queued[:2] == version:
                found[key] = queued[2]
        keys = [key for key in wanted if key not in found]
        scope = self.scope

        def query(db: sqlite3.Connection) -> list[tuple[str, str, int, str]]:
            rows: list[tuple[str, str, int, str]] = []
            for i in range(0, len(keys), QUERY_CHUNK):
                chunk = keys[i : i + QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    db.execute(
                        "SELECT key, etag, last_modified, meta FROM objects "
                        f"WHERE scope = ? AND key IN ({marks})",
                        (scope, *chunk),
                    )
                )
            return rows

        try:
            async with self._lock:
                db = self._db
                if db is None:
                    return {}
                rows = await trio.to_thread.run_sync(query, db) if keys else []
        except sqlite3.Error as exc:
            self._failed(exc)
            return {}
        for key, etag, last_modified, text in rows:
            if wanted.get(key) != (etag, last_modified) or key in self._forgotten:
                continue
            meta = _decode(text)
            if meta is not None:
                found[key] = meta
        if len(self._listed) > MAX_LISTED:
            self._listed.clear()
        for key, version in wanted.items():
            if key not in found:
                self._listed[key] = version
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def record(self, info: ObjectInfo) -> None:
        """A HEAD answered ``info``: queue it if it is the version a listing showed."""
        listed = self._listed.get(info.key)
        if listed is None or self._db is None or info.metadata is None:
            return
        etag, last_modified = listed
        if info.etag != etag or info.last_modified_ns // NS != last_modified // NS:
            return  # changed since the listing: the next listing will tell its version
        del self._listed[info.key]
        self._forgotten.discard(info.key)  # the row is replaced at the flush
        if not self._pending and not self._forgotten:
            self._pending_since = time.monotonic()
        self._pending[info.key] = (
            etag,
            last_modified,
            CachedMeta(dict(info.metadata), info.content_type),
        )

    def forget(self, key: str) -> None:
        """The mount changed the object at ``key``: nothing known of it may be used again
        (see the module docstring); a HEAD in flight for it is not recorded either."""
        if self._db is None:
            return
        self._listed.pop(key, None)
        self._pending.pop(key, None)
        if not self._pending and not self._forgotten:
            self._pending_since = time.monotonic()
        self._forgotten.add(key)

    def compact(self) -> None:
        """Remake the map of listed versions once emptied (HEADs answered all of them): a
        dict keeps the table of its largest size."""
        if not self._listed:
            self._listed = {}

    @property
    def flush_due(self) -> bool:
        queued = len(self._pending) + len(self._forgotten)
        return bool(queued) and (
            queued >= BATCH or time.monotonic() - self._pending_since >= FLUSH_AFTER
        )

    async def flush(self) -> None:
        """Write the queued rows and delete the forgotten ones (one transaction)."""
        if not (self._pending or self._forgotten) or self._db is None:
            return
        now = int(time.time())
        rows = [
            (self.scope, key, etag, lm, _encode(meta), now)
            for key, (etag, lm, meta) in self._pending.items()
        ]
        gone = [(self.scope, key) for key in self._forgotten]
        self._pending = {}
        self._forgotten = set()

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM objects WHERE scope = ? AND key = ?", gone)
                db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)", rows)

        try:
            async with self._lock:
                db = self._db
                if db is None:
                    return
                await trio.to_thread.run_sync(write, db)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self.written += len(rows)

    async def close(self) -> None:
        """Write what is queued, then close the file."""
        with trio.CancelScope(shield=True):
            await self.flush()
            async with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await trio.to_thread.run_sync(db.close)
        if self.hits or self.written:
            log.info(
                "metadata cache: %d answered, %d missed, %d written",
                self.hits,
                self.misses,
                self.written,
            )


def scope_of(endpoint: str, bucket: str) -> str:
    """The endpoint (scheme, host, port) and bucket the keys of a mount belong to."""
    return f"{endpoint.rstrip('/')}/{bucket}"


@contextlib.asynccontextmanager
async def opened(path: Path, scope: str, enabled: bool = True) -> AsyncIterator[MetaCache | None]:
    """The cache for a mount's lifetime (None when disabled or unavailable); closed, with
    its queued rows written, on the way out."""
    cache = await MetaCache.open(path, scope) if enabled else None
    try:
        yield cache
    finally:
        if cache is not None:
            await cache.close()
