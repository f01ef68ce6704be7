"""QueryStringAuthGenerator: URLs that real servers accept, and V4 URLs equal to botocore's."""

from __future__ import annotations

import datetime
import subprocess
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from s3fmfs.client import CallingFormat, QueryStringAuthGenerator, S3fmAuthConnection, S3Object
from tests.support import scenarios
from tests.support.servers import S3Server, unique_bucket

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.UTC)


def curl(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """Perform a request with curl (another HTTP client than ours): (status, body)."""
    cmd = ["curl", "-s", "-g", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]
    if method == "HEAD":
        cmd[cmd.index("-X") : cmd.index("-X") + 2] = ["-I"]
    if data is not None:
        cmd += ["--data-binary", "@-", "-H", "Content-Type:"]
    out = subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=30).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


def s3rver_generator(server: S3Server, **kw: object) -> QueryStringAuthGenerator:
    return QueryStringAuthGenerator(
        server.access_key_id,
        server.secret_access_key,
        False,
        server.host,
        server.port,
        CallingFormat.PATH,
        signature="v2",
        **kw,  # type: ignore[arg-type]
    )


def test_v2_key_param_name() -> None:
    s3fm = QueryStringAuthGenerator("AKID", "SECRET", clock=lambda: NOW)
    assert s3fm.signature == "v2"
    query = dict(parse_qsl(urlsplit(s3fm.get("bucket", "key")).query))
    assert set(query) == {"S3fmAccessKeyId", "Expires", "Signature"}
    assert query["S3fmAccessKeyId"] == "AKID"
    assert int(query["Expires"]) == int(NOW.timestamp()) + 60
    aws = QueryStringAuthGenerator("AKID", "SECRET", server="s3.example.com", signature="v2")
    assert "AWSAccessKeyId=AKID" in aws.get("bucket", "key")
    v4 = QueryStringAuthGenerator("AKID", "SECRET", server="s3.example.com")
    assert v4.signature == "v4" and "X-Amz-Signature=" in v4.get("bucket", "key")


def test_expiry_settings() -> None:
    gen = QueryStringAuthGenerator("AKID", "SECRET", clock=lambda: NOW)
    gen.set_expires_in(3600)
    assert f"Expires={int(NOW.timestamp()) + 3600}" in gen.get("b", "k")
    gen.set_expires(1_900_000_000)
    assert "Expires=1900000000" in gen.get("b", "k")
    v4 = QueryStringAuthGenerator("AKID", "SECRET", server="s3.test", clock=lambda: NOW)
    v4.set_expires(int(NOW.timestamp()) + 120)
    assert "X-Amz-Expires=120" in v4.get("b", "k")
    v4.set_expires_in(8 * 24 * 3600)
    with pytest.raises(ValueError):
        v4.get("b", "k")


def test_v2_urls_work_with_curl_against_s3rver(s3rver_server: S3Server) -> None:
    """s3rver checks V2 query signatures: create, put, get, head, list, acl, delete."""
    gen = s3rver_generator(s3rver_server)
    bucket = unique_bucket()
    keys = [
        k for k in scenarios.WEIRD_KEYS if scenarios.Capabilities(file_backed=True).can_store(k)
    ]
    assert curl("PUT", gen.create_bucket(bucket))[0] == 200
    for key in keys:
        body = f"curl {key}".encode()
        assert curl("PUT", gen.put(bucket, key, b""), body)[0] == 200, key
        status, got = curl("GET", gen.get(bucket, key))
        assert (status, got) == (200, body), key
        assert curl("HEAD", gen.head(bucket, key))[0] == 200, key
    status, listing = curl("GET", gen.list_bucket(bucket))
    assert status == 200
    for key in keys:
        assert f"<Key>{_xml_escape(key)}</Key>".encode() in listing, key
    status, acl = curl("GET", gen.get_acl(bucket, keys[0]))
    assert status == 200 and b"AccessControlPolicy" in acl
    assert curl("GET", gen.list_all_my_buckets())[0] == 200
    for key in keys:
        assert curl("DELETE", gen.delete(bucket, key))[0] == 204, key
    assert curl("GET", gen.get(bucket, keys[0]))[0] == 404
    assert curl("DELETE", gen.delete_bucket(bucket))[0] == 204


def test_v2_url_with_metadata_and_wrong_secret(s3rver_server: S3Server) -> None:
    gen = s3rver_generator(s3rver_server)
    bucket = unique_bucket()
    assert curl("PUT", gen.create_bucket(bucket))[0] == 200
    try:
        bad = s3rver_generator(s3rver_server)
        bad._credentials = type(bad._credentials)("S3RVER", "wrong")
        status, body = curl("GET", bad.list_bucket(bucket))
        assert status == 403 and b"SignatureDoesNotMatch" in body
        gen.set_expires(int(datetime.datetime.now(datetime.UTC).timestamp()) - 10)
        status, body = curl("GET", gen.list_bucket(bucket))
        assert status == 403 and b"AccessDenied" in body
    finally:
        gen.set_expires_in(60)
        assert curl("DELETE", gen.delete_bucket(bucket))[0] == 204


async def test_v2_urls_match_the_connection(s3rver_server: S3Server) -> None:
    """Objects put by URL read back through the signed connection, and the other way round."""
    gen = s3rver_generator(s3rver_server)
    bucket = unique_bucket()
    async with S3fmAuthConnection(
        "S3RVER",
        "S3RVER",
        False,
        s3rver_server.host,
        s3rver_server.port,
        CallingFormat.PATH,
        signature="v2",
    ) as conn:
        await conn.create_bucket(bucket)
        try:
            await conn.put(bucket, "by conn+1", S3Object(b"from the client", {"a": "b"}))
            assert curl("GET", gen.get(bucket, "by conn+1")) == (200, b"from the client")
            assert curl("PUT", gen.put(bucket, "by url+1", b""), b"from curl")[0] == 200
            assert (await conn.get(bucket, "by url+1")).object.data == b"from curl"
        finally:
            await scenarios.empty_and_delete(conn, bucket)


CASES = [
    ("GET", "examplebucket", "test.txt", {}),
    ("PUT", "examplebucket", "a b+c/ü~%&=#?.txt", {}),
    ("DELETE", "examplebucket", "trailing/", {}),
    ("GET", "examplebucket", "", {"acl": None}),
    ("GET", "examplebucket", "", {"prefix": "a b/", "max-keys": "5", "delimiter": "/"}),
    ("HEAD", "examplebucket", "k" * 1024, {}),
    ("GET", "", "", {}),
]


@pytest.mark.parametrize("style", [CallingFormat.PATH, CallingFormat.SUBDOMAIN])
@pytest.mark.parametrize(("method", "bucket", "key", "query"), CASES)
def test_v4_urls_equal_botocore(
    style: CallingFormat, method: str, bucket: str, key: str, query: dict[str, str | None]
) -> None:
    gen = QueryStringAuthGenerator(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        True,
        "s3.amazonaws.com",
        calling_format=style,
        signature="v4",
        clock=lambda: NOW,
    )
    gen.set_expires_in(86400)
    ours = gen.generate_url(method, bucket, key, query)
    bare = ours.split("?", 1)[0]
    params = {k: ("" if v is None else v) for k, v in query.items()}
    request = AWSRequest(method=method, url=bare, params=params)
    creds = BotoCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=86400).add_auth(request)
    theirs = request.prepare().url
    assert sorted(parse_qsl(urlsplit(ours).query, keep_blank_values=True)) == sorted(
        parse_qsl(urlsplit(theirs).query, keep_blank_values=True)
    )
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert urlsplit(ours).netloc == urlsplit(theirs).netloc


def test_v4_url_reaches_the_object(moto: S3Server) -> None:
    """A V4 URL's path encoding addresses exactly the key (moto does not check the signature)."""
    import trio

    bucket = unique_bucket()

    async def setup() -> None:
        async with S3fmAuthConnection(
            "AKID", "SECRET", False, moto.host, moto.port, CallingFormat.PATH
        ) as conn:
            await conn.create_bucket(bucket)
            for key in scenarios.WEIRD_KEYS:
                await conn.put(bucket, key, f"v4 {key}".encode())

    trio.run(setup)
    gen = QueryStringAuthGenerator(
        "AKID", "SECRET", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
    )
    for key in scenarios.WEIRD_KEYS:
        assert curl("GET", gen.get(bucket, key)) == (200, f"v4 {key}".encode()), key


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
