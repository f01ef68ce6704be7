"""The exception tree: ``error_from_response``, ``wrap_transport_error`` and the public exports.

Bodies are shaped like real S3 answers (AWS, with and without the 2006-03-01 namespace, and the
bodiless answers HEAD gets); broken bodies (HTML from a proxy, truncated XML, odd encodings)
must still give an exception of the tree, never a parser error.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import httpx
import pytest

import s3fmfs.client
from s3fmfs.client import errors, models
from s3fmfs.client.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooLarge,
    EntityTooSmall,
    InternalError,
    InvalidAccessKeyId,
    InvalidBucketName,
    InvalidPart,
    InvalidRange,
    InvalidResponseError,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotModified,
    PermanentRedirect,
    PreconditionFailed,
    RequestTimeout,
    RequestTimeTooSkewed,
    S3ClientError,
    S3ConnectError,
    S3fmError,
    S3ProtocolError,
    S3Redirect,
    S3ResponseError,
    S3ServerError,
    S3TimeoutError,
    S3TransportError,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SlowDown,
    TemporaryRedirect,
    TooManyRequests,
    error_class,
    error_from_response,
    wrap_transport_error,
)

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
REQUEST_ID = "4442587FB7D0A2F9"
HOST_ID = "c3F1ZWFrIHNxdWVhayBzcXVlYWsgc3F1ZWFrIHNxdWVhayBzcXVlYWsgc3F1ZWFrIQ=="

# (code, status, class, message) as AWS sends them.
CASES: list[tuple[str, int, type[S3ResponseError], str]] = [
    ("NoSuchKey", 404, NoSuchKey, "The specified key does not exist."),
    ("NoSuchBucket", 404, NoSuchBucket, "The specified bucket does not exist"),
    ("NoSuchUpload", 404, NoSuchUpload, "The specified upload does not exist."),
    ("BucketNotEmpty", 409, BucketNotEmpty, "The bucket you tried to delete is not empty"),
    (
        "BucketAlreadyOwnedByYou",
        409,
        BucketAlreadyOwnedByYou,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    (
        "BucketAlreadyExists",
        409,
        BucketAlreadyExists,
        "The requested bucket name is not available.",
    ),
    ("AccessDenied", 403, AccessDenied, "Access Denied"),
    (
        "SignatureDoesNotMatch",
        403,
        SignatureDoesNotMatch,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    (
        "InvalidAccessKeyId",
        403,
        InvalidAccessKeyId,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    ("InvalidBucketName", 400, InvalidBucketName, "The specified bucket is not valid."),
    (
        "EntityTooLarge",
        400,
        EntityTooLarge,
        "Your proposed upload exceeds the maximum allowed size",
    ),
    (
        "EntityTooSmall",
        400,
        EntityTooSmall,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    ("InvalidRange", 416, InvalidRange, "The requested range is not satisfiable"),
    (
        "InvalidPart",
        400,
        InvalidPart,
        "One or more of the specified parts could not be found.",
    ),
    (
        "PreconditionFailed",
        412,
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    ),
    (
        "RequestTimeout",
        400,
        RequestTimeout,
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
    ),
    (
        "RequestTimeTooSkewed",
        403,
        RequestTimeTooSkewed,
        "The difference between the request time and the current time is too large.",
    ),
    (
        "AuthorizationHeaderMalformed",
        400,
        AuthorizationHeaderMalformed,
        "The authorization header is malformed; the region 'us-east-1' is wrong; "
        "expecting 'eu-west-1'",
    ),
    (
        "MethodNotAllowed",
        405,
        MethodNotAllowed,
        "The specified method is not allowed against this resource.",
    ),
    ("NotModified", 304, NotModified, "Not Modified"),
    ("TooManyRequests", 429, TooManyRequests, "Please reduce your request rate."),
    (
        "InternalError",
        500,
        InternalError,
        "We encountered an internal error. Please try again.",
    ),
    ("ServiceUnavailable", 503, ServiceUnavailable, "Please reduce your request rate."),
    ("SlowDown", 503, SlowDown, "Please reduce your request rate."),
    (
        "PermanentRedirect",
        301,
        PermanentRedirect,
        "The bucket you are attempting to access must be addressed using the specified "
        "endpoint. Please send all future requests to this endpoint.",
    ),
    (
        "TemporaryRedirect",
        307,
        TemporaryRedirect,
        "Please re-send this request to the specified temporary endpoint. Continue to use "
        "the original request endpoint for future requests.",
    ),
]


def error_xml(
    code: str,
    message: str,
    *,
    resource: str = "/mybucket/my&key.txt",
    namespace: bool = False,
    extra: str = "",
    declaration: bool = True,
) -> bytes:
    """An S3 ``<Error>`` document the way AWS writes it."""
    xmlns = f' xmlns="{NS}"' if namespace else ""
    decl = '<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else ""
    res = resource.replace("&", "&amp;").replace("<", "&lt;")
    msg = message.replace("&", "&amp;").replace("<", "&lt;")
    return (
        f"{decl}<Error{xmlns}><Code>{code}</Code><Message>{msg}</Message>"
        f"<Resource>{res}</Resource>{extra}<RequestId>{REQUEST_ID}</RequestId>"
        f"<HostId>{HOST_ID}</HostId></Error>"
    ).encode()


def assert_one_line(text: str) -> None:
    assert "\n" not in text and "\r" not in text, repr(text)
    assert text == text.strip()


# -- error_from_response with an <Error> body ------------------------------------------------------


@pytest.mark.parametrize("namespace", [False, True], ids=["plain", "namespaced"])
@pytest.mark.parametrize(("code", "status", "cls", "message"), CASES, ids=[c[0] for c in CASES])
def test_error_body_picks_class(
    code: str, status: int, cls: type[S3ResponseError], message: str, namespace: bool
) -> None:
    body = error_xml(code, message, namespace=namespace)
    headers = {"Content-Type": "application/xml", "x-amz-request-id": "IGNORED-HEADER-ID"}
    err = error_from_response(status, headers, body, method="GET", resource="/fallback/resource")
    assert type(err) is cls
    assert err.status == status
    assert err.code == code
    assert err.message == message
    assert err.request_id == REQUEST_ID  # the body wins over the header
    assert err.resource == "/mybucket/my&key.txt"  # the body's <Resource>, unescaped
    assert err.host_id == HOST_ID
    assert err.method == "GET"
    assert err.headers["content-type"] == "application/xml"  # names lower-cased
    assert isinstance(err, S3fmError)
    text = str(err)
    assert_one_line(text)
    assert code in text
    assert f"({status})" in text
    assert message in text
    assert REQUEST_ID in text


@pytest.mark.parametrize(("code", "status", "cls", "message"), CASES, ids=[c[0] for c in CASES])
def test_error_class_matches_family(
    code: str, status: int, cls: type[S3ResponseError], message: str
) -> None:
    assert error_class(code, status) is cls
    assert cls.code_name == code
    if status >= 500:
        assert issubclass(cls, S3ServerError)
    elif status in (301, 307):
        assert issubclass(cls, S3Redirect)
    else:
        assert issubclass(cls, S3ClientError)


def test_every_coded_class_is_reachable_by_its_code() -> None:
    coded = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, S3ResponseError) and cls.code_name
    ]
    assert len(coded) >= 25
    for cls in coded:
        assert error_class(cls.code_name, 400) is cls, cls
    # every coded class is also covered by CASES above
    assert {cls for cls in coded} == {case[2] for case in CASES}


def test_message_with_newlines_gives_one_line() -> None:
    message = "Line one.\nLine two,\r\n\tindented.   Spaced."
    body = error_xml("AccessDenied", message)
    err = error_from_response(403, {}, body, method="PUT", resource="/b/k")
    assert isinstance(err, AccessDenied)
    # the attribute keeps the server's text (XML turns CR LF into LF)
    assert err.message == message.replace("\r\n", "\n")
    text = str(err)
    assert_one_line(text)
    assert text.startswith("AccessDenied (403): Line one. Line two, indented. Spaced.")
    assert f"request-id={REQUEST_ID}" in text


def test_str_layout() -> None:
    err = error_from_response(
        404, {}, error_xml("NoSuchKey", "The specified key does not exist.", resource="/b/k")
    )
    assert str(err) == (
        f"NoSuchKey (404): The specified key does not exist. [/b/k] request-id={REQUEST_ID}"
    )
    err = error_from_response(404, {}, b"", method="HEAD", resource="/b/k")
    assert str(err) == "NoSuchKey (404) [HEAD /b/k]"


def test_str_of_signature_error_holds_no_secret_material() -> None:
    """AWS echoes the string to sign and the access key; str() shows neither."""
    extra = (
        "<AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>"
        "<StringToSign>AWS4-HMAC-SHA256\n20240101T000000Z\nscope\nabc</StringToSign>"
        "<SignatureProvided>deadbeef</SignatureProvided>"
        "<StringToSignBytes>41 57 53</StringToSignBytes>"
        "<CanonicalRequest>GET\n/b/k\n\nhost:s3.test\n</CanonicalRequest>"
    )
    body = error_xml("SignatureDoesNotMatch", "The signature does not match.", extra=extra)
    err = error_from_response(403, {}, body, method="GET", resource="/b/k")
    assert isinstance(err, SignatureDoesNotMatch)
    text = str(err)
    assert_one_line(text)
    for leaked in ("AKIAIOSFODNN7EXAMPLE", "deadbeef", "StringToSign", "host:s3.test"):
        assert leaked not in text


def test_region_and_endpoint_fields() -> None:
    body = error_xml(
        "AuthorizationHeaderMalformed",
        "The authorization header is malformed",
        extra="<Region>eu-west-1</Region>",
    )
    err = error_from_response(400, {}, body)
    assert isinstance(err, AuthorizationHeaderMalformed)
    assert err.region == "eu-west-1"

    body = error_xml(
        "PermanentRedirect",
        "Please send all future requests to this endpoint.",
        extra="<Bucket>mybucket</Bucket><Endpoint>mybucket.s3.eu-west-1.amazonaws.com</Endpoint>",
        namespace=True,
    )
    err = error_from_response(301, {"x-amz-bucket-region": "eu-west-1"}, body)
    assert isinstance(err, PermanentRedirect)
    assert err.endpoint == "mybucket.s3.eu-west-1.amazonaws.com"
    assert err.region == "eu-west-1"

    err = error_from_response(307, {"Location": "http://other.s3.test:9000/b/k"}, b"")
    assert isinstance(err, TemporaryRedirect)
    assert err.endpoint == "http://other.s3.test:9000/b/k"


def test_headers_fill_missing_ids() -> None:
    body = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
    headers = {"X-Amz-Request-Id": "REQ1", "X-Amz-Id-2": "HOST2"}
    err = error_from_response(404, headers, body, resource="/b/k", method="GET")
    assert isinstance(err, NoSuchKey)
    assert (err.request_id, err.host_id, err.resource) == ("REQ1", "HOST2", "/b/k")


def test_error_nested_in_other_root_and_whitespace() -> None:
    body = (
        b"<?xml version='1.0'?>\n<Response><Errors><Error>\n  <Code> SlowDown </Code>\n"
        b"  <Message>\n  Reduce your request rate.\n  </Message>\n</Error></Errors></Response>"
    )
    err = error_from_response(503, {}, body)
    assert isinstance(err, SlowDown)
    assert err.code == "SlowDown"
    assert err.message == "Reduce your request rate."


def test_error_inside_200_copy_answer() -> None:
    """connection.copy calls error_from_response(500, ...) for a 200 holding an <Error>."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n\n    \n'
        b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message>"
        b"<RequestId>R</RequestId><HostId>H</HostId></Error>"
    )
    err = error_from_response(500, {}, body, method="PUT", resource="/b/k")
    assert isinstance(err, InternalError)
    assert (err.status, err.request_id, err.host_id) == (500, "R", "H")


# -- bodiless answers (HEAD) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "missing", "cls", "code"),
    [
        (404, "NoSuchKey", NoSuchKey, "NoSuchKey"),
        (404, "NoSuchBucket", NoSuchBucket, "NoSuchBucket"),
        (404, "NoSuchUpload", NoSuchUpload, "NoSuchUpload"),
        (301, "NoSuchKey", PermanentRedirect, "PermanentRedirect"),
        (304, "NoSuchKey", NotModified, "NotModified"),
        (307, "NoSuchKey", TemporaryRedirect, "TemporaryRedirect"),
        (403, "NoSuchKey", AccessDenied, "AccessDenied"),
        (405, "NoSuchKey", MethodNotAllowed, "MethodNotAllowed"),
        (412, "NoSuchKey", PreconditionFailed, "PreconditionFailed"),
        (416, "NoSuchKey", InvalidRange, "InvalidRange"),
        (429, "NoSuchKey", TooManyRequests, "TooManyRequests"),
        (500, "NoSuchKey", InternalError, "InternalError"),
        (503, "NoSuchKey", ServiceUnavailable, "ServiceUnavailable"),
    ],
)
def test_bodiless_answer_maps_by_status(
    status: int, missing: str, cls: type[S3ResponseError], code: str
) -> None:
    headers = {"x-amz-request-id": "HEADREQ", "x-amz-id-2": "HEADHOST"}
    err = error_from_response(
        status, headers, b"", method="HEAD", resource="/bucket/key", missing=missing
    )
    assert type(err) is cls
    assert (err.status, err.code, err.message) == (status, code, "")
    assert (err.request_id, err.host_id, err.resource) == ("HEADREQ", "HEADHOST", "/bucket/key")
    text = str(err)
    assert_one_line(text)
    assert code in text and str(status) in text and "HEAD /bucket/key" in text


def test_missing_only_applies_to_404() -> None:
    err = error_from_response(403, {}, b"", missing="NoSuchBucket")
    assert isinstance(err, AccessDenied)
    # a 404 with a body: the body's code wins over ``missing``
    body = error_xml("NoSuchBucket", "The specified bucket does not exist")
    err = error_from_response(404, {}, body, missing="NoSuchKey")
    assert isinstance(err, NoSuchBucket)


@pytest.mark.parametrize(
    ("status", "base"),
    [(400, S3ClientError), (409, S3ClientError), (502, S3ServerError), (504, S3ServerError)],
)
def test_bodiless_unknown_status(status: int, base: type[S3ResponseError]) -> None:
    err = error_from_response(status, {}, b"")
    assert type(err) is base
    assert err.code == f"HTTP{status}"
    assert err.status == status


# -- unknown codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "base"),
    [(400, S3ClientError), (403, S3ClientError), (409, S3ClientError), (500, S3ServerError)],
)
@pytest.mark.parametrize("namespace", [False, True])
def test_unknown_code_falls_back_on_status(
    status: int, base: type[S3ResponseError], namespace: bool
) -> None:
    body = error_xml(
        "XAmzContentSHA256Mismatch", "The provided hash did not match.", namespace=namespace
    )
    err = error_from_response(status, {}, body)
    assert type(err) is base
    assert err.code == "XAmzContentSHA256Mismatch"
    assert err.message == "The provided hash did not match."
    assert "XAmzContentSHA256Mismatch" in str(err)


def test_unknown_code_with_redirect_status() -> None:
    err = error_from_response(301, {}, error_xml("WeirdMove", "moved"))
    assert type(err) is S3Redirect
    assert err.code == "WeirdMove"


# -- bodies that are not S3 XML --------------------------------------------------------------------

BROKEN_BODIES = {
    "html": (
        b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
        b"</body></html>\n"
    ),
    "html-with-entities": b"<html><body>Service&nbsp;down &copy; proxy</body></html>",
    "truncated": b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Mess',
    "text": b"Internal Server Error\n",
    "json": b'{"error": "rate limited", "retry": true}',
    "binary": bytes(range(256)) * 4,
    "bogus-encoding": (
        b'<?xml version="1.0" encoding="x-no-such-codec"?><Error><Code>X</Code></Error>'
    ),
    "empty-error": b"<Error/>",
    "not-error-root": b"<ListBucketResult><Name>b</Name></ListBucketResult>",
    "latin1": "<Error><Message>caf\xe9</Message></Error>".encode("latin-1"),
}


@pytest.mark.parametrize("status", [400, 403, 404, 500, 502, 503])
@pytest.mark.parametrize("name", sorted(BROKEN_BODIES))
def test_broken_body_does_not_crash(name: str, status: int) -> None:
    body = BROKEN_BODIES[name]
    err = error_from_response(status, {}, body, method="GET", resource="/b/k")
    assert isinstance(err, S3ResponseError)
    assert err.status == status
    if status >= 500:
        assert isinstance(err, S3ServerError)
    else:
        assert isinstance(err, S3ClientError)
    assert err.code  # a code is always set (from the body, the status or HTTPnnn)
    assert_one_line(str(err))
    assert str(status) in str(err)


def test_html_body_becomes_the_message() -> None:
    err = error_from_response(502, {}, BROKEN_BODIES["html"])
    assert type(err) is S3ServerError
    assert err.code == "HTTP502"
    assert "502 Bad Gateway" in err.message
    assert len(err.message) <= 200
    assert_one_line(str(err))


def test_truncated_body_maps_by_status() -> None:
    err = error_from_response(404, {}, BROKEN_BODIES["truncated"], missing="NoSuchKey")
    assert isinstance(err, NoSuchKey)
    err = error_from_response(503, {}, BROKEN_BODIES["truncated"])
    assert isinstance(err, ServiceUnavailable)


def test_leading_whitespace_body_is_parsed() -> None:
    body = b"\n\n  " + b" " * 600 + b'<?xml version="1.0"?><Error><Code>SlowDown</Code></Error>'
    err = error_from_response(503, {}, body)
    assert isinstance(err, SlowDown)


def test_response_error_attributes_default() -> None:
    err = S3ClientError(400, "Custom", "msg")
    assert (err.request_id, err.resource, err.host_id, err.endpoint, err.region) == ("",) * 5
    assert dict(err.headers) == {}
    assert str(err) == "Custom (400): msg"


# -- transport errors ------------------------------------------------------------------------------

REQUEST = httpx.Request("GET", "http://s3.test:9000/b/k")


@pytest.mark.parametrize(
    ("exc_type", "cls"),
    [
        (httpx.ConnectError, S3ConnectError),
        (httpx.ReadTimeout, S3TimeoutError),
        (httpx.ConnectTimeout, S3TimeoutError),
        (httpx.PoolTimeout, S3TimeoutError),
        (httpx.WriteTimeout, S3TimeoutError),
        (httpx.RemoteProtocolError, S3ProtocolError),
        (httpx.LocalProtocolError, S3ProtocolError),
        (httpx.ReadError, S3ProtocolError),
        (httpx.WriteError, S3ProtocolError),
        (httpx.CloseError, S3ProtocolError),
    ],
)
def test_wrap_transport_error(
    exc_type: type[httpx.TransportError], cls: type[S3TransportError]
) -> None:
    exc = exc_type("[Errno 111] Connection refused", request=REQUEST)
    err = wrap_transport_error(exc, method="GET", url="/b/k")
    assert type(err) is cls
    assert isinstance(err, S3TransportError)
    assert isinstance(err, S3fmError)
    assert err.method == "GET"
    assert err.url == "/b/k"
    assert err.host == "s3.test:9000"  # from the exception's request
    assert str(err) == f"GET /b/k: {cls.failed_to} s3.test:9000: [Errno 111] Connection refused"


def _all_subclasses(cls: type[httpx.TransportError]) -> list[type[httpx.TransportError]]:
    found: list[type[httpx.TransportError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def test_every_httpx_transport_error_is_mapped() -> None:
    subclasses = _all_subclasses(httpx.TransportError)
    assert len(subclasses) >= 14  # httpx 0.28 has 15
    unmapped: list[str] = []
    candidates: list[type[httpx.TransportError]] = [httpx.TransportError, *subclasses]
    for exc_type in candidates:
        err = wrap_transport_error(exc_type("boom", request=REQUEST), method="PUT", url="/b/k")
        if not isinstance(err, S3TransportError) or type(err) is S3TransportError:
            unmapped.append(exc_type.__name__)
    assert unmapped == []


def test_timeouts_and_connects_keep_their_kind() -> None:
    for exc_type in _all_subclasses(httpx.TimeoutException):
        assert isinstance(wrap_transport_error(exc_type("t")), S3TimeoutError), exc_type
    # ConnectTimeout is a timeout first (it is not an httpx.ConnectError)
    assert type(wrap_transport_error(httpx.ConnectTimeout("t"))) is S3TimeoutError


def test_transport_error_str_is_one_line() -> None:
    exc = httpx.RemoteProtocolError("peer closed connection\nwithout sending complete message")
    err = wrap_transport_error(exc, method="GET", url="/b/k")
    assert isinstance(err, S3ProtocolError)
    assert_one_line(str(err))
    assert str(err) == "GET /b/k: peer closed connection without sending complete message"


def test_transport_errors_name_the_host() -> None:
    """The host given wins over the request's; the port is always shown."""
    err = wrap_transport_error(httpx.ConnectError("[Errno -2] Name or service not known"))
    assert str(err) == "[Errno -2] Name or service not known"  # no request, no host
    err = wrap_transport_error(
        httpx.ConnectError("[Errno -2] Name or service not known"),
        method="GET",
        url="/",
        host="rest.s3for.me:443",
    )
    assert str(err) == (
        "GET /: cannot connect to rest.s3for.me:443: [Errno -2] Name or service not known"
    )
    req = httpx.Request("GET", "https://[::1]/b")
    err = wrap_transport_error(httpx.ReadTimeout("", request=req), method="GET", url="/b")
    assert str(err) == "GET /b: timed out waiting for [::1]:443: ReadTimeout"


def test_transport_error_without_text_names_the_type() -> None:
    err = wrap_transport_error(httpx.ReadError(""), method="GET", url="/b/k")
    assert str(err) == "GET /b/k: ReadError"
    err = wrap_transport_error(httpx.ConnectError("refused"))
    assert str(err) == "refused"  # no method: no prefix


def test_http_status_error_becomes_response_error() -> None:
    resp = httpx.Response(404, request=REQUEST)
    exc = httpx.HTTPStatusError("not found", request=REQUEST, response=resp)
    err = wrap_transport_error(exc, method="HEAD", url="/b/k")
    assert isinstance(err, NoSuchKey)
    assert err.resource == "/b/k"


def test_other_http_errors_stay_in_tree() -> None:
    for exc in (httpx.DecodingError("bad gzip"), httpx.TooManyRedirects("loop")):
        err = wrap_transport_error(exc, method="GET", url="/b/k")
        assert isinstance(err, S3TransportError)


def test_tree_shape() -> None:
    assert issubclass(S3TransportError, S3fmError)
    assert issubclass(InvalidResponseError, S3fmError)
    assert issubclass(S3ResponseError, S3fmError)
    assert issubclass(S3ClientError, S3ResponseError)
    assert issubclass(S3ServerError, S3ResponseError)
    assert issubclass(S3Redirect, S3ResponseError)
    assert not issubclass(S3Redirect, S3ClientError | S3ServerError)
    transport: list[type[S3fmError]] = [S3ConnectError, S3TimeoutError, S3ProtocolError]
    assert all(issubclass(cls, S3TransportError) for cls in transport)
    server: list[type[S3fmError]] = [InternalError, ServiceUnavailable, SlowDown]
    assert all(issubclass(cls, S3ServerError) for cls in server)
    redirects: list[type[S3fmError]] = [PermanentRedirect, TemporaryRedirect]
    assert all(issubclass(cls, S3Redirect) for cls in redirects)


def test_exceptions_survive_pickling() -> None:
    """Errors cross process boundaries (e.g. a worker pool) with their attributes intact."""
    err = error_from_response(
        404, {"x-amz-request-id": "R1"}, b"", method="HEAD", resource="/b/k", missing="NoSuchKey"
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is NoSuchKey
    assert (copy.status, copy.code, copy.request_id, copy.method) == (
        404,
        "NoSuchKey",
        "R1",
        "HEAD",
    )
    assert str(copy) == str(err)
    transport = S3ConnectError("refused", method="GET", url="/b/k")
    copy_t = pickle.loads(pickle.dumps(transport))
    assert type(copy_t) is S3ConnectError
    assert (copy_t.method, copy_t.url, str(copy_t)) == ("GET", "/b/k", "GET /b/k: refused")


# -- public exports --------------------------------------------------------------------------------

#: Classes of models.py that are internal plumbing (the parser's page of ListParts).
INTERNAL_MODELS = {"PartsPage"}


def _defined_classes(module: Any) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
    }


def test_errors_all_is_complete() -> None:
    classes = _defined_classes(errors)
    functions = {
        name
        for name, obj in vars(errors).items()
        if inspect.isfunction(obj)
        and obj.__module__ == errors.__name__
        and not name.startswith("_")
    }
    assert functions == {"error_class", "error_from_response", "host_of", "wrap_transport_error"}
    assert set(errors.__all__) == classes | functions
    assert len(errors.__all__) == len(set(errors.__all__))


def test_client_all_is_complete() -> None:
    exported = set(s3fmfs.client.__all__)
    assert len(s3fmfs.client.__all__) == len(exported), "duplicates in __all__"
    for name in s3fmfs.client.__all__:
        assert hasattr(s3fmfs.client, name), name
    missing_errors = set(errors.__all__) - exported
    assert missing_errors == set()
    missing_models = _defined_classes(models) - INTERNAL_MODELS - exported
    assert missing_models == set()
    for name in (
        "S3fmAuthConnection",
        "QueryStringAuthGenerator",
        "RetryPolicy",
        "Credentials",
        "StreamingGetResponse",
        "DEFAULT_SPOOL_SIZE",
    ):
        assert name in exported
    # the exported objects are the very classes of their modules
    for name in errors.__all__:
        assert getattr(s3fmfs.client, name) is getattr(errors, name)


def test_star_import() -> None:
    namespace: dict[str, Any] = {}
    exec("from s3fmfs.client import *", namespace)
    assert set(s3fmfs.client.__all__) <= set(namespace)
    assert namespace["NoSuchKey"] is NoSuchKey
