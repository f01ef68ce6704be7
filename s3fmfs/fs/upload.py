"""The upload engine: the one way a file's content goes into the bucket.

Invariants:
- One part-size rule (``part_size_for``): part ``n`` is ``base`` bytes (the mount's
  ``part_size_mb``, at least S3's 5 MiB) for the first ``PARTS_PER_STEP`` parts, doubling
  every ``PARTS_PER_STEP`` parts, at most 5 GiB; 10,000 parts then hold more than 5 TiB. The
  same rule cuts a file streamed while written and one uploaded whole at close.
- A file streamed while written (``StreamingUpload``) is one PUT when smaller than one part,
  else a multipart upload; one uploaded whole at close (``Uploader.put``) is one PUT up to
  ``MULTIPART_THRESHOLD``, else a multipart upload. Either way at most
  ``upload_concurrency`` parts in flight, each part a window of the write buffer (nothing is
  copied in memory beyond the client's 1 MiB chunks). A store without multipart
  (``MultipartStore``) gets one PUT whatever the size.
- Every multipart upload is created, completed and aborted through the store's primitives,
  which journal it (``journal.UploadJournal``): a crash's leftovers are aborted by the next
  mount. A failed multipart upload is aborted (shielded from cancellation) before the error
  goes on.
- ``Uploader.save`` is what flush, fsync, release and a rename of an unsaved file call: it
  completes the stream or puts the whole buffer, fixes the metadata of a stream up when it
  changed while the parts went up, and on failure hands the buffer to the recovery folder
  (``recovery.RecoveryFolder.keep``) and raises EIO; on success the key's recovery copy, if
  any, is removed (the bucket holds that data or newer).

Streaming (``StreamingUpload``):
- One per inode being written, created when the file is new, truncated to zero, or empty
  when written to (its content is then known from offset 0). Parts are cut from the write
  buffer as soon as it holds a whole part beyond what was handed out (``scheduled``); the
  multipart upload itself is created with the first part, so a file smaller than one part is
  still one PUT at flush.
- ``advance`` (called by the writer, under the inode's lock) waits while ``concurrency``
  parts are in flight, so a writer faster than the network waits for it and ``finish`` waits
  for at most ``concurrency`` parts plus the tail.
- A write below ``scheduled`` (into a part already handed out), a truncation, a rename or an
  unlink *breaks* the stream: ``abort`` cancels the parts in flight, waits until none reads
  the buffer any more, and aborts the multipart upload. The buffer still holds every byte, so
  the file goes up whole at flush. A failed part breaks it the same way (``error``), at the
  next write or at flush.
- Part tasks run in the core's nursery and never raise out of it; their errors are kept.
- The object's metadata is fixed when the upload is created, before the last write: it carries
  mode, owner and group but no ``mtime``, so the object's LastModified (its completion) is its
  mtime. ``Uploader.finish_stream`` rewrites it in place if it changed meanwhile (chmod or
  utimens while writing).

Progress (``Sent``): every upload counts its bytes sent: parts completed, plus the position of
each body in flight (the client reads a file body in 1 MiB chunks as it sends them; a body of
bytes counts when its request is done). ``Uploader.sending`` maps each inode being saved to its
upload's ``Sent`` (a stream's own while it is written): what ``FsCore.upload_progress`` reads.
A retry reads its body again from the start, so the count may go back: it is what was sent of
the attempts still going, never more than the file.

Concurrency: all state lives on the trio thread; the core calls ``advance``, ``finish`` and
``abort`` under the inode's lock, so they never overlap for one upload.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Iterator, Mapping

import trio

from ..client.limits import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from .attrs import META_MTIME, NS
from .errno_map import FsError
from .recovery import RecoveryFolder
from .settings import FsSettings
from .store import MultipartStore, ObjectStore, PartBody, PutResult, UploadedPart
from .writebuf import WriteBuffer

log = logging.getLogger("s3fmfs.fs")

PARTS_PER_STEP = 625
#: A file uploaded whole goes up in parts above this (a single PUT stops at 5 GiB, and a
#: failed part is cheaper to retry than a whole file).
MULTIPART_THRESHOLD = 64 << 20


def part_size_for(number: int, base: int) -> int:
    """The size of part ``number`` (1-based) of a multipart upload, streamed or whole."""
    base = max(base, MIN_PART_SIZE)
    return min(MAX_PART_SIZE, base << ((number - 1) // PARTS_PER_STEP))


def part_ranges(size: int, base: int) -> Iterator[tuple[int, int, int]]:
    """(number, start, length) of the parts of a ``size``-byte body uploaded whole: cut by
    ``part_size_for``, the last part taking the rest (as a stream's tail does)."""
    number, start = 1, 0
    while start < size:
        length = size - start if number >= MAX_PARTS else part_size_for(number, base)
        length = min(length, size - start)
        yield number, start, length
        number, start = number + 1, start + length


class Sent:
    """Bytes of one upload sent so far: those of requests done, and each body's position."""

    def __init__(self) -> None:
        self.done = 0
        self._bodies: dict[int, object] = {}
        self._next = 0

    def begin(self, body: object) -> int:
        """A request starts reading ``body``: a token for ``end``."""
        self._next += 1
        self._bodies[self._next] = body
        return self._next

    def end(self, token: int, length: int, ok: bool) -> None:
        """The request of ``token`` is done (``ok``: its ``length`` bytes are in the bucket)."""
        self._bodies.pop(token, None)
        if ok:
            self.done += length

    @property
    def bytes(self) -> int:
        flying = 0
        for body in self._bodies.values():
            tell = getattr(body, "tell", None)
            if tell is not None:
                with contextlib.suppress(OSError, ValueError):  # closed: counted at its end
                    flying += int(tell())
        return self.done + flying


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
        self.sent = Sent()  # progress (``FsCore.upload_progress``)
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
        token = self.sent.begin(body)
        ok = False
        try:
            with scope:
                try:
                    part = await self.store.upload_part(
                        self.key, self.upload_id, number, body, length
                    )
                    self.parts[number] = part
                    ok = True
                except Exception as exc:
                    log.warning("part %d of %r failed: %s", number, self.path, exc)
                    if self.error is None:
                        self.error = exc
        finally:
            self.sent.end(token, length, ok)
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


class Uploader:
    """The mount's upload engine: sized and parallelised by its ``FsSettings``
    (``part_size_mb``, ``upload_concurrency``), with the recovery folder for failures."""

    def __init__(self, store: ObjectStore, settings: FsSettings, recovery: RecoveryFolder) -> None:
        self.store = store
        self.part_size = max(settings.part_size_mb << 20, MIN_PART_SIZE)
        self.concurrency = max(1, settings.upload_concurrency)
        self.multipart_threshold = MULTIPART_THRESHOLD
        self.recovery = recovery
        #: inode → bytes sent of its save under way (progress)
        self.sending: dict[int, Sent] = {}

    def stream(self, key: str, path: str, nursery: trio.Nursery | None) -> StreamingUpload | None:
        """A streaming upload of a file about to be written from offset 0 (None without a
        nursery for its parts or a store that can upload parts: it goes up whole)."""
        if nursery is None or not isinstance(self.store, MultipartStore):
            return None
        return StreamingUpload(
            self.store,
            key,
            path,
            nursery,
            part_size=self.part_size,
            concurrency=self.concurrency,
        )

    async def put(
        self,
        key: str,
        buffer: WriteBuffer,
        metadata: Mapping[str, str],
        content_type: str | None,
        sent: Sent | None = None,
    ) -> PutResult:
        """Upload the whole buffer: one PUT up to ``multipart_threshold``, else parts
        (``part_ranges``); their progress counted in ``sent``."""
        store = self.store
        sent = sent or Sent()
        if buffer.size <= self.multipart_threshold or not isinstance(store, MultipartStore):
            source = await buffer.upload_source()
            token = sent.begin(source)
            ok = False
            try:
                result = await store.put(key, source, metadata, content_type)
                ok = True
            finally:
                sent.end(token, buffer.size, ok)
            return result
        upload_id = await store.create_multipart(key, metadata, content_type)
        parts: list[UploadedPart] = []
        limiter = trio.Semaphore(self.concurrency)

        async def one(number: int, start: int, length: int) -> None:
            body = buffer.window(start, length)
            token = sent.begin(body)
            ok = False
            try:
                parts.append(await store.upload_part(key, upload_id, number, body, length))
                ok = True
            finally:
                sent.end(token, length, ok)
                limiter.release()

        try:
            async with trio.open_nursery() as nursery:
                for number, start, length in part_ranges(buffer.size, self.part_size):
                    await limiter.acquire()
                    nursery.start_soon(one, number, start, length)
            return await store.complete_multipart(key, upload_id, parts)
        except BaseException:
            with trio.CancelScope(shield=True):
                await store.abort_multipart(key, upload_id)
            raise

    async def finish_stream(
        self,
        stream: StreamingUpload,
        buffer: WriteBuffer,
        metadata: Mapping[str, str],
        mtime_ns: int,
        content_type: str | None,
    ) -> PutResult | None:
        """Complete a stream; None (it is aborted) when the buffer must go up whole instead:
        nothing streamed yet, or the stream failed. Metadata changed while the parts went up
        (it is fixed at the upload's creation) is rewritten in place."""
        if stream.upload_id is None:
            await stream.abort()
            return None
        try:
            result = await stream.finish(buffer.size, buffer.window)
        except Exception as exc:
            log.warning("streaming upload of %r failed (%s): uploading it whole", stream.path, exc)
            return None
        explicit_mtime = mtime_ns < stream.created_ns  # utimens while writing
        if explicit_mtime or {k: v for k, v in metadata.items() if k != META_MTIME} != (
            stream.metadata
        ):
            result = await self.store.copy(stream.key, stream.key, metadata, content_type)
        return result

    async def save(
        self,
        key: str,
        path: str,
        buffer: WriteBuffer,
        metadata: Mapping[str, str],
        content_type: str | None,
        *,
        mtime_ns: int,
        stamp: tuple[int, int],
        stream: StreamingUpload | None = None,
        kept_as: tuple[str, str] | None = None,
    ) -> PutResult:
        """Put the buffer at ``key`` (completing ``stream`` if it has parts). On failure: the
        buffer's copy in the recovery folder (as ``kept_as``: (key, path), default the
        upload's), then FsError(EIO). ``stamp`` (inode, version) names the content copied."""
        ino = stamp[0]
        try:
            result = None
            if stream is not None:
                self.sending[ino] = stream.sent
                result = await self.finish_stream(stream, buffer, metadata, mtime_ns, content_type)
            if result is None:
                self.sending[ino] = sent = Sent()
                result = await self.put(key, buffer, metadata, content_type, sent)
        except Exception as exc:  # keep the data, log where (error level), then EIO
            keep_key, keep_path = kept_as or (key, path)
            await self.recovery.keep(buffer, keep_key, keep_path, stamp, exc)
            raise FsError(errno.EIO, f"upload of {path} failed") from exc
        finally:
            self.sending.pop(ino, None)
        await self.recovery.uploaded(key)  # its copy here, if any, is stale
        return result
