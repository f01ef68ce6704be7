"""``RequestBody``: a request body (bytes, a file, an async stream) as the engine sends it.

Invariants:
- ``length`` is known before sending: bytes are measured, files by ``fstat`` or seeking, a stream
  must be given ``content_length``, and a stream that sends more or fewer bytes fails (ValueError)
  before HTTP announces a wrong length.
- Only replayable bodies (bytes, seekable files) can be sent again: each attempt re-reads a file
  from the position it had when the body was made.
- A file body is read, and a large body hashed, in a worker thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Any

from . import _aio, _signing_v4

CHUNK = 1 << 20
HASH_IN_THREAD = 1 << 20


class RequestBody:
    """A request body and what retries and signers need to know of it."""

    def __init__(self, data: Any, content_length: int | None = None) -> None:
        self.data: bytes | None = None
        self.file: IO[bytes] | None = None
        self.aiter: AsyncIterable[bytes] | None = None
        self.start = 0
        if data is None:
            self.data = b""
        elif isinstance(data, str):
            self.data = data.encode("utf-8")
        elif isinstance(data, bytes | bytearray | memoryview):
            self.data = bytes(data)
        elif hasattr(data, "read"):
            self.file = data
            try:
                self.start = data.tell()
            except (OSError, ValueError):
                self.start = -1
        elif isinstance(data, AsyncIterable):
            self.aiter = data
        else:
            raise TypeError(f"cannot send a body of type {type(data).__name__}")
        self.length = self._length(content_length)

    def _length(self, given: int | None) -> int:
        if self.data is not None:
            return len(self.data)
        if given is not None:
            return given
        if self.file is not None and self.start >= 0:
            try:
                return os.fstat(self.file.fileno()).st_size - self.start
            except (OSError, io.UnsupportedOperation, AttributeError):
                end = self.file.seek(0, os.SEEK_END)
                self.file.seek(self.start)
                return end - self.start
        raise ValueError("a streamed body needs content_length")

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again on a retry."""
        return self.data is not None or (self.file is not None and self.start >= 0)

    async def payload_hash(self) -> str:
        """SHA-256 for V4: computed for bytes, UNSIGNED-PAYLOAD for streams."""
        if self.data is None:
            return _signing_v4.UNSIGNED_PAYLOAD
        if not self.data:
            return _signing_v4.EMPTY_SHA256
        if len(self.data) > HASH_IN_THREAD:
            data = self.data
            return await _aio.run_sync(lambda: hashlib.sha256(data).hexdigest())
        return hashlib.sha256(self.data).hexdigest()

    def content(self) -> bytes | AsyncIterator[bytes]:
        """What httpx sends for one attempt."""
        if self.data is not None:
            return self.data
        if self.file is not None:
            return self._file_chunks(self.file)
        assert self.aiter is not None
        return self._counted(self.aiter)

    async def _file_chunks(self, f: IO[bytes]) -> AsyncIterator[bytes]:
        if self.start >= 0:
            await _aio.run_sync(f.seek, self.start)
        left = self.length
        while left > 0:
            chunk = await _aio.run_sync(f.read, min(CHUNK, left))
            if not chunk:
                raise ValueError(f"body file ended {left} bytes early")
            left -= len(chunk)
            yield chunk

    async def _counted(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Check a stream against its announced length before HTTP sees a wrong one."""
        sent = 0
        async for chunk in source:
            sent += len(chunk)
            if sent > self.length:
                raise ValueError(f"body stream longer than content_length={self.length}")
            yield bytes(chunk)
        if sent != self.length:
            raise ValueError(f"body stream ended at {sent} of content_length={self.length}")
