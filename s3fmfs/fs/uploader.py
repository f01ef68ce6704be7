"""Streaming uploads: a file written sequentially goes up as a multipart upload while it is
being written, so that closing it waits only for the last parts.

Invariants:
- One ``StreamingUpload`` per inode being written, created when the file is new or truncated
  to zero (its content is then known from offset 0). Parts are cut from the write buffer as
  soon as it holds a whole part beyond what was handed out (``scheduled``); the multipart
  upload itself is created with the first part, so a file smaller than one part is still one
  PUT at flush, by the core.
- Part ``n`` is ``part_size_for(n, base)`` long: ``base`` for the first parts, doubling every
  ``PARTS_PER_STEP`` parts, at most 5 GiB; 10,000 parts then hold more than 5 TiB.
- At most ``concurrency`` parts are in flight; ``advance`` (called by the writer, under the
  inode's lock) waits while that many are, so a writer faster than the network waits for it
  and ``finish`` waits for at most ``concurrency`` parts plus the tail.
- A write below ``scheduled`` (into a part already handed out), a truncation, a rename or an
  unlink *breaks* the stream: ``abort`` cancels the parts in flight, waits until none reads
  the buffer any more, and aborts the multipart upload. The buffer still holds every byte, so
  the core falls back to uploading the whole file at flush. A failed part breaks it the same
  way (``error``), at the next write or at flush.
- Part bodies are windows of the buffer's file (``WriteBuffer.window``): nothing is copied in
  memory beyond the client's 1 MiB chunks.
- Part tasks run in the core's nursery and never raise out of it; their errors are kept.
- The object's metadata is fixed when the upload is created, before the last write: it carries
  mode, owner and group but no ``mtime``, so the object's LastModified (its completion) is its
  mtime. ``finish`` reports the metadata it was created with; the core rewrites it in place if
  it changed meanwhile (chmod or utimens while writing).

Concurrency: all state lives on the trio thread; the core calls ``advance``, ``finish`` and
``abort`` under the inode's lock, so they never overlap for one upload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from ..client.limits import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from .attrs import META_MTIME, NS
from .store import MultipartStore, PartBody, PutResult, UploadedPart

log = logging.getLogger("s3fmfs.fs")

PARTS_PER_STEP = 625


def part_size_for(number: int, base: int) -> int:
    """The size of part ``number`` (1-based) of a streamed upload."""
    base = max(base, MIN_PART_SIZE)
    return min(MAX_PART_SIZE, base << ((number - 1) // PARTS_PER_STEP))


#: (metadata, content type) of the object, asked for when the upload is created.
Describe = Callable[[], tuple[Mapping[str, str], str | None]]
#: window(start, length) → a part's body.
Window = Callable[[int, int], PartBody]


class StreamingUpload:
    """The multipart upload of one file being written sequentially."""

    def __init__(
        self,
        store: MultipartStore,
        key: str,
        path: str,
        nursery: trio.Nursery,
        *,
        part_size: int,
        concurrency: int,
    ) -> None:
        self.store = store
        self.key = key
        self.path = path  # the file's path when the upload started (a rename breaks it)
        self.nursery = nursery
        self.base = max(part_size, MIN_PART_SIZE)
        self.concurrency = max(1, concurrency)
        self.upload_id: str | None = None
        self.metadata: dict[str, str] = {}  # what the upload was created with (no mtime)
        self.created_ns = 0  # the file's mtime when the upload was created
        self.scheduled = 0  # bytes handed to parts
        self.parts: dict[int, UploadedPart] = {}
        self.error: Exception | None = None
        self.broken = False
        self.inflight = 0
        self._scopes: set[trio.CancelScope] = set()
        self._changed = trio.Event()
        # statistics (tests)
        self.parts_started = 0
        self.max_inflight_seen = 0

    @property
    def next_part(self) -> int:
        return self.parts_started + 1

    def accepts(self, offset: int) -> bool:
        """Whether a write at ``offset`` keeps the stream going."""
        return not self.broken and self.error is None and offset >= self.scheduled

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_below(self, count: int) -> None:
        while self.inflight > count:
            await self._changed.wait()

    async def advance(self, size: int, window: Window, describe: Describe) -> None:
        """The buffer holds ``size`` bytes: start the parts that are whole, then wait while
        ``concurrency`` parts are in flight. Raises what a failed part or the creation
        raised (the stream is then broken; the caller falls back)."""
        while not self.broken and self.error is None:
            length = part_size_for(self.next_part, self.base)
            if size < self.scheduled + length or self.next_part >= MAX_PARTS:
                break
            if self.upload_id is None:
                metadata, content_type = describe()
                self.metadata = {k: v for k, v in metadata.items() if k != META_MTIME}
                mtime = metadata.get(META_MTIME, "0")
                self.created_ns = int(mtime) * NS if mtime.isdigit() else 0
                self.upload_id = await self.store.create_multipart(
                    self.key, self.metadata, content_type
                )
            await self._wait_below(self.concurrency - 1)
            if self.broken or self.error is not None:
                break
            self._start(self.next_part, self.scheduled, length, window)
        if self.error is not None:
            raise self.error

    def _start(self, number: int, start: int, length: int, window: Window) -> None:
        assert self.upload_id is not None
        self.parts_started = number
        self.scheduled = start + length
        self.inflight += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        scope = trio.CancelScope()
        self._scopes.add(scope)
        self.nursery.start_soon(self._part, scope, number, window(start, length), length)

    async def _part(
        self, scope: trio.CancelScope, number: int, body: PartBody, length: int
    ) -> None:
        """Upload one part; never raises (the error is kept for the writer or the flush)."""
        assert self.upload_id is not None
        try:
            with scope:
                try:
                    part = await self.store.upload_part(
                        self.key, self.upload_id, number, body, length
                    )
                    self.parts[number] = part
                except Exception as exc:
                    log.warning("part %d of %r failed: %s", number, self.path, exc)
                    if self.error is None:
                        self.error = exc
        finally:
            self._scopes.discard(scope)
            self.inflight -= 1
            self._notify()

    async def finish(self, size: int, window: Window) -> PutResult:
        """Upload the tail (``scheduled..size``), wait for every part, complete. On failure
        the upload is aborted and the error raised (the caller falls back)."""
        assert self.upload_id is not None
        try:
            if size > self.scheduled or not self.parts_started:
                self._start(self.next_part, self.scheduled, size - self.scheduled, window)
            await self._wait_below(0)
            if self.error is not None:
                raise self.error
            if sorted(self.parts) != list(range(1, self.parts_started + 1)):
                raise RuntimeError("parts missing (cancelled)")  # never complete a short object
            result = await self.store.complete_multipart(
                self.key, self.upload_id, list(self.parts.values())
            )
        except BaseException:
            await self.abort()
            raise
        self.broken = True  # done: nothing more goes to this upload
        self.upload_id = None
        return result

    async def abort(self) -> None:
        """Stop for good: cancel the parts in flight, wait until none reads the buffer, and
        abort the multipart upload (shielded: it runs even when the caller is cancelled)."""
        self.broken = True
        for scope in list(self._scopes):
            scope.cancel()
        with trio.CancelScope(shield=True):
            await self._wait_below(0)
            if self.upload_id is not None:
                upload_id, self.upload_id = self.upload_id, None
                await self.store.abort_multipart(self.key, upload_id)
