"""Every client operation against real servers, in every signature and addressing style,
under trio and asyncio alike (``on_both_loops``).

moto checks V4 header signatures when auth is on (``moto_auth``); s3rver checks V2 header and
query signatures. Virtual-hosted style uses ``<bucket>.s3.test`` connected to loopback.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from s3fmfs.client import (
    CallingFormat,
    InvalidAccessKeyId,
    S3fmAuthConnection,
    SignatureDoesNotMatch,
)
from tests.support import scenarios
from tests.support.loopback import LoopbackTransport
from tests.support.loops import on_both_loops
from tests.support.servers import S3Server, unique_bucket

S3RVER_CAPS = scenarios.Capabilities(
    bucket_acl=False,
    put_object_acl=False,
    list_uploads=False,
    upload_part_copy=False,
    logging=False,
    list_parts=False,
    abort_upload=False,
    file_backed=True,
    url_listing=False,
    copy_reserved_chars=False,
)


def connect(
    server: S3Server,
    signature: str,
    style: str,
    loopback: Callable[..., LoopbackTransport],
    secret: str | None = None,
    access_key: str | None = None,
) -> S3fmAuthConnection:
    """A connection to a test server in the given signature version and addressing style."""
    key = access_key or server.access_key_id
    secret = secret or server.secret_access_key
    if style == "path":
        return S3fmAuthConnection(
            key, secret, False, server.host, server.port, CallingFormat.PATH, signature=signature
        )
    return S3fmAuthConnection(
        key,
        secret,
        False,
        server.domain,
        server.port,
        CallingFormat.SUBDOMAIN,
        signature=signature,
        transport=loopback(),
    )


MOTO_MATRIX = [(sig, style) for sig in ("v2", "v4") for style in ("path", "vhost")]


@pytest.mark.parametrize(("signature", "style"), MOTO_MATRIX)
@on_both_loops
async def test_moto_all_operations(moto: S3Server, loopback, signature: str, style: str) -> None:
    async with connect(moto, signature, style, loopback) as conn:
        await scenarios.python_s3_operations(conn, unique_bucket(), scenarios.Capabilities())
        await scenarios.weird_keys(conn, unique_bucket())
        await scenarios.filesystem_operations(conn, unique_bucket(), scenarios.Capabilities())


@pytest.mark.parametrize("style", ["path", "vhost"])
@on_both_loops
async def test_moto_v4_signatures_checked(moto_auth: S3Server, loopback, style: str) -> None:
    """With IAM auth on, moto verifies every V4 signature: all operations pass."""
    async with connect(moto_auth, "v4", style, loopback) as conn:
        await scenarios.python_s3_operations(conn, unique_bucket(), scenarios.Capabilities())
        await scenarios.weird_keys(conn, unique_bucket())
        await scenarios.filesystem_operations(conn, unique_bucket(), scenarios.Capabilities())


@pytest.mark.parametrize("style", ["path", "vhost"])
@on_both_loops
async def test_moto_v4_wrong_secret(moto_auth: S3Server, loopback, style: str) -> None:
    async with connect(moto_auth, "v4", style, loopback, secret="wrong-secret") as conn:
        with pytest.raises(SignatureDoesNotMatch) as caught:
            await conn.list_all_my_buckets()
    text = str(caught.value)
    assert "\n" not in text and "SignatureDoesNotMatch (403)" in text
    assert "wrong-secret" not in text


@on_both_loops
async def test_moto_v4_unknown_key(moto_auth: S3Server, loopback) -> None:
    async with connect(moto_auth, "v4", "path", loopback, access_key="AKIDUNKNOWN") as conn:
        with pytest.raises(InvalidAccessKeyId):
            await conn.list_all_my_buckets()


@on_both_loops
async def test_s3rver_v2_signatures_checked(s3rver_server: S3Server, loopback) -> None:
    """s3rver verifies every V2 header signature: all the operations it has pass."""
    async with connect(s3rver_server, "v2", "path", loopback) as conn:
        await scenarios.python_s3_operations(conn, unique_bucket(), S3RVER_CAPS)
        await scenarios.weird_keys(conn, unique_bucket(), S3RVER_CAPS)
        await scenarios.filesystem_operations(conn, unique_bucket(), S3RVER_CAPS)


@on_both_loops
async def test_s3rver_v2_virtual_host_objects(s3rver_server: S3Server, loopback) -> None:
    """Virtual-hosted V2 object requests verified by s3rver. (Its bucket-root requests are not
    comparable: s3rver signs ``/bucket`` where AWS signs ``/bucket/``; we follow AWS.)"""
    bucket = unique_bucket()
    async with (
        connect(s3rver_server, "v2", "path", loopback) as path_conn,
        connect(s3rver_server, "v2", "vhost", loopback) as conn,
    ):
        await path_conn.create_bucket(bucket)
        try:
            for key in [k for k in scenarios.WEIRD_KEYS if S3RVER_CAPS.can_store(k)]:
                body = f"vhost {key}".encode()
                await conn.put(bucket, key, body, {"x-amz-meta-k": "v"})
                got = await conn.get(bucket, key)
                assert got.object.data == body and got.object.metadata == {"k": "v"}
                assert (await conn.head(bucket, key)).content_length == len(body)
                await conn.delete(bucket, key)
        finally:
            await scenarios.empty_and_delete(path_conn, bucket)


@pytest.mark.parametrize("style", ["path", "vhost"])
@on_both_loops
async def test_s3rver_v2_wrong_secret(s3rver_server: S3Server, loopback, style: str) -> None:
    async with connect(s3rver_server, "v2", style, loopback, secret="wrong-secret") as conn:
        with pytest.raises(SignatureDoesNotMatch) as caught:
            await conn.list_all_my_buckets()
    assert "\n" not in str(caught.value)
