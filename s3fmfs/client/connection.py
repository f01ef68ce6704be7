"""``S3fmAuthConnection``: python-s3's connection, async, over one pooled httpx client.

Invariants:
- The operations live in three mixins (``_python_s3_ops``, ``_extended_ops``,
  ``_multipart_ops``); this class only builds the engine they share and closes it.
- Every python-s3 operation keeps its name and argument order; a success returns a
  ``Response`` (subclass) with the HTTP status, a failure raises from ``errors``.
- Signature V2 is the default for S3for.me hosts, V4 elsewhere.
- Bodies are streamed: nothing here holds a whole large object in memory unless the caller asks
  for bytes (``get`` below ``spool_size``).
- XML answers are read up to ``MAX_XML_BODY`` and no further: a bigger one (announced or
  streamed) is ``InvalidResponseError``, its connection dropped, never parsed.
- A ranged read (``get`` with a range, ``get_into``) delivers every byte the answer's
  ``Content-Range`` promised, or raises ``InvalidResponseError`` (a ``Content-Length``
  shorter than the range would otherwise look like the end of the object).
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import httpx

from .. import __version__
from ._endpoint import (
    DEFAULT_HOST,
    PORTS_BY_SECURITY,
    Endpoint,
    default_calling_format,
    is_s3forme,
    parse_endpoint_url,
)
from ._engine import Engine
from ._extended_ops import ExtendedOperations
from ._multipart_ops import MultipartOperations
from ._python_s3_ops import PythonS3Operations
from ._signing_types import Credentials
from .models import CallingFormat
from .retry import RetryPolicy
from .stats import RequestStats

if TYPE_CHECKING:
    from .presign import QueryStringAuthGenerator

#: Bodies above this size are spooled to a temporary file by ``get`` (python-s3's spool_size).
DEFAULT_SPOOL_SIZE = 8 << 20


def _trusting(ca_bundle: str) -> ssl.SSLContext:
    """A verifying TLS context that trusts the CAs of a PEM file or hashed directory."""
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


def default_signature(server: str) -> str:
    """V2 for S3for.me (python-s3's service), V4 for everything else."""
    return "v2" if is_s3forme(server) else "v4"


class S3fmAuthConnection(PythonS3Operations, ExtendedOperations, MultipartOperations):
    """Signs and performs S3 requests; use as ``async with S3fmAuthConnection(...) as conn``.

    ``endpoint_url="http://127.0.0.1:9000"`` (boto3's form) stands for ``is_secure``, ``server``
    and ``port``. Without a ``calling_format``, buckets go in the path on an IP address or a
    dotless name (``localhost``), in a subdomain elsewhere (python-s3's default).

    Keyword options beyond python-s3's: ``signature`` ('v2'/'v4'), ``region``,
    ``session_token``, ``spool_size``, ``timeout`` (seconds or ``httpx.Timeout``),
    ``connect_timeout``, ``retry`` (a ``RetryPolicy``), ``max_connections``, ``verify``
    (TLS: True, False, a CA bundle path or an ``ssl.SSLContext``), ``transport`` (an httpx
    transport), ``list_api`` (2 for ListObjectsV2, 1 for V1 markers), ``clock`` (for tests),
    ``headers`` (sent, signed, with every request: ``x-amz-request-payer``...). An empty
    ``access_key_id`` sends requests unsigned (anonymous: a public bucket).
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        is_secure: bool = True,
        server: str = DEFAULT_HOST,
        port: int | None = None,
        calling_format: CallingFormat | None = None,
        *,
        endpoint_url: str | None = None,
        signature: str | None = None,
        region: str = "us-east-1",
        session_token: str | None = None,
        spool_size: int = DEFAULT_SPOOL_SIZE,
        timeout: float | httpx.Timeout = 60.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        list_api: int = 2,
        clock: Callable[[], datetime.datetime] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if endpoint_url is not None:
            is_secure, server, port = parse_endpoint_url(endpoint_url)
        self.aws_access_key_id = access_key_id
        self.is_secure = is_secure
        self.server = server
        self.port = port or PORTS_BY_SECURITY[is_secure]
        calling_format = CallingFormat(calling_format or default_calling_format(server))
        self.signature = signature or default_signature(server)
        self.region = region
        self.spool_size = spool_size
        self.list_api = list_api
        if isinstance(verify, str):  # one context for every pool (httpx deprecates paths)
            verify = _trusting(verify)
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._engine = Engine(
            Endpoint(server, self.port, is_secure, calling_format),
            Credentials(access_key_id, secret_access_key, session_token),
            signature=self.signature,
            region=region,
            retry=retry or RetryPolicy(),
            timeout=timeout,
            max_connections=max_connections,
            verify=verify,
            transport=transport,
            clock=clock,
            user_agent=f"s3fmfs/{__version__}",
            signed_headers=headers,
        )

    @property
    def calling_format(self) -> CallingFormat:
        """Where bucket names go; python-s3's scripts set it after connecting, so it can be."""
        return self._engine.endpoint.calling_format

    @calling_format.setter
    def calling_format(self, value: CallingFormat) -> None:
        self._engine.set_calling_format(CallingFormat(value))

    def __repr__(self) -> str:
        return (
            f"S3fmAuthConnection(server={self.server!r}, port={self.port}, "
            f"signature={self.signature!r}, access_key_id={self.aws_access_key_id!r})"
        )

    def url_generator(self, expires_in: int) -> QueryStringAuthGenerator:
        """Presigned URLs for this connection's endpoint, credentials, signature and region,
        valid ``expires_in`` seconds (the filesystem's ``s3.url`` attribute)."""
        from .presign import QueryStringAuthGenerator  # (presign imports this module)

        creds = self._engine.credentials
        gen = QueryStringAuthGenerator(
            creds.access_key_id,
            creds.secret_access_key,
            self.is_secure,
            self.server,
            self.port,
            self.calling_format,
            signature=self.signature,
            region=self.region,
            session_token=creds.session_token,
        )
        gen.set_expires_in(expires_in)
        return gen

    @property
    def stats(self) -> RequestStats:
        """Requests sent since the connection was made: by kind, errors, retries."""
        return self._engine.stats

    async def __aenter__(self) -> S3fmAuthConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._engine.aclose()
