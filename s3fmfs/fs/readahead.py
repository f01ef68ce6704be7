"""Read-ahead for one open file: streamed ranged GETs ahead of a sequential reader.

Invariants:
- A handle's blocks cover one contiguous range ``[front, next)`` of the object; a read inside
  (or just after) it is *sequential*, anything else is a *seek*: every block is dropped, the
  GETs in flight are cancelled (their cancel scopes) and the window falls back to
  ``min_window``. ``close`` (release) does the same.
- While reads are sequential, blocks are requested up to ``window`` bytes ahead of the reader,
  at most ``max_inflight`` GETs in flight at once, each at most ``part_size`` long; the window
  doubles (up to ``max_window``: the budget plus one part, at most ``MAX_WINDOW``) each time
  the reader leaves a block behind. A first read, or the first after a seek, fetches one
  ``min_window`` block and nothing ahead; except the handle's first read near the start
  (before ``SLACK``: the kernel's concurrent reads may arrive out of order) of an object of at
  most ``whole_object`` bytes (``WHOLE_OBJECT``, within the budget): one block, the whole
  object, so a small file costs one GET however it is read (``cat``, ``grep``).
- A block fills chunk by chunk as its GET streams in; a read waits only for the bytes it
  needs, not for the whole block. Chunks are kept as they arrived (never joined into a block);
  a read copies out only its own bytes (none when it is exactly one chunk).
- Memory: the mount's ``ReadBudget`` counts the bytes held, all handles together: a chunk is
  counted when it arrives and given back when the reader has passed it (by ``SLACK``, and
  past what every read in progress still needs). While the budget is full a GET ahead stops
  reading its socket (TCP then holds the rest at the server, outside this process) until
  there is room again; a GET a read is waiting for never stops, so a reader never waits for
  another handle's memory, and the budget is exceeded by at most one chunk per GET in flight
  plus what the reads in progress asked for. A GET stopped for ``PAUSE_LIMIT`` gives its
  connection up: its block ends where its bytes stop (the blocks after it are dropped) and a
  later read fetches on from there.
- GETs run as tasks of the core's nursery and never raise out of it: an error is kept on its
  block, after the bytes that did arrive, and raised by every read that needs a byte past
  them; the first such read cuts the block there (and drops the blocks after it), so the next
  read fetches the rest again. Without a nursery (a core driven directly by tests) nothing is
  fetched ahead: a read fetches its own block.
- ``version`` (the file's content version: it was written here) changes → everything dropped.

Concurrency: all state lives on the trio thread; reads of one handle may interleave at every
``await`` (the kernel sends several at once), so a read re-checks its blocks after waiting.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("s3fmfs.fs")

#: Takes a GET's bytes as they arrive, in order; the GET reads no further until it returns.
Sink = Callable[[bytes], Awaitable[object]]
#: stream(start, length, sink): GET up to ``length`` bytes from ``start`` into ``sink`` (fewer
#: only at the end of the object); returns once they have all been handed over.
Stream = Callable[[int, int, Sink], Awaitable[None]]

MIN_WINDOW = 1 << 20
MAX_WINDOW = 64 << 20
#: Objects up to this size come in one GET when a handle's first read is near the start. Whoever
#: starts at 0 nearly always reads on to the end (cat, grep, cp, compilers), and a GET costs a
#: round trip whatever its length: a 1-4 MiB file in 1 MiB windows is 2-4 GETs, 2-3 round trips
#: apart. A reader that stops early wastes at most 4 MiB of transfer (about 30 ms at 1 Gb/s, a
#: few round trips of a distant service), and the block is held within the ``ReadBudget`` like
#: any read-ahead (past the read's own bytes it waits for room).
WHOLE_OBJECT = 4 << 20
#: Blocks are this long at most. A GET costs the daemon and the service a request's work
#: whatever its length, so parts are long: they cost no memory until their bytes arrive (the
#: window asks for one part more than the budget holds, see ``ReadAhead.max_window``). 16 MiB
#: rather than more keeps two or three GETs in flight, which a distant service needs.
RANGE_SIZE = 16 << 20
#: A read this far behind the reader's position, or ahead of the blocks, is still sequential
#: (the kernel's concurrent reads arrive slightly out of order); chunks this far behind the
#: furthest read are kept for such late reads.
SLACK = 1 << 20
#: Seconds a GET ahead may wait for room before it gives its connection up (a reader that
#: stopped reading must not hold connections the rest of the mount needs).
PAUSE_LIMIT = 5.0


class ReadBudget:
    """The bytes all handles' read-ahead may hold at once (``readahead_mb=``), and the GETs
    waiting for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: list[trio.Event] = []

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        """Count ``size`` bytes that arrived (over the limit if need be)."""
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def give(self, size: int) -> None:
        self.used -= size
        if self._waiting and self.used < self.limit:
            for event in self._waiting:
                event.set()
            self._waiting.clear()

    async def wait_for_room(self, event: trio.Event) -> None:
        """Until there is room, or ``event`` is set by someone else."""
        self._waiting.append(event)
        try:
            await event.wait()
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(event)


class _GaveUp(Exception):
    """A GET ahead waited too long for room (raised by its sink, caught by its task)."""


class _Block:
    """``[start, end)`` of the object as it streams in: chunks ``[base, filled)`` are held
    (those before ``base`` were released)."""

    __slots__ = (
        "base",
        "cancelled",
        "chunks",
        "dropped",
        "end",
        "error",
        "filled",
        "finished",
        "first",
        "offsets",
        "resume",
        "scope",
        "start",
        "urgent",
        "waiters",
    )

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end  # exclusive; what was asked for (the data may stop short at the end)
        self.base = start
        self.filled = start
        self.chunks: list[bytes] = []  # released ones are b""
        self.offsets: list[int] = []  # object offset of each chunk
        self.first = 0  # index of the first chunk still held
        self.error: Exception | None = None
        self.cancelled = False  # its GET was cancelled before the end
        self.dropped = False  # no longer one of the handle's blocks (chunks gone)
        self.finished = False  # its GET is over
        self.urgent = False  # fetched by the read itself (no nursery): never waits for room
        self.scope = trio.CancelScope()
        self.waiters: list[tuple[int, trio.Event]] = []  # (offset needed, wake-up)
        self.resume: trio.Event | None = None  # set: the GET waiting for room goes on

    @property
    def eof(self) -> bool:
        """The object ends inside this block (its GET finished short, without an error)."""
        return (
            self.finished and not self.cancelled and self.error is None and self.filled < self.end
        )

    def put(self, chunk: bytes) -> int:
        """Keep a chunk, wake the reads it satisfies; the bytes kept."""
        if self.dropped:
            return 0  # the memory is no longer ours to hold
        room = self.end - self.filled
        if len(chunk) > room:
            chunk = chunk[:room]
        if not chunk:
            return 0
        self.chunks.append(chunk)
        self.offsets.append(self.filled)
        self.filled += len(chunk)
        if self.waiters:
            filled = self.filled
            waiting = []
            for need, event in self.waiters:
                if need <= filled:
                    event.set()
                else:
                    waiting.append((need, event))
            self.waiters = waiting
        return len(chunk)

    def finish(self) -> None:
        """The GET is over (done, failed or cancelled): wake every read waiting."""
        self.finished = True
        for _, event in self.waiters:
            event.set()
        self.waiters = []

    async def wait_for(self, need: int) -> None:
        """Until the block holds bytes up to ``need``, or its GET is over."""
        if self.filled >= need or self.finished:
            return
        event = trio.Event()
        waiter = (need, event)
        self.waiters.append(waiter)
        if self.resume is not None:
            self.resume.set()  # a read waits for this GET: it may not wait for room
        try:
            await event.wait()
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    def copy_out(self, pos: int, upto: int, pieces: list[bytes | memoryview]) -> None:
        """Append the held bytes ``[pos, upto)`` to ``pieces`` (views: no copy yet)."""
        i = bisect.bisect_right(self.offsets, pos, self.first) - 1
        while pos < upto:
            chunk = self.chunks[i]
            here = self.offsets[i]
            a = pos - here
            b = min(len(chunk), upto - here)
            pieces.append(chunk if a == 0 and b == len(chunk) else memoryview(chunk)[a:b])
            pos = here + b
            i += 1

    def release(self, point: int) -> int:
        """Free the chunks wholly before ``point``; the bytes freed."""
        i = self.first
        chunks, offsets = self.chunks, self.offsets
        base = self.base
        while i < len(chunks) and offsets[i] + len(chunks[i]) <= point:
            base = offsets[i] + len(chunks[i])
            chunks[i] = b""
            i += 1
        self.first = i
        freed = base - self.base
        self.base = base
        return freed


class ReadAhead:
    """The blocks fetched for one handle, and the window of the next ones."""

    def __init__(
        self,
        budget: ReadBudget | None = None,
        nursery: trio.Nursery | None = None,
        *,
        min_window: int = MIN_WINDOW,
        max_window: int = MAX_WINDOW,
        part_size: int = RANGE_SIZE,
        max_inflight: int = 4,
        whole_object: int = WHOLE_OBJECT,
    ) -> None:
        self.budget = budget or ReadBudget(max_window)
        self.nursery = nursery
        self.min_window = min_window
        self.part_size = max(min_window, part_size)
        # what is held stays within the budget; one part more is requested, so that the next
        # GET has started (and waits, its bytes in the socket) when the reader frees room
        ahead = self.budget.limit + self.part_size if self.budget.limit > 0 else 0
        self.max_window = max(min_window, min(max_window, ahead))
        self.max_inflight = max(1, max_inflight)
        # never more than read-ahead may hold (readahead_mb=0: only the first window)
        self.whole_object = max(min_window, min(whole_object, self.budget.limit))
        self.window = min_window
        self.version = -1
        self._blocks: list[_Block] = []
        self._next = 0  # end of the requested range
        self._pos: int | None = None  # end of the furthest read (None: no read yet)
        self._streak = 0  # sequential reads since the last seek
        self._reading: dict[int, int] = {}  # reads in progress → the offset each still needs
        self._ids = itertools.count()
        # statistics (tests, logs)
        self.fetches = 0
        self.seeks = 0
        self.inflight = 0
        self.max_inflight_seen = 0
        self.gave_up = 0

    # -- bookkeeping --------------------------------------------------------------------------

    def _drop(self, block: _Block) -> None:
        if not block.finished and block.filled < block.end:
            block.scope.cancel()  # (a GET whose bytes are all here ends by itself, pooled)
        block.dropped = True
        if block.filled > block.base:
            self.budget.give(block.filled - block.base)
        block.base = block.filled
        block.chunks = []
        block.offsets = []
        block.first = 0

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
    def front(self) -> int:
        """Where the bytes still held begin (what is before was released)."""
        return self._blocks[0].base if self._blocks else self._next

    @property
    def held(self) -> int:
        """Bytes this handle's blocks hold (counted in the budget)."""
        return sum(b.filled - b.base for b in self._blocks)

    def _seek(self, offset: int) -> None:
        if self._pos is not None:
            self.seeks += 1
        self._drop_all()
        self._next = offset
        self._pos = None
        self._streak = 0
        self.window = self.min_window

    def _schedule(self, length: int, stream: Stream) -> _Block:
        """Request a block of ``length`` bytes at ``_next``."""
        block = _Block(self._next, self._next + length)
        self._blocks.append(block)
        self._next = block.end
        self.fetches += 1
        if self.nursery is not None:
            self.nursery.start_soon(self._run, block, stream)
        return block

    async def _run(self, block: _Block, stream: Stream) -> None:
        """Fetch one block; never raises (the error waits on the block for a reader)."""
        self.inflight += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        budget = self.budget

        async def sink(chunk: bytes) -> None:
            kept = block.put(chunk)
            if kept:
                budget.take(kept)
            if budget.full and not block.waiters and not block.urgent:
                await self._wait_for_room(block)

        finished = False
        try:
            with block.scope:
                try:
                    await stream(block.start, block.end - block.start, sink)
                except _GaveUp:
                    self.gave_up += 1
                    self._cut(block)  # a later read fetches on from where its bytes stop
                except Exception as exc:
                    block.error = exc
                finished = True
        finally:
            self.inflight -= 1
            block.cancelled = block.cancelled or not finished
            block.finish()

    async def _wait_for_room(self, block: _Block) -> None:
        """Hold a GET ahead until the budget has room or a read waits for its block; after
        ``PAUSE_LIMIT``, give up (``_GaveUp``)."""
        with trio.move_on_after(PAUSE_LIMIT) as timer:
            while self.budget.full and not block.waiters:
                block.resume = trio.Event()
                try:
                    await self.budget.wait_for_room(block.resume)
                finally:
                    block.resume = None
        if timer.cancelled_caught:
            raise _GaveUp

    def _fetching(self) -> int:
        return sum(1 for b in self._blocks if not b.finished)

    # -- reading ------------------------------------------------------------------------------

    async def read(
        self, offset: int, size: int, file_size: int | None, version: int, stream: Stream
    ) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end); ``file_size`` (if known) bounds
        the fetches."""
        if version != self.version:
            self.reset(version)
        end = offset + size if file_size is None else min(offset + size, file_size)
        if end <= offset:
            return b""
        front = self.front
        pos = self._pos
        sequential = (
            pos is not None
            and max(0, min(front, pos) - SLACK) <= offset <= max(self._next, pos) + SLACK
        )
        if not sequential:
            self._seek(offset)
        elif offset < front:
            # behind what is kept (a late read of the kernel's): fetch it alone
            return await _fetch_alone(stream, offset, end)
        else:
            self._streak += 1
        self._pos = max(self._pos or 0, end)
        limit = file_size if file_size is not None else 1 << 62
        # the blocks this read needs
        mine: list[_Block] = []
        if (
            self.fetches == 0
            and offset < SLACK
            and file_size is not None
            and 0 < file_size <= self.whole_object
        ):
            # a small object: one GET (from 0 also when the kernel's second read came first)
            self._next = 0
            mine.append(self._schedule(file_size, stream))
        while self._next < end:
            length = max(end - self._next, min(self.window, self.part_size))
            mine.append(self._schedule(min(length, max(limit - self._next, 1)), stream))
        # and, while reads are sequential, the window ahead
        if self._streak and self.nursery is not None and self.budget.limit > 0:
            target = min(end + self.window, limit)
            fetching = self._fetching()
            while self._next < target and fetching < self.max_inflight:
                self._schedule(min(self.window, self.part_size, limit - self._next), stream)
                fetching += 1
        if self.nursery is None:
            for block in mine:
                block.urgent = True
                await self._run(block, stream)
        return await self._collect(offset, end, stream)

    async def _collect(self, offset: int, end: int, stream: Stream) -> bytes:
        pieces: list[bytes | memoryview] = []
        pos = offset
        me = next(self._ids)
        self._reading[me] = pos  # what this read still needs is not released under it
        try:
            while pos < end:
                block = next((b for b in self._blocks if b.start <= pos < b.end), None)
                if block is None or pos < block.base:
                    # dropped meanwhile (another read seeked): fetch the rest alone
                    pieces.append(await _fetch_alone(stream, pos, end))
                    break
                need = min(end, block.end)
                await block.wait_for(need)
                if block.dropped:
                    continue  # dropped while we waited (a seek): look again
                upto = min(need, block.filled)
                if upto > pos:
                    block.copy_out(pos, upto, pieces)
                    pos = upto
                    self._reading[me] = pos
                if pos < need:  # the block's GET ended before our bytes
                    if block.eof:
                        break  # the object ends here
                    self._cut(block)  # the next read fetches the rest again
                    if block.error is not None:
                        raise block.error
                    # cancelled from outside: the rest alone
        finally:
            del self._reading[me]
        self._leave_behind()
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)

    def _cut(self, block: _Block) -> None:
        """End the range where the bytes of ``block`` stop: it keeps what arrived, the blocks
        after it are dropped. Once only (later readers of a failed block raise its error
        without cutting what was requested since)."""
        if block.end == block.filled or block not in self._blocks:
            return
        index = self._blocks.index(block)
        for dropped in self._blocks[index + 1 :]:
            self._drop(dropped)
        del self._blocks[index + 1 :]
        block.end = block.filled
        self._next = block.filled

    def _leave_behind(self) -> None:
        """Release the chunks the reader has passed (keeping ``SLACK`` behind it, and what the
        reads in progress still need); each block the reader left grows the window."""
        if self._pos is None:
            return
        point = self._pos - SLACK
        if self._reading:
            point = min(point, min(self._reading.values()))
        while self._blocks:
            block = self._blocks[0]
            freed = block.release(point)
            if freed:
                self.budget.give(freed)
            if block.base < block.end and not (block.eof and block.base >= block.filled):
                break
            self._drop(self._blocks.pop(0))
            self.window = min(self.window * 2, self.max_window)


async def _fetch_alone(stream: Stream, start: int, end: int) -> bytes:
    """``[start, end)`` by a GET of its own, outside the blocks (a late or orphaned read)."""
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await stream(start, end - start, sink)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
