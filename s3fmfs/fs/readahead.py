"""Read-ahead for one open file: blocks of ranged GETs fetched ahead of a sequential reader.

Invariants:
- A handle's blocks cover one contiguous range ``[front, next)`` of the object; a read inside
  (or just after) it is *sequential*, anything else is a *seek*: every block is dropped, the
  fetches in flight are cancelled (their cancel scopes) and the window falls back to
  ``min_window``. ``close`` (release) does the same.
- While reads are sequential, blocks are scheduled up to ``window`` bytes ahead of the reader,
  at most ``max_inflight`` fetches in flight at once, each at most ``part_size`` long; the
  window doubles (up to ``max_window``) each time the reader leaves a block behind. A first
  read, or the first after a seek, fetches one ``min_window`` block and nothing ahead.
- Memory: every block takes its length from the mount's ``ReadBudget`` when scheduled and
  gives it back when dropped. Blocks fetched ahead are scheduled only while the budget has
  room; the block a read is waiting for is always fetched (it may take the budget over its
  limit, by at most what the readers in progress asked for), so a reader never waits for
  another handle's memory.
- Fetches ahead run as tasks of the core's nursery and never raise out of it: an error is kept
  on its block and raised by the read that needs that block (the block is then dropped, so the
  next read retries). Without a nursery (a core driven directly by tests) nothing is fetched
  ahead: a read fetches its own block.
- ``version`` (the file's content version: it was written here) changes → everything dropped.

Concurrency: all state lives on the trio thread; reads of one handle may interleave at every
``await`` (the kernel sends several at once), so a read re-checks its blocks after waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

log = logging.getLogger("s3fmfs.fs")

#: fetch(start, length) → up to ``length`` bytes from ``start`` (fewer only at the end).
Fetch = Callable[[int, int], Awaitable[bytes]]

MIN_WINDOW = 1 << 20
MAX_WINDOW = 64 << 20
PART_SIZE = 8 << 20
#: A read this far behind the reader's position, or ahead of the blocks, is still sequential
#: (the kernel's concurrent reads arrive slightly out of order).
SLACK = 1 << 20


class ReadBudget:
    """The bytes all handles' read-ahead blocks may hold at once (``readahead_mb=``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if there is room."""
        if self.used + size > self.limit:
            return False
        self.take(size)
        return True

    def take(self, size: int) -> None:
        """Take ``size`` bytes, over the limit if need be (a read waits for them)."""
        self.used += size
        self.peak = max(self.peak, self.used)

    def give(self, size: int) -> None:
        self.used -= size


@dataclass(eq=False)
class _Block:
    start: int
    end: int  # exclusive; what was asked for (the data may stop short at the object's end)
    data: bytes = b""
    error: Exception | None = None
    cancelled: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def eof(self) -> bool:
        return self.done.is_set() and self.start + len(self.data) < self.end


class ReadAhead:
    """The blocks fetched for one handle, and the window of the next ones."""

    def __init__(
        self,
        budget: ReadBudget | None = None,
        nursery: trio.Nursery | None = None,
        *,
        min_window: int = MIN_WINDOW,
        max_window: int = MAX_WINDOW,
        part_size: int = PART_SIZE,
        max_inflight: int = 4,
    ) -> None:
        self.budget = budget or ReadBudget(max_window)
        self.nursery = nursery
        self.min_window = min_window
        self.max_window = max(min_window, min(max_window, self.budget.limit))
        self.part_size = max(min_window, part_size)
        self.max_inflight = max(1, max_inflight)
        self.window = min_window
        self.version = -1
        self._blocks: list[_Block] = []
        self._next = 0  # end of the scheduled range
        self._pos: int | None = None  # end of the furthest read (None: no read yet)
        self._streak = 0  # sequential reads since the last seek
        # statistics (tests, logs)
        self.fetches = 0
        self.seeks = 0
        self.inflight = 0
        self.max_inflight_seen = 0

    # -- bookkeeping --------------------------------------------------------------------------

    def _drop(self, block: _Block) -> None:
        if not block.done.is_set():
            block.cancelled = True
            block.scope.cancel()
        self.budget.give(block.end - block.start)

    def _drop_all(self) -> None:
        for block in self._blocks:
            self._drop(block)
        self._blocks.clear()

    def reset(self, version: int) -> None:
        """Forget everything (the content changed)."""
        self.version = version
        self._drop_all()
        self._pos = None
        self._streak = 0
        self.window = self.min_window

    def close(self) -> None:
        """The handle is released: cancel what is in flight, give the memory back."""
        self._drop_all()

    @property
    def held(self) -> int:
        """Bytes this handle's blocks take from the budget."""
        return sum(b.end - b.start for b in self._blocks)

    def _seek(self, offset: int) -> None:
        if self._pos is not None:
            self.seeks += 1
        self._drop_all()
        self._next = offset
        self._pos = None
        self._streak = 0
        self.window = self.min_window

    def _schedule(self, length: int, fetch: Fetch, *, forced: bool) -> _Block | None:
        """A block of ``length`` bytes at ``_next``; None when the budget has no room."""
        if forced:
            self.budget.take(length)
        elif not self.budget.try_take(length):
            return None
        block = _Block(self._next, self._next + length)
        self._blocks.append(block)
        self._next = block.end
        self.fetches += 1
        if self.nursery is not None:
            self.nursery.start_soon(self._run, block, fetch)
        return block

    async def _run(self, block: _Block, fetch: Fetch) -> None:
        """Fetch one block; never raises (the error waits on the block for a reader)."""
        self.inflight += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        finished = False
        try:
            with block.scope:
                try:
                    block.data = await fetch(block.start, block.end - block.start)
                except Exception as exc:
                    block.error = exc
                finished = True
        finally:
            self.inflight -= 1
            block.cancelled = block.cancelled or not finished
            block.done.set()

    def _fetching(self) -> int:
        return sum(1 for b in self._blocks if not b.done.is_set())

    # -- reading ------------------------------------------------------------------------------

    async def read(
        self, offset: int, size: int, file_size: int | None, version: int, fetch: Fetch
    ) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end); ``file_size`` (if known) bounds
        the fetches."""
        if version != self.version:
            self.reset(version)
        end = offset + size if file_size is None else min(offset + size, file_size)
        if end <= offset:
            return b""
        front = self._blocks[0].start if self._blocks else self._next
        pos = self._pos
        sequential = (
            pos is not None
            and max(0, min(front, pos) - SLACK) <= offset <= max(self._next, pos) + SLACK
        )
        if not sequential:
            self._seek(offset)
        elif offset < front:
            # behind what is kept (a late read of the kernel's): fetch it alone
            return await fetch(offset, end - offset)
        else:
            self._streak += 1
        self._pos = max(self._pos or 0, end)
        limit = file_size if file_size is not None else 1 << 62
        # the blocks this read needs, whatever the budget says
        mine: list[_Block] = []
        while self._next < end:
            length = max(end - self._next, min(self.window, self.part_size))
            if self.budget.used + length > self.budget.limit:  # no room: only what is needed
                length = max(end - self._next, self.min_window)
            block = self._schedule(min(length, max(limit - self._next, 1)), fetch, forced=True)
            assert block is not None
            mine.append(block)
        # and, while reads are sequential, the window ahead
        if self._streak and self.nursery is not None:
            target = min(end + self.window, limit)
            while self._next < target and self._fetching() < self.max_inflight:
                length = min(self.window, self.part_size, limit - self._next)
                if self._schedule(length, fetch, forced=False) is None:
                    break
        if self.nursery is None:
            for block in mine:
                await self._run(block, fetch)
        return await self._collect(offset, end, fetch)

    async def _collect(self, offset: int, end: int, fetch: Fetch) -> bytes:
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            block = next((b for b in self._blocks if b.start <= pos < b.end), None)
            if block is None:  # dropped meanwhile (another read seeked): fetch the rest alone
                parts.append(await fetch(pos, end - pos))
                break
            await block.done.wait()
            if block.cancelled or block.error is not None:
                self._cut(block)  # the next read fetches it again
                if block.error is not None:
                    raise block.error
                continue  # cancelled while we waited: look again
            chunk = block.data[pos - block.start : end - block.start]
            parts.append(chunk)
            pos += len(chunk)
            if block.eof and pos >= block.start + len(block.data):
                break  # the object ends here
        self._leave_behind()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _cut(self, block: _Block) -> None:
        """Drop ``block`` and every block after it (the range stays contiguous)."""
        if block not in self._blocks:
            return
        index = self._blocks.index(block)
        for dropped in self._blocks[index:]:
            self._drop(dropped)
        del self._blocks[index:]
        self._next = block.start

    def _leave_behind(self) -> None:
        """Drop the blocks the reader has passed (keeping ``SLACK`` behind it); each one the
        reader left grows the window."""
        if self._pos is None:
            return
        while self._blocks and self._blocks[0].end <= self._pos - SLACK:
            block = self._blocks.pop(0)
            self._drop(block)
            self.window = min(self.window * 2, self.max_window)
