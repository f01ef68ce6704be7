"""Read-ahead for one open file: ranged GETs whose size grows while reads are sequential.

Invariants:
- A read is answered from fetched segments when they cover it; otherwise it waits for a fetch
  in flight that covers its offset (the kernel sends several reads at once), and only then
  fetches itself. So concurrent sequential reads share one GET instead of each making one.
- Fetches start on a ``min_window`` boundary. The window doubles (up to ``max_window``) each
  time a fetch starts near the previous one (within one window: the kernel's reads may arrive
  out of order), and falls back to ``min_window`` on a seek; a fetch always covers the read.
- At most ``keep`` segments are held (memory per handle ≤ keep × max_window).
- ``reset`` (a new content version: the file was written here) drops everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

#: fetch(start, length) → up to ``length`` bytes from ``start`` (fewer only at the end).
Fetch = Callable[[int, int], Awaitable[bytes]]


@dataclass
class _Segment:
    start: int
    data: bytes
    eof: bool  # the object ends where this segment ends

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class _InFlight:
    start: int
    end: int
    done: trio.Event = field(default_factory=trio.Event)


class ReadAhead:
    """Segments fetched for one handle, and the window of the next fetch."""

    def __init__(self, min_window: int, max_window: int, keep: int = 3) -> None:
        self.min_window = min_window
        self.max_window = max_window
        self.keep = keep
        self.window = min_window
        self.version = -1
        self._segments: list[_Segment] = []
        self._inflight: list[_InFlight] = []
        self._last: tuple[int, int] | None = None  # range of the latest fetch
        self.fetches = 0

    def reset(self, version: int) -> None:
        """Forget everything (the content changed)."""
        self.version = version
        self._segments.clear()
        self._last = None
        self.window = self.min_window

    def _gather(self, offset: int, size: int) -> bytes | None:
        """``size`` bytes at ``offset`` from the segments (short at EOF), or None on a gap."""
        parts: list[bytes] = []
        pos, stop = offset, offset + size
        while pos < stop:
            for seg in self._segments:
                if seg.start <= pos < seg.end:
                    chunk = seg.data[pos - seg.start : stop - seg.start]
                    parts.append(chunk)
                    pos += len(chunk)
                    break
            else:
                if any(seg.eof and seg.start <= pos and pos >= seg.end for seg in self._segments):
                    break  # past the end of the object
                return None
        return b"".join(parts)

    def _covering(self, offset: int) -> _InFlight | None:
        for pending in self._inflight:
            if pending.start <= offset < pending.end:
                return pending
        return None

    async def read(
        self, offset: int, size: int, file_size: int | None, version: int, fetch: Fetch
    ) -> bytes:
        """``size`` bytes at ``offset``; ``file_size`` (if known) bounds the fetch."""
        if version != self.version:
            self.reset(version)
        while True:
            data = self._gather(offset, size)
            if data is not None:
                return data
            pending = self._covering(offset)
            if pending is None:
                break
            await pending.done.wait()
            if version != self.version:
                self.reset(version)
        # fetch from the block boundary: reads the kernel sent together but that run out of
        # order then fall into the same fetch
        start = offset - offset % self.min_window
        last = self._last
        sequential = last is not None and last[0] - self.window <= start <= last[1] + self.window
        self.window = min(self.window * 2, self.max_window) if sequential else self.min_window
        length = max(offset + size - start, self.window)
        if file_size is not None and file_size > start:
            length = max(offset + size - start, min(length, file_size - start))
        pending = _InFlight(start, start + length)
        self._inflight.append(pending)
        self._last = (start, start + length)
        self.fetches += 1
        try:
            data = await fetch(start, length)
        finally:
            self._inflight.remove(pending)
            pending.done.set()
        if self.version == version:
            self._segments.append(_Segment(start, data, eof=len(data) < length))
            del self._segments[: -self.keep]
        return data[offset - start : offset - start + size]
