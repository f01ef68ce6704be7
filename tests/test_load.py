"""Load: 32 workers on their own files and 4 on one shared file, through one real mount over
moto, for ``S3FMFS_LOAD_SECONDS`` (default 120 s, as the acceptance asks).

What each private worker does, in a loop, in its own directory (at most ``FILES_PER_WORKER``
files): writes a new file (or rewrites one, ``O_TRUNC``) in chunks of varied sizes (1 B to
1 MiB), closes it and reads it back; overwrites parts of one at random offsets (holes past EOF
included), reading each write back through the same descriptor; appends (``O_APPEND``);
truncates (shrink and grow); renames within its directory (replacing a file at times); unlinks;
lists its directory. Sizes are mostly small, some up to 3 MiB (the write buffer moves to disk),
and the first ``LARGE_WRITERS`` workers now and then write 9-11 MiB (a multipart upload
streamed while writing). Every read is checked by SHA-256 against what the worker knows the
file holds, and after a close the object in the bucket is checked too (one close in four), with
boto3: ``close()`` has uploaded.

The shared file holds ``SHARED_WORKERS`` regions of ``REGION`` bytes; worker *i* owns region
*i* and writes it, over and over, with ``pwrite`` through its own descriptor (kept open across
several rounds, sometimes closed and reopened, sometimes fsync'ed), in chunks written in random
order. What can be asserted while others write through the same inode buffer:
- read-your-writes: its own region, read back at once, is exactly what it wrote;
- no write lands elsewhere and none is lost to zeros: every byte of region *j* is one of the
  bytes only region *j*'s owner writes (``b % 4 == j``, never 0), whatever the interleaving
  (torn reads of a region being rewritten are allowed, foreign or zero bytes are not);
- the size stays ``SHARED_WORKERS * REGION``;
- after its own close, the object in the bucket holds its last region (the close uploaded it,
  or waited for an upload that already held it).
At the end, the object holds every worker's last region.

No deadlock: a :class:`~tests.support.daemon_watch.Watchdog` fails the test when a worker makes no
progress for ``STALL_SECONDS`` (or the run overruns), killing the daemon so that blocked system
calls return. Memory bounded: the daemon's ``VmHWM`` (peak resident set) is sampled all along,
including the unmount's uploads, and must stay under ``RSS_LIMIT_MIB``.

At the end, every file is read back through the mount and, after the unmount (clean, exit
status 0), from the bucket; the bucket holds exactly the expected keys. The figures
(operations, bytes written and verified, peak RSS) are printed (``pytest -s``).

The shared-file workers found a race (``s3fmfs.fs.writeorder``): a read answered before a
write received earlier put old bytes into the kernel's page cache;
``test_a_read_never_overtakes_a_write_received_before_it`` replays it deterministically.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import threading
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import PutBody, PutResult
from tests.support.daemon_watch import MemorySampler, Watchdog
from tests.support.mount import daemon_pid, mounted
from tests.support.servers import S3Server, s3_client, unique_bucket
from tests.support.stores import CountingStore

KiB = 1024
MiB = 1 << 20

DURATION = float(os.environ.get("S3FMFS_LOAD_SECONDS", "120"))
PRIVATE_WORKERS = 32
SHARED_WORKERS = 4
FILES_PER_WORKER = 3
LARGE_WRITERS = 8  # workers that now and then write 9-11 MiB (a streamed multipart upload)
REGION = 320 * KiB  # the shared file is 1.25 MiB: its buffer lives in a temporary file
STALL_SECONDS = 90.0  # no step of a worker may take this long (a deadlock, not slowness)
DRAIN_SECONDS = 240.0  # after DURATION: the last steps, the final checks, the unmount
#: The daemon's peak resident memory (VmHWM) under this load. Measured 170-180 MiB in 120 s,
#: 213 MiB in 300 s: 32 MiB of in-memory write buffers, 16 MiB of read-ahead, the client's
#: buffers for 36 files' transfers, the interpreter, and what glibc keeps in its arenas after
#: the worker threads free their 128 KiB-1 MiB blocks (Python's own objects stay flat: no
#: leak). A daemon holding on to what it wrote or read would blow through it within seconds.
RSS_LIMIT_MIB = 256

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.soak,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Stats:
    """One worker's figures (only it writes them; summed at the end)."""

    ops: Counter[str] = field(default_factory=Counter)
    written: int = 0
    verified_mount: int = 0
    verified_bucket: int = 0


class Run:
    """What the workers share: the mount, the stop signal, the watchdog, the failures."""

    def __init__(self, mnt: Path, bucket: str, server: S3Server, watchdog: Watchdog) -> None:
        self.mnt = mnt
        self.bucket = bucket
        self.server = server
        self.watchdog = watchdog
        self.stop = threading.Event()
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def fail(self, worker: str, step: str) -> None:
        with self._lock:
            self.failures.append(f"{worker} during {step}:\n{traceback.format_exc()}")
        self.stop.set()  # fail fast: the others stop at their next step


class Worker:
    """A thread doing real file I/O through the mount; ``step`` names what it is doing."""

    def __init__(self, name: str, run: Run, seed: int) -> None:
        self.name = name
        self.run = run
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.step = "start"
        self.s3 = s3_client(run.server, attempts=3)  # one boto3 client per thread

    def beat(self, step: str) -> None:
        self.step = step
        self.run.watchdog.beat(self.name, step)

    def main(self) -> None:
        try:
            self.setup()
            while not self.run.stop.is_set():
                self.round()
            self.finish()
        except Exception:
            self.run.fail(self.name, self.step)
        finally:
            self.run.watchdog.done(self.name)

    def setup(self) -> None: ...

    def round(self) -> None:
        raise NotImplementedError

    def finish(self) -> None: ...

    def bucket_range(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        extra = {} if start is None else {"Range": f"bytes={start}-{end}"}
        body: bytes = self.s3.get_object(Bucket=self.run.bucket, Key=key, **extra)["Body"].read()
        return body


class PrivateWorker(Worker):
    """Reads and writes its own files (see the module docstring)."""

    def __init__(self, index: int, run: Run) -> None:
        super().__init__(f"w{index:02d}", run, seed=1000 + index)
        self.index = index
        self.dir = run.mnt / self.name
        self.files: dict[str, bytearray] = {}  # name → what it holds

    def setup(self) -> None:
        self.beat("mkdir")
        os.mkdir(self.dir)

    def chunk(self) -> int:
        return self.rng.choice(
            (
                self.rng.randint(1, 512),
                4 * KiB,
                64 * KiB,
                128 * KiB,
                MiB,
                self.rng.randint(1, 300 * KiB),
            )
        )

    def data(self, length: int) -> bytes:
        self.stats.written += length
        return self.rng.randbytes(length)

    def new_size(self) -> int:
        roll = self.rng.random()
        large = any(len(c) > 4 * MiB for c in self.files.values())
        if self.index < LARGE_WRITERS and roll < 0.04 and not large:
            return self.rng.randint(9 * MiB, 11 * MiB)
        if roll < 0.75:
            return self.rng.randint(0, 256 * KiB)
        return self.rng.randint(256 * KiB, 3 * MiB)

    def some_file(self) -> str | None:
        return self.rng.choice(sorted(self.files)) if self.files else None

    def free_name(self) -> str:
        return self.rng.choice([f"f{i}" for i in range(FILES_PER_WORKER + 2)])

    def round(self) -> None:
        roll = self.rng.random()
        name = self.some_file()
        if name is None or (roll < 0.25 and len(self.files) < FILES_PER_WORKER):
            self.write_new(self.free_name() if name is None else self.new_name())
        elif roll < 0.35:
            self.write_new(name)  # O_TRUNC: rewritten whole
        elif roll < 0.55:
            self.overwrite(name)
        elif roll < 0.67:
            self.append(name)
        elif roll < 0.75:
            self.truncate(name)
        elif roll < 0.87:
            self.verify(name)
            self.listing()
        elif roll < 0.95:
            self.rename(name)
        else:
            self.unlink(name)

    def new_name(self) -> str:
        free = [f"f{i}" for i in range(FILES_PER_WORKER + 2) if f"f{i}" not in self.files]
        return self.rng.choice(free)

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_new(self, name: str) -> None:
        size = self.new_size()
        self.beat(f"write {name} ({size} bytes)")
        content = bytearray()
        fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while len(content) < size:
                data = self.data(min(self.chunk(), size - len(content)))
                assert os.write(fd, data) == len(data)
                content += data
        finally:
            os.close(fd)
        self.files[name] = content
        self.stats.ops["write"] += 1
        self.closed(name)

    def overwrite(self, name: str) -> None:
        content = self.files[name]
        self.beat(f"overwrite {name}")
        fd = os.open(self.path(name), os.O_RDWR)
        try:
            for _ in range(self.rng.randint(1, 8)):
                length = min(self.chunk(), 512 * KiB)
                if self.rng.random() < 0.8 or not content:
                    offset = self.rng.randint(0, len(content))
                else:
                    offset = len(content) + self.rng.randint(1, 200 * KiB)  # a hole
                data = self.data(length)
                assert os.pwrite(fd, data, offset) == length
                if offset > len(content):
                    content += bytes(offset - len(content))
                content[offset : offset + length] = data
                back = os.pread(fd, length, offset)  # read-your-writes, same descriptor
                assert back == data, f"{name}: pread after pwrite @{offset} differs"
                self.stats.verified_mount += length
        finally:
            os.close(fd)
        self.stats.ops["overwrite"] += 1
        self.closed(name)

    def append(self, name: str) -> None:
        content = self.files[name]
        self.beat(f"append {name}")
        fd = os.open(self.path(name), os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(self.rng.randint(1, 6)):
                data = self.data(min(self.chunk(), 256 * KiB))
                assert os.write(fd, data) == len(data)
                content += data
            assert os.fstat(fd).st_size == len(content)
        finally:
            os.close(fd)
        self.stats.ops["append"] += 1
        self.closed(name)

    def truncate(self, name: str) -> None:
        content = self.files[name]
        size = self.rng.choice(
            (0, self.rng.randint(0, len(content)), len(content) + self.rng.randint(1, 300 * KiB))
        )
        self.beat(f"truncate {name} to {size}")
        fd = os.open(self.path(name), os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            if size <= len(content):
                del content[size:]
            else:
                content += bytes(size - len(content))
            assert os.fstat(fd).st_size == size
        finally:
            os.close(fd)
        self.stats.ops["truncate"] += 1
        self.closed(name)

    def rename(self, name: str) -> None:
        target = self.free_name()
        self.beat(f"rename {name} -> {target}")
        os.rename(self.path(name), self.path(target))
        if target != name:
            self.files[target] = self.files.pop(name)
        self.stats.ops["rename"] += 1
        self.verify(target)

    def unlink(self, name: str) -> None:
        self.beat(f"unlink {name}")
        os.unlink(self.path(name))
        del self.files[name]
        self.stats.ops["unlink"] += 1
        assert not self.path(name).exists()

    def listing(self) -> None:
        self.beat("listdir")
        assert sorted(os.listdir(self.dir)) == sorted(self.files)
        self.stats.ops["listdir"] += 1

    def verify(self, name: str) -> None:
        """Read the whole file back through the mount in chunks of varied sizes."""
        content = self.files[name]
        self.beat(f"verify {name}")
        got = hashlib.sha256()
        total = 0
        with open(self.path(name), "rb", buffering=0) as f:
            while True:
                block = f.read(self.chunk())
                if not block:
                    break
                got.update(block)
                total += len(block)
        assert total == len(content), f"{name}: {total} bytes read, {len(content)} written"
        assert got.hexdigest() == sha(content), f"{name}: content differs"
        self.stats.verified_mount += total
        self.stats.ops["verify"] += 1

    def closed(self, name: str) -> None:
        """After a close: read back through the mount, and at times in the bucket."""
        self.verify(name)
        if self.rng.random() < 0.25:
            self.beat(f"bucket check {name}")
            body = self.bucket_range(f"{self.name}/{name}")
            assert sha(body) == sha(self.files[name]), f"{name}: bucket object differs"
            self.stats.verified_bucket += len(body)


def region_table(region: int) -> bytes:
    """Maps any byte to one only region ``region`` writes: ``b % 4 == region``, never 0."""
    table = bytearray((b & 0xFC) | region for b in range(256))
    if region == 0:
        table[0] = table[1] = table[2] = table[3] = 4
    return bytes(table)


def region_alphabet(region: int) -> bytes:
    return bytes(sorted(set(region_table(region))))


class SharedWorker(Worker):
    """Writes its region of the shared file (see the module docstring)."""

    def __init__(self, index: int, run: Run, path: Path, last: list[bytes]) -> None:
        super().__init__(f"s{index}", run, seed=2000 + index)
        self.index = index
        self.path = path
        self.last = last  # last[i]: what region i holds (worker i writes it)
        self.table = region_table(index)
        self.fd = -1

    def round(self) -> None:
        base = self.index * REGION
        if self.fd < 0:
            self.beat("open")
            self.fd = os.open(self.path, os.O_RDWR)
        content = self.rng.randbytes(REGION).translate(self.table)
        self.stats.written += REGION
        cuts = sorted({0, REGION, *(self.rng.randrange(REGION) for _ in range(6))})
        pieces = list(itertools.pairwise(cuts))
        self.rng.shuffle(pieces)
        self.beat("pwrite")
        for start, end in pieces:
            assert os.pwrite(self.fd, content[start:end], base + start) == end - start
        self.last[self.index] = content
        self.beat("read own region")
        assert os.pread(self.fd, REGION, base) == content, "own region differs after writing"
        self.stats.verified_mount += REGION
        other = self.rng.randrange(SHARED_WORKERS)
        self.beat(f"read region {other}")
        seen = os.pread(self.fd, REGION, other * REGION)
        assert len(seen) == REGION, f"region {other}: {len(seen)} bytes"
        foreign = seen.translate(None, region_alphabet(other))
        assert not foreign, f"region {other} holds {len(foreign)} bytes no writer put there"
        assert os.fstat(self.fd).st_size == SHARED_WORKERS * REGION
        self.stats.ops["shared write"] += 1
        roll = self.rng.random()
        if roll < 0.15:
            self.beat("fsync")
            os.fsync(self.fd)
            self.stats.ops["shared fsync"] += 1
        elif roll < 0.45:
            self.close()

    def close(self) -> None:
        """Close; the object then holds this worker's last region."""
        self.beat("close")
        fd, self.fd = self.fd, -1
        os.close(fd)
        self.stats.ops["shared close"] += 1
        self.beat("bucket check")
        base = self.index * REGION
        body = self.bucket_range(f"shared/{self.path.name}", base, base + REGION - 1)
        assert body == self.last[self.index], "the bucket lacks this region after close"
        self.stats.verified_bucket += REGION

    def finish(self) -> None:
        if self.fd >= 0:
            self.close()


def run_workers(
    mnt: Path, bucket: str, server: S3Server, watchdog: Watchdog
) -> tuple[list[PrivateWorker], list[Worker], list[bytes], float]:
    """Run every worker for DURATION; fail with what went wrong."""
    started = time.monotonic()
    run = Run(mnt, bucket, server, watchdog)
    # the shared file: every region valid from the start
    (mnt / "shared").mkdir()
    shared = mnt / "shared" / "data.bin"
    last = [random.Random(i).randbytes(REGION).translate(region_table(i)) for i in range(4)]
    shared.write_bytes(b"".join(last))
    private = [PrivateWorker(i, run) for i in range(PRIVATE_WORKERS)]
    workers: list[Worker] = [
        *private,
        *(SharedWorker(i, run, shared, last) for i in range(SHARED_WORKERS)),
    ]
    threads = [threading.Thread(target=w.main, name=w.name, daemon=True) for w in workers]
    for t in threads:
        t.start()
    run.stop.wait(DURATION)
    run.stop.set()
    for t in threads:
        t.join(DRAIN_SECONDS)
    stuck = [t.name for t in threads if t.is_alive()]
    assert watchdog.failure is None, watchdog.failure
    assert not stuck, f"workers still running: {stuck}"
    assert not run.failures, "\n".join(run.failures)
    return private, workers, last, time.monotonic() - started


def verify_through_mount(
    mnt: Path, private: list[PrivateWorker], last: list[bytes], watchdog: Watchdog
) -> int:
    """Every file read back through the mount; the bytes verified."""
    verified = 0
    for w in private:
        assert sorted(os.listdir(w.dir)) == sorted(w.files), w.name
        for name, content in w.files.items():
            watchdog.beat("final check", f"read {w.name}/{name}")
            data = (w.dir / name).read_bytes()
            assert sha(data) == sha(content), f"{w.name}/{name}"
            verified += len(data)
    watchdog.beat("final check", "read shared/data.bin")
    assert (mnt / "shared" / "data.bin").read_bytes() == b"".join(last)
    watchdog.done("final check")
    return verified + len(last) * REGION


def test_load_32_private_and_4_shared_workers(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("load")
    s3.create_bucket(Bucket=bucket)
    sampler: MemorySampler | None = None
    try:
        with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
            pid = daemon_pid(mnt)
            sampler = MemorySampler(pid)
            sampler.start()  # stopped once the daemon has exited: the unmount counts
            watchdog = Watchdog(STALL_SECONDS, DURATION + DRAIN_SECONDS, lambda: (pid, mnt))
            with watchdog.running():
                try:
                    private, workers, last, elapsed = run_workers(mnt, bucket, moto, watchdog)
                    verified_mount = verify_through_mount(mnt, private, last, watchdog)
                except Exception as exc:  # a system call failed because the watchdog fired
                    if watchdog.failure is not None:
                        raise AssertionError(watchdog.failure) from exc
                    raise
        # mounted() unmounted cleanly and the daemon exited 0 (asserted there)
    finally:
        if sampler is not None:
            sampler.stop()
    assert sampler is not None

    # everything, in the bucket
    expected = {f"{w.name}/{n}": c for w in private for n, c in w.files.items()}
    expected["shared/data.bin"] = bytearray(b"".join(last))
    markers = {f"{w.name}/" for w in private} | {"shared/"}
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.update(obj["Key"] for obj in page.get("Contents", []))
    assert found == set(expected) | markers
    verified_bucket = 0
    for key, content in expected.items():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert sha(body) == sha(content), key
        verified_bucket += len(body)

    ops: Counter[str] = Counter()
    for w in workers:
        ops.update(w.stats.ops)
        verified_mount += w.stats.verified_mount
        verified_bucket += w.stats.verified_bucket
    written = sum(w.stats.written for w in workers)
    peak = sampler.peak_hwm_kib / KiB
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
    print(
        f"\nload: {len(workers)} workers for {DURATION:.0f}s ({elapsed:.0f}s with the checks): "
        f"{sum(ops.values())} operations ({kinds}); "
        f"{written / MiB:.0f} MiB written; verified {verified_mount / MiB:.0f} MiB through "
        f"the mount and {verified_bucket / MiB:.0f} MiB in the bucket; {len(expected)} files "
        f"at the end; daemon peak RSS {peak:.0f} MiB (VmHWM, {sampler.samples} samples, "
        f"peak VmRSS sampled {sampler.peak_rss_kib / KiB:.0f} MiB; VmRSS at 1/4, 1/2, 3/4 "
        f"of the run: {', '.join(f'{sampler.rss_at(q) / KiB:.0f}' for q in (0.25, 0.5, 0.75))} "
        "MiB)"
    )
    assert sampler.samples > 10
    assert peak < RSS_LIMIT_MIB, f"daemon peak RSS {peak:.0f} MiB > {RSS_LIMIT_MIB} MiB"


class HeldPutStore(CountingStore):
    """Holds every PUT until ``release`` is set (an upload that takes its time)."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.put_started = trio.Event()
        self.release = trio.Event()

    async def put(
        self,
        key: str,
        body: PutBody,
        metadata: Mapping[str, str],
        content_type: str | None = None,
    ) -> PutResult:
        self.put_started.set()
        await self.release.wait()
        return await super().put(key, body, metadata, content_type)


async def test_a_read_never_overtakes_a_write_received_before_it(moto: S3Server) -> None:
    """The race the shared-file workers found, made deterministic: a write waits for the
    inode's lock, held by an upload; a read that arrives after it must not answer with the
    old bytes (the kernel would keep them in its page cache, and the writer would read them
    back after its write succeeded). The read waits for the write; later writes do not
    delay it."""
    async with S3fmAuthConnection(
        "testing", "testing", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
    ) as conn:
        bucket = unique_bucket("order")
        await conn.create_bucket(bucket)
        store = HeldPutStore(S3Store(conn, bucket))
        core = FsCore(store, FsSettings())
        fh, _, _ = await core.create(ROOT_INODE, b"f", 0o644, os.O_RDWR, 0, 0)
        await core.write(fh, 0, b"old!")
        results: dict[str, bytes] = {}

        async def read(name: str) -> None:
            results[name] = await core.read(fh, 0, 4)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.flush, fh)  # its upload holds the lock, PUT held
            await store.put_started.wait()
            nursery.start_soon(core.write, fh, 0, b"new!")  # waits for the lock
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "after the write")
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}, "the read answered before the write it followed"
            store.release.set()
        assert results == {"after the write": b"new!"}
        # a read with no write in flight does not wait; nor for a write that came after it
        assert await core.read(fh, 0, 4) == b"new!"
        store.release = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.flush, fh)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "before the write")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(core.write, fh, 0, b"NEW!")
            await trio.testing.wait_all_tasks_blocked()
            assert results["before the write"] == b"new!"
            store.release.set()
        await core.flush(fh)
        await core.release(fh)
        assert await store.inner.get_range("f", 0, None) == b"NEW!"
