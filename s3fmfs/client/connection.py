"""``S3fmAuthConnection``: python-s3's connection, async, over one pooled httpx client.

Invariants:
- Every python-s3 operation keeps its name and argument order; a success returns a
  ``Response`` (subclass) with the HTTP status, a failure raises from ``errors``.
- Signature V2 is the default for S3for.me hosts, V4 elsewhere.
- Bodies are streamed: nothing here holds a whole large object in memory unless the caller asks
  for bytes (``get`` below ``spool_size``).
- XML answers are read up to ``MAX_XML_BODY`` and no further: a bigger one (announced or
  streamed) is ``InvalidResponseError``, its connection dropped, never parsed.
- A ranged read (``get`` with a range, ``get_into``) delivers every byte the answer's
  ``Content-Range`` promised, or raises ``InvalidResponseError`` (a ``Content-Length``
  shorter than the range would otherwise look like the end of the object).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import IO, Any

import httpx
import trio

from .. import __version__
from ._encoding import Query, quote_key
from ._endpoint import DEFAULT_HOST, PORTS_BY_SECURITY, Endpoint, is_s3forme
from ._engine import Engine, RequestBody, read_all
from ._signing_types import Credentials
from ._xml import (
    build_complete_multipart,
    build_create_bucket,
    build_delete,
    embedded_error,
    parse,
    parse_copy_result,
    parse_delete_result,
    parse_initiate_multipart,
    parse_list_buckets,
    parse_list_objects,
    parse_list_parts,
    parse_list_uploads,
    parse_location,
)
from .errors import InvalidResponseError, error_from_response, wrap_transport_error
from .models import (
    CallingFormat,
    CopyResponse,
    DeleteError,
    DeleteObjectsResponse,
    GetResponse,
    ListAllMyBucketsResponse,
    ListBucketResponse,
    ListPage,
    Location,
    LocationResponse,
    MultipartUploadInfo,
    Part,
    Response,
    S3Object,
    metadata_to_headers,
)
from .retry import RetryPolicy

#: Bodies above this size are spooled to a temporary file by ``get`` (python-s3's spool_size).
DEFAULT_SPOOL_SIZE = 8 << 20
#: The largest XML answer read. The biggest legitimate ones (a page of 1,000 keys of 1,024
#: bytes, URL-encoded, or 1,000 DeleteObjects results) stay under 4 MiB.
MAX_XML_BODY = 16 << 20
DELETE_BATCH = 1000


def _trusting(ca_bundle: str) -> ssl.SSLContext:
    """A verifying TLS context that trusts the CAs of a PEM file or hashed directory."""
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


def default_signature(server: str) -> str:
    """V2 for S3for.me (python-s3's service), V4 for everything else."""
    return "v2" if is_s3forme(server) else "v4"


def range_header(byte_range: tuple[int, int | None]) -> str:
    """``bytes=start-end`` (end inclusive; None = to the end)."""
    start, end = byte_range
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"


class S3fmAuthConnection:
    """Signs and performs S3 requests; use as ``async with S3fmAuthConnection(...) as conn``.

    Keyword options beyond python-s3's: ``signature`` ('v2'/'v4'), ``region``,
    ``session_token``, ``spool_size``, ``timeout`` (seconds or ``httpx.Timeout``),
    ``connect_timeout``, ``retry`` (a ``RetryPolicy``), ``max_connections``, ``verify``
    (TLS: True, False, a CA bundle path or an ``ssl.SSLContext``), ``transport`` (an httpx
    transport), ``list_api`` (2 for ListObjectsV2, 1 for V1 markers), ``clock`` (for tests).
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        is_secure: bool = True,
        server: str = DEFAULT_HOST,
        port: int | None = None,
        calling_format: CallingFormat = CallingFormat.SUBDOMAIN,
        *,
        signature: str | None = None,
        region: str = "us-east-1",
        session_token: str | None = None,
        spool_size: int = DEFAULT_SPOOL_SIZE,
        timeout: float | httpx.Timeout = 60.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        list_api: int = 2,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.aws_access_key_id = access_key_id
        self.is_secure = is_secure
        self.server = server
        self.port = port or PORTS_BY_SECURITY[is_secure]
        self.calling_format = CallingFormat(calling_format)
        self.signature = signature or default_signature(server)
        self.region = region
        self.spool_size = spool_size
        self.list_api = list_api
        if isinstance(verify, str):  # one context for every pool (httpx deprecates paths)
            verify = _trusting(verify)
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._engine = Engine(
            Endpoint(server, self.port, is_secure, self.calling_format),
            Credentials(access_key_id, secret_access_key, session_token),
            signature=self.signature,
            region=region,
            retry=retry or RetryPolicy(),
            timeout=timeout,
            max_connections=max_connections,
            verify=verify,
            transport=transport,
            clock=clock,
            user_agent=f"s3fmfs/{__version__}",
        )

    def __repr__(self) -> str:
        return (
            f"S3fmAuthConnection(server={self.server!r}, port={self.port}, "
            f"signature={self.signature!r}, access_key_id={self.aws_access_key_id!r})"
        )

    async def __aenter__(self) -> S3fmAuthConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._engine.aclose()

    # -- python-s3's bucket operations -------------------------------------------------------

    async def create_bucket(
        self, bucket: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Create a bucket in the default location."""
        return await self.create_located_bucket(bucket, Location.DEFAULT, headers)

    async def create_located_bucket(
        self,
        bucket: str,
        location: str | None = Location.DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Create a bucket with a location constraint."""
        body = RequestBody(build_create_bucket(location))
        resp, _ = await self._engine.request("PUT", bucket, "", (), headers, body)
        return Response(resp)

    async def check_bucket_exists(self, bucket: str) -> Response:
        """HEAD the bucket: a Response when it exists, NoSuchBucket (or AccessDenied) if not."""
        resp, _ = await self._engine.request("HEAD", bucket, "", missing="NoSuchBucket")
        return Response(resp)

    async def list_bucket(
        self,
        bucket: str,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ListBucketResponse:
        """One page of a V1 listing; ``options`` as in python-s3 (prefix, marker, max-keys,
        delimiter)."""
        query: Query = tuple((k, None if v is None else str(v)) for k, v in (options or {}).items())
        resp, body = await self._engine.request(
            "GET", bucket, "", query, headers, missing="NoSuchBucket", consume=_xml_body
        )
        return ListBucketResponse(resp, parse_list_objects(body))

    async def delete_bucket(
        self, bucket: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Delete an empty bucket."""
        resp, _ = await self._engine.request(
            "DELETE", bucket, "", (), headers, missing="NoSuchBucket"
        )
        return Response(resp)

    async def get_bucket_location(self, bucket: str) -> LocationResponse:
        """The bucket's location constraint, in ``.location`` (None = default)."""
        resp, body = await self._engine.request(
            "GET", bucket, "", (("location", None),), missing="NoSuchBucket", consume=_xml_body
        )
        return LocationResponse(resp, parse_location(body))

    async def get_bucket_logging(
        self, bucket: str, headers: Mapping[str, str] | None = None
    ) -> GetResponse:
        """The logging configuration document, in ``.object.data``."""
        return await self._get_xml(bucket, "", "logging", headers)

    async def put_bucket_logging(
        self, bucket: str, logging_xml_doc: str | bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Set the logging configuration document."""
        return await self._put_xml(bucket, "", "logging", logging_xml_doc, headers)

    async def get_bucket_acl(
        self, bucket: str, headers: Mapping[str, str] | None = None
    ) -> GetResponse:
        """The bucket's ACL document, in ``.object.data``."""
        return await self.get_acl(bucket, "", headers)

    async def put_bucket_acl(
        self, bucket: str, acl_xml_document: str | bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Set the bucket's ACL document."""
        return await self.put_acl(bucket, "", acl_xml_document, headers)

    async def list_all_my_buckets(
        self, headers: Mapping[str, str] | None = None
    ) -> ListAllMyBucketsResponse:
        """The account's buckets, in ``.entries``."""
        resp, body = await self._engine.request("GET", "", "", (), headers, consume=_xml_body)
        entries, owner = parse_list_buckets(body)
        return ListAllMyBucketsResponse(resp, entries, owner)

    # -- python-s3's object operations -------------------------------------------------------

    async def put(
        self,
        bucket: str,
        key: str,
        object: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_length: int | None = None,
    ) -> Response:
        """Write an object: bytes, str, a binary file, an async iterator (with
        ``content_length``), or an ``S3Object(data, metadata)``."""
        obj = object if isinstance(object, S3Object) else S3Object(object)
        all_headers = {**metadata_to_headers(obj.metadata), **_lower(headers)}
        body = RequestBody(obj.data, content_length)
        resp, _ = await self._engine.request("PUT", bucket, key, (), all_headers, body)
        return Response(resp)

    async def get(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        *,
        byte_range: tuple[int, int | None] | None = None,
        spool_size: int | None = None,
    ) -> GetResponse:
        """Read an object; ``.object.data`` is bytes up to ``spool_size``, else a temp file.

        ``byte_range=(start, end)`` (end inclusive, None = to the end) makes a ranged GET.
        """
        limit = self.spool_size if spool_size is None else spool_size
        all_headers = _lower(headers)
        if byte_range is not None:
            all_headers["range"] = range_header(byte_range)

        async def spool(resp: httpx.Response) -> Any:
            length = resp.headers.get("content-length")
            if length is not None and int(length) <= limit:
                return await read_all(resp)
            return await _spool_to_file(resp, limit)

        resp, data = await self._engine.request("GET", bucket, key, (), all_headers, consume=spool)
        promised = _content_range(resp) if byte_range is not None else None
        if promised is not None:
            received = len(data) if isinstance(data, bytes) else await _file_size(data)
            _check_range(resp, f"/{bucket}/{key}", promised[0], received, None)
        return GetResponse(resp, data)

    @contextlib.asynccontextmanager
    async def get_stream(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        *,
        byte_range: tuple[int, int | None] | None = None,
    ) -> AsyncIterator[StreamingGetResponse]:
        """Read an object as an async stream of bytes::

        async with conn.get_stream(bucket, key) as resp:
            async for chunk in resp.aiter_bytes():
                ...
        """
        all_headers = _lower(headers)
        if byte_range is not None:
            all_headers["range"] = range_header(byte_range)
        resp = await self._engine.stream("GET", bucket, key, (), all_headers)
        try:
            yield StreamingGetResponse(resp, f"/{bucket}/{key}")
        finally:
            await resp.aclose()

    async def get_into(
        self,
        bucket: str,
        key: str,
        sink: Callable[[bytes], Awaitable[object]],
        headers: Mapping[str, str] | None = None,
        *,
        byte_range: tuple[int, int | None] | None = None,
    ) -> Response:
        """Read an object (or ``byte_range``), handing each chunk to ``sink`` as it arrives.

        Unlike ``get_stream``, a connection lost mid-body is retried, from the first byte not
        yet handed over and of the same version, so ``sink`` sees every byte exactly once.
        Nothing more is read until ``sink`` returns.
        """
        start, end = byte_range if byte_range is not None else (0, None)
        received = 0

        async def counted(chunk: bytes) -> object:
            nonlocal received
            received += len(chunk)
            return await sink(chunk)

        resp = await self._engine.get_into(bucket, key, _lower(headers), start, end, counted)
        _check_range(resp, f"/{bucket}/{key}", start, received, end)
        return Response(resp)

    async def head(
        self, bucket: str, key: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """An object's headers and metadata (``.metadata``, ``.content_length``, ``.etag``)."""
        resp, _ = await self._engine.request("HEAD", bucket, key, (), headers)
        return Response(resp)

    async def delete(
        self, bucket: str, key: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Delete an object (S3 answers 204 whether or not it existed)."""
        resp, _ = await self._engine.request("DELETE", bucket, key, (), headers)
        return Response(resp)

    async def get_acl(
        self, bucket: str, key: str, headers: Mapping[str, str] | None = None
    ) -> GetResponse:
        """An object's (or with key "", the bucket's) ACL document, in ``.object.data``."""
        return await self._get_xml(bucket, key, "acl", headers)

    async def put_acl(
        self,
        bucket: str,
        key: str,
        acl_xml_document: str | bytes,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Set an object's (or with key "", the bucket's) ACL document."""
        return await self._put_xml(bucket, key, "acl", acl_xml_document, headers)

    # -- what the filesystem needs beyond python-s3 ----------------------------------------

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CopyResponse:
        """Server-side copy. Metadata is copied (COPY) unless ``metadata`` is given, which
        replaces it (REPLACE; pass content-type in ``headers`` to keep one)."""
        all_headers = _lower(headers)
        all_headers["x-amz-copy-source"] = quote_key(f"{src_bucket}/{src_key}")
        if metadata is not None:
            all_headers["x-amz-metadata-directive"] = "REPLACE"
            all_headers.update(metadata_to_headers(dict(metadata)))
        else:
            all_headers.setdefault("x-amz-metadata-directive", "COPY")
        resp, body = await self._engine.request(
            "PUT", dst_bucket, dst_key, (), all_headers, RequestBody(b""), consume=_checked_body
        )
        etag, modified = parse_copy_result(body, "CopyObject")
        return CopyResponse(resp, etag, modified)

    async def list_pages(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        *,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncGenerator[ListPage, None]:
        """Every page of a listing: ListObjectsV2 with continuation tokens, or V1 markers
        (``list_api=1``, or automatically when a service ignores ``list-type=2``).

        Names are requested URL-encoded and decoded when the service says it encoded them, so
        keys with characters XML cannot carry list too."""
        token: str | None = None
        marker = start_after
        use_v2 = self.list_api == 2
        while True:
            params: list[tuple[str, str | None]] = []
            if use_v2:
                params.append(("list-type", "2"))
                if token:
                    params.append(("continuation-token", token))
                elif start_after:
                    params.append(("start-after", start_after))
            elif marker:
                params.append(("marker", marker))
            if prefix:
                params.append(("prefix", prefix))
            if delimiter:
                params.append(("delimiter", delimiter))
            params.append(("max-keys", str(page_size)))
            params.append(("encoding-type", "url"))  # keys XML 1.0 cannot carry (U+0001…)
            try:
                _, body = await self._engine.request(
                    "GET", bucket, "", tuple(params), missing="NoSuchBucket", consume=_xml_body
                )
                page = parse_list_objects(body)
            except InvalidResponseError as exc:  # say which listing
                raise InvalidResponseError(f"{exc} [list /{bucket}/{prefix}]") from None
            yield page
            if not page.is_truncated:
                return
            if use_v2 and page.next_continuation_token:
                token = page.next_continuation_token
                continue
            if use_v2 and page.key_count is None and token is None:
                use_v2 = False  # the service answered in V1 form: go on with markers
            last = _last_name(page)
            next_marker = page.next_marker or last
            if not next_marker or next_marker == marker:
                raise InvalidResponseError("truncated listing without a way to continue")
            marker = next_marker
            if use_v2:
                token = None
                start_after = marker

    async def delete_objects(self, bucket: str, keys: Iterable[str]) -> DeleteObjectsResponse:
        """Batch delete (DeleteObjects), 1000 keys a request; per-key failures in ``.errors``."""
        all_keys = list(keys)
        deleted: list[str] = []
        errors: list[DeleteError] = []
        resp: httpx.Response | None = None
        for i in range(0, len(all_keys), DELETE_BATCH):
            payload = build_delete(all_keys[i : i + DELETE_BATCH])
            headers = {
                "content-md5": base64.b64encode(hashlib.md5(payload).digest()).decode(),
                "content-type": "application/xml",
            }
            resp, body = await self._engine.request(
                "POST",
                bucket,
                "",
                (("delete", None),),
                headers,
                RequestBody(payload),
                consume=_xml_body,
            )
            done, failed = parse_delete_result(body)
            deleted.extend(done)
            errors.extend(failed)
        if resp is None:
            return DeleteObjectsResponse(_empty_response(), [], [])
        return DeleteObjectsResponse(resp, deleted, errors)

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload; returns its upload id."""
        all_headers = {**metadata_to_headers(dict(metadata or {})), **_lower(headers)}
        _, body = await self._engine.request(
            "POST",
            bucket,
            key,
            (("uploads", None),),
            all_headers,
            RequestBody(b""),
            consume=_xml_body,
        )
        return parse_initiate_multipart(body)

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        data: Any,
        *,
        content_length: int | None = None,
    ) -> Part:
        """Upload one part (1..10000); returns it with its ETag for completion."""
        body = RequestBody(data, content_length)
        query: Query = (("partNumber", str(part_number)), ("uploadId", upload_id))
        resp, _ = await self._engine.request("PUT", bucket, key, query, None, body)
        return Part(part_number, resp.headers.get("etag", ""), body.length)

    async def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        src_bucket: str,
        src_key: str,
        byte_range: tuple[int, int] | None = None,
    ) -> Part:
        """Fill a part from an existing object (or a range of it), server side."""
        headers = {"x-amz-copy-source": quote_key(f"{src_bucket}/{src_key}")}
        if byte_range is not None:
            headers["x-amz-copy-source-range"] = range_header(byte_range)
        query: Query = (("partNumber", str(part_number)), ("uploadId", upload_id))
        _, body = await self._engine.request(
            "PUT", bucket, key, query, headers, RequestBody(b""), consume=_checked_body
        )
        etag, _ = parse_copy_result(body, "UploadPartCopy")
        size = byte_range[1] - byte_range[0] + 1 if byte_range else 0
        return Part(part_number, etag, size)

    async def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, parts: Iterable[Part]
    ) -> CopyResponse:
        """Assemble the parts into the object."""
        payload = build_complete_multipart(parts)
        resp, body = await self._engine.request(
            "POST",
            bucket,
            key,
            (("uploadId", upload_id),),
            {"content-type": "application/xml"},
            RequestBody(payload),
            missing="NoSuchUpload",
            consume=_checked_body,
        )
        etag, modified = parse_copy_result(body, "CompleteMultipartUpload")
        return CopyResponse(resp, etag, modified)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> Response:
        """Abort an upload and free its parts."""
        resp, _ = await self._engine.request(
            "DELETE", bucket, key, (("uploadId", upload_id),), missing="NoSuchUpload"
        )
        return Response(resp)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        """Every part uploaded so far (all pages)."""
        parts: list[Part] = []
        marker = 0
        while True:
            query: Query = (("uploadId", upload_id),)
            if marker:
                query += (("part-number-marker", str(marker)),)
            _, body = await self._engine.request(
                "GET", bucket, key, query, missing="NoSuchUpload", consume=_xml_body
            )
            page = parse_list_parts(body)
            parts.extend(page.parts)
            if not page.is_truncated or page.next_part_number_marker <= marker:
                return parts
            marker = page.next_part_number_marker

    async def list_multipart_uploads(
        self, bucket: str, prefix: str = ""
    ) -> list[MultipartUploadInfo]:
        """Uploads started and neither completed nor aborted (all pages)."""
        uploads: list[MultipartUploadInfo] = []
        key_marker = upload_marker = ""
        while True:
            query: Query = (("uploads", None),)
            if prefix:
                query += (("prefix", prefix),)
            if key_marker:
                query += (("key-marker", key_marker), ("upload-id-marker", upload_marker))
            _, body = await self._engine.request(
                "GET", bucket, "", query, missing="NoSuchBucket", consume=_xml_body
            )
            found, truncated, key_marker, upload_marker = parse_list_uploads(body)
            uploads.extend(found)
            if not truncated or not key_marker:
                return uploads

    # -- helpers ---------------------------------------------------------------------------

    async def _get_xml(
        self, bucket: str, key: str, subresource: str, headers: Mapping[str, str] | None
    ) -> GetResponse:
        resp, body = await self._engine.request(
            "GET",
            bucket,
            key,
            ((subresource, None),),
            headers,
            missing="NoSuchKey" if key else "NoSuchBucket",
            consume=_xml_body,
        )
        return GetResponse(resp, body)

    async def _put_xml(
        self,
        bucket: str,
        key: str,
        subresource: str,
        document: str | bytes,
        headers: Mapping[str, str] | None,
    ) -> Response:
        all_headers = {"content-type": "application/xml", **_lower(headers)}
        resp, _ = await self._engine.request(
            "PUT", bucket, key, ((subresource, None),), all_headers, RequestBody(document)
        )
        return Response(resp)


class StreamingGetResponse(Response):
    """An open GET whose body is read as a stream (``aiter_bytes``)."""

    def __init__(self, http: httpx.Response, resource: str) -> None:
        super().__init__(http)
        self._http = http
        self._resource = resource

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (raw: never decompressed)."""
        try:
            async for chunk in self._http.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise wrap_transport_error(exc, method="GET", url=self._resource) from exc


async def _spool_to_file(resp: httpx.Response, limit: int) -> Any:
    """Read a body into memory up to ``limit`` bytes, then into a temporary file."""
    buffer = bytearray()
    spooled: IO[bytes] | None = None
    async for chunk in resp.aiter_raw():
        if spooled is None:
            buffer += chunk
            if len(buffer) <= limit:
                continue
            spooled = await trio.to_thread.run_sync(tempfile.TemporaryFile)
            data = bytes(buffer)
            buffer.clear()
            await trio.to_thread.run_sync(spooled.write, data)
        else:
            await trio.to_thread.run_sync(spooled.write, chunk)
    if spooled is None:
        return bytes(buffer)
    await trio.to_thread.run_sync(spooled.seek, 0)
    return spooled


async def _file_size(spooled: Any) -> int:
    """The size of a spooled body (a temporary file positioned at 0)."""
    return int(await trio.to_thread.run_sync(lambda: os.fstat(spooled.fileno()).st_size))


async def _checked_body(resp: httpx.Response) -> bytes:
    """Read a CopyObject / UploadPartCopy / CompleteMultipartUpload answer, raising the
    ``<Error>`` a 200 can carry inside the attempt, so that it is retried like any other."""
    body = await _xml_body(resp)
    if body.strip() and embedded_error(parse(body, "copy")):
        request = resp.request
        raise error_from_response(
            500, resp.headers, body, method=request.method, resource=request.url.path
        )
    return body


async def _xml_body(resp: httpx.Response) -> bytes:
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


def _content_range(resp: httpx.Response) -> tuple[int, int] | None:
    """(a, b) of a 206 answer's ``Content-Range: bytes a-b/total``, if it has one."""
    if resp.status_code != 206:
        return None
    unit, _, spec = resp.headers.get("content-range", "").partition(" ")
    first, _, last = spec.partition("/")[0].partition("-")
    if unit.lower() != "bytes" or not first.isdigit() or not last.isdigit():
        return None
    return int(first), int(last)


def _check_range(
    resp: httpx.Response, resource: str, first: int, received: int, end: int | None
) -> None:
    """InvalidResponseError when fewer bytes arrived from byte ``first`` than Content-Range
    promised up to ``end`` (a Content-Length shorter than the range ended the body early)."""
    promised = _content_range(resp)
    if promised is None:
        return
    last = promised[1] if end is None else min(promised[1], end)
    if first + received <= last:
        raise InvalidResponseError(
            f"GET {resource}: body ended at byte {first + received} of a range promised up to "
            f"byte {last} (Content-Length does not match Content-Range)"
        )


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {k.lower(): str(v) for k, v in (headers or {}).items()}


def _last_name(page: ListPage) -> str:
    names = [e.key for e in page.entries] + [p.prefix for p in page.common_prefixes]
    return max(names) if names else ""


def _empty_response() -> httpx.Response:
    return httpx.Response(200)
