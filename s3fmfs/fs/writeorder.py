"""Reads never overtake writes received before them.

Why: the kernel may send a READ of a file while a WRITE it sent earlier is still being served
(another thread reads, or the page cache dropped the pages the write had just filled). The
daemon serves both at once: the WRITE waits for the inode's lock (an upload may hold it) or
for its worker thread, the READ needs neither. Answered first, the READ would put the old
bytes into the kernel's page cache, where they stay: every later read, through any
descriptor, returns them although the write succeeded.

Invariants:
- Every write and truncation takes a ticket before its first ``await`` and gives it back once
  its bytes are in the buffer, or when it fails.
- A read first waits until no ticket its inode handed out before the read arrived is still
  out; writes received after it never delay it, and reads of an inode with no write in
  flight never wait.
- State exists only for inodes with writes in flight: nothing grows with the number of files.
- Only the trio thread uses it (no locking of its own).
"""

from __future__ import annotations

import trio


class WriteOrder:
    """The writes in flight of a mount's inodes, in the order the kernel sent them."""

    def __init__(self) -> None:
        self._issued = 0
        self._pending: dict[int, set[int]] = {}  # inode → tickets of its writes in flight
        self._changed: dict[int, trio.Event] = {}  # inode → set when one of them ends

    def begin(self, ino: int) -> int:
        """A write of ``ino`` arrived: its ticket (reads arriving from now on wait for it)."""
        ticket = self._issued
        self._issued += 1
        self._pending.setdefault(ino, set()).add(ticket)
        return ticket

    def end(self, ino: int, ticket: int) -> None:
        """The write is applied, or failed (idempotent)."""
        pending = self._pending.get(ino)
        if pending is None or ticket not in pending:
            return
        pending.discard(ticket)
        if not pending:
            del self._pending[ino]
        event = self._changed.pop(ino, None)
        if event is not None:
            event.set()

    async def wait_earlier(self, ino: int) -> None:
        """Wait until every write of ``ino`` that arrived before this call has ended."""
        horizon = self._issued
        while any(ticket < horizon for ticket in self._pending.get(ino, ())):
            event = self._changed.get(ino)
            if event is None:
                event = self._changed[ino] = trio.Event()
            await event.wait()
