"""Multipart uploads (create, upload and copy parts, complete, abort, list), mixed into
``S3fmAuthConnection``.

Invariants:
- Each operation is one request (listings: one per page, all pages read); retries are the
  engine's, and a part sent from a stream is sent once.
- ``UploadPartCopy`` and ``CompleteMultipartUpload`` answers carrying an ``<Error>`` in a 200
  raise inside the attempt, so they are retried like any other failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._encoding import Query, lower_headers, quote_key, range_header
from ._engine import Engine
from ._reading import checked_body, xml_body
from ._request_body import RequestBody
from ._xml import (
    build_complete_multipart,
    parse_copy_result,
    parse_initiate_multipart,
    parse_list_parts,
    parse_list_uploads,
)
from .models import CopyResponse, MultipartUploadInfo, Part, Response, metadata_to_headers


class MultipartOperations:
    """S3's multipart upload operations, over ``self._engine``."""

    _engine: Engine

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload; returns its upload id."""
        all_headers = {**metadata_to_headers(dict(metadata or {})), **lower_headers(headers)}
        _, body = await self._engine.request(
            "POST",
            bucket,
            key,
            (("uploads", None),),
            all_headers,
            RequestBody(b""),
            consume=xml_body,
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
        headers: Mapping[str, str] | None = None,
    ) -> Part:
        """Upload one part (1..10000); returns it with its ETag for completion (``headers``:
        e.g. the SSE-C key the upload was initiated with, a ``Content-MD5``)."""
        part, _ = await self.upload_part_answer(
            bucket,
            key,
            upload_id,
            part_number,
            data,
            content_length=content_length,
            headers=headers,
        )
        return part

    async def upload_part_answer(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        data: Any,
        *,
        content_length: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Part, Response]:
        """``upload_part``, with the answer (its headers say whether the ETag is an MD5)."""
        body = RequestBody(data, content_length)
        query: Query = (("partNumber", str(part_number)), ("uploadId", upload_id))
        resp, _ = await self._engine.request(
            "PUT", bucket, key, query, lower_headers(headers), body
        )
        return Part(part_number, resp.headers.get("etag", ""), body.length), Response(resp)

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
            "PUT", bucket, key, query, headers, RequestBody(b""), consume=checked_body
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
            consume=checked_body,
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
                "GET", bucket, key, query, missing="NoSuchUpload", consume=xml_body
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
                "GET", bucket, "", query, missing="NoSuchBucket", consume=xml_body
            )
            found, truncated, key_marker, upload_marker = parse_list_uploads(body)
            uploads.extend(found)
            if not truncated or not key_marker:
                return uploads
