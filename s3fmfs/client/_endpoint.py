"""Where a request goes: scheme, host, port and path for a (bucket, key), per calling format.

Invariants:
- The path is built once, RFC 3986-encoded (``quote_key``), and is exactly what is signed and
  sent; nothing downstream re-encodes or normalises it.
- ``signing_bucket`` is the bucket when it travels in the host (V2 puts it in front of the
  canonical resource) and "" when it is the first path segment.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from ._encoding import Query, encode_query, quote_key
from ._signing_types import SigningRequest
from .models import CallingFormat

DEFAULT_HOST = "rest.s3for.me"
PORTS_BY_SECURITY = {True: 443, False: 80}


def is_s3forme(server: str) -> bool:
    """Hosts of the S3for.me service (they default to Signature V2 and S3fmAccessKeyId)."""
    server = server.lower().rstrip(".")
    return server == "s3for.me" or server.endswith(".s3for.me")


def parse_endpoint_url(url: str) -> tuple[bool, str, int]:
    """``(is_secure, server, port)`` of an ``endpoint_url`` such as ``http://127.0.0.1:9000``
    (boto3's form); the port defaults to the scheme's. ValueError names what is wrong."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must look like http(s)://host[:port], not {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"endpoint_url takes no path, query or user: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"endpoint_url has a bad port: {url!r}") from exc
    is_secure = scheme == "https"
    return is_secure, parts.hostname, port or PORTS_BY_SECURITY[is_secure]


def default_calling_format(server: str) -> CallingFormat:
    """Path style for an IP address or a name without a dot (``localhost``), whose
    ``bucket.`` subdomains cannot resolve; subdomain style (python-s3's default) otherwise."""
    try:
        ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        return CallingFormat.SUBDOMAIN if "." in server.rstrip(".") else CallingFormat.PATH
    return CallingFormat.PATH


@dataclass(frozen=True)
class Endpoint:
    """A service endpoint and how buckets are addressed on it."""

    server: str
    port: int
    is_secure: bool
    calling_format: CallingFormat

    @property
    def scheme(self) -> str:
        return "https" if self.is_secure else "http"

    def host_for(self, bucket: str) -> str:
        """The host name (no port) a request for ``bucket`` goes to."""
        if bucket and self.calling_format == CallingFormat.SUBDOMAIN:
            return f"{bucket}.{self.server}"
        if bucket and self.calling_format == CallingFormat.VANITY:
            return bucket
        return self.server

    def host_header(self, bucket: str) -> str:
        """The Host header: the host name, with the port when it is not the scheme's default."""
        host = self.host_for(bucket)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        if self.port != PORTS_BY_SECURITY[self.is_secure]:
            host = f"{host}:{self.port}"
        return host

    def path_for(self, bucket: str, key: str) -> str:
        """The encoded path: ``/bucket/key`` in path style (``/bucket`` for the bucket itself,
        as botocore sends it), ``/key`` otherwise."""
        if bucket and self.calling_format == CallingFormat.PATH:
            return f"/{quote_key(bucket)}/{quote_key(key)}" if key else f"/{quote_key(bucket)}"
        return "/" + quote_key(key)

    def signing_request(
        self, method: str, bucket: str, key: str, query: Query, headers: dict[str, str]
    ) -> SigningRequest:
        """What the signers see of a request to this endpoint."""
        in_host = bucket if self.calling_format != CallingFormat.PATH else ""
        return SigningRequest(
            method=method,
            host=self.host_header(bucket),
            path=self.path_for(bucket, key),
            query=query,
            headers=headers,
            bucket=in_host,
        )

    def url(self, req: SigningRequest, extra_query: Query = ()) -> str:
        """The full URL of a signed request (extra query: presigning parameters)."""
        query = encode_query((*req.query, *extra_query))
        return f"{self.scheme}://{req.host}{req.path}" + (f"?{query}" if query else "")
