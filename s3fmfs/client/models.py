"""Values the client takes and returns, under python-s3's names where python-s3 had them.

Invariants:
- Every ``Response`` keeps the HTTP status, the reason and all headers, repeated ones included
  (``headers.get_list(name)``); ``response.http_response`` is the response itself, so code written
  for python-s3 (``response.http_response.status``, ``.getheader(...)``) keeps working.
- ``S3Object.metadata`` maps user-metadata names (without ``x-amz-meta-``) to decoded values.
- Every ``last_modified`` is a timezone-aware UTC ``datetime`` (listings' ISO 8601 and the
  header's HTTP date alike), or None when absent or unreadable; ``str()`` of one is ISO 8601
  (``2009-10-12 17:50:30+00:00``). Other dates (``creation_date``, ``initiated``) stay text.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import enum
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from .errors import S3ResponseError

METADATA_PREFIX = "x-amz-meta-"

#: Anything ``put`` accepts as a body: bytes, a binary file, or an async iterator of bytes
#: (which needs ``content_length``).
Body = bytes | bytearray | memoryview | str | IO[bytes] | AsyncIterable[bytes]


class CallingFormat(enum.IntEnum):
    """Where the bucket name goes: the path, a subdomain of the server, or the host itself."""

    PATH = 1
    SUBDOMAIN = 2
    VANITY = 3

    @staticmethod
    def build_url_base(
        protocol: str, server: str, port: int, bucket: str, calling_format: CallingFormat
    ) -> str:
        """The URL up to (not including) the key, as python-s3 built it."""
        if bucket == "":
            host = server
        elif calling_format == CallingFormat.SUBDOMAIN:
            host = f"{bucket}.{server}"
        elif calling_format == CallingFormat.VANITY:
            host = bucket
        else:
            host = server
        url = f"{protocol}://{host}:{port}"
        if bucket and calling_format == CallingFormat.PATH:
            url += f"/{bucket}"
        return url


class Location:
    """Location constraints for ``create_located_bucket``."""

    DEFAULT: str | None = None
    EU = "EU"


def parse_time(text: str) -> datetime.datetime | None:
    """S3's ISO 8601 (listings, copies) or an HTTP date (``Last-Modified``) as an aware UTC
    datetime; None when empty or unreadable."""
    text = text.strip()
    if not text:
        return None
    try:
        if text[0].isdigit():
            when = datetime.datetime.fromisoformat(text)
        else:
            when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


@dataclass
class S3Object:
    """An object's data with its user metadata.

    From ``get``, ``data`` is ``bytes`` when the body fits in the connection's ``spool_size``
    and otherwise a binary temporary file positioned at 0 (python-s3's spooling).
    """

    data: Any
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Owner:
    """The owner of a bucket or object, as listings report it."""

    id: str = ""
    display_name: str = ""


@dataclass
class ListEntry:
    """One object of a listing."""

    key: str = ""
    last_modified: datetime.datetime | None = None
    etag: str = ""
    size: int = 0
    storage_class: str = ""
    owner: Owner | None = None


@dataclass
class CommonPrefixEntry:
    """A "folder" of a delimited listing."""

    prefix: str = ""


@dataclass
class Bucket:
    """One bucket of ``list_all_my_buckets``."""

    name: str = ""
    creation_date: str = ""


@dataclass
class ListPage:
    """One page of a listing, whichever API (V1 markers or V2 tokens) produced it."""

    entries: list[ListEntry] = field(default_factory=list)
    common_prefixes: list[CommonPrefixEntry] = field(default_factory=list)
    name: str = ""
    prefix: str = ""
    delimiter: str = ""
    max_keys: int = 0
    is_truncated: bool = False
    marker: str = ""
    next_marker: str = ""
    continuation_token: str = ""
    next_continuation_token: str = ""
    start_after: str = ""
    key_count: int | None = None
    #: "url" when the service encoded the names (``encoding-type=url``); the parser decodes them
    encoding_type: str = ""


@dataclass
class Part:
    """A multipart part: its number and ETag (all CompleteMultipartUpload needs)."""

    part_number: int
    etag: str
    size: int = 0
    last_modified: datetime.datetime | None = None


@dataclass
class PartsPage:
    """A page of ListParts."""

    parts: list[Part] = field(default_factory=list)
    is_truncated: bool = False
    next_part_number_marker: int = 0


@dataclass
class MultipartUploadInfo:
    """An upload in progress, from ListMultipartUploads."""

    key: str
    upload_id: str
    initiated: str = ""


@dataclass
class DeleteError:
    """A key that DeleteObjects could not delete."""

    key: str
    code: str
    message: str = ""


class Response:
    """A successful answer: status, reason and every header."""

    #: The error answer this stands for, when the blocking client returns one (python-s3's
    #: way) instead of raising it; None for a success.
    error: S3ResponseError | None = None

    def __init__(self, http: httpx.Response) -> None:
        self.status: int = http.status_code
        self.reason: str = http.reason_phrase
        self.headers: httpx.Headers = http.headers
        self.message = f"{self.status:03d} {self.reason}"

    @property
    def http_response(self) -> Response:
        """python-s3 code reads ``response.http_response.status``: it is this object."""
        return self

    def getheader(self, name: str, default: str | None = None) -> str | None:
        """The header's value; repeated headers joined with ", " (use ``getheaders``)."""
        values = self.headers.get_list(name)
        return ", ".join(values) if values else default

    def getheaders(self, name: str) -> list[str]:
        """Every value of a header, in the order received."""
        return self.headers.get_list(name)

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata (``x-amz-meta-*``), names lower-cased without the prefix."""
        return metadata_from_headers(self.headers)

    @property
    def etag(self) -> str:
        """The ETag header, quotes included as S3 sends it."""
        return str(self.headers.get("etag", ""))

    @property
    def content_length(self) -> int:
        """The Content-Length header (0 when absent)."""
        return int(self.headers.get("content-length", "0") or 0)

    @property
    def last_modified(self) -> datetime.datetime | None:
        """The Last-Modified header (UTC; None when absent or unreadable)."""
        return parse_time(self.headers.get("last-modified", ""))

    @property
    def content_type(self) -> str:
        """The Content-Type header."""
        return str(self.headers.get("content-type", ""))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.message}>"


class GetResponse(Response):
    """A GET's answer: ``.object`` holds data and metadata (python-s3's shape)."""

    def __init__(self, http: httpx.Response, data: Any) -> None:
        super().__init__(http)
        self.object = S3Object(data, self.metadata)

    @property
    def body(self) -> Any:
        """The object's data (bytes, or a spooled file above ``spool_size``)."""
        return self.object.data


class ListBucketResponse(Response):
    """A listing page under python-s3's attribute names."""

    def __init__(self, http: httpx.Response, page: ListPage) -> None:
        super().__init__(http)
        self.page = page
        self.entries = page.entries
        self.common_prefixes = page.common_prefixes
        self.name = page.name
        self.prefix = page.prefix
        self.marker = page.marker
        self.delimiter = page.delimiter
        self.max_keys = page.max_keys
        self.is_truncated = page.is_truncated
        self.next_marker = page.next_marker
        self.next_continuation_token = page.next_continuation_token


class ListAllMyBucketsResponse(Response):
    """The account's buckets, in ``entries``."""

    def __init__(self, http: httpx.Response, entries: list[Bucket], owner: Owner) -> None:
        super().__init__(http)
        self.entries = entries
        self.owner = owner


class LocationResponse(Response):
    """A bucket's location constraint (``None`` for the default region)."""

    def __init__(self, http: httpx.Response, location: str | None) -> None:
        super().__init__(http)
        self.location = location


class CopyResponse(Response):
    """A server-side copy (CopyObject or UploadPartCopy): the new ETag."""

    def __init__(self, http: httpx.Response, etag: str, last_modified: str) -> None:
        super().__init__(http)
        self.copy_etag = etag
        self.copy_last_modified = parse_time(last_modified)

    @property
    def etag(self) -> str:
        return self.copy_etag

    @property
    def last_modified(self) -> datetime.datetime | None:
        return self.copy_last_modified


class DeleteObjectsResponse(Response):
    """DeleteObjects: the keys deleted and those that failed."""

    def __init__(self, http: httpx.Response, deleted: list[str], errors: list[DeleteError]) -> None:
        super().__init__(http)
        self.deleted = deleted
        self.errors = errors


def decode_metadata_value(value: str) -> str:
    """Undo ``encode_metadata_value``: RFC 2047 UTF-8 words come back as text."""
    if value.startswith("=?UTF-8?B?") and value.endswith("?="):
        try:
            return base64.b64decode(value[10:-2]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return value
    return value


def encode_metadata_value(value: str) -> str:
    """Header values must be ASCII: non-ASCII values travel as an RFC 2047 word (as boto3's
    users do by hand and S3 itself does when it reports such values)."""
    stripped = value.strip()
    if stripped.isascii():
        return stripped
    return "=?UTF-8?B?" + base64.b64encode(stripped.encode("utf-8")).decode("ascii") + "?="


def metadata_from_headers(headers: httpx.Headers) -> dict[str, str]:
    """User metadata from response headers (repeated headers joined with ",")."""
    result: dict[str, str] = {}
    for name in headers:
        lower = name.lower()
        if lower.startswith(METADATA_PREFIX):
            value = ",".join(headers.get_list(name))
            result[lower[len(METADATA_PREFIX) :]] = decode_metadata_value(value.strip())
    return result


def metadata_to_headers(metadata: dict[str, str]) -> dict[str, str]:
    """``x-amz-meta-*`` request headers for user metadata; values trimmed, non-ASCII encoded."""
    return {METADATA_PREFIX + k.lower(): encode_metadata_value(str(v)) for k, v in metadata.items()}
