"""python-s3's operations on buckets and objects, mixed into ``S3fmAuthConnection``.

Invariants:
- Every operation keeps python-s3's name and argument order; a success returns a ``Response``
  (subclass) with the HTTP status, a failure raises from ``errors``.
- ``get`` holds a body in memory only up to ``spool_size``; a bigger one goes to a temporary file.
- A ranged ``get`` delivers every byte its answer's ``Content-Range`` promised, or raises
  ``InvalidResponseError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ._encoding import Query, lower_headers, range_header
from ._engine import Engine
from ._reading import check_range, content_range, file_size, read_all, spool_to_file, xml_body
from ._request_body import RequestBody
from ._xml import build_create_bucket, parse_list_buckets, parse_list_objects, parse_location
from .models import (
    GetResponse,
    ListAllMyBucketsResponse,
    ListBucketResponse,
    Location,
    LocationResponse,
    Response,
    S3Object,
    metadata_to_headers,
)


class PythonS3Operations:
    """python-s3's bucket and object operations, over ``self._engine``."""

    _engine: Engine
    spool_size: int

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
            "GET", bucket, "", query, headers, missing="NoSuchBucket", consume=xml_body
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
            "GET", bucket, "", (("location", None),), missing="NoSuchBucket", consume=xml_body
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
        resp, body = await self._engine.request("GET", "", "", (), headers, consume=xml_body)
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
        all_headers = {**metadata_to_headers(obj.metadata), **lower_headers(headers)}
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
        all_headers = lower_headers(headers)
        if byte_range is not None:
            all_headers["range"] = range_header(byte_range)

        async def spool(resp: httpx.Response) -> Any:
            length = resp.headers.get("content-length")
            if length is not None and int(length) <= limit:
                return await read_all(resp)
            return await spool_to_file(resp, limit)

        resp, data = await self._engine.request("GET", bucket, key, (), all_headers, consume=spool)
        promised = content_range(resp) if byte_range is not None else None
        if promised is not None:
            received = len(data) if isinstance(data, bytes) else await file_size(data)
            check_range(resp, f"/{bucket}/{key}", promised[0], received, None)
        return GetResponse(resp, data)

    async def head(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None = None,
        *,
        part_number: int | None = None,
    ) -> Response:
        """An object's headers and metadata (``.metadata``, ``.content_length``, ``.etag``);
        with ``part_number``, ``.content_length`` is that part's of a multipart upload."""
        query: Query = () if part_number is None else (("partNumber", str(part_number)),)
        resp, _ = await self._engine.request("HEAD", bucket, key, query, headers)
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
            consume=xml_body,
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
        all_headers = {"content-type": "application/xml", **lower_headers(headers)}
        resp, _ = await self._engine.request(
            "PUT", bucket, key, ((subresource, None),), all_headers, RequestBody(document)
        )
        return Response(resp)
