"""python-s3, synchronous: ``S3fmAuthConnection``, ``QueryStringAuthGenerator`` and the rest of
python-s3's ``S3.py`` names, for blocking scripts (``from s3fmfs.client import blocking as S3``).

Invariants:
- Same class names, method names, argument order and answers as python-s3: a script written
  for it runs with only its import changed (``S3.AWSAuthConnection`` is an alias too).
- As in python-s3, an error answer from the service is RETURNED, not raised: a ``Response``
  of the operation's class with the status (``.http_response.status``), ``.message`` the error
  document (python-s3's), empty ``.entries`` for a listing, and the exception in ``.error``.
  ``raise_errors=True`` raises it instead (``s3fmfs.client.errors``). No answer at all (cannot
  connect, timeout) raises ``S3TransportError`` either way, as python-s3's httplib did.
- Each connection runs the async client on its own event loop, in its own daemon thread
  (``backend``: "trio", the default, or "asyncio"); a call blocks its caller until done. Any
  number of threads may call at once (the calls run concurrently on that loop, over the
  connection's pools). Called from a thread that runs an event loop (inside ``async def``), a
  call works but blocks that loop for its duration: use the async client there.
- ``close()`` (or ``with``) stops the thread and closes the pools; a connection dropped
  without it is closed when collected. A ``get`` above ``spool_size`` returns a temporary file.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import anyio.from_thread
import httpx

from . import connection as _async_connection
from ._endpoint import DEFAULT_HOST, PORTS_BY_SECURITY
from .errors import S3ResponseError
from .models import (
    METADATA_PREFIX,
    Bucket,
    CallingFormat,
    CommonPrefixEntry,
    CopyResponse,
    DeleteObjectsResponse,
    GetResponse,
    ListAllMyBucketsResponse,
    ListBucketResponse,
    ListEntry,
    ListPage,
    Location,
    LocationResponse,
    Owner,
    Response,
    S3Object,
)
from .presign import QueryStringAuthGenerator

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R", bound=Response)

__all__ = [
    "DEFAULT_HOST",
    "METADATA_PREFIX",
    "PORTS_BY_SECURITY",
    "AWSAuthConnection",
    "Bucket",
    "CallingFormat",
    "CommonPrefixEntry",
    "GetResponse",
    "ListAllMyBucketsResponse",
    "ListBucketResponse",
    "ListEntry",
    "Location",
    "LocationResponse",
    "Owner",
    "QueryStringAuthGenerator",
    "Response",
    "S3Object",
    "S3fmAuthConnection",
]


class _Loop:
    """An event loop in a daemon thread, and the portal that runs calls on it."""

    def __init__(self, backend: str) -> None:
        self._context = anyio.from_thread.start_blocking_portal(backend, name="s3fmfs-client")
        self.portal = self._context.__enter__()
        self._thread_id = self.portal.call(threading.get_ident)

    def close(self, conn: _async_connection.S3fmAuthConnection) -> None:
        """Close the pools on the loop, then stop it and wait for its thread. From that thread
        itself (a collection that ran there) nothing can wait for it: the daemon thread stays."""
        if threading.get_ident() == self._thread_id:
            return
        try:
            self.portal.call(conn.aclose)
        finally:
            self._context.__exit__(None, None, None)


def _answer(kind: type[R], err: S3ResponseError) -> R:
    """python-s3's answer to an error: a response of the operation's class, holding the error."""
    http = httpx.Response(err.status, headers=err.headers)
    resp: Response
    if kind is GetResponse:
        resp = GetResponse(http, err.body)
    elif kind is ListBucketResponse:
        resp = ListBucketResponse(http, ListPage())
    elif kind is ListAllMyBucketsResponse:
        resp = ListAllMyBucketsResponse(http, [], Owner())
    elif kind is LocationResponse:
        resp = LocationResponse(http, None)
    else:
        resp = Response(http)
    if err.body:  # python-s3: the message of an error answer is its document
        resp.message = err.body.decode("utf-8", "replace")
    resp.error = err
    assert isinstance(resp, kind)
    return resp


class S3fmAuthConnection:
    """python-s3's connection, synchronous; see the module for errors and threads.

    ``endpoint_url="http://127.0.0.1:9000"`` stands for ``is_secure``/``server``/``port``;
    ``raise_errors`` raises error answers instead of returning them; ``backend`` picks the
    private loop ("trio" or "asyncio"); every other keyword is the async client's
    (``signature``, ``region``, ``timeout``, ``retry``, ``verify``, ...).
    """

    def __init__(
        self,
        aws_access_key_id: str,
        aws_secret_access_key: str,
        is_secure: bool = True,
        server: str = DEFAULT_HOST,
        port: int | None = None,
        calling_format: CallingFormat | None = None,
        *,
        endpoint_url: str | None = None,
        raise_errors: bool = False,
        backend: str = "trio",
        **options: Any,
    ) -> None:
        self.aio = _async_connection.S3fmAuthConnection(
            aws_access_key_id,
            aws_secret_access_key,
            is_secure,
            server,
            port,
            calling_format,
            endpoint_url=endpoint_url,
            **options,
        )
        self.raise_errors = raise_errors
        self._loop = _Loop(backend)
        self._closer = weakref.finalize(self, self._loop.close, self.aio)
        self._closer.atexit = False  # at exit the daemon thread just ends

    # python-s3's attributes
    @property
    def aws_access_key_id(self) -> str:
        return self.aio.aws_access_key_id

    @property
    def is_secure(self) -> bool:
        return self.aio.is_secure

    @property
    def server(self) -> str:
        return self.aio.server

    @property
    def port(self) -> int:
        return self.aio.port

    @property
    def calling_format(self) -> CallingFormat:
        return self.aio.calling_format

    @calling_format.setter
    def calling_format(self, value: CallingFormat) -> None:
        self.aio.calling_format = value

    def __repr__(self) -> str:
        return f"blocking.{self.aio!r}"

    def __enter__(self) -> S3fmAuthConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools and stop the loop's thread (once; later calls fail)."""
        self._closer()

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run any coroutine function (an operation of ``self.aio``: multipart uploads,
        ``get_into`` ...) on this connection's loop and return its result; errors raise."""
        if not self._closer.alive:
            raise RuntimeError("the connection is closed")

        async def run() -> T:
            return await fn(*args, **kwargs)

        return self._loop.portal.call(run)

    def _op(self, kind: type[R], fn: Callable[P, Awaitable[R]], *a: P.args, **k: P.kwargs) -> R:
        """A python-s3 operation: an error answer returned as ``kind`` unless ``raise_errors``."""
        try:
            return self.call(fn, *a, **k)
        except S3ResponseError as err:
            if self.raise_errors:
                raise
            return _answer(kind, err)

    # -- python-s3's bucket operations -------------------------------------------------------

    def create_bucket(self, bucket: str, headers: Mapping[str, str] | None = None) -> Response:
        return self._op(Response, self.aio.create_bucket, bucket, headers)

    def create_located_bucket(
        self,
        bucket: str,
        location: str | None = Location.DEFAULT,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self._op(Response, self.aio.create_located_bucket, bucket, location, headers)

    def check_bucket_exists(self, bucket: str) -> Response:
        """``.status`` 200 when it exists, 404 when not (python-s3 returned both)."""
        return self._op(Response, self.aio.check_bucket_exists, bucket)

    def list_bucket(
        self,
        bucket: str,
        options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ListBucketResponse:
        """One page (prefix, marker, max-keys, delimiter in ``options``)."""
        return self._op(ListBucketResponse, self.aio.list_bucket, bucket, options, headers)

    def delete_bucket(self, bucket: str, headers: Mapping[str, str] | None = None) -> Response:
        return self._op(Response, self.aio.delete_bucket, bucket, headers)

    def get_bucket_location(self, bucket: str) -> LocationResponse:
        return self._op(LocationResponse, self.aio.get_bucket_location, bucket)

    def get_bucket_logging(
        self, bucket: str, headers: Mapping[str, str] | None = None
    ) -> GetResponse:
        return self._op(GetResponse, self.aio.get_bucket_logging, bucket, headers)

    def put_bucket_logging(
        self, bucket: str, logging_xml_doc: str | bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        return self._op(Response, self.aio.put_bucket_logging, bucket, logging_xml_doc, headers)

    def get_bucket_acl(self, bucket: str, headers: Mapping[str, str] | None = None) -> GetResponse:
        return self._op(GetResponse, self.aio.get_bucket_acl, bucket, headers)

    def put_bucket_acl(
        self, bucket: str, acl_xml_document: str | bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        return self._op(Response, self.aio.put_bucket_acl, bucket, acl_xml_document, headers)

    def list_all_my_buckets(
        self, headers: Mapping[str, str] | None = None
    ) -> ListAllMyBucketsResponse:
        return self._op(ListAllMyBucketsResponse, self.aio.list_all_my_buckets, headers)

    # -- python-s3's object operations -------------------------------------------------------

    def put(
        self, bucket: str, key: str, object: Any, headers: Mapping[str, str] | None = None
    ) -> Response:
        """Write bytes, str, a binary file or an ``S3Object(data, metadata)``."""
        return self._op(Response, self.aio.put, bucket, key, object, headers)

    def get(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> GetResponse:
        """``.object.data`` (bytes; a temporary file above ``spool_size``), ``.object.metadata``."""
        return self._op(GetResponse, self.aio.get, bucket, key, headers)

    def head(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> Response:
        return self._op(Response, self.aio.head, bucket, key, headers)

    def delete(self, bucket: str, key: str, headers: Mapping[str, str] | None = None) -> Response:
        return self._op(Response, self.aio.delete, bucket, key, headers)

    def get_acl(
        self, bucket: str, key: str = "", headers: Mapping[str, str] | None = None
    ) -> GetResponse:
        return self._op(GetResponse, self.aio.get_acl, bucket, key, headers)

    def put_acl(
        self,
        bucket: str,
        key: str,
        acl_xml_document: str | bytes,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self._op(Response, self.aio.put_acl, bucket, key, acl_xml_document, headers)

    # -- beyond python-s3 (errors raise, as in the async client) ------------------------------

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CopyResponse:
        """Server-side copy (see the async client)."""
        return self.call(
            self.aio.copy,
            src_bucket,
            src_key,
            dst_bucket,
            dst_key,
            metadata=metadata,
            headers=headers,
        )

    def delete_objects(self, bucket: str, keys: Iterable[str]) -> DeleteObjectsResponse:
        return self.call(self.aio.delete_objects, bucket, list(keys))

    def list_pages(
        self, bucket: str, prefix: str = "", delimiter: str | None = None, **options: Any
    ) -> Iterator[ListPage]:
        """Every page of a listing, one request per page as the iteration goes."""
        pages = self.aio.list_pages(bucket, prefix, delimiter, **options)

        async def next_page() -> ListPage | None:
            with contextlib.suppress(StopAsyncIteration):
                return await pages.__anext__()
            return None

        try:
            while (page := self.call(next_page)) is not None:
                yield page
        finally:
            if self._closer.alive:
                self.call(pages.aclose)


#: python-s3's (Amazon's sample) name for the connection.
AWSAuthConnection = S3fmAuthConnection
