"""Local S3 servers for the tests: moto (V4, optionally checking signatures) and s3rver (V2).

Invariants:
- Every server runs as a child process in its own session, bound to 127.0.0.1 on a port chosen
  at run time, and is stopped (SIGTERM, then SIGKILL after a grace period) when its context
  manager exits, whatever happens inside; if the test process itself is killed, the kernel
  sends the server SIGTERM (``PR_SET_PDEATHSIG``). Its output goes to a file in a temporary
  directory, never to a pipe (a full pipe would block the server); startup failures show its
  tail.
- Server state lives as long as the context manager: tests sharing a server must use their own
  bucket names (:func:`unique_bucket`).
- ``S3Server.domain`` (``s3.test``) is the name for virtual-hosted style:
  ``<bucket>.s3.test:PORT`` reaches the bucket through :mod:`tests.support.loopback`; see there for
  how each server routes host names.

moto (``python -m moto.server``, https://docs.getmoto.org/en/latest/docs/server_mode.html)
checks no signature unless ``INITIAL_NO_AUTH_ACTION_COUNT`` is set; then, after that many
actions, every S3 request needs a valid AWS Signature V4 ``Authorization`` header (moto
recomputes it with botocore's ``S3SigV4Auth`` over the signed headers) from an access key of an
IAM user whose policies allow the action (``moto/iam/access_control.py``). The dummy
credentials do not exist in moto's IAM, so :func:`moto_auth_server` first creates user
``s3fmfs-test`` with an inline ``s3:*`` policy and an access key (exactly 3 actions, then auth
is on; ``/moto-api/`` probes do not count). With auth on: wrong secret -> 403
``SignatureDoesNotMatch``, unknown key -> 403 ``InvalidAccessKeyId``, but unsigned, V2-signed
and presigned (query) requests get a 500 (moto reads the ``Credential=`` of the header), so only
V4 header signing can be tested there. Without auth, moto still answers an unsigned GET of a
private object with 403 (anonymous access), so sign requests anyway.

s3rver 3.7.1 (``tests/node``), from ``lib/middleware/authentication.js`` and
``lib/routes.js`` and checked in ``tests/test_servers.py``; key ``S3RVER``, secret ``S3RVER``:

- Requests WITHOUT any auth are accepted (anonymous); auth is only checked when present.
- Signature V2 header (``Authorization: AWS key:sig``): verified. The date must be in
  ``x-amz-date`` (it is then one of the canonical ``x-amz-*`` headers and the Date line is
  empty, as AWS specifies). A ``Date`` header passes the 15-minute skew check but s3rver
  leaves the Date line of its string to sign empty anyway, so a standard ``Date``-signed
  request (botocore's ``HmacV1Auth``) gets ``SignatureDoesNotMatch``.
- String to sign: method, Content-MD5, Content-Type, date line (see above), sorted
  ``x-amz-*`` headers (runs of spaces folded), canonical resource. The resource is rebuilt from
  the decoded bucket and key, each ``/``-separated segment re-encoded RFC 3986 style
  (``encodeURIComponent`` plus ``!'()*``, upper-case hex): the path on the wire must be encoded
  exactly so (``s3fmfs.client._encoding.quote_key`` is). Path and virtual-hosted style both
  sign ``/bucket/key``; the bucket ROOT signs as ``/bucket`` with NO trailing slash in both
  styles (AWS and botocore use ``/bucket/`` for virtual-hosted: mismatch).
- Sub-resources (``acl``, ``uploads``, ``uploadId``, ``partNumber``, ``tagging``,
  ``versionId``, ``delete``, ... and ``response-*`` overrides) are sorted as ``name=value``
  strings. With HEADER auth their values are URL-encoded (``response-content-type=text%2Fplain``;
  AWS signs them raw), with query auth raw. ``=`` after an empty value is stripped together
  with the following ``&`` (bug: ``?acl&versionId=1`` signs as ``?aclversionId=1``).
- Signature V2 query string (``AWSAccessKeyId``, ``Expires``, ``Signature``): verified, with
  ``Expires`` on the date line; expired URLs get 403 ``AccessDenied``. ``x-amz-*`` query
  parameters count as headers.
- Signature V4 (header or query): only parsed; the access key must exist but the signature is
  NOT checked. Unknown access key: 403 ``InvalidAccessKeyId``.
- Operations: bucket create/delete/head/list (V1 and ``list-type=2``)/location/CORS/website,
  object put/get/head/delete/copy, multi-object delete, multipart initiate/upload part/complete,
  object tagging. 501 ``NotImplemented``: bucket ACL (get and put), object ACL put,
  ListMultipartUploads (``GET ?uploads``), UploadPartCopy, bucket tagging/lifecycle/policy/...
  405 ``MethodNotAllowed``: ListParts (``GET ?uploadId``), AbortMultipartUpload
  (``DELETE ?uploadId``), ListObjectVersions (``GET ?versions``). Silently wrong:
  ``GET ?versioning`` answers as ListObjects, ``PUT ?versioning`` as CreateBucket (409). Object
  ACL get returns a fixed FULL_CONTROL stub.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from s3fmfs.commands import demo_server
from s3fmfs.commands.demo_server import LOOPBACK as LOOPBACK  # the servers bind here
from s3fmfs.commands.demo_server import ServerStartError
from s3fmfs.commands.demo_server import free_port as free_port  # the tests pick ports too

TESTS_DIR = Path(__file__).resolve().parent.parent
NODE_DIR = TESTS_DIR / "node"
S3RVER_JS = NODE_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"

DOMAIN = "s3.test"
REGION = "us-east-1"

MOTO_USER = "s3fmfs-test"
MOTO_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
# create_user, put_user_policy, create_access_key: the actions run before auth is switched on.
MOTO_SETUP_ACTIONS = 3


@dataclass(frozen=True)
class S3Server:
    """Where a running test server listens, and the key pair it accepts."""

    host: str
    port: int
    access_key_id: str
    secret_access_key: str
    domain: str = DOMAIN
    region: str = REGION

    @property
    def endpoint(self) -> str:
        """Path-style base URL, by IP address."""
        return f"http://{self.host}:{self.port}"

    def vhost_endpoint(self, bucket: str) -> str:
        """Virtual-hosted-style base URL of ``bucket``; connects through
        :mod:`tests.support.loopback`."""
        return f"http://{bucket}.{self.domain}:{self.port}"


def unique_bucket(prefix: str = "t") -> str:
    """A fresh DNS-compatible bucket name, so tests sharing a server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def s3_client(
    server: S3Server, secret: str | None = None, key_id: str | None = None, attempts: int = 1
) -> Any:
    """A boto3 S3 client of ``server``, path style; by default no retries (errors show at once)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=key_id or server.access_key_id,
        aws_secret_access_key=secret or server.secret_access_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": attempts}),
    )


@contextmanager
def _moto(extra_env: dict[str, str]) -> Iterator[tuple[int, Path]]:
    """moto's server on a free port (``s3fmfs.commands.demo_server``, the demo's own launcher);
    yields the port and the server's log file."""

    def env(port: int) -> dict[str, str]:
        # "s3.test:PORT" is path style; "<bucket>.s3.test:PORT" stays virtual-hosted.
        return {**os.environ, "MOTO_S3_CUSTOM_ENDPOINTS": f"http://{DOMAIN}:{port}", **extra_env}

    with tempfile.TemporaryDirectory(prefix="s3fmfs-moto-") as tmp:
        log = Path(tmp) / "moto.log"
        with demo_server.moto(log, env) as port:
            yield port, log


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto without signature checks: any credentials are accepted."""
    with _moto({}) as (port, _):
        yield S3Server(LOOPBACK, port, "testing", "testing")


@contextmanager
def moto_auth_server() -> Iterator[S3Server]:
    """moto checking Signature V4; yields the key pair of an IAM user allowed ``s3:*``.

    ``INITIAL_NO_AUTH_ACTION_COUNT`` lets the 3 IAM setup actions through unchecked; the
    ``/moto-api/reset-auth`` call then switches checking on for sure, whatever moto counted.
    """
    import boto3  # slow import: only when an auth server is wanted

    with _moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(MOTO_SETUP_ACTIONS)}) as (port, _):
        endpoint = f"http://{LOOPBACK}:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        iam.create_user(UserName=MOTO_USER)
        iam.put_user_policy(
            UserName=MOTO_USER, PolicyName="s3-all", PolicyDocument=json.dumps(MOTO_POLICY)
        )
        key = iam.create_access_key(UserName=MOTO_USER)["AccessKey"]
        reset = httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", trust_env=False)
        reset.raise_for_status()
        yield S3Server(LOOPBACK, port, key["AccessKeyId"], key["SecretAccessKey"])


_S3RVER_LISTENING = re.compile(rb"S3rver listening on [^\s:]+:(\d+)")


@contextmanager
def s3rver() -> Iterator[S3Server]:
    """s3rver (Signature V2), data in a fresh temporary directory; keys ``S3RVER``/``S3RVER``.

    Started on port 0: s3rver prints the port it got, so there is no race for a port.
    """
    if not S3RVER_JS.exists():
        raise ServerStartError(f"{S3RVER_JS} missing: run `make npm`")
    with tempfile.TemporaryDirectory(prefix="s3fmfs-s3rver-") as tmp:
        data = Path(tmp) / "data"
        log = Path(tmp) / "s3rver.log"
        argv = [
            "node",
            str(S3RVER_JS),
            "--address",
            LOOPBACK,
            "--port",
            "0",
            "--directory",
            str(data),
            "--service-endpoint",
            DOMAIN.split(".", 1)[1],  # "test": "<bucket>.s3.test" is virtual-hosted
            "--silent",
        ]
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        found: list[int] = []

        def ready() -> bool:
            if not found:
                match = _S3RVER_LISTENING.search(log.read_bytes())
                if not match:
                    return False
                found.append(int(match.group(1)))
            return demo_server.answers(f"http://{LOOPBACK}:{found[0]}/")

        with demo_server.process(argv, log, ready, env):
            yield S3Server(LOOPBACK, found[0], "S3RVER", "S3RVER")
