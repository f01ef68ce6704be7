"""Requests sent ahead: HEADs of a folder's entries, listings of a walked tree's directories.

Readdir sends no HEAD (``listing``): a names-only ``ls`` costs the listing. The attributes a
listing cannot tell (mode, owner, mtime, symlink) are fetched when first wanted, and then for
the entries that follow, so that ``ls -l`` or ``find -exec stat`` find them ready.

Invariants:
- A folder's order (``Folder``) is the names of its listed objects whose attributes were not
  known, in readdir order, recorded when a readdir snapshot is taken. It is kept while used:
  until ``keep`` seconds (``FOLDER_KEEP``, at least ``dir_ttl``) after the last lookup or
  getattr of one of its entries, for at most ``MAX_FOLDERS`` folders (the oldest go). It tells
  lookups which HEAD to send for a name (the file's, not the four requests of a probe; an
  answer of no object still falls back to a probe).
- HEADs ahead start when a lookup or getattr needs a HEAD for an entry of a recorded folder:
  the entries after it, in order, by at most ``WORKERS`` tasks per folder, never more than
  ``AHEAD`` entries past the latest one asked for, and not once the folder's record is gone.
  An entry whose attributes are known or whose HEAD is in flight is skipped (the namespace
  sends one HEAD per path at a time). Answers go to the caches (``MetadataCache.store_ahead``).
  A small listed object's "HEAD" is a GET whose body waits for the read that follows
  (``Namespace.head_or_get``, ``bodies``): ``grep -r`` costs one request per small file.
- Listings ahead: after a directory's snapshot, the listings of its first ``LIST_AHEAD``
  subdirectories not cached are fetched, at most ``LISTS_IN_FLIGHT`` at a time for the mount
  and ``MAX_QUEUED`` waiting (more are dropped); a listing past ``LIST_MAX_ENTRIES`` entries
  is abandoned, not kept. Only with ``dir_ttl`` > 0: the listing cache is where they wait.
- The mount's HEADs in flight are sized by their throughput (``HeadPace``): more only while
  more bring more answers per second.
- Without a nursery (tests driving the core directly, or after the mount stopped) nothing is
  sent ahead. Failures of requests sent ahead are logged at debug level and cost nothing
  else: whoever wants the answer asks again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .keys import join, name_of, parent_of

log = logging.getLogger("s3fmfs.fs")

#: Entries HEADed ahead past the latest one a lookup or getattr asked for: enough to keep
#: ``WORKERS`` busy, not so many that answers age before ``ls -l`` reaches them.
AHEAD = 512
#: Tasks sending a folder's HEADs ahead (the mount's HEAD limiter bounds them all).
WORKERS = 64
#: Folders whose order is kept, and seconds at least (``dir_ttl`` if longer).
MAX_FOLDERS = 64
FOLDER_KEEP = 10.0
#: Subdirectories listed ahead after a readdir; listings at once; waiting; entries at most.
LIST_AHEAD = 32
LISTS_IN_FLIGHT = 4
MAX_QUEUED = 256
LIST_MAX_ENTRIES = 10_000


@dataclass
class Folder:
    """The listed entries of one directory whose attributes a HEAD would tell."""

    path: str
    names: list[str]
    used: float  # when last looked at
    index: dict[str, int] = field(default_factory=dict)
    cursor: int = 0  # the next entry to HEAD ahead
    until: int = 0  # HEAD ahead up to this entry (excluded)
    workers: int = 0


class HeadAhead:
    """Folders' orders and the HEADs sent ahead of their getattrs."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[None]],
        timer: Callable[[], float],
        keep: float,
    ) -> None:
        self.fetch = fetch  # HEAD a path unless known or in flight; never raises
        self.timer = timer
        self.keep = max(keep, FOLDER_KEEP)
        self.folders: OrderedDict[str, Folder] = OrderedDict()
        self.nursery: trio.Nursery | None = None
        self.sent = 0  # HEADs started ahead (tests, bench)

    def record(self, path: str, names: list[str]) -> None:
        """A fresh listing of directory ``path``: ``names`` wait for their HEADs, in order."""
        self.folders.pop(path, None)
        if not names:
            return
        folder = Folder(path, names, self.timer())
        folder.index = {name: i for i, name in enumerate(names)}
        self.folders[path] = folder
        while len(self.folders) > MAX_FOLDERS:
            self.folders.popitem(last=False)

    def forget(self, path: str) -> None:
        """Directory ``path`` changed under the mount's hands (or went): no more ahead."""
        self.folders.pop(path, None)

    def _folder(self, path: str) -> Folder | None:
        folder = self.folders.get(path)
        if folder is None:
            return None
        now = self.timer()
        if now - folder.used > self.keep:
            del self.folders[path]
            return None
        folder.used = now
        return folder

    def listed(self, path: str) -> bool:
        """Whether ``path`` is a listed object of a recorded folder (a file or a symlink)."""
        folder = self._folder(parent_of(path))
        return folder is not None and name_of(path) in folder.index

    def wanted(self, path: str, *, start: bool) -> None:
        """A lookup or getattr of ``path``: HEAD ahead the entries after it (``start``: also
        when nothing was sent ahead in its folder yet)."""
        folder = self._folder(parent_of(path))
        if folder is None:
            return
        at = folder.index.get(name_of(path))
        if at is None or (not start and folder.until == 0):
            return
        folder.cursor = max(folder.cursor, at + 1)
        folder.until = max(folder.until, min(len(folder.names), at + 1 + AHEAD))
        if self.nursery is None:
            return
        while folder.workers < WORKERS and folder.workers < folder.until - folder.cursor:
            folder.workers += 1
            self.nursery.start_soon(self._work, folder)

    async def _work(self, folder: Folder) -> None:
        try:
            while folder.cursor < folder.until and self._folder(folder.path) is folder:
                name = folder.names[folder.cursor]
                folder.cursor += 1
                self.sent += 1
                await self.fetch(join(folder.path, name))
        finally:
            folder.workers -= 1


class ListAhead:
    """Listings of subdirectories fetched while a tree walk is still in their parent."""

    def __init__(self, fetch: Callable[[str], Awaitable[None]], enabled: bool) -> None:
        self.fetch = fetch  # list a directory into the cache unless cached; never raises
        self.enabled = enabled
        self.queue: deque[str] = deque()
        self.queued: set[str] = set()
        self.running = 0
        self.nursery: trio.Nursery | None = None
        self.sent = 0  # listings started ahead (tests, bench)

    def subdirs(self, paths: list[str]) -> None:
        """A directory was read: list its first subdirectories ahead."""
        if not self.enabled or self.nursery is None:
            return
        for path in paths[:LIST_AHEAD]:
            if len(self.queue) >= MAX_QUEUED:
                break
            if path not in self.queued:
                self.queue.append(path)
                self.queued.add(path)
        while self.running < min(LISTS_IN_FLIGHT, len(self.queue)):
            self.running += 1
            self.nursery.start_soon(self._work)

    async def _work(self) -> None:
        try:
            while self.queue:
                path = self.queue.popleft()
                try:
                    self.sent += 1
                    await self.fetch(path)
                finally:
                    self.queued.discard(path)
        finally:
            self.running -= 1


class HeadPace:
    """Sizes the mount's HEAD limiter by the throughput it gets: a far server wants many HEADs
    in flight, a near one is slowed by them (each costs the client and server CPU).

    From ``low``, it tries twice as many in flight (up to ``high``) and keeps the larger size
    only when HEADs per second rose by ``GAIN``; otherwise it goes back and tries again after
    ``COOL`` windows. A window is ``2 × size`` HEADs answered while the limiter was full: a
    mount asking for few HEADs tells nothing about the server's pace."""

    GAIN = 1.15
    COOL = 8

    def __init__(
        self, limiter: trio.CapacityLimiter, low: int, high: int, timer: Callable[[], float]
    ) -> None:
        self.limiter = limiter
        self.low, self.high = low, high
        self.timer = timer
        self.base = low  # the size that won so far
        self.base_rate = 0.0
        self.cool = 0
        limiter.total_tokens = low
        self._start = timer()
        self._count = 0
        self._full = True  # the limiter was full at every answer of the window

    def done(self) -> None:
        """A HEAD was answered (or failed)."""
        size = int(self.limiter.total_tokens)
        self._full = self._full and self.limiter.borrowed_tokens >= size - 1
        self._count += 1
        if self._count < 2 * size:
            return
        now = self.timer()
        rate = self._count / max(now - self._start, 1e-6)
        full = self._full
        self._start, self._count, self._full = now, 0, True
        if not full:
            return
        if size > self.base:  # trying more in flight
            if rate >= self.base_rate * self.GAIN:
                self.base, self.base_rate = size, rate
                self._grow()
            else:
                self.limiter.total_tokens = self.base
                self.cool = self.COOL
            return
        self.base_rate = rate
        if self.cool > 0:
            self.cool -= 1
        else:
            self._grow()

    def _grow(self) -> None:
        if self.base < self.high:
            self.limiter.total_tokens = min(self.high, self.base * 2)
