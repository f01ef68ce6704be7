"""Reading response bodies: raw, bounded, XML-capped, spooled, or checked against a range.

Invariants:
- Bodies are read raw (never decompressed); a response built in memory (a mock transport's) is
  already read and is taken as it is.
- An XML answer is read up to ``MAX_XML_BODY`` and no further: a bigger one (announced or
  streamed) is ``InvalidResponseError``, never parsed. An error answer is read up to
  ``MAX_ERROR_BODY``.
- A ranged answer's ``Content-Range`` is a promise: fewer bytes than promised is
  ``InvalidResponseError``, never taken for the end of the object.
- Spooling to a temporary file runs its file work in a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any

import httpx

from . import _aio
from ._xml import embedded_error, parse
from .errors import InvalidResponseError, error_from_response

MAX_ERROR_BODY = 1 << 20
#: The largest XML answer read. The biggest legitimate ones (a page of 1,000 keys of 1,024
#: bytes, URL-encoded, or 1,000 DeleteObjects results) stay under 4 MiB.
MAX_XML_BODY = 16 << 20


async def read_all(resp: httpx.Response) -> bytes:
    """The raw body, undecoded (a response built in memory, as a mock transport's, is already
    read)."""
    if resp.is_stream_consumed:
        return resp.content
    return b"".join([chunk async for chunk in resp.aiter_raw()])


async def read_bounded(resp: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (error documents are small; a huge one is not ours)."""
    if resp.is_stream_consumed:
        return resp.content[:limit]
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_raw():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def body_offset(resp: httpx.Response, first: int) -> int:
    """Bytes of a GET answer's body before byte ``first`` of the object: all of them when
    Range was ignored (200), else what Content-Range says (a server may start earlier)."""
    if resp.status_code == 200:
        return first
    unit, _, spec = resp.headers.get("content-range", "").partition(" ")
    begin = spec.partition("-")[0]
    if unit.lower() == "bytes" and begin.isdigit():
        return max(0, first - int(begin))
    return 0


async def spool_to_file(resp: httpx.Response, limit: int) -> Any:
    """Read a body into memory up to ``limit`` bytes, then into a temporary file."""
    buffer = bytearray()
    spooled: IO[bytes] | None = None
    async for chunk in resp.aiter_raw():
        if spooled is None:
            buffer += chunk
            if len(buffer) <= limit:
                continue
            spooled = await _aio.run_sync(tempfile.TemporaryFile)
            data = bytes(buffer)
            buffer.clear()
            await _aio.run_sync(spooled.write, data)
        else:
            await _aio.run_sync(spooled.write, chunk)
    if spooled is None:
        return bytes(buffer)
    await _aio.run_sync(spooled.seek, 0)
    return spooled


async def file_size(spooled: Any) -> int:
    """The size of a spooled body (a temporary file positioned at 0)."""
    return int(await _aio.run_sync(lambda: os.fstat(spooled.fileno()).st_size))


async def checked_body(resp: httpx.Response) -> bytes:
    """Read a CopyObject / UploadPartCopy / CompleteMultipartUpload answer, raising the
    ``<Error>`` a 200 can carry inside the attempt, so that it is retried like any other."""
    body = await xml_body(resp)
    if body.strip() and embedded_error(parse(body, "copy")):
        request = resp.request
        raise error_from_response(
            500, resp.headers, body, method=request.method, resource=request.url.path
        )
    return body


async def xml_body(resp: httpx.Response) -> bytes:
    """An XML answer's body, refused (InvalidResponseError) past ``MAX_XML_BODY`` bytes,
    whether announced by Content-Length or found while reading."""
    where = f"{resp.request.method} {resp.request.url.path}"
    limit = f"the {MAX_XML_BODY >> 20} MiB limit for an XML answer"
    announced = resp.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > MAX_XML_BODY:
        raise InvalidResponseError(f"{where}: {announced}-byte answer refused: over {limit}")
    if resp.is_stream_consumed:  # built in memory (a mock transport)
        body = resp.content
    else:
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > MAX_XML_BODY:
                raise InvalidResponseError(f"{where}: answer refused: over {limit}")
            parts.append(chunk)
        body = b"".join(parts)
    if len(body) > MAX_XML_BODY:
        raise InvalidResponseError(f"{where}: answer refused: over {limit}")
    return body


def content_range(resp: httpx.Response) -> tuple[int, int] | None:
    """(a, b) of a 206 answer's ``Content-Range: bytes a-b/total``, if it has one."""
    if resp.status_code != 206:
        return None
    unit, _, spec = resp.headers.get("content-range", "").partition(" ")
    first, _, last = spec.partition("/")[0].partition("-")
    if unit.lower() != "bytes" or not first.isdigit() or not last.isdigit():
        return None
    return int(first), int(last)


def check_range(
    resp: httpx.Response, resource: str, first: int, received: int, end: int | None
) -> None:
    """InvalidResponseError when fewer bytes arrived from byte ``first`` than Content-Range
    promised up to ``end`` (a Content-Length shorter than the range ended the body early)."""
    promised = content_range(resp)
    if promised is None:
        return
    last = promised[1] if end is None else min(promised[1], end)
    if first + received <= last:
        raise InvalidResponseError(
            f"GET {resource}: body ended at byte {first + received} of a range promised up to "
            f"byte {last} (Content-Length does not match Content-Range)"
        )
