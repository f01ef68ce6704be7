"""``MemStore``: a bucket in memory, behind the fs layer's narrow store interface, so that the
core runs in-process (no HTTP, no moto) in microseconds per request.

It is an ``ObjectStore``, a ``WholeStore``, a ``StreamingStore``, a ``MultipartStore`` and a
``PendingUploads`` (``s3fmfs.fs.store``), with S3's answers where the core can tell them apart:

- ETags are quoted MD5 hex digests; a completed multipart upload's is the MD5 of the parts'
  binary MD5s, ``-N`` (N parts); a copy's is the MD5 of the bytes (never ``-N``).
- LastModified is whole seconds (HEAD's resolution) of ``clock`` (ns) at the write.
- User metadata keys are lowercased; without a content type an object is
  ``binary/octet-stream``. ``copy`` without metadata keeps metadata and content type (COPY),
  with metadata replaces both (REPLACE: the content type is the one given, else the default);
  a copy onto itself without metadata is S3's 400 ``InvalidRequest``.
- A missing key is ``head`` and ``get_object`` → None, ``NoSuchKey`` for other GETs and
  copies, nothing for deletes.
  ``If-Match`` with another ETag is ``PreconditionFailed`` (412), whatever the range; a range
  starting at or past the end answers no bytes.
- Listings are in key order, ``page_size`` entries (objects and common prefixes together) a
  page, each page read from the bucket as it is when asked for (a continuation marker after
  the last entry: keys under a common prefix already reported are skipped, as S3 does).
- Multipart: parts are kept by number (a part sent again replaces it); completion checks that
  the parts exist with those ETags, in ascending order, and that all but the last are at least
  ``min_part_size`` (``InvalidPart``, ``InvalidPartOrder``, ``EntityTooSmall``).

Faults: ``fail(op, error, times=, applied=)`` makes the next ``times`` calls of ``op`` raise
``error`` (a client error from ``s3fmfs.client.errors``; default a 500 ``InternalError``),
before the request takes effect or, with ``applied``, after it (an answer lost on the way
back); ``delay(op, seconds)`` sleeps (trio time) before each call of ``op``. Every call is
counted by operation name (``calls``). Operation names are the method names; listing pages
count as ``list`` (each page of ``iter_pages`` and each ``list_page``).

Every request yields to the trio scheduler once (``checkpoint``), as a network round trip
would, so that concurrent tasks interleave.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import quote

import trio

from s3fmfs.client import errors
from s3fmfs.client.limits import MIN_PART_SIZE
from s3fmfs.fs.store import (
    ListingPage,
    ObjectInfo,
    PartBody,
    PendingUpload,
    PutBody,
    PutResult,
    Sink,
    UploadedPart,
)
from s3fmfs.fs.writebuf import FileWindow

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
NS = 1_000_000_000

#: Every operation that ``fail``/``delay`` can name.
OPERATIONS = (
    "list",
    "head",
    "get_range",
    "get_range_into",
    "put",
    "copy",
    "delete",
    "delete_many",
    "create_multipart",
    "upload_part",
    "complete_multipart",
    "abort_multipart",
    "list_multipart",
)


def quoted_md5(data: bytes) -> str:
    """An S3 ETag of ``data`` uploaded in one PUT."""
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(parts: Iterable[bytes]) -> str:
    """The ETag S3 gives an object completed from ``parts``: MD5 of the MD5s, ``-N``."""
    digests = [hashlib.md5(p).digest() for p in parts]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def _bare(etag: str) -> str:
    return etag.strip().strip('"')


@dataclass
class MemObject:
    """One stored object."""

    data: bytes
    etag: str
    last_modified_ns: int
    metadata: dict[str, str]
    content_type: str = DEFAULT_CONTENT_TYPE

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=len(self.data),
            etag=self.etag,
            last_modified_ns=self.last_modified_ns,
            metadata=dict(self.metadata),
            content_type=self.content_type,
        )


@dataclass
class MemUpload:
    """A multipart upload in progress."""

    key: str
    metadata: dict[str, str]
    content_type: str
    initiated: str
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Fault:
    """Pending failures of one operation."""

    error: Exception
    times: int
    applied: bool  # raised after the operation took effect (its answer lost)


def _read_body(body: PutBody | PartBody | bytes, length: int | None = None) -> bytes:
    """The bytes an upload sends: ``length`` of them, or up to the end of the body."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        return data if length is None else data[:length]
    if isinstance(body, FileWindow | io.BytesIO):
        return bytes(body.read(-1 if length is None else length))
    source: IO[bytes] = body  # type: ignore[assignment]
    return bytes(source.read() if length is None else source.read(length))


class MemStore:
    """A bucket in memory (see the module docstring)."""

    def __init__(
        self,
        *,
        page_size: int = 1000,
        clock: Callable[[], int] = time.time_ns,
        chunk_size: int = 64 << 10,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        self.objects: dict[str, MemObject] = {}
        self.uploads: dict[str, MemUpload] = {}
        self.page_size = page_size
        self.clock = clock
        self.chunk_size = chunk_size  # bytes per sink call of ``get_range_into``
        self.min_part_size = min_part_size
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, Fault] = {}
        self.delays: dict[str, float] = {}
        self._upload_ids = itertools.count(1)

    # -- faults and counts ------------------------------------------------------------------------

    def fail(
        self, op: str, error: Exception | None = None, *, times: int = 1, applied: bool = False
    ) -> None:
        """The next ``times`` calls of ``op`` raise ``error`` (default: a 500 InternalError);
        with ``applied``, after taking effect."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        if error is None:
            error = errors.InternalError(500, "InternalError", "injected", method=op)
        self.faults[op] = Fault(error, times, applied)

    def delay(self, op: str, seconds: float) -> None:
        """Sleep ``seconds`` (trio time) before each call of ``op`` (0: no more delay)."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        self.delays[op] = seconds

    def count(self, op: str) -> int:
        return self.calls[op]

    def total(self) -> int:
        return sum(self.calls.values())

    def _take_fault(self, op: str) -> Fault | None:
        fault = self.faults.get(op)
        if fault is None:
            return None
        fault.times -= 1
        if fault.times <= 0:
            del self.faults[op]
        return fault

    @contextlib.asynccontextmanager
    async def _call(self, op: str) -> AsyncIterator[None]:
        """One request: counted, delayed, a scheduling point, and failed when asked."""
        self.calls[op] += 1
        seconds = self.delays.get(op, 0.0)
        if seconds:
            await trio.sleep(seconds)
        else:
            await trio.lowlevel.checkpoint()
        fault = self._take_fault(op)
        if fault is not None and not fault.applied:
            raise fault.error
        yield
        if fault is not None:
            raise fault.error

    def _now_ns(self) -> int:
        return self.clock() // NS * NS

    def _object(self, key: str, op: str) -> MemObject:
        obj = self.objects.get(key)
        if obj is None:
            raise errors.NoSuchKey(404, "NoSuchKey", "no such key", resource=key, method=op)
        return obj

    # -- direct access (tests: behind the mount's back, and checks) ------------------------------

    def put_object(
        self,
        key: str,
        data: bytes = b"",
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> str:
        """Write an object at once (no request counted, no fault); its ETag."""
        obj = MemObject(
            bytes(data),
            quoted_md5(data),
            self._now_ns(),
            {k.lower(): v for k, v in (metadata or {}).items()},
            content_type or DEFAULT_CONTENT_TYPE,
        )
        self.objects[key] = obj
        return obj.etag

    def remove_object(self, key: str) -> None:
        """Delete an object at once, if it is there."""
        self.objects.pop(key, None)

    def body(self, key: str) -> bytes:
        """An object's bytes (KeyError when missing)."""
        return self.objects[key].data

    def keys_under(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, in order."""
        return sorted(k for k in self.objects if k.startswith(prefix))

    # -- listing -----------------------------------------------------------------------------------

    def _page(
        self, prefix: str, delimiter: str | None, max_keys: int, after: str = "", skip: str = ""
    ) -> ListingPage:
        """Entries after the marker ``after``, ``max_keys`` at most; keys under ``skip`` (a
        common prefix reported on an earlier page) are left out."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        for key in sorted(self.objects):
            if not key.startswith(prefix) or (after and key <= after):
                continue
            if (skip and key.startswith(skip)) or (prefixes and key.startswith(prefixes[-1])):
                continue
            if len(objects) + len(prefixes) == max_keys:
                return ListingPage(objects, prefixes, truncated=True)
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.append(prefix + rest[: rest.index(delimiter) + len(delimiter)])
                continue
            obj = self.objects[key]
            objects.append(ObjectInfo(key, len(obj.data), obj.etag, obj.last_modified_ns, None, ""))
        return ListingPage(objects, prefixes, truncated=False)

    async def list_page(
        self, prefix: str, delimiter: str | None = None, max_keys: int = 1000
    ) -> ListingPage:
        async with self._call("list"):
            return self._page(prefix, delimiter, max(1, min(max_keys, 1000)))

    async def iter_pages(
        self, prefix: str, delimiter: str | None = None
    ) -> AsyncGenerator[ListingPage, None]:
        after = skip = ""
        while True:
            async with self._call("list"):
                page = self._page(prefix, delimiter, self.page_size, after, skip)
            yield page
            if not page.truncated:
                return
            after = max([o.key for o in page.objects] + page.prefixes)
            skip = after if after in page.prefixes else ""

    # -- reads -------------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo | None:
        async with self._call("head"):
            obj = self.objects.get(key)
            return None if obj is None else obj.info(key)

    async def get_object(self, key: str, *, if_match: str = "") -> tuple[ObjectInfo, bytes] | None:
        async with self._call("get_object"):
            if key not in self.objects:
                return None
            self._range(key, 0, None, if_match, "get_object")  # 412 for another version
            obj = self.objects[key]
            return obj.info(key), obj.data

    def _range(self, key: str, start: int, end: int | None, if_match: str, op: str) -> bytes:
        obj = self._object(key, op)
        if if_match and _bare(if_match) != _bare(obj.etag):
            raise errors.PreconditionFailed(
                412, "PreconditionFailed", "If-Match", resource=key, method=op
            )
        if end is not None and end < start:
            return b""
        return obj.data[start : None if end is None else end + 1]

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        async with self._call("get_range"):
            return self._range(key, start, end, if_match, "get_range")

    async def get_range_into(
        self, key: str, start: int, end: int, sink: Sink, *, if_match: str = ""
    ) -> None:
        async with self._call("get_range_into"):
            data = self._range(key, start, end, if_match, "get_range_into")
        for offset in range(0, len(data), self.chunk_size):
            await sink(data[offset : offset + self.chunk_size])

    # -- writes ------------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        body: PutBody,
        metadata: Mapping[str, str],
        content_type: str | None = None,
    ) -> PutResult:
        async with self._call("put"):
            etag = self.put_object(key, _read_body(body), metadata, content_type)
        return PutResult(etag=etag)

    def presign_get(self, key: str, expires: int) -> str:
        """No server to fetch from: a URL naming the key and the lifetime asked for."""
        self.calls["presign_get"] += 1
        return f"memory:///{quote(key)}?expires={expires}"

    async def copy(
        self,
        src: str,
        dst: str,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> PutResult:
        async with self._call("copy"):
            source = self._object(src, "copy")
            if src == dst and metadata is None:
                raise errors.S3ClientError(
                    400, "InvalidRequest", "copy onto itself without a change", resource=src
                )
            if metadata is None:
                meta, ctype = dict(source.metadata), source.content_type
            else:
                meta = {k.lower(): v for k, v in metadata.items()}
                ctype = content_type or DEFAULT_CONTENT_TYPE
            self.objects[dst] = MemObject(
                source.data, quoted_md5(source.data), self._now_ns(), meta, ctype
            )
            etag = self.objects[dst].etag
        return PutResult(etag=etag)

    async def delete(self, key: str) -> None:
        async with self._call("delete"):
            self.objects.pop(key, None)

    async def delete_many(self, keys: Iterable[str]) -> list[str]:
        wanted = list(keys)
        if not wanted:
            return []
        async with self._call("delete_many"):
            for key in wanted:
                self.objects.pop(key, None)
        return []

    # -- multipart ---------------------------------------------------------------------------------

    def _upload(self, key: str, upload_id: str, op: str) -> MemUpload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise errors.NoSuchUpload(404, "NoSuchUpload", upload_id, resource=key, method=op)
        return upload

    async def create_multipart(
        self, key: str, metadata: Mapping[str, str], content_type: str | None = None
    ) -> str:
        async with self._call("create_multipart"):
            upload_id = f"upload-{next(self._upload_ids)}"
            self.uploads[upload_id] = MemUpload(
                key,
                {k.lower(): v for k, v in metadata.items()},
                content_type or DEFAULT_CONTENT_TYPE,
                time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.clock() / NS)),
            )
        return upload_id

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: PartBody | bytes, length: int
    ) -> UploadedPart:
        async with self._call("upload_part"):
            upload = self._upload(key, upload_id, "upload_part")
            data = _read_body(body, length)
            if len(data) != length:
                raise errors.S3ClientError(400, "IncompleteBody", f"{len(data)} of {length}")
            upload.parts[number] = data
        return UploadedPart(number, quoted_md5(data), length)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[UploadedPart]
    ) -> PutResult:
        async with self._call("complete_multipart"):
            upload = self._upload(key, upload_id, "complete_multipart")
            numbers = [p.number for p in parts]
            if not parts or numbers != sorted(set(numbers)):
                raise errors.S3ClientError(400, "InvalidPartOrder", str(numbers), resource=key)
            bodies: list[bytes] = []
            for part in parts:
                data = upload.parts.get(part.number)
                if data is None or _bare(quoted_md5(data)) != _bare(part.etag):
                    raise errors.InvalidPart(400, "InvalidPart", str(part.number), resource=key)
                bodies.append(data)
            if any(len(b) < self.min_part_size for b in bodies[:-1]):
                raise errors.EntityTooSmall(400, "EntityTooSmall", "part too small", resource=key)
            del self.uploads[upload_id]
            etag = multipart_etag(bodies)
            self.objects[key] = MemObject(
                b"".join(bodies), etag, self._now_ns(), upload.metadata, upload.content_type
            )
        return PutResult(etag=etag)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        async with self._call("abort_multipart"):
            upload = self.uploads.get(upload_id)
            if upload is not None and upload.key == key:
                del self.uploads[upload_id]

    async def list_multipart(self, prefix: str) -> list[PendingUpload]:
        async with self._call("list_multipart"):
            return [
                PendingUpload(u.key, upload_id, u.initiated)
                for upload_id, u in sorted(self.uploads.items())
                if u.key.startswith(prefix)
            ]
