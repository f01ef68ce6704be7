"""The metadata caches: attributes, directory listings and negative lookups, each a TTLCache,
and the answers of HEADs sent ahead (``prefetch``).

Invariants:
- Keys are paths (see ``keys``); values are immutable ``Attr`` or a listing this module owns.
- Every change the mount makes updates or drops the entries it affects before the operation
  returns (``note_*``/``forget_*``), so the mount sees its own changes at once; changes made
  behind its back show once an entry expires: after ``stat_ttl``, ``dir_ttl``, ``neg_ttl``.
- A TTL of 0 disables that cache (nothing is stored).
- Answers HEADed ahead (``store_ahead``) wait ``AHEAD_FRESH`` seconds at most for their first
  use, then serve ``AHEAD_GRACE`` seconds more (the kernel's lookup and getattr of one
  ``stat``; a symlink's second lookup), whatever ``stat_ttl`` (with 0 too: they stand for
  what a readdirplus answer would have carried); so a change behind the mount shows within
  ``max(stat_ttl, AHEAD_GRACE)`` of a use. At most ``MAX_AHEAD`` of them (the oldest go
  first); every change the mount makes drops those it affects, like the other caches.
- Small objects' bodies fetched instead of HEADs (``bodies``) are dropped with the answers
  sent ahead: by every change the mount makes to their paths, and by ``expire``.
- A listing keeps the complete attributes of an entry it shows unchanged (same ETag; a listed
  object may be a symlink or a directory in an older form: the HEAD told).
- The timer is injectable (``time.monotonic`` by default): tests expire entries without
  sleeping. All access happens on the trio thread; no locking needed.
- Memory: each cache is bounded (``MAX_*`` entries). A TTLCache drops an expired entry only when
  it is touched or ``expire()`` runs, so ``expire`` (the core's housekeeping, every few
  seconds) drops them all, and replaces a cache left empty after holding many entries by a new
  one (a dict never shrinks its table).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from typing import TypeVar

from cachetools import Cache, TTLCache

from .attrs import Attr, Kind
from .bodies import Bodies
from .keys import is_under, name_of, parent_of

K = TypeVar("K")
V = TypeVar("V")

MAX_ATTRS = 200_000
MAX_DIRS = 10_000
MAX_NEGATIVE = 100_000
#: Answers HEADed ahead kept at once; seconds one waits for its first use, and serves after.
MAX_AHEAD = 20_000
AHEAD_FRESH = 5.0
AHEAD_GRACE = 0.5
#: A cache emptied by ``expire`` after holding at least this many entries is made anew.
RENEW_AFTER = 1_000

#: A directory listing: name → attributes from the listing (``complete`` False until HEADed).
Listing = dict[str, Attr]


class _Disabled(MutableMapping[K, V]):
    """A cache of TTL 0: forgets everything at once."""

    def __getitem__(self, key: K) -> V:
        raise KeyError(key)

    def __setitem__(self, key: K, value: V) -> None:
        pass

    def __delitem__(self, key: K) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[K]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _stale(now: float, arrived: float, used: float | None) -> bool:
    """Whether an answer HEADed ahead no longer serves."""
    if used is None:
        return now - arrived > AHEAD_FRESH
    return now - used > AHEAD_GRACE


def _make(maxsize: int, ttl: float, timer: Callable[[], float]) -> MutableMapping[str, V]:
    if ttl <= 0:
        return _Disabled()
    return TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)


def _held(cache: MutableMapping[str, V]) -> int:
    """Entries held, expired ones included (a TTLCache's ``len`` drops them first)."""
    return Cache.__len__(cache) if isinstance(cache, TTLCache) else 0


def _expire(cache: MutableMapping[str, V]) -> int:
    """Drop the expired entries of ``cache``; how many went."""
    if not isinstance(cache, TTLCache):
        return 0
    held = _held(cache)
    cache.expire()
    return held - _held(cache)


class MetadataCache:
    """The three caches and the rules to keep them true to the mount's own changes."""

    def __init__(
        self,
        stat_ttl: float,
        dir_ttl: float,
        neg_ttl: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stat_ttl = stat_ttl
        self.dir_ttl = dir_ttl
        self.neg_ttl = neg_ttl
        self.attrs: MutableMapping[str, Attr] = _make(MAX_ATTRS, stat_ttl, timer)
        self.dirs: MutableMapping[str, Listing] = _make(MAX_DIRS, dir_ttl, timer)
        self.negative: MutableMapping[str, bool] = _make(MAX_NEGATIVE, neg_ttl, timer)
        #: path → (arrival, first use or None, attributes) of HEADs sent ahead of their getattrs
        self.ahead: dict[str, tuple[float, float | None, Attr]] = {}
        #: small objects' bodies fetched instead of HEADs (``bodies``), for the read after
        self.bodies = Bodies(timer=timer)
        self._timer = self.timer = timer
        self._peaks = [0, 0, 0]  # the most entries each cache held since it was made
        #: reads of each cache that found an entry, and that did not (``s3fmfs status``)
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def expire(self) -> int:
        """Drop every expired entry (a TTLCache keeps them until touched otherwise); how many
        went. Called periodically by the core's housekeeping."""
        now = self._timer()
        stale = [p for p, (t, used, _) in self.ahead.items() if _stale(now, t, used)]
        for p in stale:
            del self.ahead[p]
        dropped = len(stale) + self.bodies.expire()
        if not self.ahead:
            self.ahead = {}  # a dict never shrinks its table
        kinds = [
            ("attrs", MAX_ATTRS, self.stat_ttl),
            ("dirs", MAX_DIRS, self.dir_ttl),
            ("negative", MAX_NEGATIVE, self.neg_ttl),
        ]
        for index, (name, maxsize, ttl) in enumerate(kinds):
            cache: MutableMapping[str, object] = getattr(self, name)
            peak = max(self._peaks[index], _held(cache))
            dropped += _expire(cache)
            if peak >= RENEW_AFTER and _held(cache) == 0:
                setattr(self, name, _make(maxsize, ttl, self._timer))
                peak = 0
            self._peaks[index] = peak
        return dropped

    def stats(self) -> dict[str, dict[str, int]]:
        """Hits and misses of each cache since the mount started."""
        names = ("attributes", "listings", "negative")
        return {n: {"hits": self.hits[n], "misses": self.misses[n]} for n in names}

    # -- reads -----------------------------------------------------------------------------

    def attr(self, path: str) -> Attr | None:
        """Cached attributes of ``path``, complete or from a listing."""
        found = self.attrs.get(path)
        (self.hits if found is not None else self.misses)["attributes"] += 1
        return found

    def ahead_attr(self, path: str) -> Attr | None:
        """The attributes a HEAD sent ahead found for ``path``, while fresh (a first use
        starts its grace)."""
        found = self.ahead.get(path)
        if found is None:
            return None
        arrived, used, attr = found
        now = self._timer()
        if _stale(now, arrived, used):
            del self.ahead[path]
            return None
        if used is None:
            self.ahead[path] = (arrived, now, attr)
        return attr

    def store_ahead(self, path: str, attr: Attr, *, used: bool = False) -> None:
        """What a HEAD found for ``path``: sent ahead (``used`` False), or for a lookup whose
        kernel asks again at once (``used``: only the grace). Also kept as ``store_attr``."""
        if len(self.ahead) >= MAX_AHEAD:
            del self.ahead[next(iter(self.ahead))]
        now = self._timer()
        self.ahead[path] = (now, now if used else None, attr)
        self.store_attr(path, attr)

    def listing(self, path: str) -> Listing | None:
        """The cached listing of directory ``path``."""
        found = self.dirs.get(path)
        (self.hits if found is not None else self.misses)["listings"] += 1
        return found

    def is_missing(self, path: str) -> bool:
        """Whether ``path`` is known not to exist (negative cache or a fresh parent listing)."""
        if self.negative.get(path, False):
            self.hits["negative"] += 1
            return True
        if path == "":
            return False
        parent = self.dirs.get(parent_of(path))
        missing = parent is not None and name_of(path) not in parent
        (self.hits if missing else self.misses)["negative"] += 1
        return missing

    # -- what lookups and listings learned -------------------------------------------------

    def store_attr(self, path: str, attr: Attr) -> None:
        """Attributes found for ``path`` (it exists)."""
        self.attrs[path] = attr
        self.negative.pop(path, None)

    def store_missing(self, path: str) -> None:
        """``path`` was found not to exist."""
        self.ahead.pop(path, None)
        self.bodies.drop(path)
        self.negative[path] = True
        self.attrs.pop(path, None)

    def store_listing(self, path: str, listing: Listing) -> None:
        """A fresh listing of directory ``path``; keeps complete attributes of unchanged
        entries (same ETag) and caches the others as they are."""
        self.dirs[path] = listing
        prefix = f"{path}/" if path else ""
        for name, attr in listing.items():
            child = prefix + name
            self.negative.pop(child, None)
            known = self.attrs.get(child)
            if (
                known is not None
                and known.complete
                and (known.kind is attr.kind or attr.kind is Kind.FILE)  # symlink, older form
                and known.etag == attr.etag
            ):
                continue
            self.attrs[child] = attr

    # -- the mount's own changes -----------------------------------------------------------

    def note_exists(self, path: str, attr: Attr) -> None:
        """The mount created or changed ``path``: cache it, add it to its parent's listing."""
        self.ahead.pop(path, None)
        self.bodies.drop(path)
        self.store_attr(path, attr)
        if path == "":
            return
        parent = self.dirs.get(parent_of(path))
        if parent is not None:
            parent[name_of(path)] = attr

    def note_removed(self, path: str) -> None:
        """The mount removed ``path`` (and everything under it)."""
        self.forget_tree(path)
        if path == "":
            return
        self.negative[path] = True
        parent = self.dirs.get(parent_of(path))
        if parent is not None:
            parent.pop(name_of(path), None)

    def forget_tree(self, path: str) -> None:
        """Drop everything cached at or under ``path`` (renames, failures)."""
        self.bodies.drop_tree(path)
        for cache in (self.attrs, self.dirs, self.negative, self.ahead):
            doomed = [p for p in list(cache.keys()) if p == path or is_under(p, path)]
            for p in doomed:
                cache.pop(p, None)

    def clear(self) -> None:
        """Forget everything."""
        self.attrs.clear()
        self.ahead.clear()
        self.bodies.clear()
        self.dirs.clear()
        self.negative.clear()
