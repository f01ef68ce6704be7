"""Per-inode write buffers: a file's whole content, in memory while small, else in an anonymous
temporary file.

Invariants:
- A buffer, once ``fill`` has returned (or for a new or truncated-to-zero file, from the
  start), holds the file's complete current content: reads of a buffered inode never go to
  the bucket, and an upload sends the buffer as it is.
- All its handles share one buffer (it hangs off the inode); callers serialise writers with
  the inode's lock. Reads and writes use ``pread``/``pwrite``: no shared file position.
- A buffer starts in memory and moves to a temporary file (for good) once it would grow past
  ``MEMORY_LIMIT`` or the ``MemoryPool`` it draws from (shared by a mount's buffers) is
  spent: small files (most of an untar or a build) never touch the disk and never wait for a
  worker thread, while memory stays bounded by the pool.
- File I/O runs in a worker thread (``trio.to_thread``): the trio thread never blocks on disk.
- The file is anonymous (``TemporaryFile``): nothing is left behind, even after a crash.
- A write that fails (ENOSPC: the temporary directory is full) changes nothing: the file is
  cut back to its size before the write and the bytes it overwrote are put back, so the
  buffer holds exactly the writes that succeeded, and the caller reports the error.
- ``size`` is the content's length; uploads and copies read exactly ``size`` bytes
  (``upload_source``, ``window``), never what the file may hold past it.
- ``window`` hands out independent read-only views (``pread``, no shared position) for parts
  uploaded while the file is written; whoever closes the buffer first makes sure no upload
  still reads one (``StreamingUpload.abort``/``finish``).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO

import trio

FILL_CHUNK = 8 << 20
#: Largest content a buffer keeps in memory; past it, the temporary file.
MEMORY_LIMIT = 1 << 20
#: Default bytes all in-memory buffers of a mount may hold together.
MEMORY_POOL = 32 << 20


class MemoryPool:
    """The bytes the in-memory buffers of one mount hold together (bounded: RSS stays low)."""

    def __init__(self, limit: int = MEMORY_POOL) -> None:
        self.limit = limit
        self.used = 0

    def try_grow(self, held: int, wanted: int) -> bool:
        """Let a buffer holding ``held`` bytes hold ``wanted``, if the pool has room."""
        if wanted > MEMORY_LIMIT or self.used - held + wanted > self.limit:
            return False
        self.used += wanted - held
        return True

    def release(self, held: int) -> None:
        self.used -= held


class FileWindow:
    """``length`` bytes of a file descriptor from ``start``, as a file positioned at 0 (read in
    a worker thread by the client; ``seek``/``tell`` make it replayable on a retry)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd = fd
        self.start = start
        self.length = length
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0, /) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        left = self.length - self._pos
        size = left if size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = os.pread(self.fd, size, self.start + self._pos)
        self._pos += len(data)
        return data


class WriteBuffer:
    """The content of one file being written: a ``bytearray`` while small, else a temporary
    file."""

    def __init__(self, directory: str | None, pool: MemoryPool | None) -> None:
        self._directory = directory
        self._pool = pool
        self._memory: bytearray | None = bytearray() if pool is not None else None
        self._file: IO[bytes] | None = None
        self._closed = False
        self.size = 0

    @classmethod
    async def create(
        cls, directory: str | None = None, pool: MemoryPool | None = None
    ) -> WriteBuffer:
        """An empty buffer; in memory while ``pool`` has room (without a pool: on disk at
        once), its temporary file in ``directory`` (default: the system's temp dir)."""
        buffer = cls(directory, pool)
        if pool is None:
            await buffer._spill()
        return buffer

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    async def _spill(self) -> int:
        """Move the content to a temporary file (for good); its descriptor."""
        if self._file is None:
            directory = self._directory
            content = bytes(self._memory or b"")

            def make() -> IO[bytes]:
                file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
                try:
                    _pwrite_all(file.fileno(), content, 0)
                except BaseException:
                    file.close()
                    raise
                return file

            self._file = await trio.to_thread.run_sync(make)
            self._free_memory()
        return self._file.fileno()

    def _free_memory(self) -> None:
        if self._memory is not None:
            if self._pool is not None:
                self._pool.release(len(self._memory))
            self._memory = None

    def _memory_room(self, end: int) -> bytearray | None:
        """The in-memory content, grown to hold ``end`` bytes; None when it must spill."""
        memory = self._memory
        if memory is None or self._pool is None:
            return None
        if end > len(memory):
            if not self._pool.try_grow(len(memory), end):
                return None
            memory.extend(bytes(end - len(memory)))
        return memory

    async def fill(self, size: int, read: Callable[[int, int], Awaitable[bytes]]) -> None:
        """Copy ``size`` bytes in, fetched chunk by chunk with ``read(start, end_inclusive)``."""
        offset = 0
        while offset < size:
            end = min(size, offset + FILL_CHUNK) - 1
            data = await read(offset, end)
            if not data:
                break  # the object shrank behind our back: keep what we got
            await self.pwrite(offset, data)
            offset += len(data)
        self.size = max(self.size, offset)

    async def pwrite(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (a hole before it reads as zeros); on failure (ENOSPC)
        the content is as it was before."""
        end = offset + len(data)
        memory = self._memory_room(max(end, self.size))
        if memory is not None:
            memory[offset:end] = data
        else:
            fd = await self._spill()
            await trio.to_thread.run_sync(_pwrite_or_undo, fd, data, offset, self.size)
        self.size = max(self.size, end)

    async def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end)."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        if self._memory is not None:
            return bytes(self._memory[offset : offset + size])
        assert self._file is not None
        return await trio.to_thread.run_sync(_pread_all, self._file.fileno(), size, offset)

    async def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) to ``size`` bytes."""
        memory = self._memory
        if memory is not None and size <= len(memory):
            if self._pool is not None:
                self._pool.release(len(memory) - size)
            del memory[size:]
        elif self._memory_room(size) is None:
            fd = await self._spill()
            await trio.to_thread.run_sync(os.ftruncate, fd, size)
        self.size = size

    async def upload_source(self) -> bytes | FileWindow:
        """The content for an upload to read (under the inode's lock): the bytes, or a window
        of exactly ``size`` bytes of the file."""
        if self._memory is not None:
            return bytes(self._memory)
        assert self._file is not None
        return FileWindow(self._file.fileno(), 0, self.size)

    def window(self, start: int, length: int) -> FileWindow | io.BytesIO:
        """A view of ``length`` bytes from ``start`` for an upload to read."""
        if self._memory is not None:
            return io.BytesIO(self._memory[start : start + length])
        assert self._file is not None
        return FileWindow(self._file.fileno(), start, length)

    def close(self) -> None:
        """Free the memory or the temporary file (quick: an anonymous file's unlink already
        happened)."""
        self._closed = True
        self._free_memory()
        if self._file is not None:
            self._file.close()


def _pwrite_or_undo(fd: int, data: bytes, offset: int, size: int) -> None:
    """Write ``data`` at ``offset`` of a file of ``size`` bytes; when that fails part way, cut
    the file back to ``size`` and put back the old bytes it overwrote, then raise."""
    overlap = max(0, min(offset + len(data), size) - offset)
    saved = _pread_all(fd, overlap, offset) if overlap else b""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError:
        os.ftruncate(fd, size)
        if done and saved:
            _pwrite_all(fd, saved[:done], offset)  # blocks just written: no new space needed
        raise


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    parts: list[bytes] = []
    done = 0
    while done < size:
        chunk = os.pread(fd, size - done, offset + done)
        if not chunk:
            break
        parts.append(chunk)
        done += len(chunk)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
