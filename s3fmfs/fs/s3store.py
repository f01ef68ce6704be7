"""``S3Store``: the ``ObjectStore`` interface over the signed client (``S3fmAuthConnection``).

Invariants:
- This is the only module of ``s3fmfs.fs`` that calls the client; it adds no retries of its
  own (the client's policy covers every idempotent request).
- It offers primitives only: one PUT of a body, and the multipart steps (a ``MultipartStore``);
  when and how a file is cut into parts is the upload engine's (``upload``) decision.
  Every multipart upload goes through the ``UploadJournal`` (created, then finished when
  completed or aborted), so that the next mount can abort what a crash left; and it is a
  ``PendingUploads`` (listing and aborting incomplete uploads, for that sweep).
- It is also a ``StreamingStore``: read-ahead blocks stream in chunk by chunk
  (``get_range_into``), resumed by the client after a failure mid-body. ``if_match`` goes out
  as ``If-Match`` on every GET (the client's 412 is ``PreconditionFailed``).
- ``get_object`` (a ``WholeStore``) parses a whole GET's headers as ``head`` parses a HEAD's
  (``_info``): the attributes are identical.
- ``ObjectHeaders`` (the mount's ``default_acl``, ``storage_class``, ``use_sse``) go on every
  write (PUT, multipart initiation, copy destination); an SSE-C key also on every read of an
  object (GET, HEAD), every part uploaded, and as the copy source's key on copies.
- Results are converted to ``store`` dataclasses here; client exceptions pass through, except
  the "missing" answers the interface defines (``head`` → None, a range past the end → b"").
- Integrity (``integrity.Integrity``, on unless ``-o no_checksum``): every PUT and part goes
  with ``Content-MD5`` and its ETag is compared with the local MD5, a completed multipart
  upload's with md5(parts) + ``-N``; a whole object read by one GET (``get_object``, a
  ``get_range`` covering the object) is compared with the service's checksum when it sends
  one (``x-amz-checksum-mode: ENABLED`` on GETs from the start), else its single-part ETag.
  A mismatch (or a ``BadDigest`` answer) is sent or fetched again, ``Integrity.attempts``
  times in all: the only retries this module adds (the client does not see the bytes'
  meaning).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ..client import (
    InvalidRange,
    ListPage,
    Location,
    NoSuchKey,
    NoSuchUpload,
    Part,
    Response,
    S3fmAuthConnection,
    S3Object,
    S3ResponseError,
)
from .attrs import parse_s3_time
from .buckets import BucketEntry
from .integrity import (
    CHECKSUM_MODE,
    ChecksumMismatch,
    Integrity,
    checksum_matches,
    content_md5,
    md5_body,
    md5_bytes,
    multipart_etag,
    opaque,
    parts_count,
    plain_md5,
    rewind,
    service_checksum,
)
from .journal import UploadJournal
from .store import (
    ListingPage,
    ObjectInfo,
    PartBody,
    PendingUpload,
    PutBody,
    PutResult,
    Sink,
    UploadedPart,
)
from .writebuf import FileWindow

log = logging.getLogger("s3fmfs.fs")


def _page(page: ListPage) -> ListingPage:
    """The store's page (the client has already decoded URL-encoded names)."""
    return ListingPage(
        objects=[
            ObjectInfo(
                key=e.key,
                size=e.size,
                etag=e.etag,
                last_modified_ns=parse_s3_time(e.last_modified),
            )
            for e in page.entries
        ],
        prefixes=[p.prefix for p in page.common_prefixes],
        truncated=page.is_truncated,
    )


async def _as_bytes(data: Any) -> bytes:
    """A GET body: bytes, or a spooled temporary file (read and closed in a thread)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)

    def read() -> bytes:
        try:
            return bytes(data.read())
        finally:
            data.close()

    return await trio.to_thread.run_sync(read)


def _info(key: str, resp: Response) -> ObjectInfo:
    """An object's attributes from the headers of a HEAD or a whole GET (same parsing)."""
    return ObjectInfo(
        key=key,
        size=resp.content_length,
        etag=resp.etag,
        last_modified_ns=parse_s3_time(resp.last_modified),
        metadata=resp.metadata,
        content_type=resp.content_type,
        storage_class=resp.getheader("x-amz-storage-class") or "",
        version_id=resp.getheader("x-amz-version-id") or "",
    )


@dataclass(frozen=True)
class ObjectHeaders:
    """Headers added to the requests about objects (names lower-case)."""

    write: Mapping[str, str] = field(default_factory=dict)  # PUT, initiate, copy destination
    key: Mapping[str, str] = field(default_factory=dict)  # SSE-C: GET, HEAD, parts
    copy_source: Mapping[str, str] = field(default_factory=dict)  # SSE-C key of a copy's source


def _merged(*parts: Mapping[str, str] | None) -> dict[str, str] | None:
    """The union of ``parts`` (later ones win), None when empty."""
    merged: dict[str, str] = {}
    for part in parts:
        merged.update(part or {})
    return merged or None


#: Error codes of a service that checked ``Content-MD5`` and found the body changed.
DIGEST_ERRORS = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})


def _covers_all(resp: Response, start: int, end: int | None) -> bool:
    """Whether a GET's answer holds the whole object (its ETag then names its bytes)."""
    if start != 0:
        return False
    if end is None or resp.status == 200:
        return True
    spec = (resp.getheader("content-range") or "").partition(" ")[2]
    span, _, total = spec.partition("/")
    last = span.partition("-")[2]
    return total.isdigit() and last.isdigit() and int(last) + 1 == int(total)


class S3Store:
    """One bucket through one connection."""

    def __init__(
        self,
        conn: S3fmAuthConnection,
        bucket: str,
        *,
        page_size: int = 1000,
        journal: UploadJournal | None = None,
        headers: ObjectHeaders | None = None,
        integrity: Integrity | None = None,
    ) -> None:
        self.conn = conn
        self.headers = headers or ObjectHeaders()
        self.integrity = integrity or Integrity()
        if opaque(self.headers.write) or self.headers.key:
            self.integrity.opaque_writes = True  # SSE-KMS / SSE-C: no ETag is an MD5
        #: (upload id, part number) → the MD5 its ETag was checked against
        self._part_md5: dict[tuple[str, int], str] = {}
        self.journal = journal or UploadJournal(None)  # default: not journaling
        self.bucket = bucket
        self.page_size = page_size

    async def list_page(
        self, prefix: str, delimiter: str | None = None, max_keys: int = 1000
    ) -> ListingPage:
        pages = self.conn.list_pages(self.bucket, prefix, delimiter, page_size=max_keys)
        async with contextlib.aclosing(pages):
            async for page in pages:
                return _page(page)
        return ListingPage()

    async def iter_pages(
        self, prefix: str, delimiter: str | None = None
    ) -> AsyncGenerator[ListingPage, None]:
        pages = self.conn.list_pages(self.bucket, prefix, delimiter, page_size=self.page_size)
        async with contextlib.aclosing(pages):
            async for page in pages:
                yield _page(page)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self.conn.head(self.bucket, key, _merged(self.headers.key))
        except NoSuchKey:
            return None
        return _info(key, resp)

    async def part_size(self, key: str, number: int, *, if_match: str = "") -> int | None:
        """The size of part ``number`` of version ``if_match`` of a multipart object (HEAD
        ?partNumber=; the integrity check of a sequential read), None if not answered."""
        headers = _merged({"if-match": if_match} if if_match else None, self.headers.key)
        try:
            resp = await self.conn.head(self.bucket, key, headers, part_number=number)
        except NoSuchKey:
            return None
        if opaque(resp.headers):  # SSE: no ETag of it is an MD5
            self.integrity.note_opaque(resp.etag)
            return None
        return resp.content_length if resp.etag == if_match or not if_match else None

    def _read_headers(self, if_match: str, start: int = 0) -> dict[str, str] | None:
        """A GET's headers: ``If-Match``, the SSE-C key, and from the start of an object with
        the checks on, ``x-amz-checksum-mode`` (the service's checksum, if it has one)."""
        checksum = CHECKSUM_MODE if self.integrity.enabled and start == 0 else None
        return _merged({"if-match": if_match} if if_match else None, self.headers.key, checksum)

    async def get_object(self, key: str, *, if_match: str = "") -> tuple[ObjectInfo, bytes] | None:
        headers = self._read_headers(if_match)

        async def attempt() -> tuple[ObjectInfo, bytes] | None:
            try:
                resp = await self.conn.get(self.bucket, key, headers)
            except NoSuchKey:
                return None
            data = await _as_bytes(resp.object.data)
            await self._check_read(key, resp, data)
            return _info(key, resp), data

        return await self.integrity.retrying("get", attempt)

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        if end is not None and end < start:
            return b""
        byte_range = None if start == 0 and end is None else (start, end)
        headers = self._read_headers(if_match, start)

        async def attempt() -> bytes:
            try:
                resp = await self.conn.get(self.bucket, key, headers, byte_range=byte_range)
            except InvalidRange:
                return b""
            data = await _as_bytes(resp.object.data)
            if _covers_all(resp, start, end):
                await self._check_read(key, resp, data)
            if byte_range is not None and resp.status == 200:
                # the service ignored Range and sent everything: cut the part asked for
                data = data[start : None if end is None else end + 1]
            return data

        return await self.integrity.retrying("get", attempt)

    async def _check_read(self, key: str, resp: Response, data: bytes) -> None:
        """ChecksumMismatch when a whole object's bytes are not its single-part ETag's MD5."""
        integrity = self.integrity
        if not integrity.enabled:
            return
        checksum = service_checksum(resp.headers)
        if checksum is not None:  # the service's own: good whatever the ETag is
            integrity.checked += 1
            if not await checksum_matches(*checksum, data):
                raise ChecksumMismatch(f"GET {key!r}: {len(data)} bytes not of {checksum[0]}")
            return
        if opaque(resp.headers):
            integrity.note_opaque(resp.etag)
            return
        expected = integrity.expected_md5(resp.etag)
        if expected is None:
            return
        got = await md5_bytes(data)
        integrity.checked += 1
        if got != expected:
            raise ChecksumMismatch(f"GET {key!r}: {len(data)} bytes of MD5 {got}, ETag {expected}")

    async def get_range_into(
        self, key: str, start: int, end: int, sink: Sink, *, if_match: str = ""
    ) -> None:
        if end < start:
            return
        headers = _merged({"if-match": if_match} if if_match else None, self.headers.key)
        with contextlib.suppress(InvalidRange):  # starts at or past the end: no bytes
            resp = await self.conn.get_into(
                self.bucket, key, sink, headers, byte_range=(start, end)
            )
            if opaque(resp.headers):  # its ETag is not an MD5: no sequential check of it
                self.integrity.note_opaque(resp.etag)

    async def put(
        self,
        key: str,
        body: PutBody,
        metadata: Mapping[str, str],
        content_type: str | None = None,
    ) -> PutResult:
        headers = _merged(
            {"content-type": content_type} if content_type else None, self.headers.write
        )
        length: int | None = None
        if isinstance(body, FileWindow):  # exactly its length, whatever the file holds past it
            length = body.length - body.tell()
        if not self.integrity.enabled:
            resp = await self.conn.put(
                self.bucket, key, S3Object(body, dict(metadata)), headers, content_length=length
            )
            return PutResult(etag=resp.etag)
        md5 = await md5_body(body, length)
        headers = _merged(headers, {"content-md5": content_md5(md5)})
        back = rewind(body)

        async def attempt() -> PutResult:
            back()  # a resend reads the body from the same place
            try:
                resp = await self.conn.put(
                    self.bucket,
                    key,
                    S3Object(body, dict(metadata)),
                    headers,
                    content_length=length,
                )
            except S3ResponseError as exc:
                if exc.code in DIGEST_ERRORS:
                    raise ChecksumMismatch(f"PUT {key!r}: {exc.code}") from exc
                raise
            self._check_written(f"PUT {key!r}", resp, md5)
            return PutResult(etag=resp.etag)

        return await self.integrity.retrying("put", attempt)

    def _check_written(self, what: str, resp: Response, md5: str) -> bool:
        """ChecksumMismatch when the ETag answered is an MD5 other than ``md5``; whether it
        was compared (an SSE answer's ETag is not an MD5, nor one not of 32 hex digits)."""
        answered = plain_md5(resp.etag)
        if self.integrity.opaque_writes or opaque(resp.headers) or answered is None:
            return False  # SSE, or a service whose ETags are not MD5s at all: Content-MD5 only
        self.integrity.checked += 1
        if answered != md5:
            raise ChecksumMismatch(f"{what}: stored with ETag {resp.etag}, sent MD5 {md5}")
        return True

    # -- multipart, part by part (the upload engine's primitives) ---------------------------

    async def create_multipart(
        self, key: str, metadata: Mapping[str, str], content_type: str | None = None
    ) -> str:
        headers = _merged(
            {"content-type": content_type} if content_type else None, self.headers.write
        )
        return await self.journal.create(
            key,
            lambda: self.conn.create_multipart_upload(self.bucket, key, headers, metadata=metadata),
        )

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: PartBody | bytes, length: int
    ) -> UploadedPart:
        if not self.integrity.enabled:
            part = await self.conn.upload_part(
                self.bucket,
                key,
                upload_id,
                number,
                body,
                content_length=length,
                headers=_merged(self.headers.key),
            )
            return UploadedPart(part.part_number, part.etag, length)
        md5 = await md5_body(body, length)
        headers = _merged(self.headers.key, {"content-md5": content_md5(md5)})
        back = rewind(body)

        async def attempt() -> UploadedPart:
            back()
            try:
                part = await self.conn.upload_part_answer(
                    self.bucket,
                    key,
                    upload_id,
                    number,
                    body,
                    content_length=length,
                    headers=headers,
                )
            except S3ResponseError as exc:
                if exc.code in DIGEST_ERRORS:
                    raise ChecksumMismatch(f"part {number} of {key!r}: {exc.code}") from exc
                raise
            part_info, resp = part
            if self._check_written(f"part {number} of {key!r}", resp, md5):
                self._part_md5[(upload_id, number)] = md5
            return UploadedPart(part_info.part_number, part_info.etag, length)

        return await self.integrity.retrying("part", attempt)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[UploadedPart]
    ) -> PutResult:
        ordered = [Part(p.number, p.etag, p.size) for p in sorted(parts, key=lambda p: p.number)]
        md5s = [self._part_md5.pop((upload_id, p.part_number), "") for p in ordered]
        resp = await self.conn.complete_multipart_upload(self.bucket, key, upload_id, ordered)
        await self.journal.finished(upload_id)
        if (
            self.integrity.enabled
            and md5s
            and all(md5s)
            and not opaque(resp.headers)
            and parts_count(resp.etag)  # S3's form; some services answer another (s3rver: MD5)
        ):
            # every part was checked: an ETag of S3's md5-N form must be the md5 of their MD5s
            expected = multipart_etag(md5s)
            self.integrity.checked += 1
            if resp.etag.strip().strip('"').lower() != expected:
                self.integrity.mismatch("complete", f"{key!r}: ETag {resp.etag}, {expected}")
                raise ChecksumMismatch(
                    f"upload of {key!r} completed with ETag {resp.etag}, not {expected}"
                )
        return PutResult(etag=resp.etag)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        for done in [k for k in self._part_md5 if k[0] == upload_id]:
            del self._part_md5[done]
        try:
            await self.conn.abort_multipart_upload(self.bucket, key, upload_id)
        except NoSuchUpload:
            pass
        except Exception as exc:
            log.warning("could not abort upload %s of %r: %s", upload_id, key, exc)
            return  # still journaled: the next mount tries again
        await self.journal.finished(upload_id)

    async def list_multipart(self, prefix: str) -> list[PendingUpload]:
        found = await self.conn.list_multipart_uploads(self.bucket, prefix)
        return [PendingUpload(u.key, u.upload_id, u.initiated) for u in found]

    async def copy(
        self,
        src: str,
        dst: str,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> PutResult:
        headers = _merged(
            {"content-type": content_type} if content_type and metadata is not None else None,
            self.headers.write,
            self.headers.copy_source,
        )
        resp = await self.conn.copy(
            self.bucket, src, self.bucket, dst, metadata=metadata, headers=headers
        )
        return PutResult(etag=resp.etag)

    def presign_get(self, key: str, expires: int) -> str:
        """A presigned GET of ``key`` (a ``PresigningStore``), signed as the connection signs."""
        return self.conn.url_generator(expires).generate_url("GET", self.bucket, key)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(NoSuchKey):  # some services answer 404 where S3 says 204
            await self.conn.delete(self.bucket, key)

    async def delete_many(self, keys: Iterable[str]) -> list[str]:
        wanted = list(keys)
        if not wanted:
            return []
        resp = await self.conn.delete_objects(self.bucket, wanted)
        return [e.key for e in resp.errors if e.code != "NoSuchKey"]


class S3Account:
    """The account's buckets through the connection (``buckets.Account``): listed, created in
    the connection's region, deleted."""

    def __init__(self, conn: S3fmAuthConnection) -> None:
        self.conn = conn

    async def list_buckets(self) -> list[BucketEntry]:
        resp = await self.conn.list_all_my_buckets()
        return [
            BucketEntry(b.name, parse_s3_time(b.creation_date) if b.creation_date else 0)
            for b in resp.entries
        ]

    async def create_bucket(self, name: str) -> None:
        region = self.conn.region
        location = region if region and region != "us-east-1" else Location.DEFAULT
        await self.conn.create_located_bucket(name, location)

    async def delete_bucket(self, name: str) -> None:
        await self.conn.delete_bucket(name)
