"""The request engine: build, sign, send, read, retry and follow redirects, over many small
httpx connection pools. What is sent is ``_request_body.RequestBody``; bodies are read by
``_reading``.

Invariants:
- A request goes straight to its pool's transport (not through ``AsyncClient.send``: no
  cookies, auth flows, redirect or hook machinery), with the headers the client would add
  (``Accept``, ``Accept-Encoding: identity``, ``Connection``, ``User-Agent``) and its waits
  as the ``timeout`` extension. It takes the pool with the fewest requests in flight (ties:
  the first), and leaves that count when its response is closed, or when sending fails or is
  cancelled.
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
import logging
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass
from typing import TypeVar

import httpx

from . import _aio, _signing_v2, _signing_v4
from ._encoding import Query, encode_query, lower_headers
from ._endpoint import Endpoint
from ._reading import MAX_ERROR_BODY, body_offset, read_all, read_bounded
from ._request_body import RequestBody
from ._signing_types import Credentials
from ._transport import pool_transport
from .errors import (
    AuthorizationHeaderMalformed,
    S3fmError,
    S3Redirect,
    S3ResponseError,
    error_from_response,
    host_of,
    wrap_transport_error,
)
from .models import CallingFormat
from .retry import RetryPolicy
from .stats import RequestStats

log = logging.getLogger("s3fmfs.client")

T = TypeVar("T")
R = TypeVar("R")

MAX_REDIRECTS = 3
#: Seconds an attempt started at the very end of its budget may still wait for each step.
MIN_ATTEMPT_WAIT = 0.5


@dataclass
class _Route:
    """Where requests for a bucket go after a redirect."""

    endpoint: Endpoint
    region: str


#: Connections per pool. httpcore scans every connection of a pool (``is_idle``, and a
#: ``poll`` of each idle one's socket) whenever a request starts or ends, so one pool's
#: cost per request grows with its size. An engine keeps many small pools instead, and
#: sends each request to the pool with the fewest requests in flight: the scans stay short
#: however many connections the engine has. Measured (instructions per HEAD, 64 at once
#: over 64 connections): 4 pools of 16, 4.45 M; 16 of 4, 2.88 M; 32 of 2, 2.46 M (one at a
#: time: 2.33 M). A request waits for a connection of its pool only when every pool is full.
POOL_CONNECTIONS = 2


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
        signed_headers: Mapping[str, str] | None = None,
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
        #: Headers every request carries, signed (e.g. ``x-amz-request-payer``).
        self.signed_headers = lower_headers(signed_headers)
        self.stats = RequestStats()  # what was sent, for ``s3fmfs status``
        #: What every request carries besides its signed headers: httpx's defaults (sent
        #: the same whether through a client or not), raw bodies, our name.
        self._headers = {
            "accept": "*/*",
            "accept-encoding": "identity",
            "connection": "keep-alive",
            "user-agent": user_agent,
        }
        if not isinstance(verify, ssl.SSLContext):  # one for all pools: each loads the CAs
            verify = httpx.create_ssl_context(verify=verify)
        pools = -(-max_connections // POOL_CONNECTIONS) if transport is None else 1
        per_pool = -(-max_connections // pools)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        self._clients = [
            httpx.AsyncClient(
                timeout=timeout,
                limits=limits,
                verify=verify,
                transport=transport or pool_transport(verify, limits),
                follow_redirects=False,
                headers=self._headers,
            )
            for _ in range(pools)
        ]
        #: Requests in flight per pool (sent, response not yet closed).
        self._busy = [0] * pools

    async def aclose(self) -> None:
        """Close the connection pools."""
        for client in self._clients:
            await client.aclose()

    def set_calling_format(self, calling_format: CallingFormat) -> None:
        """Address buckets another way from now on (redirects learnt are forgotten)."""
        e = self.endpoint
        self.endpoint = Endpoint(e.server, e.port, e.is_secure, calling_format)
        self._routes.clear()

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
        headers = {**self.signed_headers, **headers}
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
        lowered = lower_headers(headers)
        policy = self.retry
        if body is not None and not body.replayable:
            policy = RetryPolicy.never()

        async def attempt(deadline: float) -> tuple[httpx.Response, T | bytes]:
            resp = await self._open(method, bucket, key, query, lowered, body, missing, deadline)
            try:
                result: T | bytes = await consume(resp) if consume else await read_all(resp)
            except httpx.HTTPError as exc:
                raise wrap_transport_error(
                    exc, method=method, url=f"/{bucket}/{key}", host=host_of(resp.request.url)
                ) from exc
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
        lowered = lower_headers(headers)

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
        lowered = lower_headers(headers)
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
                skip = body_offset(resp, first)
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
                raise wrap_transport_error(
                    exc, method="GET", url=f"/{bucket}/{key}", host=host_of(resp.request.url)
                ) from exc
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
        deadline = _aio.current_time() + policy.total_timeout
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
                delay = policy.next_wait(tries, exc, deadline - _aio.current_time())
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
                self.stats.retried()
                await _aio.sleep(delay)

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
        shown = resource + ("?" + target.split("?", 1)[1] if "?" in target else "")  # logged
        busy = self._busy
        pool = busy.index(min(busy)) if len(busy) > 1 else 0
        client = self._clients[pool]
        request = httpx.Request(
            method,
            url,
            headers={**self._headers, **signed},
            content=body.content() if body is not None else None,
            extensions=_extensions(target, _capped(self.timeout, deadline - _aio.current_time())),
        )
        began = _aio.current_time()
        try:
            busy[pool] += 1
            sent = False
            try:
                resp = await _send(client, request)
                sent = True
            finally:
                if not sent:  # failed or cancelled: no response to close
                    busy[pool] -= 1
            resp.stream = _Counted(resp.stream, busy, pool)
            if resp.status_code >= 300:
                try:
                    data = await read_bounded(resp, MAX_ERROR_BODY)
                finally:
                    await resp.aclose()
                err = error_from_response(
                    resp.status_code,
                    resp.headers,
                    data,
                    method=method,
                    resource=resource,
                    missing=missing,
                    host=host_of(request.url),
                )
                self.stats.sent(method, key, query, headers, str(err.status))
                log.debug(
                    "%s %s -> %s %s (%.3fs)",
                    method,
                    shown,
                    err.status,
                    err.code,
                    _aio.current_time() - began,
                )
                raise err
        except httpx.HTTPError as exc:
            self.stats.sent(method, key, query, headers, type(exc).__name__)
            log.debug(
                "%s %s -> %s: %s (%.3fs)",
                method,
                shown,
                type(exc).__name__,
                exc,
                _aio.current_time() - began,
            )
            raise wrap_transport_error(
                exc, method=method, url=resource, host=host_of(request.url)
            ) from exc
        self.stats.sent(method, key, query, headers)
        log.debug(
            "%s %s -> %s (%.3fs)", method, shown, resp.status_code, _aio.current_time() - began
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


def _capped(timeout: httpx.Timeout, left: float) -> dict[str, float | None]:
    """``timeout`` (as the transport's ``timeout`` extension) with each wait cut to ``left``
    seconds (at least ``MIN_ATTEMPT_WAIT``)."""
    left = max(MIN_ATTEMPT_WAIT, left)

    def cap(value: float | None) -> float:
        return left if value is None else min(value, left)

    return {
        "connect": cap(timeout.connect),
        "read": cap(timeout.read),
        "write": cap(timeout.write),
        "pool": cap(timeout.pool),
    }


def _extensions(target: str, timeout: dict[str, float | None]) -> dict[str, object]:
    """The request's extensions: its waits, and its target pinned only where httpx would
    change it: keys with ``.``/``..`` segments (httpx removes them). Elsewhere httpx sends our
    encoded path unchanged, and leaves the target free for a forward proxy's absolute form."""
    path = target.split("?", 1)[0]
    if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
        return {"timeout": timeout, "target": target.encode("ascii")}
    return {"timeout": timeout}


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request`` straight to the transport ``client`` would use for it (its pool: a
    client given a transport takes no proxy from the environment), streaming.
    ``AsyncClient.send`` would add what a request of ours never uses (cookies, auth flows,
    redirects, event hooks, URL merging): about a fifth of a small request's CPU. Like
    ``send``, transport errors carry the request, and the response knows its request."""
    transport = client._transport_for_url(request.url)
    try:
        response = await transport.handle_async_request(request)
    except httpx.RequestError as exc:
        exc.request = request
        raise
    response.request = request
    return response


class _Counted(httpx.AsyncByteStream):
    """A response body that takes its request off its pool's count when closed (once)."""

    def __init__(
        self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, busy: list[int], pool: int
    ) -> None:
        self._inner = inner
        self._busy: list[int] | None = busy
        self._pool = pool

    def __aiter__(self) -> AsyncIterator[bytes]:  # the inner iterator itself: no extra layer
        assert isinstance(self._inner, httpx.AsyncByteStream)
        return self._inner.__aiter__()

    async def aclose(self) -> None:
        if self._busy is not None:
            self._busy[self._pool] -= 1
            self._busy = None
        if isinstance(self._inner, httpx.AsyncByteStream):
            await self._inner.aclose()


class _SinkFailed(Exception):
    """What a ``get_into`` sink raised, carried past the retries."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
