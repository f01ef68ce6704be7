"""Tests of the test infrastructure: the servers check what tests/support/servers.py says they
check.

Invariants: only httpx, botocore/boto3 and curl talk to the servers here (the project's client
is tested elsewhere); each test uses its own buckets on the shared session servers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import trio
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from s3fmfs.client._encoding import quote_key
from s3fmfs.commands.demo_server import answers as _answers
from tests.support.loopback import LoopbackTransport
from tests.support.servers import S3Server, moto_server, s3_client, s3rver, unique_bucket

Loopback = Callable[..., LoopbackTransport]


class XAmzDateHmacV1Auth(HmacV1Auth):  # type: ignore[misc]
    """Signature V2 with the date in ``x-amz-date`` and an empty Date line: what s3rver checks.

    botocore's own ``HmacV1Auth`` always signs a ``Date`` header, which s3rver never verifies
    correctly (it leaves the Date line of the string to sign empty).
    """

    def canonical_standard_headers(self, headers: Any) -> str:
        return "\n".join([headers.get("Content-MD5", ""), headers.get("Content-Type", ""), ""])

    def add_auth(self, request: AWSRequest) -> None:
        if "x-amz-date" not in request.headers:
            request.headers["x-amz-date"] = formatdate(usegmt=True)
        super().add_auth(request)


def signed_v4(
    server: S3Server, method: str, url: str, body: bytes = b"", secret: str | None = None
) -> dict[str, str]:
    """Headers of ``method url`` signed V4 by botocore (payload hash included)."""
    request = AWSRequest(method=method, url=url, data=body)
    request.context["payload_signing_enabled"] = True
    credentials = Credentials(server.access_key_id, secret or server.secret_access_key)
    S3SigV4Auth(credentials, "s3", server.region).add_auth(request)
    return dict(request.headers.items())


def signed_v2(
    server: S3Server,
    method: str,
    url: str,
    auth_path: str | None = None,
    secret: str | None = None,
    signer: type[HmacV1Auth] = XAmzDateHmacV1Auth,
) -> dict[str, str]:
    """Headers of ``method url`` signed V2; ``auth_path`` is the resource for vhost URLs."""
    request = AWSRequest(method=method, url=url)
    request.auth_path = auth_path
    signer(Credentials(server.access_key_id, secret or server.secret_access_key)).add_auth(request)
    return dict(request.headers.items())


def presigned_v2(server: S3Server, url: str, expires: int = 60, secret: str | None = None) -> str:
    """A V2 query-string-authenticated GET URL (``AWSAccessKeyId``/``Expires``/``Signature``)."""
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(server.access_key_id, secret or server.secret_access_key)
    HmacV1QueryAuth(credentials, expires=expires).add_auth(request)
    url_out: str = request.url
    return url_out


def error_code(response: httpx.Response) -> str:
    """The ``<Code>`` of an S3 error body ("" if none)."""
    text = response.text
    start = text.find("<Code>")
    return text[start + 6 : text.find("</Code>")] if start >= 0 else ""


# --- moto -----------------------------------------------------------------------------------


async def test_moto_routes_vhost_and_path_names(moto: S3Server, loopback: Loopback) -> None:
    """``<bucket>.s3.test`` is the bucket on moto; ``s3.test`` and the IP are path style."""
    bucket = unique_bucket()
    transport = loopback()
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:

        async def call(method: str, url: str, body: bytes = b"") -> httpx.Response:
            headers = signed_v4(moto, method, url, body)
            return await client.request(method, url, headers=headers, content=body)

        assert (await call("PUT", f"{moto.endpoint}/{bucket}")).status_code == 200
        put = await call("PUT", f"{moto.vhost_endpoint(bucket)}/dir/a%20b", b"hello")
        assert put.status_code == 200, put.text
        got = await call("GET", f"http://{moto.domain}:{moto.port}/{bucket}/dir/a%20b")
        assert (got.status_code, got.content) == (200, b"hello")
        listing = await call("GET", f"{moto.vhost_endpoint(bucket)}/?list-type=2")
        assert "<Key>dir/a b</Key>" in listing.text
    assert transport.backend.connected_hosts[:3] == ["127.0.0.1", f"{bucket}.s3.test", "s3.test"]


async def test_moto_auth_accepts_valid_v4(moto_auth: S3Server, loopback: Loopback) -> None:
    """A botocore-signed request passes, path and virtual-hosted style, under trio."""
    bucket = unique_bucket()
    s3_client(moto_auth).create_bucket(Bucket=bucket)
    async with httpx.AsyncClient(transport=loopback(), trust_env=False) as client:
        url = f"{moto_auth.vhost_endpoint(bucket)}/k"
        put = await client.put(url, content=b"v", headers=signed_v4(moto_auth, "PUT", url, b"v"))
        assert put.status_code == 200, put.text
        get = await client.get(url, headers=signed_v4(moto_auth, "GET", url))
        assert (get.status_code, get.content) == (200, b"v")


async def test_moto_auth_rejects_wrong_secret(moto_auth: S3Server, loopback: Loopback) -> None:
    """A wrong secret gets 403 SignatureDoesNotMatch, from boto3 and from raw httpx."""
    bucket = unique_bucket()
    with pytest.raises(ClientError) as caught:
        s3_client(moto_auth, secret="wrong-secret").create_bucket(Bucket=bucket)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "SignatureDoesNotMatch"

    s3_client(moto_auth).create_bucket(Bucket=bucket)
    async with httpx.AsyncClient(transport=loopback(), trust_env=False) as client:
        url = f"{moto_auth.vhost_endpoint(bucket)}/"
        bad = await client.get(url, headers=signed_v4(moto_auth, "GET", url, secret="wrong"))
        assert (bad.status_code, error_code(bad)) == (403, "SignatureDoesNotMatch")


def test_moto_auth_rejects_unknown_key(moto_auth: S3Server) -> None:
    """A key id moto's IAM does not know gets 403 InvalidAccessKeyId."""
    with pytest.raises(ClientError) as caught:
        s3_client(moto_auth, key_id="AKIANOTAREALKEY00000").list_buckets()
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_moto_auth_only_takes_v4_headers(moto_auth: S3Server) -> None:
    """With auth on, moto answers 500 to V2-signed and to unsigned requests (not a 403)."""
    url = f"{moto_auth.endpoint}/"
    v2 = httpx.get(url, headers=signed_v2(moto_auth, "GET", url), trust_env=False)
    assert v2.status_code == 500
    assert httpx.get(url, trust_env=False).status_code == 500


# --- s3rver ---------------------------------------------------------------------------------


@pytest.fixture
def s3rver_bucket(s3rver_server: S3Server) -> str:
    """A fresh bucket on s3rver holding ``k`` = ``hello``."""
    bucket = unique_bucket()
    for path, body in ((f"/{bucket}", b""), (f"/{bucket}/k", b"hello")):
        url = s3rver_server.endpoint + path
        headers = signed_v2(s3rver_server, "PUT", url)
        assert httpx.put(url, content=body, headers=headers, trust_env=False).status_code == 200
    return bucket


async def test_s3rver_v2_header_auth(s3rver_server: S3Server, s3rver_bucket: str) -> None:
    """Right V2 signature (date in x-amz-date) passes; wrong secret or a Date-signed one fails."""
    url = f"{s3rver_server.endpoint}/{s3rver_bucket}/k"
    async with httpx.AsyncClient(trust_env=False) as client:
        ok = await client.get(url, headers=signed_v2(s3rver_server, "GET", url))
        assert (ok.status_code, ok.content) == (200, b"hello")
        bad = await client.get(url, headers=signed_v2(s3rver_server, "GET", url, secret="bad"))
        assert (bad.status_code, error_code(bad)) == (403, "SignatureDoesNotMatch")
        standard = signed_v2(s3rver_server, "GET", url, signer=HmacV1Auth)
        assert "Date" in standard
        dated = await client.get(url, headers=standard)
        assert (dated.status_code, error_code(dated)) == (403, "SignatureDoesNotMatch")
        anonymous = await client.get(url)
        assert anonymous.status_code == 200  # s3rver only checks auth that is present


async def test_s3rver_vhost(
    s3rver_server: S3Server, s3rver_bucket: str, loopback: Loopback
) -> None:
    """``<bucket>.s3.test`` routes to the bucket; its root is signed ``/bucket``, no slash."""
    base = s3rver_server.vhost_endpoint(s3rver_bucket)
    async with httpx.AsyncClient(transport=loopback(), trust_env=False) as client:
        obj = await client.get(
            f"{base}/k", headers=signed_v2(s3rver_server, "GET", f"{base}/k", f"/{s3rver_bucket}/k")
        )
        assert (obj.status_code, obj.content) == (200, b"hello")
        root = f"{base}/"
        no_slash = signed_v2(s3rver_server, "GET", root, f"/{s3rver_bucket}")
        listing = await client.get(root, headers=no_slash)
        assert listing.status_code == 200
        assert "<Key>k</Key>" in listing.text
        slash = signed_v2(s3rver_server, "GET", root, f"/{s3rver_bucket}/")
        assert error_code(await client.get(root, headers=slash)) == "SignatureDoesNotMatch"


async def test_s3rver_key_encoding(s3rver_server: S3Server, s3rver_bucket: str) -> None:
    """s3rver re-encodes keys RFC 3986 style: ``quote_key`` paths pass, raw ``!()`` do not."""
    key = "dir/a b+c!()'*~é"
    async with httpx.AsyncClient(trust_env=False) as client:
        url = f"{s3rver_server.endpoint}/{s3rver_bucket}/{quote_key(key)}"
        put = await client.put(url, content=b"x", headers=signed_v2(s3rver_server, "PUT", url))
        assert put.status_code == 200, put.text
        loose = url.replace("%21", "!").replace("%28", "(").replace("%29", ")")
        bad = await client.get(loose, headers=signed_v2(s3rver_server, "GET", loose))
        assert error_code(bad) == "SignatureDoesNotMatch"


async def test_s3rver_query_auth(s3rver_server: S3Server, s3rver_bucket: str) -> None:
    """V2 presigned URLs work (httpx and curl); wrong secret and expired ones are refused."""
    url = f"{s3rver_server.endpoint}/{s3rver_bucket}/k"
    async with httpx.AsyncClient(trust_env=False) as client:
        ok = await client.get(presigned_v2(s3rver_server, url))
        assert (ok.status_code, ok.content) == (200, b"hello")
        bad = await client.get(presigned_v2(s3rver_server, url, secret="bad"))
        assert (bad.status_code, error_code(bad)) == (403, "SignatureDoesNotMatch")
        old = await client.get(presigned_v2(s3rver_server, url, expires=-10))
        assert (old.status_code, error_code(old)) == (403, "AccessDenied")
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed (make apt installs it)")
    done = await trio.run_process(
        [curl, "-sS", "--noproxy", "*", presigned_v2(s3rver_server, url)], capture_stdout=True
    )
    assert done.stdout == b"hello"


async def test_s3rver_does_not_check_v4(s3rver_server: S3Server, s3rver_bucket: str) -> None:
    """s3rver accepts any well-formed V4 signature: V4 must be tested against ``moto_auth``."""
    url = f"{s3rver_server.endpoint}/{s3rver_bucket}/k"
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, headers=signed_v4(s3rver_server, "GET", url, secret="x"))
    assert response.status_code == 200


def test_s3rver_lacks_bucket_acl(s3rver_server: S3Server, s3rver_bucket: str) -> None:
    """Bucket ACLs are NotImplemented (501); abort of a multipart upload is 405."""
    url = f"{s3rver_server.endpoint}/{s3rver_bucket}?acl"
    response = httpx.get(url, headers=signed_v2(s3rver_server, "GET", url), trust_env=False)
    assert (response.status_code, error_code(response)) == (501, "NotImplemented")
    init_url = f"{s3rver_server.endpoint}/{s3rver_bucket}/big?uploads"
    init = httpx.post(init_url, headers=signed_v2(s3rver_server, "POST", init_url), trust_env=False)
    upload_id = init.text.split("<UploadId>")[1].split("</UploadId>")[0]
    abort_url = f"{s3rver_server.endpoint}/{s3rver_bucket}/big?uploadId={upload_id}"
    abort = httpx.delete(
        abort_url, headers=signed_v2(s3rver_server, "DELETE", abort_url), trust_env=False
    )
    assert (abort.status_code, error_code(abort)) == (405, "MethodNotAllowed")


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [moto_server, s3rver], ids=["moto", "s3rver"])
def test_servers_stop_even_on_error(start: Callable[[], AbstractContextManager[S3Server]]) -> None:
    """Leaving the context manager by an exception still stops the server."""
    with pytest.raises(RuntimeError, match="boom"), start() as server:
        assert _answers(server.endpoint + "/")
        raise RuntimeError("boom")
    assert not _answers(server.endpoint + "/")
