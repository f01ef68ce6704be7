"""Files' content at work: buffers filled, written, truncated, streamed and saved.

This is where the core changes a file's ``Content`` (only through its transitions) and hands
it to the upload engine (``upload.Uploader``).

Invariants:
- Writes go to the inode's ``WriteBuffer`` (filled from the object before the first change
  that needs old bytes) and are uploaded by flush, fsync and release when unsaved, never after
  an unlink. Uploads of one inode never overlap its writes: both hold ``Node.lock``.
- A buffer's fill (read-modify-write) is of one version: the HEADed ETag on every GET, the
  fill started again from a new HEAD on a change (``REPIN_ATTEMPTS``, then EIO). A pin whose
  readers were served another version than the one filled goes stale.
- Every write and truncation takes a ticket (``writeorder``) before its first ``await`` and
  gives it back once its bytes are in the buffer: reads never overtake it.
- A new or truncated-to-zero file, or one empty when written to (saved empty by a close of
  a duplicate descriptor, as dd and shell redirections do), written sequentially streams its
  parts to a multipart upload while it is written (STREAMING); flush completes it. Anything
  else (a write behind the parts, a truncation, a rename, an unlink, a failed part) ends the
  stream (aborted), and flush uploads the whole buffer.
- An upload that fails for good is EIO, and the buffer's data goes to a recovery copy (KEPT;
  ``recovery.RecoveryFolder``); a later upload removes that copy. When no copy can be written,
  the content stays unsaved (``unsaved``), and a stopping mount waits until it is uploaded or
  copied (``mount._stop``).
- Every save holds a shared claim on the file's path (taken before its lock): a directory
  rename moving it waits for the upload, or the upload for the rename and goes to the new key.
- Background work (streamed parts) runs in ``nursery``; without one, files go up whole.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable

import trio

from ..client.errors import PreconditionFailed
from . import limits
from .attrs import OUR_META, metadata_of, user_meta
from .content import ContentState
from .errno_map import FsError
from .inodes import Node
from .namespace import CONCURRENCY, Namespace, content_type_of
from .pins import REPIN_ATTEMPTS, Pins
from .store import ObjectInfo, PutResult
from .upload import StreamingUpload, Uploader
from .writebuf import MemoryPool, WriteBuffer
from .writeorder import WriteOrder

log = logging.getLogger("s3fmfs.fs")


class Files:
    """The content side of a mount's files (caller of every ``Content`` transition)."""

    def __init__(
        self, ns: Namespace, uploader: Uploader, pins: Pins, *, tmpdir: str | None = None
    ) -> None:
        self.ns = ns
        self.uploader = uploader
        self.pins = pins
        self.tmpdir = tmpdir
        #: what small files' write buffers hold in memory, all together
        self.write_memory = MemoryPool()
        self.write_order = WriteOrder()  # reads wait for the writes received before them
        #: where streamed parts run (the core's ``run_background``; None: files go up whole)
        self.nursery: trio.Nursery | None = None

    # -- buffers (caller holds node.lock) --------------------------------------------------------

    async def new_buffer(self) -> WriteBuffer:
        """An empty buffer, for a file about to be created (``new_file``)."""
        return await WriteBuffer.create(self.tmpdir, self.write_memory)

    def new_file(self, node: Node, buffer: WriteBuffer) -> None:
        """``node`` was just created here: ``buffer`` (empty) is all of it."""
        content = node.content
        content.created(buffer)
        content.content_type = content_type_of(node.path)
        content.extra_meta = {}

    async def ensure_buffer(self, node: Node, *, need_data: bool) -> WriteBuffer:
        """The node's buffer, created (and with ``need_data`` filled from the object) on first
        use. Caller holds ``node.lock``."""
        content = node.content
        if content.buffer is not None:
            return content.buffer
        buffer = await WriteBuffer.create(self.tmpdir, self.write_memory)
        try:
            key = self.ns.keys.file_key(node.path)
            filled = ""  # the ETag of the version the buffer holds
            for _ in range(REPIN_ATTEMPTS):
                info = await self.ns.store.head(key) if not content.new else None
                if info is None or not need_data or await self._fill(buffer, key, info):
                    break
                await buffer.truncate(0)
                log.warning("%r changed while being read for a write: reading it again", node.path)
            else:
                raise FsError(errno.EIO, f"{node.path} kept changing while it was read")
            if info is not None:
                filled = info.etag
                content.content_type = info.content_type or content_type_of(node.path)
                content.extra_meta = {
                    k: v for k, v in (info.metadata or {}).items() if k not in OUR_META
                }
            elif not content.new and need_data and node.path_attached:
                log.warning("%r vanished from the bucket: writing it anew", node.path)
        except BaseException:
            buffer.close()
            raise
        pin = self.pins.get(node.ino)
        if need_data and pin is not None and pin.served and pin.etag != filled:
            pin.stale = True  # its readers had bytes of another version: not the buffer's
        if content.buffer is not None:  # cannot happen under the lock; keep the first one
            buffer.close()
            return content.buffer
        content.filled(buffer)
        return buffer

    async def _fill(self, buffer: WriteBuffer, key: str, info: ObjectInfo) -> bool:
        """Fill ``buffer`` with the version ``info`` HEADed (If-Match on every GET); False
        when the object changed meanwhile (a 412, or fewer bytes than HEADed)."""

        async def get(start: int, end: int) -> bytes:
            return await self.ns.store.get_range(key, start, end, if_match=info.etag)

        try:
            await buffer.fill(info.size, get)
        except PreconditionFailed:
            return False
        return buffer.size >= info.size

    def _touch(self, node: Node) -> None:
        """The node's content changed: unsaved, new mtime, its handles read the buffer."""
        node.content.written()
        self.pins.drop(node.ino)  # its handles read the buffer from now on
        attr = node.attr or self.ns.blank(node.kind)
        node.attr = attr.with_changes(mtime_ns=self.ns.now())

    async def write(self, node: Node, offset: int, data: bytes) -> int:
        """Write into the inode's buffer (filled from the object first if it has old bytes)."""
        data = data[: limits.writable(offset, len(data))]  # EFBIG past 5 TiB
        ticket = self.write_order.begin(node.ino)  # reads arriving from now on wait for it
        try:
            async with node.lock:
                buffer = await self.ensure_buffer(node, need_data=True)
                empty = buffer.size == 0
                await buffer.pwrite(offset, data)
                self._touch(node)
                if empty:  # known from offset 0 (e.g. saved empty by a close of a dup)
                    self.begin_stream(node)
                self.write_order.end(node.ino, ticket)  # applied: reads may go on
                await self._stream_write(node, offset)
        finally:
            self.write_order.end(node.ino, ticket)
        return len(data)

    async def truncate_locked(self, node: Node, size: int) -> None:
        await self.end_stream(node)
        buffer = await self.ensure_buffer(node, need_data=size > 0)
        await buffer.truncate(size)
        self._touch(node)
        if size == 0:
            self.begin_stream(node)

    async def keep_readable(self, node: Node) -> None:
        """An open file about to lose its object: pull its content into the buffer first, so
        its handles can still read it. Caller holds ``node.lock``."""
        if node.open_count > 0 and node.buffer is None and not node.content.new:
            await self.ensure_buffer(node, need_data=True)

    # -- streaming uploads (caller holds node.lock) ----------------------------------------------

    def begin_stream(self, node: Node) -> None:
        """The node's content is known from offset 0 (new, or truncated to zero): its parts
        may go up while it is written."""
        content = node.content
        if content.stream is not None or not node.path_attached:
            return
        if content.state is not ContentState.DIRTY:  # (discarded: never uploaded)
            return
        key = self.ns.keys.file_key(node.path)
        stream = self.uploader.stream(key, node.path, self.nursery)
        if stream is not None:
            content.streaming(stream)

    async def end_stream(self, node: Node) -> None:
        """Stop streaming the node (the whole buffer goes up at the next save)."""
        stream = node.content.end_stream() if node.has_content else None
        if stream is not None:
            await stream.abort()

    def _stream_ok(self, node: Node, stream: StreamingUpload) -> bool:
        return (
            self.nursery is not None
            and node.buffer is not None
            and node.path_attached
            and node.path == stream.path
        )

    async def _stream_write(self, node: Node, offset: int) -> None:
        """After a write at ``offset``: hand the whole parts to the stream, or stop it when the
        write broke the sequence (or the file moved)."""
        content = node.content
        stream = content.stream
        if stream is None:
            return
        if not stream.accepts(offset) or not self._stream_ok(node, stream):
            await self.end_stream(node)
            return
        buffer = content.buffer
        assert buffer is not None
        try:
            await stream.advance(
                buffer.size,
                buffer.window,
                lambda: (
                    metadata_of(self.ns.local_attr(node), content.extra_meta),
                    content.content_type or content_type_of(node.path),
                ),
            )
        except Exception as exc:
            log.warning(
                "streaming upload of %r stopped (%s): it goes up whole at close", node.path, exc
            )
            await self.end_stream(node)

    # -- saving ----------------------------------------------------------------------------------

    async def upload(
        self, node: Node, key: str, path: str, kept_as: tuple[str, str] | None = None
    ) -> PutResult:
        """Put the node's unsaved content at ``key`` through the engine (UPLOADING, then
        BUFFERED, or KEPT/DIRTY on failure: FsError(EIO)). Caller holds ``node.lock``."""
        content = node.content
        buffer = content.buffer
        attr = self.ns.local_attr(node)
        stream = content.begin_upload()
        keep_key = (kept_as or (key, path))[0]
        try:
            if stream is not None and not self._stream_ok(node, stream):
                await stream.abort()
                stream = None
            assert buffer is not None
            result = await self.uploader.save(
                key,
                path,
                buffer,
                metadata_of(attr, content.extra_meta),
                content.content_type or content_type_of(path),
                mtime_ns=attr.mtime_ns,
                stamp=content.stamp,
                stream=stream,
                kept_as=kept_as,
            )
        except BaseException:
            kept = self.uploader.recovery.copy_of(keep_key, content.stamp) is not None
            content.failed(kept)
            raise
        content.uploaded()
        return result

    async def save(self, node: Node) -> None:
        """Upload the node's buffer if unsaved; FsError(EIO) (logged with the path) on failure.
        Under a claim on its path (taken before its lock): a directory rename moving it waits
        for the upload, or the upload for the rename and goes to the new key."""
        async with self.ns.claim(lambda: (node.path,)), node.lock:
            await self.save_locked(node)

    async def save_locked(self, node: Node) -> None:
        if not node.dirty:  # (an unlinked file never is: its content was discarded)
            return
        path = node.path
        key = self.ns.keys.file_key(path)
        attr = self.ns.local_attr(node)
        result = await self.upload(node, key, path)
        await self.ns.object_changed(key)
        if node.unlinked or node.path != path:
            return  # unlinked or renamed while uploading: the rename/unlink handled the keys
        attr = attr.with_changes(
            etag=result.etag, complete=True, meta=user_meta(node.content.extra_meta)
        )
        node.attr = attr
        self.ns.cache.note_exists(path, attr)

    def unsaved(self) -> list[Node]:
        """The files holding data the bucket does not have (unsaved, in the tree, buffered)."""
        return [
            node
            for node in self.ns.inodes.all_nodes()
            if node.dirty and node.path_attached and node.buffer is not None
        ]

    async def flush_all(self, nodes: Iterable[Node] | None = None) -> int:
        """Upload every unsaved file (or those of ``nodes``: unmount, termination),
        ``CONCURRENCY`` at a time (with the server away, each waits out its retries: not one
        after the other); how many failed (each kept in a recovery copy when one could be
        written: ``recovery.copy_of``)."""
        failed = 0
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def save(node: Node) -> None:
            nonlocal failed
            async with limiter:
                try:
                    await self.save(node)
                except Exception:
                    failed += 1

        async with trio.open_nursery() as nursery:
            for node in self.ns.inodes.all_nodes() if nodes is None else nodes:
                if node.dirty and node.path_attached:
                    nursery.start_soon(save, node)
        return failed

    async def close_all(self) -> None:
        """Close every buffer (after flush_all: the mount stops)."""
        for node in self.ns.inodes.all_nodes():
            if node.has_content:
                await self.end_stream(node)
                node.content.close()
