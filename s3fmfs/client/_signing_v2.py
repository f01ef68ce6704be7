"""AWS Signature Version 2 for S3 (REST auth: HMAC-SHA1, base64), header and query forms.

Invariants:
- Pure: no clock reads, no I/O. The time comes in as ``now`` (aware, or naive = UTC) or as
  absolute ``expires`` epoch seconds.
- The canonical resource is ``/bucket`` (only when the bucket travels in the host name) + the
  path exactly as sent + the sub-resources of ``V2_SUBRESOURCES`` present in the query, sorted
  by name, their values NOT url-encoded (AWS's rule).
- Header signing sends the time in ``x-amz-date``, so the Date line of the string to sign is
  empty (AWS's rule when ``x-amz-date`` is present; s3rver always leaves it empty).
- A session token is sent as ``x-amz-security-token`` and signed as an ``x-amz-*`` header, in
  both forms.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
from dataclasses import replace

from ._signing_types import Credentials, SigningRequest

__all__ = [
    "V2_SUBRESOURCES",
    "canonical_resource_v2",
    "http_date",
    "presign_v2",
    "sign_v2",
    "signature_v2",
    "string_to_sign_v2",
]

V2_SUBRESOURCES: frozenset[str] = frozenset(
    {
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
    }
)
"""Query parameters that are part of the V2 canonical resource (all others are not)."""


def http_date(now: datetime.datetime) -> str:
    """RFC 1123 date in GMT (``Sun, 06 Nov 1994 08:49:37 GMT``), locale-independent."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    return email.utils.format_datetime(now.astimezone(datetime.UTC), usegmt=True)


def canonical_resource_v2(req: SigningRequest) -> str:
    """``/bucket`` (virtual/vanity host only) + path as sent + sorted raw sub-resources."""
    resource = (f"/{req.bucket}" if req.bucket else "") + (req.path or "/")
    subresources = sorted(
        ((name, value) for name, value in req.query if name in V2_SUBRESOURCES),
        key=lambda pair: pair[0],
    )
    if not subresources:
        return resource
    rendered = (name if value is None else f"{name}={value}" for name, value in subresources)
    return f"{resource}?{'&'.join(rendered)}"


def string_to_sign_v2(req: SigningRequest, expires: int | None = None) -> str:
    """The V2 string to sign; ``expires`` (query auth) takes the place of the date."""
    standard: dict[str, str] = {}
    amz: dict[str, list[str]] = {}  # lower-case name -> trimmed values, comma-joined below
    for name, value in req.headers.items():
        lname = name.lower()
        if lname.startswith("x-amz-"):
            amz.setdefault(lname, []).append(value.strip())
        elif lname in ("content-md5", "content-type", "date"):
            standard[lname] = value.strip()
    if expires is not None:
        date = str(expires)
    elif "x-amz-date" in amz:
        date = ""
    else:
        date = standard.get("date", "")
    return "\n".join(
        [
            req.method,
            standard.get("content-md5", ""),
            standard.get("content-type", ""),
            date,
            *(f"{name}:{','.join(amz[name])}" for name in sorted(amz)),
            canonical_resource_v2(req),
        ]
    )


def signature_v2(secret: str, string_to_sign: str) -> str:
    """Base64 of HMAC-SHA1(secret, UTF-8 string to sign)."""
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def _with_headers(req: SigningRequest, added: dict[str, str]) -> SigningRequest:
    """``req`` with ``added`` headers replacing any of the same (lower-case) name."""
    kept = {name: value for name, value in req.headers.items() if name.lower() not in added}
    return replace(req, headers={**kept, **added})


def sign_v2(req: SigningRequest, creds: Credentials, now: datetime.datetime) -> dict[str, str]:
    """Headers to add to ``req``: ``x-amz-date``, [``x-amz-security-token``], ``authorization``
    (none for anonymous credentials)."""
    if creds.anonymous:
        return {}
    added = {"x-amz-date": http_date(now)}
    if creds.session_token:
        added["x-amz-security-token"] = creds.session_token
    string_to_sign = string_to_sign_v2(_with_headers(req, added))
    signature = signature_v2(creds.secret_access_key, string_to_sign)
    added["authorization"] = f"AWS {creds.access_key_id}:{signature}"
    return added


def presign_v2(
    req: SigningRequest,
    creds: Credentials,
    expires: int,
    key_param: str = "AWSAccessKeyId",
) -> list[tuple[str, str]]:
    """Query parameters to append for query-string auth, valid until ``expires`` (epoch s).

    ``key_param`` names the access key parameter (``S3fmAccessKeyId`` on S3for.me); it is not
    signed, so it does not change the signature.
    """
    added = {"x-amz-security-token": creds.session_token} if creds.session_token else {}
    string_to_sign = string_to_sign_v2(_with_headers(req, added), expires=expires)
    params = [
        (key_param, creds.access_key_id),
        ("Expires", str(expires)),
        ("Signature", signature_v2(creds.secret_access_key, string_to_sign)),
    ]
    if creds.session_token:
        params.append(("x-amz-security-token", creds.session_token))
    return params
