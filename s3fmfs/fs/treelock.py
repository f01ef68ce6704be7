"""Claims on subtrees of the mount's namespace: what makes a directory rename atomic here.

A directory rename copies and deletes every key under the old prefix; anything that writes a
key under it meanwhile (a create, an upload at close, a rename into it) would be left behind.
So every operation that changes the namespace or writes a key holds a *shared* claim on the
paths it names, and a directory rename holds an *exclusive* claim on its old and new paths,
which covers the whole subtree under each.

Invariants:
- An exclusive claim on ``root`` covers ``root`` and every path under it. While it is held no
  shared claim on a covered path is held by anyone: it is taken only once those in flight are
  released, and shared claims asked for meanwhile wait until it is released.
- Writer first: an exclusive claim is registered as soon as it is asked for (when no other
  exclusive claim overlaps it); from then on new shared claims on covered paths wait, so a
  stream of creates cannot starve a rename.
- Two exclusive claims never overlap (one root equal to, under or above the other): the later
  one waits. All the paths of one claim are taken at once, never one by one, so two claims
  cannot each hold part of what the other needs.
- A task asking again for shared paths it already holds is not made to wait (``mknod`` saves
  the file it created; an open that fails releases its handle): an exclusive claim covering
  those paths is still waiting for that task, so nothing under them is moving. Any other
  nesting (a claim taken while holding another on different paths) is not allowed: it could
  wait for a rename that waits for it.
- A claim names paths, not inodes: a waiter must re-read the paths it meant (its parent may
  have moved) once it holds them, and retry when they changed (``Namespace.claim``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from .keys import is_under


def _covers(root: str, path: str) -> bool:
    return path == root or is_under(path, root)


class TreeLock:
    """Shared claims on paths, exclusive claims on subtrees (all on the trio thread)."""

    def __init__(self) -> None:
        self._shared: Counter[str] = Counter()  # path → shared claims held on it
        self._exclusive: list[tuple[str, ...]] = []  # roots of the exclusive claims asked for
        self._held: dict[trio.lowlevel.Task, Counter[str]] = {}  # task → its shared paths
        self._changed = trio.Event()
        self.waiting = 0  # claims asked for and not held yet (for tests and debugging)

    async def _wait(self) -> None:
        self.waiting += 1
        try:
            await self._changed.wait()
        finally:
            self.waiting -= 1

    def _notify(self) -> None:
        """Wake every waiter to check again (most releases have none: nothing to do)."""
        if self.waiting:
            self._changed.set()
            self._changed = trio.Event()

    def _blocked(self, paths: Iterable[str]) -> bool:
        return any(_covers(r, p) for roots in self._exclusive for r in roots for p in paths)

    def _overlaps(self, roots: tuple[str, ...]) -> bool:
        pairs = ((a, b) for other in self._exclusive for a in other for b in roots)
        return any(_covers(a, b) or _covers(b, a) for a, b in pairs)

    def _shared_under(self, roots: tuple[str, ...]) -> bool:
        return any(_covers(r, p) for p in self._shared for r in roots)

    def moving(self, path: str) -> bool:
        """Whether an exclusive claim covers ``path`` (asked for or held)."""
        return self._blocked((path,))

    @asynccontextmanager
    async def shared(self, paths: Iterable[str]) -> AsyncIterator[None]:
        """Hold a shared claim on each of ``paths`` (waiting while a rename covers one)."""
        wanted = tuple(paths)
        task = trio.lowlevel.current_task()
        mine = self._held.get(task)
        nested = mine is not None and all(mine[p] > 0 for p in wanted)
        while not nested and self._blocked(wanted):
            await self._wait()
        held = self._held.setdefault(task, Counter())
        for p in wanted:
            self._shared[p] += 1
            held[p] += 1
        try:
            yield
        finally:
            for p in wanted:
                self._shared[p] -= 1
                if self._shared[p] <= 0:
                    del self._shared[p]
                held[p] -= 1
                if held[p] <= 0:
                    del held[p]
            if not held:
                self._held.pop(task, None)
            self._notify()

    @asynccontextmanager
    async def exclusive(self, roots: Iterable[str]) -> AsyncIterator[None]:
        """Hold the subtrees under ``roots``: wait for overlapping exclusive claims, then
        (already registered, so new shared claims wait) for the shared ones in flight."""
        wanted = tuple(roots)
        while self._overlaps(wanted):
            await self._wait()
        self._exclusive.append(wanted)
        try:
            while self._shared_under(wanted):
                await self._wait()
            yield
        finally:
            self._exclusive.remove(wanted)
            self._notify()
