"""One exception tree for everything the S3 client can raise.

::

    S3fmError
    ├── S3TransportError          the request did not get an HTTP answer (wraps httpx errors)
    │   ├── S3ConnectError        could not connect (refused, DNS, TLS handshake)
    │   ├── S3TimeoutError        connect/read/write/pool timeout
    │   └── S3ProtocolError       connection reset or broken HTTP mid-response
    ├── InvalidResponseError      an answer we cannot understand (bad XML, wrong length)
    └── S3ResponseError           the server answered with an error status
        ├── S3ClientError         4xx: never retried
        │   ├── NoSuchKey, NoSuchBucket, NoSuchUpload, AccessDenied, ...
        └── S3ServerError         5xx: retried
            ├── InternalError, ServiceUnavailable, SlowDown

Invariants:
- Foreign exceptions become members of this tree at exactly one point, ``wrap_transport_error``;
  S3 error answers at exactly one point, ``error_from_response``.
- The class is chosen by the XML ``<Code>``; without a body (HEAD) by the HTTP status.
- ``str()`` of any error is one line and never holds credentials. A transport error names the
  host and port it could not reach (``cannot connect to rest.s3for.me:443: ...``); an error
  answer names the host that sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree import ElementTree

import httpx


class S3fmError(Exception):
    """Base of every error the client raises."""


class S3TransportError(S3fmError):
    """The request got no HTTP answer; ``__cause__`` is the httpx exception. ``host`` is the
    ``host:port`` it went to ("" when unknown)."""

    #: How ``str()`` introduces the host.
    failed_to = "no answer from"

    def __init__(self, message: str, *, method: str = "", url: str = "", host: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.host = host

    def __str__(self) -> str:
        target = f"{self.method} {self.url}: " if self.method else ""
        where = f"{self.failed_to} {self.host}: " if self.host else ""
        return " ".join(f"{target}{where}{self.message}".split())  # one line, whatever httpx said


class S3ConnectError(S3TransportError):
    """Could not open a connection to the endpoint (refused, unknown name, TLS)."""

    failed_to = "cannot connect to"


class S3TimeoutError(S3TransportError):
    """A connect, read, write or pool timeout."""

    failed_to = "timed out waiting for"


class S3ProtocolError(S3TransportError):
    """The connection broke or spoke invalid HTTP mid-exchange."""

    failed_to = "connection broken with"


class InvalidResponseError(S3fmError):
    """The server answered, but with something we cannot parse or trust."""


class S3ResponseError(S3fmError):
    """An error answer from the service.

    Attributes: ``status`` (HTTP), ``code`` (S3 ``<Code>``), ``message``, ``request_id``,
    ``resource`` (the bucket/key addressed), ``host_id``, ``endpoint`` (for redirects),
    ``region`` (from ``x-amz-bucket-region``), ``headers``, ``host`` (``host:port`` that
    answered, "" when unknown), ``body`` (the error document, up to ``MAX_ERROR_BODY``).
    """

    #: The S3 ``<Code>`` this class stands for (subclasses set it).
    code_name: str = ""

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        *,
        request_id: str = "",
        resource: str = "",
        host_id: str = "",
        endpoint: str = "",
        region: str = "",
        method: str = "",
        headers: Mapping[str, str] | None = None,
        host: str = "",
        body: bytes = b"",
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.resource = resource
        self.host_id = host_id
        self.endpoint = endpoint
        self.region = region
        self.method = method
        self.headers: Mapping[str, str] = headers or {}
        self.host = host
        self.body = body

    def __str__(self) -> str:
        what = f"{self.method} {self.resource}".strip()
        if self.host:
            what += f" on {self.host}"
        text = f"{self.code} ({self.status})"
        if self.message:
            text += f": {self.message}"
        if what:
            text += f" [{what}]"
        if self.request_id:
            text += f" request-id={self.request_id}"
        return " ".join(text.split())  # one line, whatever the server put in the message


class S3ClientError(S3ResponseError):
    """A 4xx answer: the request itself is wrong; retrying cannot help."""


class S3ServerError(S3ResponseError):
    """A 5xx answer: the service failed; the request may be retried."""


class S3Redirect(S3ResponseError):
    """A 301/307 or PermanentRedirect/TemporaryRedirect: the bucket lives elsewhere."""


# Codes we give classes of their own; others map to S3ClientError / S3ServerError by status.
class NoSuchKey(S3ClientError):
    """The key does not exist (404; HEAD answers have no code)."""

    code_name = "NoSuchKey"


class NoSuchBucket(S3ClientError):
    """The bucket does not exist."""

    code_name = "NoSuchBucket"


class NoSuchUpload(S3ClientError):
    """The multipart upload does not exist (completed or aborted)."""

    code_name = "NoSuchUpload"


class BucketNotEmpty(S3ClientError):
    """A bucket must be empty to be deleted."""

    code_name = "BucketNotEmpty"


class BucketAlreadyOwnedByYou(S3ClientError):
    """The bucket exists and is yours."""

    code_name = "BucketAlreadyOwnedByYou"


class BucketAlreadyExists(S3ClientError):
    """The bucket name is taken by someone else."""

    code_name = "BucketAlreadyExists"


class AccessDenied(S3ClientError):
    """Credentials are valid but not allowed to do this (403)."""

    code_name = "AccessDenied"


class SignatureDoesNotMatch(S3ClientError):
    """The secret key is wrong, or the request changed after signing."""

    code_name = "SignatureDoesNotMatch"


class InvalidAccessKeyId(S3ClientError):
    """The access key id is unknown to the service."""

    code_name = "InvalidAccessKeyId"


class InvalidBucketName(S3ClientError):
    """The bucket name is not legal."""

    code_name = "InvalidBucketName"


class EntityTooLarge(S3ClientError):
    """The upload exceeds the maximum object or part size."""

    code_name = "EntityTooLarge"


class EntityTooSmall(S3ClientError):
    """A multipart part other than the last is under the minimum size."""

    code_name = "EntityTooSmall"


class InvalidRange(S3ClientError):
    """The requested range is not satisfiable (416)."""

    code_name = "InvalidRange"


class InvalidPart(S3ClientError):
    """A part listed in CompleteMultipartUpload is missing or has another ETag."""

    code_name = "InvalidPart"


class PreconditionFailed(S3ClientError):
    """An If-Match / If-None-Match condition did not hold (412)."""

    code_name = "PreconditionFailed"


class RequestTimeout(S3ClientError):
    """The server gave up waiting for the request body (400, but retried)."""

    code_name = "RequestTimeout"


class RequestTimeTooSkewed(S3ClientError):
    """The client's clock is too far from the server's."""

    code_name = "RequestTimeTooSkewed"


class AuthorizationHeaderMalformed(S3ClientError):
    """The V4 credential scope is wrong (often the region); the body names the right one."""

    code_name = "AuthorizationHeaderMalformed"


class MethodNotAllowed(S3ClientError):
    """The method is not allowed on this resource (405)."""

    code_name = "MethodNotAllowed"


class NotModified(S3ClientError):
    """A conditional GET found the object unchanged (304)."""

    code_name = "NotModified"


class TooManyRequests(S3ClientError):
    """429 from services that throttle that way: retried."""

    code_name = "TooManyRequests"


class InternalError(S3ServerError):
    """The service failed internally (500)."""

    code_name = "InternalError"


class ServiceUnavailable(S3ServerError):
    """The service is unavailable (503)."""

    code_name = "ServiceUnavailable"


class SlowDown(S3ServerError):
    """The service asks us to reduce the request rate (503)."""

    code_name = "SlowDown"


class PermanentRedirect(S3Redirect):
    """The bucket must be addressed at ``endpoint`` (301)."""

    code_name = "PermanentRedirect"


class TemporaryRedirect(S3Redirect):
    """Address ``endpoint`` for now (307)."""

    code_name = "TemporaryRedirect"


_BY_CODE: dict[str, type[S3ResponseError]] = {
    cls.code_name: cls
    for cls in (
        NoSuchKey,
        NoSuchBucket,
        NoSuchUpload,
        BucketNotEmpty,
        BucketAlreadyOwnedByYou,
        BucketAlreadyExists,
        AccessDenied,
        SignatureDoesNotMatch,
        InvalidAccessKeyId,
        InvalidBucketName,
        EntityTooLarge,
        EntityTooSmall,
        InvalidRange,
        InvalidPart,
        PreconditionFailed,
        RequestTimeout,
        RequestTimeTooSkewed,
        AuthorizationHeaderMalformed,
        MethodNotAllowed,
        NotModified,
        TooManyRequests,
        InternalError,
        ServiceUnavailable,
        SlowDown,
        PermanentRedirect,
        TemporaryRedirect,
    )
}

# Bodiless answers (HEAD, some proxies): the status alone picks the code.
_CODE_BY_STATUS = {
    301: "PermanentRedirect",
    304: "NotModified",
    307: "TemporaryRedirect",
    403: "AccessDenied",
    405: "MethodNotAllowed",
    412: "PreconditionFailed",
    416: "InvalidRange",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def error_class(code: str, status: int) -> type[S3ResponseError]:
    """The class for an S3 ``<Code>``, falling back on the status family."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls
    if status in (301, 307):
        return S3Redirect
    return S3ServerError if status >= 500 else S3ClientError


def _parse_error_body(body: bytes) -> dict[str, str]:
    """The children of an S3 ``<Error>`` document; {} when there is none or it is not XML."""
    body = body.lstrip()  # whitespace before the XML declaration is not well-formed
    if not body or b"<" not in body[:512]:
        return {}
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, LookupError, ValueError):
        # LookupError: an unknown encoding in the XML declaration
        return {}
    if root.tag.rsplit("}", 1)[-1] != "Error":
        found = root.find(".//{*}Error")
        if found is None:
            return {}
        root = found
    fields: dict[str, str] = {}
    for child in root:
        fields[child.tag.rsplit("}", 1)[-1]] = (child.text or "").strip()
    return fields


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str = "",
    resource: str = "",
    missing: str = "NoSuchKey",
    host: str = "",
) -> S3ResponseError:
    """Build the exception for an error answer (status >= 300, or an error inside a 200).

    ``missing`` is the code a bodiless 404 stands for: NoSuchKey for object requests,
    NoSuchBucket for bucket requests.
    """
    fields = _parse_error_body(body)
    code = fields.get("Code", "")
    if not code:
        code = missing if status == 404 else _CODE_BY_STATUS.get(status, f"HTTP{status}")
    message = fields.get("Message", "")
    if not message and not fields and body and status >= 400:
        message = body[:200].decode("utf-8", "replace")
    cls = error_class(code, status)
    lower = {k.lower(): v for k, v in headers.items()}
    return cls(
        status,
        code,
        message,
        request_id=fields.get("RequestId", "") or lower.get("x-amz-request-id", ""),
        resource=fields.get("Resource", "") or resource,
        host_id=fields.get("HostId", "") or lower.get("x-amz-id-2", ""),
        endpoint=fields.get("Endpoint", "") or lower.get("location", ""),
        region=fields.get("Region", "") or lower.get("x-amz-bucket-region", ""),
        method=method,
        headers=dict(lower),
        host=host,
        body=bytes(body),
    )


def _first_message(exc: BaseException) -> str:
    """The first non-empty message along ``exc``'s causes: httpcore and trio wrap an ssl or
    socket error in exceptions without text (a refused certificate would read ConnectError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return type(exc).__name__


def host_of(url: httpx.URL) -> str:
    """``host:port`` of a URL, the port always shown (the scheme's when absent)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def wrap_transport_error(
    exc: httpx.HTTPError, *, method: str = "", url: str = "", host: str = ""
) -> S3fmError:
    """Translate an httpx exception into this tree (the one place that does it). ``host``
    defaults to the one of the exception's request, when it has one."""
    detail = _first_message(exc)
    if not host:
        try:
            host = host_of(exc.request.url)
        except RuntimeError:  # httpx raises it for an exception without a request
            host = ""
    cls: type[S3TransportError]
    if isinstance(exc, httpx.TimeoutException):
        cls = S3TimeoutError
    elif isinstance(exc, httpx.ConnectError):
        cls = S3ConnectError
    elif isinstance(exc, httpx.TransportError):
        cls = S3ProtocolError
    elif isinstance(exc, httpx.HTTPStatusError):
        return error_from_response(
            exc.response.status_code,
            exc.response.headers,
            b"",
            method=method,
            resource=url,
            host=host,
        )
    else:
        cls = S3ProtocolError
    return cls(detail, method=method, url=url, host=host)


__all__ = [
    "AccessDenied",
    "AuthorizationHeaderMalformed",
    "BucketAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
    "EntityTooLarge",
    "EntityTooSmall",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidPart",
    "InvalidRange",
    "InvalidResponseError",
    "MethodNotAllowed",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "NotModified",
    "PermanentRedirect",
    "PreconditionFailed",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "S3ClientError",
    "S3ConnectError",
    "S3ProtocolError",
    "S3Redirect",
    "S3ResponseError",
    "S3ServerError",
    "S3TimeoutError",
    "S3TransportError",
    "S3fmError",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
    "TemporaryRedirect",
    "TooManyRequests",
    "error_class",
    "error_from_response",
    "host_of",
    "wrap_transport_error",
]
