"""Faults between the mount and the server: a real mount over :mod:`tests.support.faultproxy`,
over moto.

- Under faults on 20% of the requests (500, 503 SlowDown, resets mid-answer, stalls past the
  read timeout, refused connections; seeded), a workload of writes (small files and a 20 MiB
  one streamed as a multipart upload), reads (a big sequential one through read-ahead),
  renames (files and a directory) and listings shows the user no error, and every byte is
  right through the mount and in the bucket (read with boto3, bypassing the proxy).
- With the server down (refusing connections, or accepting them and never answering), stat,
  open, read, close after writes and listing fail with EIO within ``timeout=`` (plus a
  margin); once it is back, the same mount works again, and the write that failed at close
  is uploaded with its bytes. An outage shorter than ``timeout=`` is ridden over.
- A stall longer than ``read_timeout=`` is retried and the operation completes.
- The client alone: no attempt waits past the request's retry budget; the options reach it.

Figures (requests, faults by kind, bytes verified) are printed (``pytest -s``) and asserted.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fmfs.client import (
    CallingFormat,
    RetryPolicy,
    S3fmAuthConnection,
    S3TimeoutError,
    SlowDown,
)
from s3fmfs.config.options import MountOptions, OptionError, parse_options
from s3fmfs.service.connection import MOUNT_MAX_ATTEMPTS, connection_for, mount_retry
from tests.support.faultproxy import KINDS, FaultProxy, Request, fault_proxy
from tests.support.mount import log_tail, mount_log, mounted
from tests.support.servers import S3Server, unique_bucket

MiB = 1 << 20
SEED = 20260611
RATE = 0.2
WEIGHTS = {"error500": 2.0, "slowdown": 2.0, "reset": 3.0, "stall": 1.0, "refuse": 2.0}
#: The workload's read timeout, and its stalls (longer: each one is a timeout and a retry).
READ_TIMEOUT = 2.0
STALL = 2.5
#: timeout= of the server-down test, and the slack allowed on top (FUSE, scheduling).
DOWN_TIMEOUT = 3.0
MARGIN = 3.0
BIG = 20 * MiB + 12_345

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.soak,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("faults")
    s3.create_bucket(Bucket=name)
    return name


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command; its stdout; assert it exits 0 and says nothing on stderr."""
    args = [str(a) for a in argv]
    done = subprocess.run(args, cwd=cwd, capture_output=True, timeout=120, check=False)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0 and not err, f"{args} -> {done.returncode}: {err}"
    return done.stdout.decode(errors="replace")


def bucket_files(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every object of the bucket but directory markers, read with boto3 (not the proxy)."""
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                assert len(body) == obj["Size"], obj["Key"]
                found[obj["Key"]] = body
    return found


def read_sequentially(path: Path, block: int = 128 << 10) -> bytes:
    """Read a file front to back in ``block``-sized reads (what read-ahead is for)."""
    parts = []
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(block):
            parts.append(chunk)
    return b"".join(parts)


def read_back(mnt: Path, path: str) -> bytes:
    """A file's content through the mount: big ones sequentially, small ones in one read."""
    if (mnt / path).stat().st_size > MiB:
        return read_sequentially(mnt / path)
    return (mnt / path).read_bytes()


def long_listing_sizes(mnt: Path) -> dict[str, int]:
    """{path: size} of the files ``ls -lR`` shows."""
    sizes: dict[str, int] = {}
    directory = ""
    for line in run("ls", "-lR", mnt).splitlines():
        if line.endswith(":"):
            directory = os.path.relpath(line[:-1], mnt)
            directory = "" if directory == "." else directory + "/"
        elif line.startswith("-"):
            fields = line.split(None, 8)
            sizes[directory + fields[8]] = int(fields[4])
    return sizes


def write_in_chunks(path: Path, data: bytes, block: int = MiB) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in range(0, len(data), block):
            os.write(fd, data[start : start + block])
    finally:
        os.close(fd)


def report(title: str, proxy: FaultProxy, extra: str = "") -> None:
    methods = ", ".join(f"{m} {n}" for m, n in sorted(proxy.methods.items()))
    print(f"\n{title}: {proxy.summary()}; forwarded by method: {methods}. {extra}")


# --------------------------------------------------------------------------- faults on 20%


def test_workload_under_faults_loses_nothing(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    expected: dict[str, bytes] = {}  # path under the mount -> content
    options = [
        "part_size_mb=5",
        "timeout=60",
        f"read_timeout={READ_TIMEOUT:g}",
        "connect_timeout=2",
        "stat_ttl=1",
        "dir_ttl=1",
    ]
    verified = 0
    with (
        fault_proxy(moto, seed=SEED, stall_seconds=STALL) as proxy,
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
    ):
        proxy.set_faults(RATE, WEIGHTS)

        # writes: small files in three directories, and a big one written sequentially (its
        # 5 MiB parts go up while it is written; the tail at close)
        for directory in ("docs", "docs/sub", "other"):
            (mnt / directory).mkdir()
        for i in range(30):
            folder = rng.choice(["", "docs/", "docs/sub/", "other/"])
            size = rng.choice([0, 1, 4096, rng.randrange(1, 400_000)])
            path = f"{folder}file-{i:02d}.bin"
            expected[path] = rng.randbytes(size)
            (mnt / path).write_bytes(expected[path])
        expected["big.bin"] = rng.randbytes(BIG)
        write_in_chunks(mnt / "big.bin", expected["big.bin"])

        # reads: every file, the big one sequentially through read-ahead
        for path, data in expected.items():
            assert read_back(mnt, path) == data, path
            verified += len(data)

        # renames: files (one across directories) and a directory with a subdirectory
        small = sorted(p for p in expected if p.startswith("other/"))[:2]
        assert len(small) == 2
        moves = {small[0]: "other/renamed-in-place.bin", small[1]: "moved-to-root.bin"}
        moves["big.bin"] = "big-renamed.bin"
        for old, new in moves.items():
            os.rename(mnt / old, mnt / new)
            expected[new] = expected.pop(old)
        run("mv", mnt / "docs", mnt / "docs-renamed")
        expected = {
            ("docs-renamed/" + p[5:] if p.startswith("docs/") else p): data
            for p, data in expected.items()
        }

        # listings: ls -lR and find show exactly the files, with their sizes
        time.sleep(1.1)  # past stat_ttl/dir_ttl: the listings go to the bucket
        sizes = {path: len(data) for path, data in expected.items()}
        found = run("find", mnt, "-type", "f", "-printf", "%s %P\\n").splitlines()
        assert {line.split(" ", 1)[1]: int(line.split(" ", 1)[0]) for line in found} == sizes
        assert long_listing_sizes(mnt) == sizes
        dirs = run("find", mnt, "-mindepth", "1", "-type", "d", "-printf", "%P\\n").split()
        assert sorted(dirs) == ["docs-renamed", "docs-renamed/sub", "other"]

        # reads again, after the renames (the big file through read-ahead once more)
        for path, data in expected.items():
            assert read_back(mnt, path) == data, path
            verified += len(data)
        injected = dict(proxy.injected)
        proxy.set_faults(0.0)

    # in the bucket, behind the proxy's back: exactly these objects, byte for byte
    stored = bucket_files(s3, bucket)
    assert sorted(stored) == sorted(expected)
    for path, data in expected.items():
        assert hashlib.sha256(stored[path]).digest() == hashlib.sha256(data).digest(), path
        verified += len(data)
    retries = log_tail(tmp_path / "mnt", 10**8).count("retrying ")
    report(
        "workload under faults",
        proxy,
        f"{retries} retries logged; {verified:,} bytes verified "
        f"({len(expected)} files, {sum(len(d) for d in expected.values()):,} bytes)",
    )
    # every kind was injected, and faults hit about RATE of the requests
    assert all(injected.get(kind, 0) > 0 for kind in KINDS), injected
    assert 0.1 < sum(injected.values()) / proxy.requests < 0.3, proxy.summary()
    resets_on_get = sum(1 for k, m, _ in proxy.events if k == "reset" and m == "GET")
    assert resets_on_get > 0, proxy.events
    assert proxy.methods["POST"] > 0  # the multipart upload went through the proxy


# --------------------------------------------------------------------------- server down


def fails_with_eio_in_time(call: Callable[[], object], what: str) -> float:
    """Assert ``call`` fails with EIO before ``DOWN_TIMEOUT + MARGIN``; the seconds it took."""
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        call()
    took = time.monotonic() - started
    assert info.value.errno == errno.EIO, (what, info.value)
    assert took < DOWN_TIMEOUT + MARGIN, (what, took)
    return took


def test_server_down_is_eio_within_timeout_then_the_mount_recovers(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    contents = {name: os.urandom(n) for name, n in [("old.txt", 3000), ("unread.bin", 300_000)]}
    for name, data in contents.items():
        s3.put_object(Bucket=bucket, Key=name, Body=data)
    s3.put_object(Bucket=bucket, Key="folder/inside.txt", Body=b"inside")
    options = [f"timeout={DOWN_TIMEOUT:g}", "connect_timeout=1", "stat_ttl=0", "dir_ttl=0"]
    options.append("neg_ttl=0")
    unsaved = b"written while the server was away\n" * 100
    took: dict[str, float] = {}
    with (
        fault_proxy(moto) as proxy,
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
    ):
        # opened while the server answers: a file being written, one not read yet
        wfd = os.open(mnt / "unsaved.txt", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(wfd, unsaved)
        rfd = os.open(mnt / "unread.bin", os.O_RDONLY)
        try:
            for hang in (False, True):  # refused connections, then a server that never answers
                proxy.down(hang=hang)
                how = "hung" if hang else "refused"
                took[f"stat ({how})"] = fails_with_eio_in_time(
                    lambda: os.stat(mnt / "old.txt"), f"stat {how}"
                )
                took[f"open ({how})"] = fails_with_eio_in_time(
                    lambda: (mnt / "never-seen.txt").read_bytes(), f"open {how}"
                )
                took[f"ls ({how})"] = fails_with_eio_in_time(
                    lambda: os.listdir(mnt / "folder"), f"ls {how}"
                )
            took["read (hung)"] = fails_with_eio_in_time(lambda: os.pread(rfd, 4096, 0), "read")
            took["close after write (hung)"] = fails_with_eio_in_time(
                lambda: os.close(wfd), "close"
            )
            log = mount_log(tmp_path / "mnt").read_text(errors="replace")
            assert "unsaved.txt" in log  # the failed upload is logged with its path

            proxy.up()
            # the same mount works again: reads, writes, listings
            assert os.pread(rfd, len(contents["unread.bin"]) + 1, 0) == contents["unread.bin"]
            assert (mnt / "old.txt").read_bytes() == contents["old.txt"]
            (mnt / "after.txt").write_bytes(b"after the outage")
            assert s3.get_object(Bucket=bucket, Key="after.txt")["Body"].read() == (
                b"after the outage"
            )
            assert sorted(os.listdir(mnt)) == sorted(
                ["after.txt", "folder", "old.txt", "unread.bin", "unsaved.txt"]
            )
            assert os.listdir(mnt / "folder") == ["inside.txt"]

            # an outage shorter than timeout= is a wait, not an error
            retries = log_tail(tmp_path / "mnt", 10**7).count("retrying ")
            proxy.down()
            back = threading.Timer(DOWN_TIMEOUT / 2, proxy.up)
            back.start()
            try:
                started = time.monotonic()
                assert (mnt / "old.txt").read_bytes() == contents["old.txt"]
                took["read across an outage of 1.5s"] = time.monotonic() - started
            finally:
                back.join()
            assert log_tail(tmp_path / "mnt", 10**7).count("retrying ") > retries
        finally:
            os.close(rfd)
    # nothing lost: the bytes whose upload failed at close went up once the server was back
    assert s3.get_object(Bucket=bucket, Key="unsaved.txt")["Body"].read() == unsaved
    figures = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in took.items())
    report("server down", proxy, f"EIO after: {figures} (timeout={DOWN_TIMEOUT:g})")


# --------------------------------------------------------------------------- stalls


def test_stall_longer_than_the_read_timeout_is_retried(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(700_000)
    s3.put_object(Bucket=bucket, Key="slow.bin", Body=data)
    upload = os.urandom(100_000)

    def get_of(key: str) -> Callable[[Request], bool]:
        return lambda r: r.method == "GET" and r.target == f"/{bucket}/{key}"

    def put_of(key: str) -> Callable[[Request], bool]:
        return lambda r: r.method == "PUT" and r.target == f"/{bucket}/{key}"

    options = ["read_timeout=1", "timeout=30"]
    with (
        fault_proxy(moto, stall_seconds=None) as proxy,
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
    ):
        proxy.inject("stall", match=get_of("slow.bin"))  # never answered
        assert (mnt / "slow.bin").read_bytes() == data
        assert proxy.pending() == 0 and proxy.injected["stall"] == 1

        proxy.set_faults(0.0, stall_seconds=3.0)  # answered, but after 3 read timeouts' worth
        proxy.inject("stall", match=put_of("new.bin"))
        (mnt / "new.bin").write_bytes(upload)
        assert proxy.pending() == 0 and proxy.injected["stall"] == 2
        assert s3.get_object(Bucket=bucket, Key="new.bin")["Body"].read() == upload
    log = log_tail(tmp_path / "mnt", 10**6)
    assert f"retrying GET /{bucket}/slow.bin" in log
    assert f"retrying PUT /{bucket}/new.bin" in log
    report("stalls", proxy)


# --------------------------------------------------------------------------- the client alone


async def test_no_attempt_waits_past_the_retry_budget(moto: S3Server) -> None:
    """A server that accepts and never answers: the request fails once its budget is spent,
    although the read timeout is a minute."""
    with fault_proxy(moto) as proxy:
        proxy.down(hang=True)
        conn = S3fmAuthConnection(
            "testing",
            "testing",
            False,
            proxy.server.host,
            proxy.server.port,
            CallingFormat.PATH,
            timeout=60.0,
            retry=RetryPolicy(total_timeout=1.0),
        )
        async with conn:
            started = trio.current_time()
            with pytest.raises(S3TimeoutError):
                await conn.head("any-bucket", "key")
            assert trio.current_time() - started < 1.0 + 1.5


async def test_timeout_options_reach_the_client() -> None:
    assert (MountOptions().timeout, MountOptions().read_timeout) == (120.0, 60.0)
    assert MountOptions().connect_timeout == 10.0
    opts = parse_options(["timeout=3,read_timeout=1.5,connect_timeout=2"])
    assert (opts.timeout, opts.read_timeout, opts.connect_timeout) == (3.0, 1.5, 2.0)
    for bad in ["timeout=0", "read_timeout=-1", "connect_timeout=soon", "timeout"]:
        with pytest.raises(OptionError):
            parse_options([bad])
    async with connection_for(opts, "key", "secret") as conn:
        timeout = conn._engine.timeout
        assert (timeout.read, timeout.write, timeout.connect) == (1.5, 1.5, 2.0)
        assert conn._engine.retry.total_timeout == 3.0
    # a mount retries for as long as timeout= allows, not a fixed number of times
    assert mount_retry(opts).total_timeout == 3.0
    assert mount_retry(opts).max_attempts == MOUNT_MAX_ATTEMPTS


def test_backoff_is_cut_to_the_budget_but_retry_after_is_not() -> None:
    class Ceiling(random.Random):  # the jitter always picks its upper bound
        def uniform(self, a: float, b: float) -> float:
            return b

    policy = RetryPolicy(base_delay=10.0, max_delay=10.0, rng=Ceiling())
    assert policy.next_wait(1, None, 100.0) == 10.0
    assert policy.next_wait(1, None, 2.5) == 2.5  # one last attempt at the end of the budget
    assert policy.next_wait(1, None, 0.0) is None
    slow_down = SlowDown(503, "SlowDown", headers={"retry-after": "5"})
    assert policy.next_wait(1, slow_down, 2.5) is None  # the server asked for more than is left
    assert policy.next_wait(1, slow_down, 50.0) == 10.0
