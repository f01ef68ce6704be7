"""Responses keep what the server sent: repeated headers, raw (undecoded) bodies, spooling."""

from __future__ import annotations

import gzip

import httpx

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from tests.support.servers import S3Server, unique_bucket


async def test_repeated_headers_are_kept() -> None:
    """A mock transport (an HTTP edge case no test server produces on demand)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers=[
                ("x-amz-meta-tag", "one"),
                ("x-amz-meta-tag", "two"),
                ("x-custom", "a"),
                ("x-custom", "b"),
                ("content-length", "2"),
            ],
            content=b"ok",
        )

    async with S3fmAuthConnection(
        "AKID",
        "SECRET",
        False,
        "s3.test",
        9000,
        CallingFormat.PATH,
        transport=httpx.MockTransport(handler),
    ) as conn:
        got = await conn.get("bucket", "key")
    assert got.getheaders("x-custom") == ["a", "b"]
    assert got.headers.get_list("x-amz-meta-tag") == ["one", "two"]
    assert got.getheader("x-custom") == "a, b"
    assert got.object.metadata == {"tag": "one,two"}


def _connect(moto: S3Server) -> S3fmAuthConnection:
    return S3fmAuthConnection("AKID", "SECRET", False, moto.host, moto.port, CallingFormat.PATH)


async def test_gzip_objects_come_back_byte_exact(moto: S3Server) -> None:
    """An object stored with Content-Encoding: gzip is returned as stored, not decompressed."""
    bucket = unique_bucket()
    stored = gzip.compress(b"hello " * 1000)
    async with _connect(moto) as conn:
        await conn.create_bucket(bucket)
        await conn.put(bucket, "z.gz", stored, {"Content-Encoding": "gzip"})
        got = await conn.get(bucket, "z.gz")
        assert got.object.data == stored
        assert got.getheader("content-encoding") == "gzip"
        chunks = []
        async with conn.get_stream(bucket, "z.gz") as stream:
            async for chunk in stream.aiter_bytes():
                chunks.append(chunk)
        assert b"".join(chunks) == stored
        await conn.delete(bucket, "z.gz")
        await conn.delete_bucket(bucket)


async def test_spool_size_picks_bytes_or_file(moto: S3Server) -> None:
    bucket = unique_bucket()
    data = bytes(range(256)) * 64  # 16 KiB
    async with _connect(moto) as conn:
        await conn.create_bucket(bucket)
        await conn.put(bucket, "k", data)
        small = await conn.get(bucket, "k", spool_size=len(data))
        assert isinstance(small.object.data, bytes) and small.object.data == data
        big = await conn.get(bucket, "k", spool_size=1024)
        assert not isinstance(big.object.data, bytes)
        assert big.object.data.read() == data
        big.object.data.close()
        await conn.delete(bucket, "k")
        await conn.delete_bucket(bucket)
