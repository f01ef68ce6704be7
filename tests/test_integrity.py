"""End-to-end integrity (``s3fmfs.fs.integrity``): Content-MD5 on uploads, ETags compared after
uploads and whole reads, resends and fetches again on a mismatch, the sequential check at EOF.

In-process: ``S3Store`` over an in-memory S3 (a mock transport) that, like moto, stores what it
receives without looking at Content-MD5 and can flip a byte of the next bodies either way; then
the core over moto through the fault proxy (a sequential read served wrong is EIO at its end).
Mounted: files copied in and read back through a proxy corrupting 30% of the bodies both ways.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import random
import re
import shutil
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from s3fmfs.client import CallingFormat, RetryPolicy, S3fmAuthConnection
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import to_errno
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.integrity import (
    ChecksumMismatch,
    Integrity,
    SequentialCheck,
    multipart_etag,
    part_ends,
    plain_md5,
)
from s3fmfs.fs.recovery import RecoveryFolder
from s3fmfs.fs.s3store import ObjectHeaders, S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import UploadedPart
from s3fmfs.fs.writebuf import FileWindow
from tests.support.faultproxy import fault_proxy
from tests.support.mount import mount_log, mounted
from tests.support.servers import S3Server, unique_bucket

MiB = 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def flip(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)


class MemS3:
    """An in-memory S3 behind a mock transport: stores what it receives (not checking
    Content-MD5 unless ``check_md5``, like moto), ETags are MD5s; ``corrupt_puts`` /
    ``corrupt_gets`` flip a byte of that many next PUT bodies / GET answers."""

    def __init__(self, *, check_md5: bool = False) -> None:
        self.check_md5 = check_md5
        self.objects: dict[str, bytes] = {}
        self.parts: dict[int, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.corrupt_puts = 0
        self.corrupt_gets = 0
        self.wrong_complete = False
        self.whole_md5_complete = False
        self.kms = False  # answers say SSE-KMS (ETags not MD5s)
        self.checksum = ""  # "crc32", "sha256": GETs carry the service's checksum of the object

    def etag(self, body: bytes) -> str:
        return f'"{hashlib.sha256(body).hexdigest()[:32]}"' if self.kms else f'"{md5(body)}"'

    def headers(self) -> dict[str, str]:
        return {"x-amz-server-side-encryption": "aws:kms"} if self.kms else {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = request.url.path.split("/", 2)[2]
        params = request.url.params
        if request.method == "PUT":
            body = request.content
            if self.corrupt_puts:
                self.corrupt_puts -= 1
                body = flip(body)
            sent = request.headers.get("content-md5")
            if self.check_md5 and sent and base64.b64decode(sent).hex() != md5(body):
                error = b"<Error><Code>BadDigest</Code><Message>no</Message></Error>"
                return httpx.Response(400, content=error)
            if "partNumber" in params:
                self.parts[int(params["partNumber"])] = body
            else:
                self.objects[key] = body
            return httpx.Response(200, headers={"etag": self.etag(body), **self.headers()})
        if request.method == "POST" and "uploads" in params:
            self.parts = {}
            xml = "<InitiateMultipartUploadResult><UploadId>u1</UploadId>"
            return httpx.Response(200, content=(xml + "</InitiateMultipartUploadResult>").encode())
        if request.method == "POST":
            numbers = sorted(self.parts)
            self.objects[key] = b"".join(self.parts[n] for n in numbers)
            tag = multipart_etag([md5(self.parts[n]) for n in numbers])
            if self.wrong_complete:
                tag = "0" * 32 + f"-{len(numbers)}"
            if self.whole_md5_complete:  # s3rver's answer: the MD5 of the whole object
                tag = md5(self.objects[key])
            xml = f'<CompleteMultipartUploadResult><ETag>"{tag}"</ETag>'
            return httpx.Response(200, content=(xml + "</CompleteMultipartUploadResult>").encode())
        if request.method == "DELETE":
            return httpx.Response(204)
        data = self.objects.get(key)
        if data is None:
            error = b"<Error><Code>NoSuchKey</Code><Message>no</Message></Error>"
            return httpx.Response(404, content=error)
        headers = {"etag": self.etag(data), **self.headers()}
        if self.checksum == "crc32":
            digest = zlib.crc32(data).to_bytes(4, "big")
            headers["x-amz-checksum-crc32"] = base64.b64encode(digest).decode()
        elif self.checksum:
            digest = hashlib.new(self.checksum, data).digest()
            headers[f"x-amz-checksum-{self.checksum}"] = base64.b64encode(digest).decode()
        status = 200
        wanted = request.headers.get("range")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            a, b = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            headers["content-range"] = f"bytes {a}-{b}/{len(data)}"
            data, status = data[a : b + 1], 206
        if self.corrupt_gets:
            self.corrupt_gets -= 1
            data = flip(data)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))

    def store(self, integrity: Integrity | None = None, **settings: Any) -> S3Store:
        conn = S3fmAuthConnection(
            "AKID",
            "SECRET",
            False,
            "s3.test",
            9000,
            CallingFormat.PATH,
            transport=httpx.MockTransport(self.handler),
            retry=RetryPolicy(base_delay=0.001, max_delay=0.01),
        )
        return S3Store(conn, "bucket", integrity=integrity, **settings)

    def sent(self, method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method]


def body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- uploads -------------------------------------------------------------------------------------


async def test_a_put_goes_with_content_md5_and_a_put_stored_wrong_is_resent() -> None:
    server = MemS3()
    store = server.store()
    data = body(300_000)
    server.corrupt_puts = 1
    async with store.conn:
        result = await store.put("k", data, {})
    assert server.objects["k"] == data  # the resend overwrote what was stored wrong
    assert plain_md5(result.etag) == md5(data)
    puts = server.sent("PUT")
    assert len(puts) == 2
    assert {base64.b64decode(r.headers["content-md5"]).hex() for r in puts} == {md5(data)}
    assert store.integrity.resent == 1 and store.integrity.mismatches == {"put": 1}


async def test_a_file_window_is_hashed_from_its_position_and_resent_whole(tmp_path: Path) -> None:
    data = body(3 * MiB, 1)
    path = tmp_path / "buffer"
    path.write_bytes(b"x" * 100 + data + b"y" * 100)
    server = MemS3()
    store = server.store()
    server.corrupt_puts = 2
    fd = os.open(path, os.O_RDONLY)
    try:
        async with store.conn:
            await store.put("k", FileWindow(fd, 100, len(data)), {})
    finally:
        os.close(fd)
    assert server.objects["k"] == data
    assert len(server.sent("PUT")) == 3


async def test_a_service_checking_content_md5_refuses_and_the_body_is_resent() -> None:
    server = MemS3(check_md5=True)
    store = server.store()
    data = body(10_000, 2)
    server.corrupt_puts = 1
    async with store.conn:
        await store.put("k", data, {})
    assert server.objects["k"] == data
    assert store.integrity.mismatches == {"put": 1}


async def test_a_put_stored_wrong_every_time_fails_as_eio() -> None:
    server = MemS3()
    store = server.store(Integrity(attempts=3))
    server.corrupt_puts = 100
    async with store.conn:
        with pytest.raises(ChecksumMismatch) as caught:
            await store.put("k", body(1000), {})
    assert len(server.sent("PUT")) == 3
    assert to_errno(caught.value) == errno.EIO


async def test_no_checksum_sends_no_content_md5_and_keeps_what_was_stored() -> None:
    server = MemS3()
    store = server.store(Integrity(enabled=False))
    data = body(5000, 3)
    server.corrupt_puts = 1
    async with store.conn:
        await store.put("k", data, {})
        await store.upload_part("k", "u1", 1, data, len(data))
    assert server.objects["k"] == flip(data)  # nothing saw it: what the check is for
    assert all("content-md5" not in r.headers for r in server.sent("PUT"))


async def test_a_part_stored_wrong_is_resent_and_the_final_etag_is_checked() -> None:
    server = MemS3()
    store = server.store()
    one, two = body(5 * MiB, 4), body(MiB, 5)
    async with store.conn:
        upload = await store.create_multipart("k", {})
        server.corrupt_puts = 1
        parts = [
            await store.upload_part("k", upload, 1, one, len(one)),
            await store.upload_part("k", upload, 2, two, len(two)),
        ]
        result = await store.complete_multipart("k", upload, parts)
    assert server.objects["k"] == one + two
    assert result.etag.strip('"') == multipart_etag([md5(one), md5(two)])
    assert len(server.sent("PUT")) == 3 and store.integrity.mismatches == {"part": 1}
    assert all("content-md5" in r.headers for r in server.sent("PUT"))


async def test_a_completed_upload_with_another_etag_is_an_error() -> None:
    server = MemS3()
    store = server.store()
    data = body(1000, 6)
    server.wrong_complete = True
    async with store.conn:
        upload = await store.create_multipart("k", {})
        part = await store.upload_part("k", upload, 1, data, len(data))
        with pytest.raises(ChecksumMismatch, match="completed with ETag"):
            await store.complete_multipart("k", upload, [part])
    # parts whose ETag was never compared (not known to be MD5s): the final one is not either
    async with store.conn:
        await store.complete_multipart("k", "other", [UploadedPart(1, '"abc"', 1000)])


async def test_a_completed_upload_etag_of_another_form_is_not_compared() -> None:
    """Services that answer a completion with an ETag not of S3's ``md5-N`` form (s3rver: the
    MD5 of the whole object) are not refused: every part was checked already."""
    server = MemS3()
    server.whole_md5_complete = True
    store = server.store()
    one, two = body(5 * MiB, 7), body(1000, 8)
    async with store.conn:
        upload = await store.create_multipart("k", {})
        parts = [
            await store.upload_part("k", upload, 1, one, len(one)),
            await store.upload_part("k", upload, 2, two, len(two)),
        ]
        result = await store.complete_multipart("k", upload, parts)
    assert result.etag.strip('"') == md5(one + two) and server.objects["k"] == one + two
    assert store.integrity.mismatches == {}


async def test_sse_kms_etags_are_not_compared() -> None:
    server = MemS3()
    server.kms = True
    store = server.store()
    data = body(2000, 7)
    async with store.conn:
        await store.put("k", data, {})
        found = await store.get_object("k")
        assert found is not None and found[1] == data
        assert await store.get_range("k", 0, None) == data
    assert store.integrity.checked == 0 and not store.integrity.mismatches
    # a mount writing with SSE-KMS or SSE-C: no ETag of its objects is an MD5
    sse = MemS3().store(headers=ObjectHeaders(write={"x-amz-server-side-encryption": "aws:kms"}))
    assert sse.integrity.opaque_writes
    assert sse.integrity.sequential('"' + "a" * 32 + '"', 10) is None


# -- downloads -----------------------------------------------------------------------------------


async def test_a_whole_get_received_wrong_is_fetched_again() -> None:
    server = MemS3()
    data = body(200_000, 8)
    server.objects["k"] = data
    store = server.store()
    async with store.conn:
        server.corrupt_gets = 1
        found = await store.get_object("k")
        assert found is not None and found[1] == data
        server.corrupt_gets = 1
        assert await store.get_range("k", 0, None) == data
        server.corrupt_gets = 1
        assert await store.get_range("k", 0, len(data) - 1) == data  # the whole, by a range
        server.corrupt_gets = 1  # a part of it: not known, not checked
        assert await store.get_range("k", 10, 99) == flip(data[10:100])
    assert len(server.sent("GET")) == 7
    assert store.integrity.mismatches == {"get": 3}


@pytest.mark.parametrize("algorithm", ["crc32", "sha256"])
async def test_the_services_checksum_is_used_where_the_etag_is_not_an_md5(algorithm: str) -> None:
    server = MemS3()
    server.kms, server.checksum = True, algorithm
    data = body(300_000, 13)
    server.objects["k"] = data
    store = server.store()
    async with store.conn:
        server.corrupt_gets = 1
        found = await store.get_object("k")
        assert found is not None and found[1] == data
        server.corrupt_gets = 1
        assert await store.get_range("k", 0, None) == data
    assert store.integrity.mismatches == {"get": 2} and len(server.sent("GET")) == 4
    assert all(r.headers["x-amz-checksum-mode"] == "ENABLED" for r in server.sent("GET"))


async def test_a_whole_get_wrong_every_time_is_eio() -> None:
    server = MemS3()
    server.objects["k"] = body(1000, 9)
    store = server.store(Integrity(attempts=2))
    server.corrupt_gets = 10
    async with store.conn:
        with pytest.raises(ChecksumMismatch):
            await store.get_object("k")
    assert len(server.sent("GET")) == 2


async def test_sequential_check_takes_reads_slightly_out_of_order() -> None:
    data = body(3 * MiB + 5, 10)
    owner = Integrity()
    etag = f'"{md5(data)}"'
    check = owner.sequential(etag, len(data))
    assert check is not None
    pieces = [(o, data[o : o + 256 * 1024]) for o in range(0, len(data), 256 * 1024)]
    pieces[3], pieces[4] = pieces[4], pieces[3]  # the kernel's reads, slightly out of order
    for offset, piece in pieces:
        await check.feed(offset, piece)
    assert check.done and owner.checked == 1 and not owner.mismatches


async def test_sequential_check_raises_at_the_end_and_gives_up_on_a_seek() -> None:
    data = body(2 * MiB, 11)
    owner = Integrity()
    etag = f'"{md5(data)}"'
    wrong = SequentialCheck(owner, etag, md5(data), len(data))
    await wrong.feed(0, data[:MiB])
    with pytest.raises(ChecksumMismatch):
        await wrong.feed(MiB, flip(data[MiB:]))
    assert owner.mismatches == {"sequential": 1}
    with pytest.raises(ChecksumMismatch):  # a read again (the kernel's retry of a page) too
        await wrong.feed(MiB, data[MiB : 2 * MiB])
    # a reader that jumps far ahead: no verdict (and nothing held past the limit)
    big = 20 * MiB
    jumpy = SequentialCheck(owner, '"' + "0" * 32 + '"', "0" * 32, big)
    await jumpy.feed(0, b"a" * 1000)
    await jumpy.feed(big - 9 * MiB, b"b" * (9 * MiB))
    assert jumpy.broken and not jumpy.done
    assert (
        owner.expected_md5('"abc-2"') is None
        and Integrity(enabled=False).sequential(f'"{md5(data)}"', 1) is None
    )


# -- the core over moto through a corrupting proxy (in-process) ------------------------------------


@pytest.fixture
async def proxied(moto: S3Server) -> AsyncIterator[tuple[FsCore, S3Store, Any]]:
    """A core (with its nursery: read-ahead) over moto through a fault proxy, no fault yet."""
    bucket = unique_bucket("integrity")
    with fault_proxy(moto, seed=3) as proxy:
        server = proxy.server
        async with S3fmAuthConnection(
            "testing", "testing", False, server.host, server.port, CallingFormat.PATH
        ) as conn:
            await conn.create_bucket(bucket)
            store = S3Store(conn, bucket)
            fs = FsCore(store, FsSettings(uid=1000, gid=1000, readahead_mb=32))
            async with trio.open_nursery() as nursery:
                await nursery.start(fs.run_background)
                yield fs, store, proxy
                nursery.cancel_scope.cancel()


async def read_all(fs: FsCore, name: str, chunk: int = 128 << 10) -> tuple[bytes, Exception | None]:
    """What sequential reads of ``name`` returned, and the error that stopped them."""
    ino, attr = await fs.lookup(ROOT_INODE, name.encode())
    fh = await fs.open(ino, os.O_RDONLY)
    out = bytearray()
    try:
        for offset in range(0, attr.size, chunk):
            out += await fs.read(fh, offset, chunk)
    except Exception as exc:
        return bytes(out), exc
    finally:
        await fs.release(fh)
    return bytes(out), None


async def test_a_sequential_read_served_wrong_is_eio_at_its_end(
    proxied: tuple[FsCore, S3Store, Any],
) -> None:
    fs, store, proxy = proxied
    data = body(10 * MiB, 12)
    await store.put("big", data, {})
    proxy.set_corruption({"GET": 1.0})  # every ranged GET of the read-ahead
    out, error = await read_all(fs, "big")
    assert error is not None and to_errno(error) == errno.EIO
    assert isinstance(error, ChecksumMismatch)
    assert len(out) == len(data) - (128 << 10)  # every read but the last returned
    assert proxy.corrupted["GET"] >= 3
    assert store.integrity.mismatches["sequential"] == 1
    # the same object served right: read whole, no error
    proxy.set_corruption({})
    out, error = await read_all(fs, "big")
    assert error is None and out == data


async def test_a_multipart_object_read_sequentially_is_checked_part_by_part(
    proxied: tuple[FsCore, S3Store, Any],
) -> None:
    fs, store, proxy = proxied
    parts = [body(5 * MiB, 20), body(5 * MiB, 21), body(2 * MiB + 7, 22)]
    upload = await store.create_multipart("multi", {})
    done = [await store.upload_part("multi", upload, n, p, len(p)) for n, p in enumerate(parts, 1)]
    await store.complete_multipart("multi", upload, done)
    out, error = await read_all(fs, "multi")
    assert error is None and out == b"".join(parts)
    assert store.integrity.checked == 3 + 1 + 1  # 3 parts, the completion, the read
    heads = [r for r in proxy.log if r.method == "HEAD" and "partNumber=1" in r.target]
    assert len(heads) == 1  # the first part's size, asked once
    proxy.set_corruption({"GET": 1.0})
    out, error = await read_all(fs, "multi")
    last = (len(b"".join(parts)) - 1) // (128 << 10) * (128 << 10)  # where the last read is
    assert isinstance(error, ChecksumMismatch) and len(out) == last


async def test_an_upload_stored_wrong_every_time_is_eio_at_close_and_kept(
    moto: S3Server, tmp_path: Path
) -> None:
    bucket = unique_bucket("integrity")
    data = body(300_000, 23)
    with fault_proxy(moto, seed=4, corrupt={"PUT": 1.0}) as proxy:
        server = proxy.server
        async with S3fmAuthConnection(
            "testing", "testing", False, server.host, server.port, CallingFormat.PATH
        ) as conn:
            await conn.create_bucket(bucket)
            store = S3Store(conn, bucket, integrity=Integrity(attempts=3))
            recovery = RecoveryFolder(tmp_path / "recovery", "http://h:1", bucket)
            fs = FsCore(store, FsSettings(uid=1000, gid=1000), recovery=recovery)
            fh, _, _ = await fs.create(ROOT_INODE, b"f", 0o644, os.O_WRONLY, 1000, 1000)
            await fs.write(fh, 0, data)
            with pytest.raises(Exception) as caught:
                await fs.flush(fh)
            assert to_errno(caught.value) == errno.EIO
            assert proxy.corrupted["PUT"] == 3 and store.integrity.mismatches == {"put": 3}
            await fs.release(fh)  # (tries once more, logged only)
    kept = [p for p in (tmp_path / "recovery").rglob("*") if p.is_file() and p.suffix != ".json"]
    assert any(p.read_bytes() == data for p in kept), kept


def test_part_layouts() -> None:
    assert part_ends(5, 3, 12) == [5, 10, 12]
    assert part_ends(5, 3, 15) == [5, 10, 15]
    assert part_ends(5, 3, 16) is None and part_ends(5, 3, 10) is None  # not 3 parts of 5
    # this mount's rule past 625 parts: doubling
    ends = part_ends(1, 627, 625 + 2 + 1)
    assert ends is not None and ends[624] == 625 and ends[625] == 627 and ends[-1] == 628
    owner = Integrity()
    assert owner.sequential('"' + "a" * 32 + '-3"', 12, 5) is not None
    assert owner.sequential('"' + "a" * 32 + '-3"', 12, None) is None
    assert owner.sequential('"' + "a" * 32 + '-1"', 12) is not None


async def test_a_small_object_received_wrong_is_fetched_again(
    proxied: tuple[FsCore, S3Store, Any],
) -> None:
    fs, store, proxy = proxied
    files = {f"f{i}": body(size, i) for i, size in enumerate((3000, 300_000, 3 * MiB))}
    for name, data in files.items():
        await store.put(name, data, {})
    proxy.set_corruption({"GET": 0.5})
    for name, data in files.items():
        out, error = await read_all(fs, name)
        assert error is None and out == data, name
    assert proxy.corrupted["GET"] >= 1
    assert store.integrity.mismatches["get"] == proxy.corrupted["GET"]


# -- mounted: files copied in and read back through a proxy corrupting 30% of bodies --------------

#: Bodies with one byte flipped: of object GET answers and of PUT requests (objects and parts).
CORRUPT = {"GET": 0.3, "PUT": 0.3}
SEED = 17


def sources(root: Path, count: int, big: int) -> dict[str, bytes]:
    """``count`` files of 4 KiB-4 MiB (log-uniform) and, with ``big``, one of ``big`` bytes."""
    rng = random.Random(SEED)
    files = {
        f"file-{i:02d}.bin": rng.randbytes(int(4096 * 1024 ** rng.random())) for i in range(count)
    }
    if big:
        files["big.bin"] = rng.randbytes(big)
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def mismatches(mnt: Path) -> dict[str, int]:
    """The daemons' checksum mismatches by where (put, part, get, sequential), from the log."""
    path = mount_log(mnt)
    text = path.read_text(errors="replace") if path.exists() else ""
    found: dict[str, int] = {}
    for where in re.findall(r"checksum mismatch \((\w+)\)", text):
        found[where] = found.get(where, 0) + 1
    return found


def read_until_exact(path: Path, data: bytes, tries: int = 40) -> int:
    """Read ``path`` whole until it is ``data``; every read either fails with EIO or is exact
    (never wrong bytes without an error). The EIOs before the exact read."""
    failures = 0
    for _ in range(tries):
        try:
            got = path.read_bytes()
        except OSError as exc:
            assert exc.errno == errno.EIO, exc
            failures += 1
            continue
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), path
        return failures
    raise AssertionError(f"{path}: EIO {tries} times")


def test_files_through_a_corrupting_proxy_are_exact_both_ways(
    moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    bucket = unique_bucket("integrity")
    s3.create_bucket(Bucket=bucket)
    files = sources(tmp_path / "src", 20, 12 * MiB)
    options = ["part_size_mb=5", "stat_ttl=1", "dir_ttl=1", "timeout=60"]
    eio: dict[str, int] = {}
    with fault_proxy(moto, seed=SEED, corrupt=CORRUPT) as proxy:
        with mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt:
            for name in files:
                shutil.copyfile(tmp_path / "src" / name, mnt / name)  # EIO at close: fails
        puts = [r for r in proxy.log if r.method == "PUT"]
        put_corrupted = proxy.corrupted["PUT"]
        with mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt:
            for name, data in files.items():
                failures = read_until_exact(mnt / name, data)
                if failures:
                    eio[name] = failures
            found = mismatches(mnt)
        summary = proxy.summary()
        get_corrupted = proxy.corrupted["GET"]
    # what the server holds is exact (read behind the proxy's back)
    for name, data in files.items():
        stored = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest(), name
    # every PUT went with Content-MD5; every corrupted PUT was sent again
    assert puts and all(r.header("content-md5") for r in puts)
    assert put_corrupted >= 3 and get_corrupted >= 3
    resent_puts = found.get("put", 0) + found.get("part", 0)
    assert resent_puts == put_corrupted and found.get("part", 0) >= 1  # (seeded: parts too)
    # a whole-object GET received wrong is fetched again: only the ranged read of the big
    # file can be an EIO (at its end, never silent), and reading it again is exact
    assert set(eio) <= {"big.bin"}
    print(
        f"\nintegrity: {len(files)} files ({sum(map(len, files.values())) >> 20} MiB), "
        f"{summary}; PUTs {len(puts)}, {put_corrupted} corrupted and resent; "
        f"mismatches by where {found}; EIOs of sequential reads {eio}; files exact "
        f"{len(files)}/{len(files)} read back and {len(files)}/{len(files)} stored"
    )


def test_no_checksum_lets_the_corruption_through(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("integrity")
    s3.create_bucket(Bucket=bucket)
    files = sources(tmp_path / "src", 20, 0)
    options = ["no_checksum", "stat_ttl=1", "dir_ttl=1"]
    with fault_proxy(moto, seed=SEED, corrupt=CORRUPT) as proxy:
        with mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt:
            for name in files:
                shutil.copyfile(tmp_path / "src" / name, mnt / name)
        puts = [r for r in proxy.log if r.method == "PUT"]
        with mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt:
            read_wrong = sum((mnt / name).read_bytes() != data for name, data in files.items())
        summary = proxy.summary()
    stored_wrong = sum(
        s3.get_object(Bucket=bucket, Key=name)["Body"].read() != data
        for name, data in files.items()
    )
    assert len(puts) == len(files) and not any(r.header("content-md5") for r in puts)
    assert stored_wrong == proxy.corrupted["PUT"] > 0  # moto stores what it got, unchecked
    assert read_wrong > stored_wrong  # and reads bring their own corruption, unseen
    print(
        f"\nno_checksum: {summary}; files stored wrong {stored_wrong}/{len(files)}, "
        f"read back wrong {read_wrong}/{len(files)}, no error"
    )
