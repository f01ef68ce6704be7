"""What the filesystem needs beyond python-s3 (server-side copy, streamed and sink-fed GETs,
paged listings, batch deletes), mixed into ``S3fmAuthConnection``.

Invariants:
- Bodies are streamed: ``get_stream`` and ``get_into`` never hold a whole object in memory.
- ``get_into`` hands ``sink`` every byte of the range exactly once, or raises
  (``InvalidResponseError`` when the answer ends before its ``Content-Range`` promised).
- ``list_pages`` yields every page once, switching to V1 markers when a service ignores
  ListObjectsV2, and fails rather than loop on a truncated page it cannot continue.
- A copy's ``<Error>`` inside a 200 answer is raised inside the attempt, so it is retried.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import httpx

from ._encoding import lower_headers, quote_key, range_header
from ._engine import Engine
from ._reading import check_range, checked_body, xml_body
from ._request_body import RequestBody
from ._xml import build_delete, parse_copy_result, parse_delete_result, parse_list_objects
from .errors import InvalidResponseError, host_of, wrap_transport_error
from .models import (
    CopyResponse,
    DeleteError,
    DeleteObjectsResponse,
    ListPage,
    Response,
    metadata_to_headers,
)

DELETE_BATCH = 1000


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
            raise wrap_transport_error(
                exc, method="GET", url=self._resource, host=host_of(self._http.request.url)
            ) from exc


class ExtendedOperations:
    """Copy, streamed GETs, listing pages and batch deletes, over ``self._engine``."""

    _engine: Engine
    list_api: int

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
        all_headers = lower_headers(headers)
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

        resp = await self._engine.get_into(bucket, key, lower_headers(headers), start, end, counted)
        check_range(resp, f"/{bucket}/{key}", start, received, end)
        return Response(resp)

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
        all_headers = lower_headers(headers)
        all_headers["x-amz-copy-source"] = quote_key(f"{src_bucket}/{src_key}")
        if metadata is not None:
            all_headers["x-amz-metadata-directive"] = "REPLACE"
            all_headers.update(metadata_to_headers(dict(metadata)))
        else:
            all_headers.setdefault("x-amz-metadata-directive", "COPY")
        resp, body = await self._engine.request(
            "PUT", dst_bucket, dst_key, (), all_headers, RequestBody(b""), consume=checked_body
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
                    "GET", bucket, "", tuple(params), missing="NoSuchBucket", consume=xml_body
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
                consume=xml_body,
            )
            done, failed = parse_delete_result(body)
            deleted.extend(done)
            errors.extend(failed)
        if resp is None:
            return DeleteObjectsResponse(_empty_response(), [], [])
        return DeleteObjectsResponse(resp, deleted, errors)


def _last_name(page: ListPage) -> str:
    """The greatest key or common prefix of a page (its V1 marker when none is given)."""
    names = [e.key for e in page.entries] + [p.prefix for p in page.common_prefixes]
    return max(names) if names else ""


def _empty_response() -> httpx.Response:
    """The answer of a batch delete of no keys (no request was made)."""
    return httpx.Response(200)
