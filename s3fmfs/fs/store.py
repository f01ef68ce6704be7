"""The narrow object-store interface the filesystem core talks to, with dataclass results.

Invariants:
- Keys are full object keys (mount prefix included); the store knows its bucket.
- ``head`` answers None for a missing key; every other failure (and a missing key for the
  other operations) raises the client's exceptions (``s3fmfs.client.errors``), which
  ``errno_map.to_errno`` translates. Implementations never raise httpx errors.
- ``get_range`` answers ``b""`` for a range starting at or past the end of the object;
  ``get_range_into`` (optional: ``StreamingStore``) hands the same bytes to a sink as they
  arrive, each exactly once and in order, and none for such a range. Given ``if_match`` (an
  ETag), both answer only from that version of the object: any other raises the client's
  ``PreconditionFailed`` (412), whatever the range (a reader pins the version it opened).
- ``get_object`` (optional: ``WholeStore``) answers what ``head`` does (the same parsing of
  the same headers: identical ``ObjectInfo``) and the object's bytes, in one GET; None for a
  missing key; ``if_match`` as for ``get_range``. Lookups use it instead of a HEAD for small
  listed objects.
- ``iter_pages`` yields every page of a listing, in key order; close it (``aclosing``) when
  stopping early.
- ``copy`` with ``metadata=None`` keeps the source's metadata (COPY); with a mapping it
  replaces it (REPLACE), and ``content_type`` is kept only if given.
- ``presign_get`` (optional: ``PresigningStore``) makes a URL that GETs the object without
  credentials until it expires; it sends no request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol, runtime_checkable

from .writebuf import FileWindow

#: What ``put`` uploads: bytes, a window of a file (exactly its length), or a binary file read
#: from its current position to its end.
PutBody = bytes | FileWindow | IO[bytes]
#: Takes the bytes of a streamed GET as they arrive, in order; the GET reads no further from
#: its connection until it returns (flow control).
Sink = Callable[[bytes], Awaitable[object]]


@dataclass(frozen=True)
class ObjectInfo:
    """One object: from a listing (``metadata`` None) or a HEAD (``metadata`` known)."""

    key: str
    size: int
    etag: str = ""
    last_modified_ns: int = 0
    metadata: Mapping[str, str] | None = None
    content_type: str = ""
    storage_class: str = ""  # from a HEAD; "" when not said (STANDARD)
    version_id: str = ""  # from a HEAD of a versioned bucket's object


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing: objects, and with a delimiter the common prefixes (each ending
    with the delimiter)."""

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class PutResult:
    """What a write (PUT or copy) returned."""

    etag: str = ""


class PartBody(Protocol):
    """A part's body: a file-like window read from its start (``seek``/``tell`` let the client
    send it again on a retry)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


@dataclass(frozen=True)
class UploadedPart:
    """One part of a multipart upload, as CompleteMultipartUpload needs it."""

    number: int
    etag: str
    size: int = 0


class ObjectStore(Protocol):
    """A bucket as the filesystem sees it."""

    async def list_page(
        self, prefix: str, delimiter: str | None = None, max_keys: int = 1000
    ) -> ListingPage:
        """The first page of a listing (existence and emptiness probes)."""
        ...

    def iter_pages(
        self, prefix: str, delimiter: str | None = None
    ) -> AsyncGenerator[ListingPage, None]:
        """Every page of a listing."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """An object's size, ETag, LastModified, user metadata and content type."""
        ...

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        """Bytes ``start..end`` (inclusive; None: to the end) of an object; with ``if_match``,
        of that version only (another one: ``PreconditionFailed``)."""
        ...

    async def put(
        self,
        key: str,
        body: PutBody,
        metadata: Mapping[str, str],
        content_type: str | None = None,
    ) -> PutResult:
        """Create or replace an object."""
        ...

    async def copy(
        self,
        src: str,
        dst: str,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> PutResult:
        """Server-side copy (``src == dst`` with metadata: change metadata in place)."""
        ...

    async def delete(self, key: str) -> None:
        """Delete an object (no error if it does not exist)."""
        ...

    async def delete_many(self, keys: Iterable[str]) -> list[str]:
        """Delete objects; returns the keys that could not be deleted."""
        ...


@runtime_checkable
class StreamingStore(Protocol):
    """A store that hands a ranged GET over as it arrives (optional: without it, read-ahead
    waits for whole blocks from ``get_range``)."""

    async def get_range_into(
        self, key: str, start: int, end: int, sink: Sink, *, if_match: str = ""
    ) -> None:
        """Bytes ``start..end`` (inclusive) of an object to ``sink``, chunk by chunk; with
        ``if_match``, of that version only (another one: ``PreconditionFailed``)."""
        ...


@runtime_checkable
class WholeStore(Protocol):
    """A store that fetches an object's attributes and bytes in one GET (optional: without
    it, lookups HEAD every object)."""

    async def get_object(self, key: str, *, if_match: str = "") -> tuple[ObjectInfo, bytes] | None:
        """What ``head`` answers for ``key`` and its whole body (None: no such object); with
        ``if_match``, of that version only (another one: ``PreconditionFailed``)."""
        ...


@runtime_checkable
class PresigningStore(Protocol):
    """A store that can hand out presigned GET URLs (the ``s3.url`` extended attribute)."""

    def presign_get(self, key: str, expires: int) -> str:
        """A URL that GETs ``key`` for ``expires`` seconds, without credentials."""
        ...


@runtime_checkable
class MultipartStore(Protocol):
    """A store that can also upload an object in parts while it is being written (optional:
    without it, files are uploaded whole at flush)."""

    async def create_multipart(
        self, key: str, metadata: Mapping[str, str], content_type: str | None = None
    ) -> str:
        """Start a multipart upload; its id."""
        ...

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: PartBody | bytes, length: int
    ) -> UploadedPart:
        """Upload part ``number`` (1..10000): ``length`` bytes of ``body``."""
        ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: list[UploadedPart]
    ) -> PutResult:
        """Assemble the parts (in number order) into the object."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload and free its parts (no error if it is gone)."""
        ...


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload started and neither completed nor aborted (ListMultipartUploads)."""

    key: str
    upload_id: str
    initiated: str = ""  # as the service wrote it (ISO 8601)


@runtime_checkable
class PendingUploads(Protocol):
    """A store that lists the incomplete multipart uploads under a prefix and aborts them (the
    mount's sweep of what a crash left)."""

    async def list_multipart(self, prefix: str) -> list[PendingUpload]:
        """Every upload in progress under ``prefix``."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload (no error if it is gone)."""
        ...
