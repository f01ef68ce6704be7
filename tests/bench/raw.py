"""The raw baselines, and the bucket-side helpers the checks use (seeding, listing, HEAD, GET).

Raw = a plain client doing the same transfer, timed the same way, after dropped caches and on
a fresh connection:

| workload | raw |
|---|---|
| read | one ``curl`` GET of a presigned (Signature V2) URL to ``/dev/null`` |
| write | boto3's ``upload_file`` (multipart) of the same local file, as s3fmfs cuts it (1) |
| ls | ListObjectsV2 pages of the folder (``S3fmAuthConnection.list_pages``, delimiter ``/``) |
| untar | the tarball read with :mod:`tarfile`, one PUT per file, sequentially |
| grep | the listing, then one GET per file, sequentially, lines with the needle counted |
| find -exec stat | ListObjectsV2 pages of the whole set (sizes and dates of every file) |

(1) :func:`upload_config`: s3fmfs's multipart threshold, part size and concurrency. Also one
``curl -T`` PUT of the file to a presigned URL (``write-put``), for reference.

The signed client talks Signature V2 to s3rver (which checks V2 signatures); so does boto3,
with :class:`S3rverV2Auth` (s3rver leaves the Date line of the string to sign empty).

Every raw workload sends its timed requests through ``via`` (the measured endpoint: s3rver's
counted port, or the latency proxy) and checks its result through ``bucket`` (the control
port), so only the timed requests are counted.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import tarfile
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import botocore.auth
import trio

from s3fmfs.client import CallingFormat, QueryStringAuthGenerator, S3fmAuthConnection
from s3fmfs.config.options import MountOptions
from s3fmfs.fs.upload import MULTIPART_THRESHOLD, part_size_for
from tests.bench import checks
from tests.bench.data import NEEDLE, MiB, SmallFile, ls_body
from tests.support.servers import S3Server

T = TypeVar("T")
SEED_CONCURRENCY = 32


def connection(server: S3Server) -> S3fmAuthConnection:
    return S3fmAuthConnection(
        server.access_key_id,
        server.secret_access_key,
        False,
        server.host,
        server.port,
        CallingFormat.PATH,
        signature="v2",
        max_connections=SEED_CONCURRENCY,
        verify=False,  # plain HTTP on loopback: no CA bundle to load (20 ms of CPU a client)
    )


def presigner(server: S3Server) -> QueryStringAuthGenerator:
    gen = QueryStringAuthGenerator(
        server.access_key_id,
        server.secret_access_key,
        False,
        server.host,
        server.port,
        CallingFormat.PATH,
        signature="v2",
    )
    gen.set_expires_in(3600)
    return gen


def _run(server: S3Server, fn: Callable[[S3fmAuthConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        async with connection(server) as conn:
            return await fn(conn)

    return trio.run(main)


async def _bounded(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    sem = trio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(one, job)


class Bucket:
    """Synchronous helpers over one bucket of the server (each call its own connection)."""

    def __init__(self, server: S3Server, name: str) -> None:
        self.server = server
        self.name = name

    def run(self, fn: Callable[[S3fmAuthConnection], Awaitable[T]]) -> T:
        return _run(self.server, fn)

    # -- seeding ---------------------------------------------------------------------------

    def create(self) -> None:
        async def go(conn: S3fmAuthConnection) -> None:
            await conn.create_bucket(self.name)

        self.run(go)

    def put_file(self, key: str, path: Path) -> None:
        async def go(conn: S3fmAuthConnection) -> None:
            with open(path, "rb") as f:
                await conn.put(self.name, key, f)

        self.run(go)

    def put_many(self, objects: dict[str, bytes]) -> None:
        async def go(conn: S3fmAuthConnection) -> None:
            def job(key: str, data: bytes) -> Callable[[], Awaitable[None]]:
                async def put() -> None:
                    await conn.put(self.name, key, data)

                return put

            await _bounded(SEED_CONCURRENCY, [job(k, v) for k, v in objects.items()])

        self.run(go)

    # -- reading back ----------------------------------------------------------------------

    def list_sizes(self, prefix: str, delimiter: str | None = None) -> dict[str, int]:
        """Key (relative to ``prefix``) → size of every object under ``prefix``."""

        async def go(conn: S3fmAuthConnection) -> dict[str, int]:
            out: dict[str, int] = {}
            async for page in conn.list_pages(self.name, prefix, delimiter):
                for entry in page.entries:
                    out[entry.key[len(prefix) :]] = entry.size
            return out

        return self.run(go)

    def head_size(self, key: str) -> int | None:
        async def go(conn: S3fmAuthConnection) -> int | None:
            try:
                resp = await conn.head(self.name, key)
            except Exception:  # any failure: not (yet) there
                return None
            return resp.content_length

        return self.run(go)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        async def go(conn: S3fmAuthConnection) -> bytes:
            got = await conn.get(self.name, key, byte_range=(offset, offset + length - 1))
            data = got.object.data
            return data if isinstance(data, bytes) else bytes(data.read())

        return self.run(go)

    def bodies(self, keys: dict[str, str]) -> dict[str, bytes]:
        """Path → body of the objects ``keys`` (path → key)."""

        async def go(conn: S3fmAuthConnection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for path, key in keys.items():
                got = await conn.get(self.name, key)
                data: Any = got.object.data
                out[path] = data if isinstance(data, bytes) else bytes(data.read())
            return out

        return self.run(go)

    def delete_prefix(self, prefix: str) -> None:
        async def go(conn: S3fmAuthConnection) -> None:
            keys = [
                entry.key
                async for page in conn.list_pages(self.name, prefix)
                for entry in page.entries
            ]
            if keys:
                await conn.delete_objects(self.name, keys)

        self.run(go)

    def delete(self, key: str) -> None:
        async def go(conn: S3fmAuthConnection) -> None:
            await conn.delete(self.name, key)

        self.run(go)


def seed(bucket: Bucket, big_src: Path, ls_objects: dict[str, int], files: list[SmallFile]) -> None:
    """Everything the read, ls, grep and find workloads read: created once per run."""
    bucket.create()
    bucket.put_file("big/big.bin", big_src)
    bucket.put_many({f"ls/{name}": ls_body(name, size) for name, size in ls_objects.items()})
    bucket.put_many({f"src/{f.path}": f.data for f in files})


# -- raw workloads: each returns its elapsed seconds after checking its result --------------


def _curl(args: list[str], timeout: float) -> tuple[str, float]:
    argv = ["curl", "-s", "-g", "-H", "Expect:", "-o", "/dev/null", *args]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise checks.CheckError(f"curl exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout, elapsed


def read(via: Bucket, key: str, size: int, timeout: float) -> float:
    url = presigner(via.server).get(via.name, key)
    out, elapsed = _curl(["-w", "%{http_code} %{size_download}", url], timeout)
    status, got = out.split()
    if status != "200":
        raise checks.CheckError(f"curl GET: HTTP {status}")
    checks.check_size("curl GET", int(got), size)
    return elapsed


def write_put(bucket: Bucket, via: Bucket, key: str, src: Path, size: int, timeout: float) -> float:
    """One PUT of the whole file with curl."""
    url = presigner(via.server).put(bucket.name, key, b"")
    out, elapsed = _curl(["-w", "%{http_code}", "-T", str(src), url], timeout)
    if out.strip() != "200":
        raise checks.CheckError(f"curl PUT: HTTP {out.strip()}")
    check_big_object(bucket, key, size, "curl PUT")
    return elapsed


class S3rverV2Auth(botocore.auth.HmacV1Auth):  # type: ignore[misc]
    """botocore's Signature V2 as s3rver checks it: dated by ``x-amz-date``, an empty Date line."""

    def add_auth(self, request: Any) -> None:
        request.headers["x-amz-date"] = formatdate(usegmt=True)
        super().add_auth(request)

    def canonical_standard_headers(self, headers: Any) -> str:
        md5, ctype, _date = super().canonical_standard_headers(headers).split("\n")
        return "\n".join([md5, ctype, ""])


S3RVER_V2 = "s3rver-v2"


@functools.cache
def _register_signer() -> None:
    botocore.auth.AUTH_TYPE_MAPS[S3RVER_V2] = S3rverV2Auth


def boto3_client(server: S3Server) -> Any:
    """A boto3 S3 client of ``server``, path style, signing as s3rver checks, no retries."""
    import boto3
    from botocore.config import Config

    _register_signer()
    concurrency = upload_settings()[1]
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        config=Config(
            signature_version=S3RVER_V2,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            max_pool_connections=max(10, concurrency),
        ),
    )


def upload_settings() -> tuple[int, int]:
    """(part size, parts in flight) of an s3fmfs mount with default options."""
    defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(MountOptions)}
    part_size = part_size_for(1, int(defaults["part_size_mb"]) * MiB)
    return part_size, int(defaults["upload_concurrency"])


def upload_config() -> Any:
    """boto3's TransferConfig with s3fmfs's multipart threshold, part size and concurrency."""
    from boto3.s3.transfer import TransferConfig

    part_size, concurrency = upload_settings()
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=part_size,
        max_concurrency=concurrency,
        use_threads=True,
    )


def write(bucket: Bucket, via: Bucket, key: str, src: Path, size: int, timeout: float) -> float:
    """boto3's managed (multipart) upload of the file, as s3fmfs would cut it."""
    client = boto3_client(via.server)
    start = time.perf_counter()
    client.upload_file(str(src), bucket.name, key, Config=upload_config())
    elapsed = time.perf_counter() - start
    check_big_object(bucket, key, size, "boto3 upload_file")
    return elapsed


def check_big_object(bucket: Bucket, key: str, size: int, what: str) -> None:
    """The object ``key`` is the big object: its size, and sampled ranges of its bytes."""
    checks.check_size(what, bucket.head_size(key) or 0, size)
    checks.check_big_samples(what, lambda o, n: bucket.read_range(key, o, n), size)


def ls(via: Bucket, prefix: str, expected: dict[str, int]) -> float:
    async def go(conn: S3fmAuthConnection) -> tuple[float, dict[str, int]]:
        start = time.perf_counter()
        seen: dict[str, int] = {}
        async for page in conn.list_pages(via.name, prefix, "/"):
            for entry in page.entries:
                seen[entry.key[len(prefix) :]] = entry.size
        return time.perf_counter() - start, seen

    elapsed, seen = via.run(go)
    if seen != expected:
        raise checks.CheckError(f"listing: {len(seen)} objects, expected {len(expected)}")
    return elapsed


def untar(bucket: Bucket, via: Bucket, prefix: str, tarball: Path, files: list[SmallFile]) -> float:
    async def go(conn: S3fmAuthConnection) -> float:
        start = time.perf_counter()
        with tarfile.open(tarball) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                f = tar.extractfile(member)
                assert f is not None
                await conn.put(bucket.name, prefix + member.name, f.read())
        return time.perf_counter() - start

    elapsed = via.run(go)
    if not checks.listing_complete(bucket.list_sizes(prefix), files):
        raise checks.CheckError("sequential PUTs: the listing misses files")
    sample = checks.sample_files(files)
    checks.check_bodies("PUT", bucket.bodies({f.path: prefix + f.path for f in sample}), files)
    return elapsed


def grep(via: Bucket, prefix: str, files: list[SmallFile]) -> float:
    async def go(conn: S3fmAuthConnection) -> tuple[float, dict[str, int]]:
        start = time.perf_counter()
        keys = [e.key async for page in conn.list_pages(via.name, prefix) for e in page.entries]
        counts: dict[str, int] = {}
        for key in keys:
            got = await conn.get(via.name, key)
            data: Any = got.object.data
            body = data if isinstance(data, bytes) else data.read()
            counts[key[len(prefix) :]] = sum(1 for line in body.split(b"\n") if NEEDLE in line)
        return time.perf_counter() - start, counts

    elapsed, counts = via.run(go)
    if counts != {f.path: f.matches for f in files}:
        raise checks.CheckError(f"GETs: wrong match counts ({len(counts)} files)")
    return elapsed


def stat(via: Bucket, prefix: str, files: list[SmallFile]) -> float:
    """The listing alone: it carries every size and date a ``stat`` shows (objects without
    ``x-amz-meta-*`` modes, as these are), so it is the least a client must ask for. (One HEAD
    per file on top, 16 at a time, took 1.2–2 s here: 4–6× the listing.)"""

    async def go(conn: S3fmAuthConnection) -> tuple[float, dict[str, int]]:
        start = time.perf_counter()
        sizes: dict[str, int] = {}
        async for page in conn.list_pages(via.name, prefix):
            for entry in page.entries:
                sizes[entry.key[len(prefix) :]] = entry.size
        return time.perf_counter() - start, sizes

    elapsed, sizes = via.run(go)
    if sizes != {f.path: len(f.data) for f in files}:
        raise checks.CheckError(f"listing: wrong sizes ({len(sizes)} files)")
    return elapsed


def big_size(mib: int) -> int:
    return mib * MiB
