"""``QueryStringAuthGenerator``: python-s3's URL generator, for Signature V2 and V4.

Invariants:
- Same operations, names and argument order as ``S3fmAuthConnection``; each returns a URL
  string instead of performing the request.
- V2 URLs name the key ``S3fmAccessKeyId`` on S3for.me hosts, ``AWSAccessKeyId`` elsewhere;
  V4 URLs carry the ``X-Amz-*`` parameters. Both are computed by the same signers as requests.
- Expiry is ``set_expires_in`` seconds from now (default 60) or an absolute ``set_expires``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from . import _signing_v2, _signing_v4
from ._encoding import Query
from ._endpoint import (
    DEFAULT_HOST,
    PORTS_BY_SECURITY,
    Endpoint,
    default_calling_format,
    is_s3forme,
    parse_endpoint_url,
)
from ._signing_types import Credentials
from .connection import default_signature
from .limits import MAX_PRESIGN_EXPIRES
from .models import CallingFormat, Location, S3Object, metadata_to_headers

#: V4 presigned URLs cannot live longer than this (AWS's limit).


class QueryStringAuthGenerator:
    """Builds presigned URLs for the python-s3 operations.

    Takes ``endpoint_url`` and chooses a calling format as ``S3fmAuthConnection`` does;
    ``calling_format`` can be changed afterwards (python-s3's scripts do).
    """

    DEFAULT_EXPIRES_IN = 60

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        is_secure: bool = True,
        server: str = DEFAULT_HOST,
        port: int | None = None,
        calling_format: CallingFormat | None = None,
        *,
        endpoint_url: str | None = None,
        signature: str | None = None,
        region: str = "us-east-1",
        session_token: str | None = None,
        key_param: str | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        if endpoint_url is not None:
            is_secure, server, port = parse_endpoint_url(endpoint_url)
        self.aws_access_key_id = access_key_id
        self.is_secure = is_secure
        self.protocol = "https" if is_secure else "http"
        self.server = server
        self.port = port or PORTS_BY_SECURITY[is_secure]
        calling_format = CallingFormat(calling_format or default_calling_format(server))
        self.signature = signature or default_signature(server)
        if self.signature not in ("v2", "v4"):
            raise ValueError(f"signature must be 'v2' or 'v4', not {self.signature!r}")
        self.region = region
        self.key_param = key_param or (
            "S3fmAccessKeyId" if is_s3forme(server) else "AWSAccessKeyId"
        )
        self.server_name = f"{server}:{self.port}"  # python-s3 compatibility
        self._credentials = Credentials(access_key_id, secret_access_key, session_token)
        self._endpoint = Endpoint(server, self.port, is_secure, calling_format)
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._expires_in: int | None = self.DEFAULT_EXPIRES_IN
        self._expires: int | None = None

    def __repr__(self) -> str:
        return (
            f"QueryStringAuthGenerator(server={self.server!r}, signature={self.signature!r}, "
            f"access_key_id={self.aws_access_key_id!r})"
        )

    @property
    def calling_format(self) -> CallingFormat:
        """Where bucket names go in the URLs made from now on."""
        return self._endpoint.calling_format

    @calling_format.setter
    def calling_format(self, value: CallingFormat) -> None:
        e = self._endpoint
        self._endpoint = Endpoint(e.server, e.port, e.is_secure, CallingFormat(value))

    def set_expires_in(self, expires_in: int) -> None:
        """URLs expire ``expires_in`` seconds after they are made."""
        self._expires_in = int(expires_in)
        self._expires = None

    def set_expires(self, expires: int) -> None:
        """URLs expire at this absolute time (epoch seconds)."""
        self._expires = int(expires)
        self._expires_in = None

    # -- operations (python-s3's names and argument order) ----------------------------------

    def create_bucket(self, bucket: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("PUT", bucket, "", {}, headers)

    def create_located_bucket(
        self,
        bucket: str,
        location: str | None = Location.DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """The body (a CreateBucketConfiguration) is the uploader's to send."""
        return self.generate_url("PUT", bucket, "", {}, headers)

    def check_bucket_exists(self, bucket: str) -> str:
        return self.generate_url("HEAD", bucket, "", {})

    def list_bucket(
        self,
        bucket: str,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        return self.generate_url("GET", bucket, "", options, headers)

    def delete_bucket(self, bucket: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("DELETE", bucket, "", {}, headers)

    def get_bucket_location(self, bucket: str) -> str:
        return self.generate_url("GET", bucket, "", {"location": None})

    def put(
        self, bucket: str, key: str, object: Any, headers: Mapping[str, str] | None = None
    ) -> str:
        """The metadata of an ``S3Object`` is signed: the uploader must send those headers."""
        obj = object if isinstance(object, S3Object) else S3Object(object)
        all_headers = {**metadata_to_headers(obj.metadata), **(headers or {})}
        return self.generate_url("PUT", bucket, key, {}, all_headers)

    def get(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("GET", bucket, key, {}, headers)

    def head(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("HEAD", bucket, key, {}, headers)

    def delete(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("DELETE", bucket, key, {}, headers)

    def get_bucket_logging(self, bucket: str, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("GET", bucket, "", {"logging": None}, headers)

    def put_bucket_logging(
        self, bucket: str, logging_xml_doc: str | bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        return self.generate_url("PUT", bucket, "", {"logging": None}, headers)

    def get_bucket_acl(self, bucket: str, headers: Mapping[str, str] | None = None) -> str:
        return self.get_acl(bucket, "", headers)

    def get_acl(self, bucket: str, key: str = "", headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("GET", bucket, key, {"acl": None}, headers)

    def put_bucket_acl(
        self, bucket: str, acl_xml_document: str | bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        return self.put_acl(bucket, "", acl_xml_document, headers)

    def put_acl(
        self,
        bucket: str,
        key: str,
        acl_xml_document: str | bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        return self.generate_url("PUT", bucket, key, {"acl": None}, headers)

    def list_all_my_buckets(self, headers: Mapping[str, str] | None = None) -> str:
        return self.generate_url("GET", "", "", {}, headers)

    def make_bare_url(self, bucket: str, key: str = "") -> str:
        """The object's URL without any authentication."""
        req = self._endpoint.signing_request("GET", bucket, key, (), {})
        return self._endpoint.url(req)

    # -- the one place URLs are made --------------------------------------------------------

    def generate_url(
        self,
        method: str,
        bucket: str = "",
        key: str = "",
        query_args: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """A presigned URL for any request."""
        query: Query = tuple(
            (k, None if v is None else str(v)) for k, v in (query_args or {}).items()
        )
        lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
        req = self._endpoint.signing_request(method.upper(), bucket, key, query, lowered)
        now = self._clock()
        if self.signature == "v2":
            if self._expires is not None:
                expires = self._expires
            else:
                expires = int(now.timestamp()) + int(self._expires_in or 0)
            params = _signing_v2.presign_v2(req, self._credentials, expires, self.key_param)
        else:
            if self._expires is not None:
                expires_in = self._expires - int(now.timestamp())
            else:
                expires_in = int(self._expires_in or 0)
            if not 1 <= expires_in <= MAX_PRESIGN_EXPIRES:
                raise ValueError(f"V4 URLs expire in 1 s to 7 days, not {expires_in} s")
            params = _signing_v4.presign_v4(req, self._credentials, self.region, now, expires_in)
        return self._endpoint.url(req, tuple(params))
