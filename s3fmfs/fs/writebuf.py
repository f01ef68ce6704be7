"""Per-inode write buffers: an anonymous temporary file holding a file's whole content.

Invariants:
- A buffer, once ``fill`` has returned (or for a new or truncated-to-zero file, from the
  start), holds the file's complete current content: reads of a buffered inode never go to
  the bucket, and an upload sends the buffer as it is.
- All its handles share one buffer (it hangs off the inode); callers serialise writers with
  the inode's lock. Reads and writes use ``pread``/``pwrite``: no shared file position.
- File I/O runs in a worker thread (``trio.to_thread``): the trio thread never blocks on disk.
- The file is anonymous (``TemporaryFile``): nothing is left behind, even after a crash.
- ``window`` hands out independent read-only views (``pread``, no shared position) for parts
  uploaded while the file is written; whoever closes the buffer first makes sure no upload
  still reads one (``StreamingUpload.abort``/``finish``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO

import trio

FILL_CHUNK = 8 << 20


class FileWindow:
    """``length`` bytes of a file descriptor from ``start``, as a file positioned at 0 (read in
    a worker thread by the client; ``seek``/``tell`` make it replayable on a retry)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd = fd
        self._start = start
        self._length = length
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0, /) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        left = self._length - self._pos
        size = left if size < 0 else min(size, left)
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._start + self._pos)
        self._pos += len(data)
        return data


class WriteBuffer:
    """The content of one file being written, in a temporary file."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.size = 0

    @classmethod
    async def create(cls, directory: str | None = None) -> WriteBuffer:
        """An empty buffer in ``directory`` (default: the system's temporary directory)."""
        file = await trio.to_thread.run_sync(
            lambda: tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        )
        return cls(file)

    @property
    def closed(self) -> bool:
        return self._file.closed

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
        """Write ``data`` at ``offset`` (a hole before it reads as zeros)."""
        fd = self._file.fileno()

        def write() -> None:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)

        await trio.to_thread.run_sync(write)
        self.size = max(self.size, offset + len(data))

    async def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end)."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        fd = self._file.fileno()

        def read() -> bytes:
            parts: list[bytes] = []
            done = 0
            while done < size:
                chunk = os.pread(fd, size - done, offset + done)
                if not chunk:
                    break
                parts.append(chunk)
                done += len(chunk)
            return b"".join(parts)

        return await trio.to_thread.run_sync(read)

    async def truncate(self, size: int) -> None:
        """Cut or extend (with zeros) to ``size`` bytes."""
        await trio.to_thread.run_sync(os.ftruncate, self._file.fileno(), size)
        self.size = size

    async def upload_source(self) -> IO[bytes]:
        """The file, positioned at 0, for an upload to read (under the inode's lock)."""
        await trio.to_thread.run_sync(self._file.seek, 0)
        return self._file

    def window(self, start: int, length: int) -> FileWindow:
        """A view of ``length`` bytes from ``start`` for an upload to read."""
        return FileWindow(self._file.fileno(), start, length)

    def close(self) -> None:
        """Free the temporary file (quick: an anonymous file's unlink already happened)."""
        self._file.close()
