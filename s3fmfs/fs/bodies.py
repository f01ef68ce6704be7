"""Bodies of small objects fetched instead of HEADs, kept briefly for the read that follows.

A listed object of at most ``SMALL`` bytes is asked for by a GET of the whole object rather
than a HEAD (``Namespace.head_file``): the answer carries the same headers (metadata, ETag,
Content-Type, Last-Modified, Content-Length), and its body spares the GET of an open and read
right after (``grep -r``: one request per file instead of a HEAD and a GET).

Invariants:
- A body is kept under its path with the ETag of the answer that brought it: it is exactly
  that version's bytes, and serves only a read of that version (``take`` checks the ETag;
  handles pin the version they read).
- Bytes kept (with those of GETs in flight, ``reserve``) never exceed ``budget``: when a GET
  would not fit, the caller sends a HEAD instead. A body lives ``LIFE`` seconds at most (the
  freshness of an answer sent ahead, ``cache.AHEAD_FRESH``) and goes at its first use
  (``take``); the mount's own changes to a path drop it (``drop``, from the metadata cache's
  ``note_*``/``forget_*``/``store_missing``), and so does ``expire`` (housekeeping).
- All access happens on the trio thread; the timer is injectable (tests).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .keys import is_under

#: Listed objects up to this size are fetched whole instead of HEADed. A GET of 64 KiB costs
#: a server about what a HEAD costs (one request; 64 KiB is half a millisecond at 1 Gb/s) and
#: covers most source, text and configuration files; past it, ``ls -l`` of large files would
#: move bytes nobody may read.
SMALL = 64 << 10
#: Bytes kept at once (bodies and GETs in flight): 128 bodies of 64 KiB, thousands of small
#: ones, enough for the entries HEADed ahead of a reader.
BUDGET = 8 << 20
#: Seconds a body waits for its read (``cache.AHEAD_FRESH``: what it came with is that fresh).
LIFE = 5.0


class Bodies:
    """Small objects' bodies by path, each with its ETag, within a byte budget."""

    def __init__(
        self, budget: int = BUDGET, life: float = LIFE, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = budget
        self.life = life
        self.timer = timer
        self.kept: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()
        self.used = 0  # bytes kept plus bytes reserved for GETs in flight
        self.served = 0  # bodies taken by reads (tests, bench)
        self.missed = 0  # reads that found no body of their version kept (status)

    def reserve(self, size: int) -> bool:
        """Room for a GET of ``size`` bytes (False: send a HEAD instead). Expired bodies go
        first; given back by ``keep`` or ``release``."""
        if self.used + size > self.budget:
            self.expire()
        if self.used + size > self.budget:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        """A reserved GET brought nothing to keep."""
        self.used -= size

    def keep(self, path: str, etag: str, body: bytes, reserved: int) -> None:
        """The body of version ``etag`` of ``path``, fetched within ``reserved`` bytes."""
        self.used -= reserved
        self.drop(path)
        if not etag or not body or self.used + len(body) > self.budget:
            return  # (an empty file's reads send nothing anyway)
        self.kept[path] = (etag, body, self.timer())
        self.used += len(body)

    def take(self, path: str, etag: str) -> bytes | None:
        """The body of version ``etag`` of ``path`` if kept and fresh; it is no longer kept."""
        found = self.kept.get(path)
        if found is None:
            self.missed += 1
            return None
        self.drop(path)
        kept_etag, body, arrived = found
        if kept_etag != etag or self.timer() - arrived > self.life:
            self.missed += 1
            return None
        self.served += 1
        return body

    def drop(self, path: str) -> None:
        found = self.kept.pop(path, None)
        if found is not None:
            self.used -= len(found[1])

    def drop_tree(self, path: str) -> None:
        """Drop the bodies at or under ``path`` (renames, failures)."""
        for p in [p for p in self.kept if p == path or is_under(p, path)]:
            self.drop(p)

    def expire(self) -> int:
        """Drop the bodies past their life; how many went."""
        now = self.timer()
        old = [p for p, (_, _, arrived) in self.kept.items() if now - arrived > self.life]
        for p in old:
            self.drop(p)
        if not self.kept:
            self.kept = OrderedDict()  # a dict never shrinks its table
        return len(old)

    def clear(self) -> None:
        for p in list(self.kept):
            self.drop(p)
