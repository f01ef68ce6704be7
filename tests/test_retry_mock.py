"""The engine's retries, redirects and re-signing, against ``httpx.MockTransport``.

A mock transport makes the edge cases exact: answers per attempt, errors raised mid-exchange,
and every request as the engine built it (headers, body, and the ``target`` extension that holds
the request target httpcore writes on the wire). One test goes one level lower, through httpx's
real transport and httpcore with an in-memory network, to see the bytes of the request line.

Timing tests run on trio's autojump clock (virtual time): they assert exact waits, cost no real
time and do not depend on the machine's load.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import itertools
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx
import pytest
import trio
import trio.testing

from s3fmfs.client import (
    AccessDenied,
    BucketNotEmpty,
    CallingFormat,
    InternalError,
    InvalidResponseError,
    NoSuchBucket,
    NoSuchKey,
    PermanentRedirect,
    PreconditionFailed,
    RetryPolicy,
    S3ClientError,
    S3ConnectError,
    S3fmAuthConnection,
    S3fmError,
    S3ProtocolError,
    S3ServerError,
    S3TimeoutError,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    TemporaryRedirect,
    TooManyRequests,
    _engine,
)
from s3fmfs.client.errors import RequestTimeout, error_from_response

AKID = "AKID"
SECRET = "SECRET"
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
T0 = datetime.datetime(2024, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """A scripted mock server: one answer per attempt (the last one repeats)."""

    def __init__(self, *answers: Answer) -> None:
        assert answers
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.content)  # MockTransport read the body already
        self.times.append(trio.current_time())
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if not isinstance(answer, httpx.Response):
            answer = answer(request)
        return fresh(answer)

    @property
    def attempts(self) -> int:
        return len(self.requests)


def fresh(answer: httpx.Response) -> httpx.Response:
    """A new, unread copy of a scripted answer.

    httpx reads a ``Response(content=...)`` at construction, after which ``aiter_raw`` (what the
    engine uses, to get bodies undecoded) raises StreamConsumed; and one answer may be given to
    several attempts. Streaming answers (built with ``stream=``) are passed through.
    """
    if not hasattr(answer, "_content"):
        return answer
    return httpx.Response(
        answer.status_code, headers=answer.headers, stream=httpx.ByteStream(answer.content)
    )


def connect(server: Server, **options: Any) -> S3fmAuthConnection:
    options.setdefault("retry", FAST)
    return S3fmAuthConnection(
        AKID,
        SECRET,
        is_secure=False,
        server="s3.test",
        port=9000,
        calling_format=CallingFormat.PATH,
        transport=httpx.MockTransport(server),
        **options,
    )


def error_answer(
    status: int, code: str, message: str = "An error.", *, extra: str = "", **headers: str
) -> httpx.Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message>{extra}<RequestId>REQ{status}</RequestId>"
        f"<HostId>HOST</HostId></Error>"
    )
    return httpx.Response(
        status,
        headers={"content-type": "application/xml", **headers},
        content=body.encode(),
    )


def ok(content: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.Response(200, headers=headers, content=content)


def target(request: httpx.Request) -> str:
    """The request target httpcore sends: the engine's pinned target (keys with dot segments),
    else the URL's raw path and query, which httpx leaves as the engine encoded them."""
    raw = request.extensions.get("target", request.url.raw_path)
    assert isinstance(raw, bytes)
    return raw.decode("ascii")


def ticking_clock(step: datetime.timedelta = datetime.timedelta(seconds=1)) -> Callable[[], Any]:
    """A clock for the signer that moves ``step`` at every reading."""
    counter = itertools.count()
    return lambda: T0 + step * next(counter)


def verify_v4(request: httpx.Request, region: str = "us-east-1") -> dict[str, str]:
    """Check the request's SigV4 Authorization from what is on the wire, independently of the
    client's signer; returns the parsed Authorization fields."""
    auth = request.headers["authorization"]
    algorithm, _, rest = auth.partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    akid, date, scope_region, service, terminator = fields["Credential"].split("/")
    assert (akid, scope_region, service, terminator) == (AKID, region, "s3", "aws4_request")
    timestamp = request.headers["x-amz-date"]
    assert timestamp.startswith(date)
    names = fields["SignedHeaders"].split(";")
    assert "host" in names and "x-amz-date" in names and "x-amz-content-sha256" in names
    path, _, query = target(request).partition("?")
    pairs = sorted(
        (name, value) for name, _, value in (p.partition("=") for p in query.split("&") if p)
    )
    payload = request.headers["x-amz-content-sha256"]
    canonical = "\n".join(
        [
            request.method,
            path,
            "&".join(f"{n}={v}" for n, v in pairs),
            "".join(f"{n}:{' '.join(request.headers[n].split())}\n" for n in names),
            fields["SignedHeaders"],
            payload,
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert fields["Signature"] == expected, f"bad signature for {request.method} {request.url}"
    return fields


# -- retried answers -------------------------------------------------------------------------------

RETRIED = [
    pytest.param(lambda: error_answer(500, "InternalError"), InternalError, id="500-InternalError"),
    pytest.param(lambda: error_answer(503, "SlowDown"), SlowDown, id="503-SlowDown"),
    pytest.param(lambda: httpx.Response(503), ServiceUnavailable, id="503-bodiless"),
    pytest.param(lambda: httpx.Response(429), TooManyRequests, id="429-bodiless"),
    pytest.param(
        lambda: error_answer(400, "RequestTimeout"), RequestTimeout, id="400-RequestTimeout"
    ),
    pytest.param(
        lambda: httpx.Response(502, content=b"<html>Bad Gateway</html>"),
        S3ServerError,
        id="502-html",
    ),
    pytest.param(lambda: httpx.Response(504), S3ServerError, id="504-bodiless"),
]


@pytest.mark.parametrize(("make_error", "cls"), RETRIED)
async def test_temporary_errors_are_retried(
    make_error: Callable[[], httpx.Response], cls: type[Exception]
) -> None:
    server = Server(make_error(), make_error(), ok(b"payload"))
    async with connect(server) as conn:
        resp = await conn.get("bucket", "key")
    assert resp.status == 200
    assert resp.object.data == b"payload"
    assert server.attempts == 3
    assert all(target(r) == "/bucket/key" for r in server.requests)


@pytest.mark.parametrize(("make_error", "cls"), RETRIED)
async def test_temporary_errors_raise_when_attempts_run_out(
    make_error: Callable[[], httpx.Response], cls: type[Exception]
) -> None:
    server = Server(make_error())
    async with connect(server, retry=RetryPolicy(max_attempts=3, base_delay=0.001)) as conn:
        with pytest.raises(cls) as info:
            await conn.get("bucket", "key")
    assert server.attempts == 3
    assert type(info.value) is cls


@pytest.mark.parametrize(
    ("answer", "cls"),
    [
        pytest.param(error_answer(403, "AccessDenied"), AccessDenied, id="403"),
        pytest.param(
            error_answer(403, "SignatureDoesNotMatch"), SignatureDoesNotMatch, id="403-sig"
        ),
        pytest.param(error_answer(404, "NoSuchKey"), NoSuchKey, id="404"),
        pytest.param(error_answer(404, "NoSuchBucket"), NoSuchBucket, id="404-bucket"),
        pytest.param(error_answer(409, "BucketNotEmpty"), BucketNotEmpty, id="409"),
        pytest.param(httpx.Response(412), PreconditionFailed, id="412-bodiless"),
        pytest.param(error_answer(400, "InvalidArgument"), S3ClientError, id="400-unknown"),
    ],
)
async def test_final_errors_are_not_retried(answer: httpx.Response, cls: type[Exception]) -> None:
    server = Server(answer, ok())
    async with connect(server) as conn:
        with pytest.raises(cls) as info:
            await conn.get("bucket", "key")
    assert type(info.value) is cls
    assert server.attempts == 1


async def test_head_404_is_not_retried_and_maps_by_request_kind() -> None:
    server = Server(httpx.Response(404))
    async with connect(server) as conn:
        with pytest.raises(NoSuchKey):
            await conn.head("bucket", "key")
        with pytest.raises(NoSuchBucket):
            await conn.check_bucket_exists("bucket")
    assert server.attempts == 2
    assert [r.method for r in server.requests] == ["HEAD", "HEAD"]


# -- transport errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_transport_errors_are_retried(error: Exception) -> None:
    server = Server(error, error, ok(b"x"))
    async with connect(server) as conn:
        resp = await conn.get("bucket", "key")
    assert resp.object.data == b"x"
    assert server.attempts == 3


async def test_connect_error_raised_in_tree_after_last_attempt() -> None:
    error = httpx.ConnectError("[Errno 111] Connection refused")
    server = Server(error)
    async with connect(server, retry=RetryPolicy(max_attempts=4, base_delay=0.001)) as conn:
        with pytest.raises(S3ConnectError) as info:
            await conn.get("bucket", "key")
    assert server.attempts == 4
    assert info.value.__cause__ is error
    assert str(info.value) == (
        "GET /bucket/key: cannot connect to s3.test:9000: [Errno 111] Connection refused"
    )


async def test_timeout_error_raised_in_tree() -> None:
    server = Server(httpx.ReadTimeout("timed out"))
    async with connect(server, retry=RetryPolicy.never()) as conn:
        with pytest.raises(S3TimeoutError):
            await conn.get("bucket", "key")
    assert server.attempts == 1


class _BreakingStream(httpx.AsyncByteStream):
    """A response body that breaks after its first chunk (a reset mid-download)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("[Errno 104] Connection reset by peer")


async def test_reset_mid_body_is_retried() -> None:
    broken = lambda _request: httpx.Response(200, stream=_BreakingStream())  # noqa: E731
    server = Server(broken, ok(b"complete body"))
    async with connect(server) as conn:
        resp = await conn.get("bucket", "key")
    assert resp.object.data == b"complete body"
    assert server.attempts == 2


async def test_reset_mid_body_raises_protocol_error_when_final() -> None:
    server = Server(lambda _request: httpx.Response(200, stream=_BreakingStream()))
    async with connect(server, retry=RetryPolicy(max_attempts=2, base_delay=0.001)) as conn:
        with pytest.raises(S3ProtocolError):
            await conn.get("bucket", "key")
    assert server.attempts == 2


async def test_stream_retries_until_headers() -> None:
    server = Server(httpx.Response(503), ok(b"streamed"))
    async with connect(server) as conn, conn.get_stream("bucket", "key") as resp:
        data = b"".join([chunk async for chunk in resp.aiter_bytes()])
    assert data == b"streamed"
    assert server.attempts == 2


# -- timing: Retry-After, max_attempts, total_timeout ----------------------------------------------


async def test_retry_after_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    server = Server(error_answer(503, "SlowDown", **{"Retry-After": "3"}), ok(b"x"))
    async with connect(server) as conn:
        await conn.get("bucket", "key")
    assert server.attempts == 2
    waited = server.times[1] - server.times[0]
    assert 3.0 <= waited < 3.01  # Retry-After, even above max_delay (0.01)


async def test_retry_after_real_clock() -> None:
    """The same with the real clock and a small value (a lower bound only: robust)."""
    server = Server(httpx.Response(503, headers={"Retry-After": "0.05"}), ok())
    async with connect(server) as conn:
        await conn.get("bucket", "key")
    assert server.attempts == 2
    assert server.times[1] - server.times[0] >= 0.05


async def test_retry_after_beyond_total_timeout_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(httpx.Response(503, headers={"Retry-After": "600"}), ok())
    async with connect(server, retry=RetryPolicy(total_timeout=60)) as conn:
        start = trio.current_time()
        with pytest.raises(ServiceUnavailable):
            await conn.get("bucket", "key")
        assert trio.current_time() - start < 1  # no pointless wait before giving up
    assert server.attempts == 1


async def test_backoff_grows_and_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    class Top:  # an rng that always picks the ceiling of the jitter range
        def uniform(self, a: float, b: float) -> float:
            return b

    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=5.0, rng=Top())  # type: ignore[arg-type]
    server = Server(httpx.Response(500))
    async with connect(server, retry=policy) as conn:
        with pytest.raises(InternalError):
            await conn.get("bucket", "key")
    waits = [b - a for a, b in itertools.pairwise(server.times)]
    assert waits == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0], abs=1e-6)


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
async def test_max_attempts_bounds_attempts(max_attempts: int) -> None:
    server = Server(httpx.Response(503))
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=0.001, max_delay=0.001)
    async with connect(server, retry=policy) as conn:
        with pytest.raises(ServiceUnavailable):
            await conn.get("bucket", "key")
    assert server.attempts == max_attempts


async def test_total_timeout_bounds_time(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=1.0, total_timeout=3.5)
    server = Server(httpx.Response(503, headers={"Retry-After": "1"}))
    async with connect(server, retry=policy) as conn:
        start = trio.current_time()
        with pytest.raises(ServiceUnavailable):
            await conn.get("bucket", "key")
        elapsed = trio.current_time() - start
    assert elapsed <= 3.5
    assert server.attempts == 4  # at 0, 1, 2 and 3 s; one more wait would pass 3.5 s
    assert server.times[-1] - server.times[0] == pytest.approx(3.0, abs=1e-6)


async def test_total_timeout_real_clock() -> None:
    policy = RetryPolicy(max_attempts=10_000, base_delay=0.01, max_delay=0.02, total_timeout=0.2)
    server = Server(httpx.Response(500))
    async with connect(server, retry=policy) as conn:
        start = trio.current_time()
        with pytest.raises(InternalError):
            await conn.get("bucket", "key")
        elapsed = trio.current_time() - start
    assert elapsed < 0.2 + 0.15  # the last attempt itself may run a little past the budget
    assert 3 <= server.attempts < 10_000


# -- bodies on retries -----------------------------------------------------------------------------


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.sleep(0)
        yield part


async def test_streamed_body_is_not_retried() -> None:
    parts = [b"first-", b"second-", b"third"]
    server = Server(httpx.Response(500), ok())
    async with connect(server) as conn:
        with pytest.raises(InternalError):
            await conn.put("bucket", "key", _chunks(parts), content_length=18)
    assert server.attempts == 1
    assert server.bodies == [b"first-second-third"]
    request = server.requests[0]
    assert request.headers["content-length"] == "18"
    assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    verify_v4(request)


async def test_streamed_body_connect_error_is_not_retried() -> None:
    server = Server(httpx.ConnectError("refused"), ok())
    async with connect(server) as conn:
        with pytest.raises(S3ConnectError):
            await conn.put("bucket", "key", _chunks([b"abc"]), content_length=3)
    assert server.attempts == 1


async def test_bytes_body_is_retried_identically() -> None:
    data = bytes(range(256)) * 40 + b"\r\n\x00end"
    server = Server(httpx.Response(500), httpx.ConnectError("refused"), httpx.Response(503), ok())
    async with connect(server, clock=ticking_clock()) as conn:
        resp = await conn.put("bucket", "dir/key", data, {"Content-Type": "application/x-test"})
    assert resp.status == 200
    assert server.attempts == 4
    assert server.bodies == [data] * 4
    digest = hashlib.sha256(data).hexdigest()
    for request in server.requests:
        assert request.method == "PUT"
        assert target(request) == "/bucket/dir/key"
        assert request.headers["content-length"] == str(len(data))
        assert request.headers["content-type"] == "application/x-test"
        assert request.headers["x-amz-content-sha256"] == digest
        verify_v4(request)


async def test_seekable_file_is_resent_from_its_start() -> None:
    payload = b"0123456789" * 1000
    f = io.BytesIO(b"SKIPPED-PREFIX" + payload)
    f.seek(len(b"SKIPPED-PREFIX"))  # the body starts where the file is positioned
    server = Server(httpx.Response(500), httpx.ReadError("reset"), ok())
    async with connect(server) as conn:
        await conn.put("bucket", "key", f)
    assert server.attempts == 3
    assert server.bodies == [payload] * 3
    assert all(r.headers["content-length"] == str(len(payload)) for r in server.requests)


async def test_real_file_is_resent_from_its_start() -> None:
    payload = bytes(range(251)) * 9000  # > 1 MiB: several chunks per attempt
    with tempfile.TemporaryFile() as f:
        f.write(payload)
        f.seek(0)
        server = Server(httpx.Response(503), ok())
        async with connect(server) as conn:
            await conn.put("bucket", "key", f)
    assert server.attempts == 2
    assert [len(b) for b in server.bodies] == [len(payload)] * 2
    assert server.bodies[0] == payload and server.bodies[1] == payload


async def test_upload_part_bytes_is_retried() -> None:
    server = Server(httpx.Response(500), ok(etag='"etag-7"'))
    async with connect(server) as conn:
        part = await conn.upload_part("bucket", "key", "UPLOAD", 7, b"part data")
    assert (part.part_number, part.etag, part.size) == (7, '"etag-7"', 9)
    assert server.bodies == [b"part data"] * 2
    assert all(target(r) == "/bucket/key?partNumber=7&uploadId=UPLOAD" for r in server.requests)


# -- signing per attempt ---------------------------------------------------------------------------


async def test_every_attempt_is_signed_anew() -> None:
    server = Server(httpx.Response(500), httpx.Response(500), ok())
    async with connect(server, clock=ticking_clock()) as conn:
        await conn.get("bucket", "key")
    assert server.attempts == 3
    dates = [r.headers["x-amz-date"] for r in server.requests]
    assert dates == ["20240301T120000Z", "20240301T120001Z", "20240301T120002Z"]
    auths = [r.headers["authorization"] for r in server.requests]
    assert len(set(auths)) == 3
    for request in server.requests:
        verify_v4(request)


async def test_same_clock_gives_same_signature() -> None:
    """The converse: signing is deterministic, so differing signatures come from the clock."""
    server = Server(httpx.Response(500), ok())
    async with connect(server, clock=lambda: T0) as conn:
        await conn.get("bucket", "key")
    a, b = server.requests
    assert a.headers["authorization"] == b.headers["authorization"]


# -- redirects and region hints --------------------------------------------------------------------


async def test_permanent_redirect_to_endpoint() -> None:
    redirect = error_answer(
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint.",
        extra="<Bucket>bucket</Bucket><Endpoint>other.s3.test</Endpoint>",
    )
    server = Server(redirect, ok(b"moved"), ok(b"again"))
    async with connect(server, clock=lambda: T0) as conn:
        resp = await conn.get("bucket", "key")
        assert resp.object.data == b"moved"
        await conn.get("bucket", "key2")  # later requests go straight to the new endpoint
    first, second, third = server.requests
    assert first.headers["host"] == "s3.test:9000"
    assert first.url.host == "s3.test"
    assert second.url.host == "other.s3.test"
    assert second.headers["host"] == "other.s3.test"  # <Endpoint> has no port: the default
    assert target(second) == "/bucket/key"
    assert second.headers["authorization"] != first.headers["authorization"]
    verify_v4(first)
    verify_v4(second)
    assert third.url.host == "other.s3.test" and target(third) == "/bucket/key2"


async def test_permanent_redirect_to_bucket_subdomain() -> None:
    """AWS names the virtual host (bucket.endpoint): the bucket moves out of the path."""
    redirect = error_answer(
        301, "PermanentRedirect", extra="<Endpoint>bucket.s3.eu.test</Endpoint>"
    )
    server = Server(redirect, ok())
    async with connect(server) as conn:
        await conn.get("bucket", "a/key")
    second = server.requests[1]
    assert second.headers["host"] == "bucket.s3.eu.test"
    assert target(second) == "/a/key"
    verify_v4(second)


async def test_temporary_redirect_with_location() -> None:
    server = Server(
        httpx.Response(307, headers={"Location": "http://elsewhere.s3.test:9001/bucket/key"}),
        ok(b"here"),
    )
    async with connect(server, clock=lambda: T0) as conn:
        resp = await conn.get("bucket", "key")
    assert resp.object.data == b"here"
    first, second = server.requests
    assert second.url.host == "elsewhere.s3.test"
    assert second.url.port == 9001
    assert second.headers["host"] == "elsewhere.s3.test:9001"
    assert target(second) == "/bucket/key"
    assert second.headers["authorization"] != first.headers["authorization"]
    verify_v4(second)


async def test_redirect_resends_put_body() -> None:
    server = Server(
        httpx.Response(307, headers={"Location": "http://elsewhere.s3.test/bucket/key"}), ok()
    )
    async with connect(server) as conn:
        await conn.put("bucket", "key", b"body bytes")
    assert server.bodies == [b"body bytes"] * 2
    verify_v4(server.requests[1])


async def test_authorization_header_malformed_resigns_for_region() -> None:
    hint = error_answer(
        400,
        "AuthorizationHeaderMalformed",
        "The authorization header is malformed; the region 'us-east-1' is wrong; "
        "expecting 'eu-west-1'",
        extra="<Region>eu-west-1</Region>",
    )
    server = Server(hint, ok(b"eu data"), ok())
    async with connect(server, clock=lambda: T0) as conn:
        resp = await conn.get("bucket", "key")
        assert resp.object.data == b"eu data"
        await conn.get("bucket", "other")
        await conn.get("another-bucket", "key")  # the hint is per bucket
    first, second, third, fourth = (r.headers["authorization"] for r in server.requests)
    assert "/20240301/us-east-1/s3/aws4_request" in first
    assert "/20240301/eu-west-1/s3/aws4_request" in second
    assert "/20240301/eu-west-1/s3/aws4_request" in third
    assert "/20240301/us-east-1/s3/aws4_request" in fourth
    verify_v4(server.requests[1], region="eu-west-1")
    assert server.requests[1].url.host == "s3.test"  # same endpoint, new scope


async def test_redirect_loop_stops() -> None:
    hosts = itertools.cycle(["a.s3.test", "b.s3.test"])
    server = Server(
        lambda _request: error_answer(
            301, "PermanentRedirect", extra=f"<Endpoint>{next(hosts)}</Endpoint>"
        )
    )
    async with connect(server) as conn:
        with pytest.raises(PermanentRedirect) as info:
            await conn.get("bucket", "key")
    assert server.attempts == _engine.MAX_REDIRECTS + 1
    assert [r.url.host for r in server.requests] == [
        "s3.test",
        "a.s3.test",
        "b.s3.test",
        "a.s3.test",
    ]
    assert info.value.endpoint == "b.s3.test"


async def test_redirect_to_same_place_is_not_followed() -> None:
    server = Server(
        error_answer(301, "PermanentRedirect", extra="<Endpoint>s3.test:9000</Endpoint>")
    )
    async with connect(server) as conn:
        with pytest.raises(PermanentRedirect):
            await conn.get("bucket", "key")
    assert server.attempts == 1


async def test_redirect_without_target_raises() -> None:
    server = Server(httpx.Response(307), ok())
    async with connect(server) as conn:
        with pytest.raises(TemporaryRedirect):
            await conn.get("bucket", "key")
    assert server.attempts == 1


async def test_redirect_does_not_eat_retries() -> None:
    redirect = httpx.Response(307, headers={"Location": "http://elsewhere.s3.test/bucket/key"})
    server = Server(redirect, httpx.Response(503), ok(b"ok"))
    policy = RetryPolicy(max_attempts=2, base_delay=0.001)
    async with connect(server, retry=policy) as conn:
        resp = await conn.get("bucket", "key")
    assert resp.object.data == b"ok"
    assert server.attempts == 3


async def test_redirect_never_resends_a_streamed_body() -> None:
    server = Server(
        httpx.Response(307, headers={"Location": "http://elsewhere.s3.test/bucket/key"}), ok()
    )
    async with connect(server) as conn:
        with pytest.raises(TemporaryRedirect):
            await conn.put("bucket", "key", _chunks([b"abc", b"def"]), content_length=6)
    # Whatever the engine does, no request may carry fewer bytes than it announces.
    for request, body in zip(server.requests, server.bodies, strict=True):
        assert len(body) == int(request.headers["content-length"])


# -- errors inside 200 answers, one-line messages --------------------------------------------------

COPY_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try "
    b"again.</Message><RequestId>656c76696e6727732072657175657374</RequestId>"
    b"<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>"
)


async def test_error_inside_200_copy_is_retried() -> None:
    """AWS: an InternalError inside a 200 CopyObject is to be retried (the SDKs do)."""
    done = (
        b"<CopyObjectResult><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        b"<ETag>&quot;abc&quot;</ETag></CopyObjectResult>"
    )
    server = Server(ok(COPY_ERROR), ok(done))
    async with connect(server) as conn:
        resp = await conn.copy("src", "k", "dst", "k")
    assert resp.etag == '"abc"'
    assert server.attempts == 2


async def test_error_inside_200_copy_raises() -> None:
    server = Server(ok(COPY_ERROR))
    async with connect(server, retry=RetryPolicy.never()) as conn:
        with pytest.raises(InternalError) as info:
            await conn.copy("src", "a key", "dst", "b key")
    err = info.value
    assert err.request_id == "656c76696e6727732072657175657374"
    assert err.resource == "/dst/b key"
    assert err.method == "PUT"
    request = server.requests[0]
    assert request.headers["x-amz-copy-source"] == "src/a%20key"
    assert target(request) == "/dst/b%20key"


async def test_copy_success_after_keepalive_whitespace() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n    \n    \n'
        b"<CopyObjectResult><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        b"<ETag>&quot;abc&quot;</ETag></CopyObjectResult>"
    )
    server = Server(ok(body))
    async with connect(server) as conn:
        resp = await conn.copy("src", "k", "dst", "k")
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    assert (resp.etag, resp.last_modified) == ('"abc"', when)


async def test_error_inside_200_complete_multipart_raises() -> None:
    server = Server(ok(COPY_ERROR.replace(b"InternalError", b"SlowDown")))
    async with connect(server, retry=RetryPolicy.never()) as conn:
        with pytest.raises(SlowDown):
            await conn.complete_multipart_upload("b", "k", "UP", [])


async def test_invalid_xml_in_200_listing_raises_invalid_response() -> None:
    server = Server(ok(b"<ListBucketResult><Contents><Key>trunc"))
    async with connect(server) as conn:
        with pytest.raises(InvalidResponseError):
            await conn.list_bucket("bucket")
    assert server.attempts == 1


async def test_signature_error_str_is_one_line() -> None:
    answer = error_answer(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.\n"
        "Check your key and signing method.",
        extra=(
            f"<AWSAccessKeyId>{AKID}</AWSAccessKeyId>"
            "<StringToSign>AWS4-HMAC-SHA256\n20240301T120000Z\n20240301/us-east-1/s3/"
            "aws4_request\nabc</StringToSign><SignatureProvided>f00</SignatureProvided>"
            "<CanonicalRequest>GET\n/bucket/key\n\nhost:s3.test:9000\n</CanonicalRequest>"
        ),
    )
    server = Server(answer)
    async with connect(server) as conn:
        with pytest.raises(SignatureDoesNotMatch) as info:
            await conn.get("bucket", "key")
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    assert text.startswith("SignatureDoesNotMatch (403): The request signature")
    assert "[GET /bucket/key on s3.test:9000]" in text
    assert "request-id=REQ403" in text
    assert "StringToSign" not in text and "aws4_request" not in text and SECRET not in text
    assert server.attempts == 1


# -- the request target ----------------------------------------------------------------------------

AWKWARD_KEY = "dir//./a/../b%2Bc d+e"
AWKWARD_TARGET = "/bucket/dir//./a/../b%252Bc%20d%2Be"


async def test_target_keeps_dot_segments_and_encoding() -> None:
    server = Server(ok(b"x"))
    async with connect(server) as conn:
        await conn.get("bucket", AWKWARD_KEY)
    request = server.requests[0]
    assert target(request) == AWKWARD_TARGET
    assert unquote(target(request).removeprefix("/bucket/")) == AWKWARD_KEY
    verify_v4(request)  # the signature covers the unnormalised path
    # httpx's own URL removes dot segments (RFC 3986), hence the engine's `target` extension;
    # `//` and percent-escapes survive in it, `.` and `..` do not.
    assert request.url.raw_path == b"/bucket/dir//b%252Bc%20d%2Be"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a+b", "/bucket/a%2Bb"),
        ("a b", "/bucket/a%20b"),
        ("a%20b", "/bucket/a%2520b"),
        ("/leading", "/bucket//leading"),
        ("trailing/", "/bucket/trailing/"),
        ("..", "/bucket/.."),
        ("./x", "/bucket/./x"),
        ("caf\u00e9", "/bucket/caf%C3%A9"),
        ("q?x=1&y#z", "/bucket/q%3Fx%3D1%26y%23z"),
        ("~tilde_-.", "/bucket/~tilde_-."),
    ],
)
async def test_target_per_key(key: str, expected: str) -> None:
    server = Server(ok())
    async with connect(server) as conn:
        await conn.head("bucket", key)
    assert target(server.requests[0]) == expected
    verify_v4(server.requests[0])


async def test_target_query_encoding() -> None:
    server = Server(ok(b"<ListBucketResult/>"))
    async with connect(server) as conn:
        await conn.list_bucket("bucket", {"prefix": "a b/+c", "delimiter": "/", "max-keys": 5})
    assert target(server.requests[0]) == "/bucket?prefix=a%20b%2F%2Bc&delimiter=%2F&max-keys=5"
    verify_v4(server.requests[0])


class _RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self, written: list[bytes], reply: bytes) -> None:
        self.written = written
        self.reply = reply

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reply, self.reply = self.reply[:max_bytes], self.reply[max_bytes:]
        return reply

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return None


class _RecordingBackend(httpcore.AsyncNetworkBackend):
    """An in-memory network: records what is written, answers 200 to each connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.hosts: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append((host, port))
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        return _RecordingStream(self.written, reply)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def test_request_line_on_the_wire_is_unnormalised() -> None:
    """Through httpx's real transport: httpcore writes the engine's target verbatim."""
    transport = httpx.AsyncHTTPTransport()
    backend = _RecordingBackend()
    pool = transport._pool
    assert isinstance(getattr(pool, "_network_backend", None), httpcore.AsyncNetworkBackend)
    pool._network_backend = backend
    conn = S3fmAuthConnection(
        AKID,
        SECRET,
        is_secure=False,
        server="s3.test",
        port=9000,
        calling_format=CallingFormat.PATH,
        transport=transport,
        retry=FAST,
    )
    async with conn:
        resp = await conn.get("bucket", AWKWARD_KEY)
    assert resp.object.data == b"ok"
    assert backend.hosts == [("s3.test", 9000)]
    wire = b"".join(backend.written)
    request_line, _, rest = wire.partition(b"\r\n")
    assert request_line == f"GET {AWKWARD_TARGET} HTTP/1.1".encode()
    assert b"\r\nHost: s3.test:9000\r\n" in b"\r\n" + rest


async def test_request_line_through_http_proxy_is_absolute() -> None:
    """Through a plain-HTTP forward proxy the request line must carry the absolute URL (RFC 9112
    3.2.2). (Keys with ``.``/``..`` segments pin the target and cannot go through one.)"""
    transport = httpx.AsyncHTTPTransport(proxy="http://proxy.test:3128")
    backend = _RecordingBackend()
    pool = transport._pool
    pool._network_backend = backend
    conn = S3fmAuthConnection(
        AKID,
        SECRET,
        is_secure=False,
        server="s3.test",
        port=9000,
        calling_format=CallingFormat.PATH,
        transport=transport,
        retry=FAST,
    )
    async with conn:
        await conn.get("bucket", "a b+c/key")
    assert backend.hosts == [("proxy.test", 3128)]
    request_line = b"".join(backend.written).split(b"\r\n", 1)[0]
    assert request_line == b"GET http://s3.test:9000/bucket/a%20b%2Bc/key HTTP/1.1"


async def test_short_streamed_body_raises_in_tree() -> None:
    """A body shorter than its content_length is the caller's mistake: it must surface as an
    error of the tree (or a ValueError), never as an exception of h11 or httpcore."""
    transport = httpx.AsyncHTTPTransport()
    pool = transport._pool
    pool._network_backend = _RecordingBackend()
    conn = S3fmAuthConnection(
        AKID,
        SECRET,
        is_secure=False,
        server="s3.test",
        port=9000,
        calling_format=CallingFormat.PATH,
        transport=transport,
        retry=FAST,
    )
    async with conn:
        with pytest.raises((S3fmError, ValueError)):
            await conn.put("bucket", "key", _chunks([b"abc"]), content_length=10)


# -- the policy itself -----------------------------------------------------------------------------


def _error(status: int, code: str = "", **headers: str) -> Exception:
    body = f"<Error><Code>{code}</Code></Error>".encode() if code else b""
    return error_from_response(status, headers, body)


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (_error(500), True),
        (_error(502), True),
        (_error(503, "SlowDown"), True),
        (_error(504), True),
        (_error(501, "NotImplemented"), False),
        (_error(505), False),
        (_error(429), True),
        (_error(400, "RequestTimeout"), True),
        (_error(400, "SlowDown"), True),
        (_error(400), False),
        (_error(403), False),
        (_error(404), False),
        (_error(409, "BucketNotEmpty"), False),
        (_error(412), False),
        (_error(301, "PermanentRedirect"), False),
        (S3ConnectError("refused"), True),
        (S3TimeoutError("timeout"), True),
        (S3ProtocolError("reset"), True),
        (InvalidResponseError("bad xml"), False),
        (ValueError("not ours"), False),
    ],
)
def test_is_retryable(exc: Exception, retryable: bool) -> None:
    assert RetryPolicy().is_retryable(exc) is retryable


def test_delay_is_full_jitter_within_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0), (60, 3.0)]:
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spans the range


def test_delay_is_reproducible_with_seeded_rng() -> None:
    import random

    a = [RetryPolicy(rng=random.Random(7)).delay(n) for n in range(1, 6)]
    b = [RetryPolicy(rng=random.Random(7)).delay(n) for n in range(1, 6)]
    assert a == b


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2", 2.0, 2.0),
        ("0.25", 0.25, 0.25),
        ("-5", 0.0, 0.01),  # never negative
        ("soon", 0.0, 0.01),  # garbage ignored
        ("inf", 0.0, 0.01),
        ("nan", 0.0, 0.01),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, 0.01),  # in the past
    ],
)
def test_delay_retry_after_forms(value: str, low: float, high: float) -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=0.01)
    wait = policy.delay(1, _error(503, **{"Retry-After": value}))  # type: ignore[arg-type]
    assert low <= wait <= high


@pytest.mark.parametrize("zone", ["GMT", "+0000", "-0000"])
def test_delay_retry_after_http_date(zone: str) -> None:
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    value = future.strftime("%a, %d %b %Y %H:%M:%S ") + zone
    wait = RetryPolicy().delay(1, _error(503, **{"Retry-After": value}))  # type: ignore[arg-type]
    assert 27 <= wait <= 30


def test_never() -> None:
    assert RetryPolicy.never().max_attempts == 1
