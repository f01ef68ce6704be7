"""Per-inode write buffers: an anonymous temporary file holding a file's whole content.

Invariants:
- A buffer, once ``fill`` has returned (or for a new or truncated-to-zero file, from the
  start), holds the file's complete current content: reads of a buffered inode never go to
  the bucket, and an upload sends the buffer as it is.
- All its handles share one buffer (it hangs off the inode); callers serialise writers with
  the inode's lock. Reads and writes use ``pread``/``pwrite``: no shared file position.
- File I/O runs in a worker thread (``trio.to_thread``): the trio thread never blocks on disk.
- The file is anonymous (``TemporaryFile``): nothing is left behind, even after a crash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO

import trio

FILL_CHUNK = 8 << 20


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

    def close(self) -> None:
        """Free the temporary file (quick: an anonymous file's unlink already happened)."""
        self._file.close()
