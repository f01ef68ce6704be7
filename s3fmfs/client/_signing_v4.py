"""AWS Signature Version 4 for S3: the Authorization header and presigned-URL forms.

Invariants:
- Pure: no clock reads, no I/O. The signing time comes in as ``now`` (aware, or naive = UTC).
- The canonical URI is ``req.path`` exactly as sent: S3 is the one service whose paths are
  neither normalized nor encoded a second time.
- The canonical query encodes names and values with ``quote_param`` and sorts by encoded name,
  then encoded value; a bare flag (``?lifecycle``) signs as ``lifecycle=``.
- Signed headers are ``host`` (from ``req.host``), every header of ``req.headers`` except
  ``SKIPPED_HEADERS``, and the headers the signer adds; an added header replaces a stale one of
  the same name in ``req.headers`` (a retried request keeps its old ``x-amz-date``).
- The output is what botocore's ``S3SigV4Auth`` / ``S3SigV4QueryAuth`` produce for the same
  request and time (the tests compare them).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace

from ._encoding import quote_param
from ._signing_types import Credentials, SigningRequest
from .limits import MAX_PRESIGN_EXPIRES

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGN_EXPIRES",
    "SKIPPED_HEADERS",
    "UNSIGNED_PAYLOAD",
    "amz_timestamp",
    "canonical_query_v4",
    "canonical_request_v4",
    "credential_scope_v4",
    "headers_to_sign_v4",
    "presign_v4",
    "sign_v4",
    "signed_header_names_v4",
    "signing_key_v4",
    "string_to_sign_v4",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""SigV4 caps X-Amz-Expires at a week; AWS (and s3rver) reject anything longer."""

SKIPPED_HEADERS = frozenset(
    {
        # botocore's SIGNED_HEADERS_BLACKLIST: hop-by-hop headers, or ones that proxies and
        # HTTP stacks add or rewrite after signing.
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
        # Ours on top: the signature cannot cover itself, and httpx/proxies may rewrite
        # Accept-Encoding (botocore would sign it).
        "authorization",
        "accept-encoding",
    }
)
"""Request headers left out of the signature."""


def _utc(now: datetime.datetime) -> datetime.datetime:
    """``now`` in UTC; a naive datetime is taken to be UTC already."""
    if now.tzinfo is None:
        return now.replace(tzinfo=datetime.UTC)
    return now.astimezone(datetime.UTC)


def amz_timestamp(now: datetime.datetime) -> str:
    """The ISO 8601 basic timestamp SigV4 uses (``20130524T000000Z``)."""
    return _utc(now).strftime("%Y%m%dT%H%M%SZ")


def credential_scope_v4(date: str, region: str, service: str = "s3") -> str:
    """``YYYYMMDD/region/service/aws4_request``: what a signing key is valid for."""
    return f"{date}/{region}/{service}/aws4_request"


def canonical_query_v4(query: tuple[tuple[str, str | None], ...]) -> str:
    """Encoded pairs sorted by encoded name then value; bare flags as ``name=``."""
    pairs = sorted((quote_param(name), quote_param(value or "")) for name, value in query)
    return "&".join(f"{name}={value}" for name, value in pairs)


def _canonical_header_items(signed_headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Lower-cased names, sorted; values trimmed with whitespace runs collapsed (Trimall)."""
    merged: dict[str, list[str]] = {}
    for name, value in signed_headers.items():
        merged.setdefault(name.lower(), []).append(" ".join(value.split()))
    return [(name, ",".join(merged[name])) for name in sorted(merged)]


def signed_header_names_v4(signed_headers: Mapping[str, str]) -> str:
    """The ``SignedHeaders`` list: sorted lower-case names joined by ``;``."""
    return ";".join(name for name, _ in _canonical_header_items(signed_headers))


def canonical_request_v4(
    req: SigningRequest, signed_headers: Mapping[str, str], payload_hash: str
) -> str:
    """The canonical request of ``req`` covering exactly ``signed_headers``."""
    items = _canonical_header_items(signed_headers)
    return "\n".join(
        [
            req.method,
            req.path or "/",
            canonical_query_v4(req.query),
            "".join(f"{name}:{value}\n" for name, value in items),
            ";".join(name for name, _ in items),
            payload_hash,
        ]
    )


def string_to_sign_v4(timestamp: str, scope: str, canonical_request: str) -> str:
    """Algorithm, time, scope and the hex SHA-256 of the canonical request."""
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


@functools.lru_cache(maxsize=64)
def signing_key_v4(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The derived key for one day, region and service (cached: it changes once a day)."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode("utf-8"), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def headers_to_sign_v4(req: SigningRequest, added: Mapping[str, str]) -> dict[str, str]:
    """``host``, the request's signable headers, then ``added`` (which wins over stale ones)."""
    headers = {"host": req.host}
    for name, value in req.headers.items():
        lname = name.lower()
        if lname not in SKIPPED_HEADERS and lname != "host":
            headers[lname] = value
    headers.update((name.lower(), value) for name, value in added.items())
    return headers


def _signature(secret: str, date: str, region: str, string_to_sign: str) -> str:
    key = signing_key_v4(secret, date, region)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_v4(
    req: SigningRequest,
    creds: Credentials,
    region: str,
    now: datetime.datetime,
    payload_hash: str,
) -> dict[str, str]:
    """Headers to add to ``req`` to authenticate it with an Authorization header.

    ``payload_hash`` is the hex SHA-256 of the body, ``EMPTY_SHA256`` for none, or
    ``UNSIGNED_PAYLOAD``; it is sent as ``x-amz-content-sha256``, which S3 requires.
    Anonymous credentials add nothing: the request goes unsigned.
    """
    if creds.anonymous:
        return {}
    timestamp = amz_timestamp(now)
    date = timestamp[:8]
    added = {"x-amz-date": timestamp, "x-amz-content-sha256": payload_hash}
    if creds.session_token:
        added["x-amz-security-token"] = creds.session_token
    signed = headers_to_sign_v4(req, added)
    scope = credential_scope_v4(date, region)
    canonical = canonical_request_v4(req, signed, payload_hash)
    signature = _signature(
        creds.secret_access_key, date, region, string_to_sign_v4(timestamp, scope, canonical)
    )
    added["authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key_id}/{scope}, "
        f"SignedHeaders={signed_header_names_v4(signed)}, Signature={signature}"
    )
    return added


def presign_v4(
    req: SigningRequest,
    creds: Credentials,
    region: str,
    now: datetime.datetime,
    expires_in: int,
) -> list[tuple[str, str]]:
    """Query parameters to append to ``req``'s query to make a presigned URL.

    The payload is not signed (``UNSIGNED-PAYLOAD``); headers in ``req.headers`` are signed and
    must then be sent by whoever uses the URL.
    """
    if not 1 <= expires_in <= MAX_PRESIGN_EXPIRES:
        raise ValueError(f"expires_in must be 1..{MAX_PRESIGN_EXPIRES} seconds: {expires_in}")
    timestamp = amz_timestamp(now)
    date = timestamp[:8]
    scope = credential_scope_v4(date, region)
    signed = headers_to_sign_v4(req, {})
    params = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{creds.access_key_id}/{scope}"),
        ("X-Amz-Date", timestamp),
        ("X-Amz-Expires", str(expires_in)),
        ("X-Amz-SignedHeaders", signed_header_names_v4(signed)),
    ]
    if creds.session_token:
        params.append(("X-Amz-Security-Token", creds.session_token))
    with_auth = replace(req, query=(*req.query, *params))
    canonical = canonical_request_v4(with_auth, signed, UNSIGNED_PAYLOAD)
    signature = _signature(
        creds.secret_access_key, date, region, string_to_sign_v4(timestamp, scope, canonical)
    )
    params.append(("X-Amz-Signature", signature))
    return params
