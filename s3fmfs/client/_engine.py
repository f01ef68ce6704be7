"""The request engine: build, sign, send, read, retry and follow redirects, over one httpx client.

Invariants:
- Each attempt is signed anew (fresh date, possibly a new host or region after a redirect).
- The path and query sent are exactly those signed: the request target is passed to httpcore
  as-is (httpx would otherwise normalise ``.`` / ``..`` segments of keys).
- Bodies are read raw (``Accept-Encoding: identity``, no decoding): an object stored with
  ``Content-Encoding: gzip`` comes back byte-exact.
- Only replayable bodies (bytes, seekable files) are retried; an async iterator is sent once.
- A reader passed as ``consume`` runs inside the attempt, so a connection reset mid-body is
  retried like any other transport error. ``get_into`` hands a body over as it arrives and
  retries from the first byte not yet handed over, of the same version (``If-Match``).
- httpx exceptions never escape: they are translated by ``errors.wrap_transport_error``.
- No attempt waits past its request's retry budget (``RetryPolicy.total_timeout``): its
  connect, read, write and pool timeouts are cut to the time left (at least
  ``MIN_ATTEMPT_WAIT``), so an unresponsive server fails a request within the budget. A
  transfer that keeps making progress is never cut: these bound each wait, not the transfer.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import itertools
import logging
import os
import ssl
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import httpx
import trio

from . import _signing_v2, _signing_v4
from ._encoding import Query, encode_query
from ._endpoint import Endpoint
from ._signing_types import Credentials
from ._transport import pool_transport
from .errors import (
    AuthorizationHeaderMalformed,
    S3fmError,
    S3Redirect,
    S3ResponseError,
    error_from_response,
    wrap_transport_error,
)
from .models import CallingFormat
from .retry import RetryPolicy

log = logging.getLogger("s3fmfs.client")

T = TypeVar("T")
R = TypeVar("R")

CHUNK = 1 << 20
MAX_ERROR_BODY = 1 << 20
MAX_REDIRECTS = 3
HASH_IN_THREAD = 1 << 20
#: Seconds an attempt started at the very end of its budget may still wait for each step.
MIN_ATTEMPT_WAIT = 0.5


class RequestBody:
    """A request body and what retries and signers need to know of it."""

    def __init__(self, data: Any, content_length: int | None = None) -> None:
        self.data: bytes | None = None
        self.file: IO[bytes] | None = None
        self.aiter: AsyncIterable[bytes] | None = None
        self.start = 0
        if data is None:
            self.data = b""
        elif isinstance(data, str):
            self.data = data.encode("utf-8")
        elif isinstance(data, bytes | bytearray | memoryview):
            self.data = bytes(data)
        elif hasattr(data, "read"):
            self.file = data
            try:
                self.start = data.tell()
            except (OSError, ValueError):
                self.start = -1
        elif isinstance(data, AsyncIterable):
            self.aiter = data
        else:
            raise TypeError(f"cannot send a body of type {type(data).__name__}")
        self.length = self._length(content_length)

    def _length(self, given: int | None) -> int:
        if self.data is not None:
            return len(self.data)
        if given is not None:
            return given
        if self.file is not None and self.start >= 0:
            try:
                return os.fstat(self.file.fileno()).st_size - self.start
            except (OSError, io.UnsupportedOperation, AttributeError):
                end = self.file.seek(0, os.SEEK_END)
                self.file.seek(self.start)
                return end - self.start
        raise ValueError("a streamed body needs content_length")

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again on a retry."""
        return self.data is not None or (self.file is not None and self.start >= 0)

    async def payload_hash(self) -> str:
        """SHA-256 for V4: computed for bytes, UNSIGNED-PAYLOAD for streams."""
        if self.data is None:
            return _signing_v4.UNSIGNED_PAYLOAD
        if not self.data:
            return _signing_v4.EMPTY_SHA256
        if len(self.data) > HASH_IN_THREAD:
            data = self.data
            return await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())
        return hashlib.sha256(self.data).hexdigest()

    def content(self) -> bytes | AsyncIterator[bytes]:
        """What httpx sends for one attempt."""
        if self.data is not None:
            return self.data
        if self.file is not None:
            return self._file_chunks(self.file)
        assert self.aiter is not None
        return self._counted(self.aiter)

    async def _file_chunks(self, f: IO[bytes]) -> AsyncIterator[bytes]:
        if self.start >= 0:
            await trio.to_thread.run_sync(f.seek, self.start)
        left = self.length
        while left > 0:
            chunk = await trio.to_thread.run_sync(f.read, min(CHUNK, left))
            if not chunk:
                raise ValueError(f"body file ended {left} bytes early")
            left -= len(chunk)
            yield chunk

    async def _counted(self, source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Check a stream against its announced length before HTTP sees a wrong one."""
        sent = 0
        async for chunk in source:
            sent += len(chunk)
            if sent > self.length:
                raise ValueError(f"body stream longer than content_length={self.length}")
            yield bytes(chunk)
        if sent != self.length:
            raise ValueError(f"body stream ended at {sent} of content_length={self.length}")


async def read_all(resp: httpx.Response) -> bytes:
    """The raw body, undecoded (a response built in memory, as a mock transport's, is already
    read)."""
    if resp.is_stream_consumed:
        return resp.content
    return b"".join([chunk async for chunk in resp.aiter_raw()])


@dataclass
class _Route:
    """Where requests for a bucket go after a redirect."""

    endpoint: Endpoint
    region: str


#: Connection pools an engine spreads its requests over, in turn. httpcore scans every
#: connection of a pool (a ``poll`` each) whenever a request starts or ends: with one big
#: pool, many small concurrent requests spend more time there than on the wire (measured:
#: HEADs 16 at a time, 1,570/s over one pool of 32 connections, 2,800/s over separate pools).
POOLS = 4


class Engine:
    """Signs and performs requests against one endpoint over a few connection pools."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Credentials,
        *,
        signature: str,
        region: str,
        retry: RetryPolicy,
        timeout: httpx.Timeout,
        max_connections: int,
        verify: bool | str | ssl.SSLContext,
        transport: httpx.AsyncBaseTransport | None,
        clock: Callable[[], datetime.datetime] | None,
        user_agent: str,
    ) -> None:
        if signature not in ("v2", "v4"):
            raise ValueError(f"signature must be 'v2' or 'v4', not {signature!r}")
        self.endpoint = endpoint
        self.credentials = credentials
        self.signature = signature
        self.region = region
        self.retry = retry
        self.timeout = timeout
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._routes: dict[str, _Route] = {}
        pools = POOLS if transport is None and max_connections >= POOLS else 1
        per_pool = -(-max_connections // pools)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        self._clients = [
            httpx.AsyncClient(
                timeout=timeout,
                limits=limits,
                verify=verify,
                transport=transport or pool_transport(verify, limits),
                follow_redirects=False,
                headers={"accept-encoding": "identity", "user-agent": user_agent},
            )
            for _ in range(pools)
        ]
        self._turn = itertools.cycle(self._clients)

    async def aclose(self) -> None:
        """Close the connection pools."""
        for client in self._clients:
            await client.aclose()

    def route(self, bucket: str) -> _Route:
        """The endpoint and region for a bucket (changed by redirects)."""
        return self._routes.get(bucket) or _Route(self.endpoint, self.region)

    async def sign(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Query,
        headers: dict[str, str],
        body: RequestBody | None,
    ) -> tuple[str, str, dict[str, str]]:
        """Sign one attempt: (url, request target, headers to send)."""
        route = self.route(bucket)
        headers = dict(headers)
        if body is not None and (body.length or method in ("PUT", "POST")):
            headers["content-length"] = str(body.length)
        req = route.endpoint.signing_request(method, bucket, key, query, headers)
        now = self.clock()
        if self.signature == "v2":
            added = _signing_v2.sign_v2(req, self.credentials, now)
        else:
            payload = await body.payload_hash() if body else _signing_v4.EMPTY_SHA256
            added = _signing_v4.sign_v4(req, self.credentials, route.region, now, payload)
        headers.update(added)
        query_text = encode_query(query)
        target = req.path + (f"?{query_text}" if query_text else "")
        return route.endpoint.url(req), target, headers

    async def request(
        self,
        method: str,
        bucket: str = "",
        key: str = "",
        query: Query = (),
        headers: Mapping[str, str] | None = None,
        body: RequestBody | None = None,
        *,
        consume: Callable[[httpx.Response], Awaitable[T]] | None = None,
        missing: str = "NoSuchKey",
    ) -> tuple[httpx.Response, T | bytes]:
        """Perform a request with retries; return the response and what ``consume`` read.

        Without ``consume`` the whole body is read as bytes. Error answers raise.
        """
        lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
        policy = self.retry
        if body is not None and not body.replayable:
            policy = RetryPolicy.never()

        async def attempt(deadline: float) -> tuple[httpx.Response, T | bytes]:
            resp = await self._open(method, bucket, key, query, lowered, body, missing, deadline)
            try:
                result: T | bytes = await consume(resp) if consume else await read_all(resp)
            except httpx.HTTPError as exc:
                raise wrap_transport_error(exc, method=method, url=f"/{bucket}/{key}") from exc
            finally:
                await resp.aclose()
            return resp, result

        return await self._retrying(method, bucket, key, policy, attempt)

    async def stream(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Query = (),
        headers: Mapping[str, str] | None = None,
        *,
        missing: str = "NoSuchKey",
    ) -> httpx.Response:
        """Open a response whose body the caller reads and closes (retries cover the headers)."""
        lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}

        async def attempt(deadline: float) -> httpx.Response:
            return await self._open(method, bucket, key, query, lowered, None, missing, deadline)

        return await self._retrying(method, bucket, key, self.retry, attempt)

    async def get_into(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str] | None,
        start: int,
        end: int | None,
        sink: Callable[[bytes], Awaitable[object]],
    ) -> httpx.Response:
        """GET bytes ``start..end`` (inclusive; None: to the end), each chunk handed to ``sink``
        as it arrives, in order, exactly once; nothing more is read from the connection until
        ``sink`` returns (so a slow sink holds the rest back at the server, by TCP).

        A failure mid-body is retried like any other, asking only for the bytes not yet
        delivered, and only of the version that sent the first ones (``If-Match`` on its ETag:
        a changed object fails with PreconditionFailed rather than splicing two versions). A
        service that ignores Range (200) is cut to the range here.
        """
        lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
        delivered = 0
        etag = ""

        async def attempt(deadline: float) -> httpx.Response:
            nonlocal delivered, etag
            first = start + delivered
            sent = dict(lowered)
            sent["range"] = f"bytes={first}-{'' if end is None else end}"
            if etag:
                sent["if-match"] = etag
            resp = await self._open("GET", bucket, key, (), sent, None, "NoSuchKey", deadline)
            try:
                etag = etag or resp.headers.get("etag", "")
                skip = _body_offset(resp, first)
                left = -1 if end is None else end + 1 - first  # -1: to the end
                given = resp.headers.get("content-length", "")
                length = int(given) if given.isdigit() else -1
                # more than asked for (Range ignored, or a server's odd answer): stop reading
                # (and lose the connection) rather than drain the rest of the object
                oversize = left >= 0 and (length < 0 or length > skip + left)
                async for chunk in resp.aiter_raw():
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    if 0 <= left < len(chunk):
                        chunk = chunk[:left]
                    if chunk:
                        delivered += len(chunk)
                        try:
                            await sink(chunk)
                        except Exception as exc:  # the caller's, not the transfer's: no retry
                            raise _SinkFailed(exc) from exc
                    if left >= 0:
                        left -= len(chunk)
                        if left == 0 and oversize:
                            break
            except httpx.HTTPError as exc:
                raise wrap_transport_error(exc, method="GET", url=f"/{bucket}/{key}") from exc
            finally:
                await resp.aclose()
            return resp

        try:
            return await self._retrying("GET", bucket, key, self.retry, attempt)
        except _SinkFailed as failed:
            raise failed.error from None

    async def _retrying(
        self,
        method: str,
        bucket: str,
        key: str,
        policy: RetryPolicy,
        attempt: Callable[[float], Awaitable[R]],
    ) -> R:
        """Run attempts until one succeeds, the failure is final, or the budget is spent.

        Redirects are followed only when the attempt can be repeated (``policy`` allows more
        than one attempt): a streamed body cannot be sent twice.
        """
        deadline = trio.current_time() + policy.total_timeout
        tries = 0
        redirects = 0
        while True:
            tries += 1
            try:
                return await attempt(deadline)
            except (S3Redirect, AuthorizationHeaderMalformed) as exc:
                redirects += 1
                replayable = policy.max_attempts > 1
                if redirects > MAX_REDIRECTS or not replayable or not self._follow(bucket, exc):
                    raise
                tries -= 1
            except S3fmError as exc:
                if tries >= policy.max_attempts or not policy.is_retryable(exc):
                    raise
                delay = policy.next_wait(tries, exc, deadline - trio.current_time())
                if delay is None:
                    raise
                log.info(
                    "retrying %s /%s/%s in %.2fs (attempt %d failed: %s)",
                    method,
                    bucket,
                    key,
                    delay,
                    tries,
                    exc,
                )
                await trio.sleep(delay)

    async def _open(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Query,
        headers: dict[str, str],
        body: RequestBody | None,
        missing: str,
        deadline: float,
    ) -> httpx.Response:
        """One attempt up to the response headers; error answers are read and raised. No wait
        of the attempt (connect, send, answer, pool) lasts past ``deadline``."""
        url, target, signed = await self.sign(method, bucket, key, query, headers, body)
        resource = f"/{bucket}/{key}" if bucket else "/"
        client = next(self._turn)
        request = client.build_request(
            method,
            url,
            headers=signed,
            content=body.content() if body is not None else None,
            extensions=_target_extension(target),
            timeout=_capped(self.timeout, deadline - trio.current_time()),
        )
        began = trio.current_time()
        try:
            resp = await client.send(request, stream=True)
            if resp.status_code >= 300:
                try:
                    data = await _read_bounded(resp, MAX_ERROR_BODY)
                finally:
                    await resp.aclose()
                err = error_from_response(
                    resp.status_code,
                    resp.headers,
                    data,
                    method=method,
                    resource=resource,
                    missing=missing,
                )
                log.debug(
                    "%s %s -> %s %s (%.3fs)",
                    method,
                    resource,
                    err.status,
                    err.code,
                    trio.current_time() - began,
                )
                raise err
        except httpx.HTTPError as exc:
            log.debug(
                "%s %s -> %s: %s (%.3fs)",
                method,
                resource,
                type(exc).__name__,
                exc,
                trio.current_time() - began,
            )
            raise wrap_transport_error(exc, method=method, url=resource) from exc
        log.debug(
            "%s %s -> %s (%.3fs)", method, resource, resp.status_code, trio.current_time() - began
        )
        return resp

    def _follow(self, bucket: str, exc: S3ResponseError) -> bool:
        """Re-route a bucket after a redirect or region hint; False when nothing changes."""
        route = self.route(bucket)
        endpoint = route.endpoint
        region = exc.region or route.region
        target = exc.endpoint
        if target:
            parsed = httpx.URL(target if "://" in target else f"{endpoint.scheme}://{target}")
            host = parsed.host
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if bucket and host.startswith(f"{bucket}."):
                endpoint = Endpoint(
                    host[len(bucket) + 1 :], port, parsed.scheme == "https", CallingFormat.SUBDOMAIN
                )
            else:
                endpoint = Endpoint(host, port, parsed.scheme == "https", CallingFormat.PATH)
        new = _Route(endpoint, region)
        if new == route:
            return False
        log.info("bucket %r moved to %s (region %s)", bucket, endpoint.server, region)
        self._routes[bucket] = new
        return True


class _SinkFailed(Exception):
    """What a ``get_into`` sink raised, carried past the retries."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _body_offset(resp: httpx.Response, first: int) -> int:
    """Bytes of a GET answer's body before byte ``first`` of the object: all of them when
    Range was ignored (200), else what Content-Range says (a server may start earlier)."""
    if resp.status_code == 200:
        return first
    unit, _, spec = resp.headers.get("content-range", "").partition(" ")
    begin = spec.partition("-")[0]
    if unit.lower() == "bytes" and begin.isdigit():
        return max(0, first - int(begin))
    return 0


def _capped(timeout: httpx.Timeout, left: float) -> httpx.Timeout:
    """``timeout`` with each wait cut to ``left`` seconds (at least ``MIN_ATTEMPT_WAIT``)."""
    left = max(MIN_ATTEMPT_WAIT, left)

    def cap(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


def _target_extension(target: str) -> dict[str, bytes]:
    """Pin the request target only where httpx would change it: keys with ``.``/``..``
    segments (httpx removes them). Elsewhere httpx sends our encoded path unchanged, and leaves
    the target free for a forward proxy's absolute form."""
    path = target.split("?", 1)[0]
    if any(segment in (".", "..") for segment in path.split("/")):
        return {"target": target.encode("ascii")}
    return {}


async def _read_bounded(resp: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (error documents are small; a huge one is not ours)."""
    if resp.is_stream_consumed:
        return resp.content[:limit]
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_raw():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]
