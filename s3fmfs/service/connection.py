"""The signed client a mount or a command uses, built from the mount options, and the one line
that says why a bucket cannot be used.

Invariants:
- ``read_timeout=`` and ``connect_timeout=`` bound each wait of a request; ``timeout=`` is its
  retry budget. A command keeps the client's default number of attempts (it fails fast on a
  refused connection); a mount retries until the budget is spent (``mount_retry``).
- The client holds up to ``MAX_CONNECTIONS`` connections (callers may ask for another number).
- ``describe_failure`` never shows the secret: only the access key id, bucket and endpoint.
"""

from __future__ import annotations

from ..client import (
    AccessDenied,
    CallingFormat,
    InvalidAccessKeyId,
    NoSuchBucket,
    RetryPolicy,
    S3ConnectError,
    S3fmAuthConnection,
    S3ResponseError,
    S3TimeoutError,
    S3TransportError,
    SignatureDoesNotMatch,
)
from ..config import tls
from ..config.options import MountOptions
from ..fs.integrity import ATTEMPTS, Integrity

#: Attempts of one request of a mount: in effect unbounded, ``timeout=`` decides.
MOUNT_MAX_ATTEMPTS = 10_000
#: Connections of a mount's client (the client's own default is 32): a mount HEADs a
#: folder's entries many at a time, more when the server is far. The client keeps them in
#: small pools, so more connections cost no more CPU per request.
MAX_CONNECTIONS = 64


def client_timeouts(opts: MountOptions) -> dict[str, object]:
    """The client's waits for ``read_timeout=`` and ``connect_timeout=``, and its retry
    budget for ``timeout=`` (the client's default number of attempts: a command fails fast
    on a refused connection; the mount's own policy is ``mount_retry``)."""
    return {
        "timeout": opts.read_timeout,
        "connect_timeout": opts.connect_timeout,
        "retry": RetryPolicy(total_timeout=opts.timeout),
    }


def integrity_of(opts: MountOptions) -> Integrity:
    """The checks of bytes sent and received (``no_checksum`` turns them off); s3fs's
    ``retries=`` bounds the resends of a corrupted body too."""
    return Integrity(enabled=not opts.no_checksum, attempts=opts.retries or ATTEMPTS)


def mount_retry(opts: MountOptions) -> RetryPolicy:
    """A mount retries a request until ``timeout`` seconds have passed, however many attempts
    that takes (at most ``retries=`` when given, s3fs's option): a server away for less than
    that costs a wait, not an error."""
    return RetryPolicy(max_attempts=opts.retries or MOUNT_MAX_ATTEMPTS, total_timeout=opts.timeout)


def connection_for(
    opts: MountOptions,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    **kwargs: object,
) -> S3fmAuthConnection:
    """The signed client for the endpoint, addressing style and signature of ``opts``
    (``kwargs`` override its timeouts and other client options)."""
    kwargs = {**client_timeouts(opts), "max_connections": MAX_CONNECTIONS, **kwargs}
    kwargs.setdefault("verify", tls.verify_setting(opts))  # ca_bundle=, no_check_certificate
    secure, host, port = opts.endpoint_parts
    calling = CallingFormat.PATH if opts.use_path_style else CallingFormat.SUBDOMAIN
    return S3fmAuthConnection(
        access_key_id,
        secret_access_key,
        secure,
        host,
        port,
        calling,
        signature=opts.signature,
        region=opts.region,
        session_token=session_token,
        headers=opts.request_headers(),  # requester_pays
        **kwargs,  # type: ignore[arg-type]
    )


def describe_failure(exc: BaseException, bucket: str, endpoint: str, access_key_id: str) -> str:
    """One line saying why the bucket cannot be used (never the secret)."""
    refused = tls.describe_tls_failure(exc, endpoint)
    if refused:
        return refused
    if isinstance(exc, SignatureDoesNotMatch):
        return (
            f"wrong secret for access key {access_key_id!r} at {endpoint} "
            "(SignatureDoesNotMatch): check the credentials"
        )
    if isinstance(exc, InvalidAccessKeyId):
        return f"unknown access key {access_key_id!r} at {endpoint} (InvalidAccessKeyId)"
    if isinstance(exc, NoSuchBucket):
        return f"no such bucket {bucket!r} at {endpoint}"
    if isinstance(exc, AccessDenied):
        return f"access denied to bucket {bucket!r} at {endpoint} for key {access_key_id!r}"
    if isinstance(exc, S3ConnectError | S3TimeoutError | S3TransportError):
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot reach endpoint {endpoint}: {detail}"
    if isinstance(exc, S3ResponseError):
        return f"bucket {bucket!r} at {endpoint}: {exc.code} ({exc.status}): {exc.message}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"bucket {bucket!r} at {endpoint}: {type(exc).__name__}: {text}"
