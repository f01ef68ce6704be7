"""Nothing is lost: failed uploads, unmounting with uploads pending, and SIGKILL mid-upload.

Real mounts (:mod:`tests.support.mount`) over moto, most through :class:`GateProxy`, a TCP proxy on
loopback that can hold the bytes going to the server past a budget (an upload stalls
mid-body, deterministically) or go down (every connection cut, new ones closed at once).
What the tests check behind the mount goes straight to moto with boto3.

- A write whose upload fails for good is EIO at fsync() and close(), its data is in the
  recovery folder (``CACHE/recovery``) with the key it belongs to, and the log says where.
- Unmounting (SIGTERM, lazy umount) while an upload is stalled waits for it: the daemon is
  still there while the upload is held, and exits 0 with the object complete once it goes.
- SIGKILL while a PUT or a multipart upload is in flight leaves no object under the key (or
  the old one intact); the next mount aborts the multipart upload the journal names, and
  lists (without aborting) the incomplete uploads of others under its prefix.
The journal's and the recovery folder's own rules are tested without a mount at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import random
import select
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.fs import recovery as recovery_mod
from s3fmfs.fs.journal import UploadJournal
from s3fmfs.fs.recovery import RecoveryFolder, safe_name
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.writebuf import MemoryPool, WriteBuffer
from tests.support.mount import MountError, daemon_pid, is_mounted, log_tail, mount_log, mounted
from tests.support.servers import S3Server, unique_bucket

MiB = 1 << 20

pytestmark = [
    pytest.mark.system,
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse"), reason="needs /dev/fuse (apt install fuse3)"
    ),
]


# --------------------------------------------------------------------------- the gate proxy


class GateProxy:
    """A TCP proxy on 127.0.0.1 in front of a test server, run by threads.

    It counts the bytes going to the server (``sent``). ``hold(n)`` lets ``n`` more through
    and then holds the rest (a request stalls mid-body) until ``release()``; ``down()`` cuts
    every connection and closes new ones at once, until ``up()``. A client that goes away
    (killed) has its server connection closed at once, its held bytes dropped: the server
    sees the request cut.
    """

    def __init__(self, upstream: S3Server) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self.sent = 0
        self._budget: int | None = None
        self._waiting: set[int] = set()  # connections holding bytes they may not send
        self._down = False
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    @property
    def server(self) -> S3Server:
        """The upstream server as seen through the proxy."""
        return dataclasses.replace(self.upstream, port=self.port)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def hold(self, more: int) -> None:
        """From now on, let ``more`` bytes reach the server, then hold the rest."""
        with self._cond:
            self._budget = self.sent + more
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._budget = None
            self._cond.notify_all()

    def wait_held(self, timeout: float = 20.0) -> bool:
        """Whether some request is being held (within ``timeout``)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._waiting), timeout)

    def idle(self) -> bool:
        """Whether no request is being held."""
        with self._cond:
            return not self._waiting

    def down(self) -> None:
        with self._cond:
            self._down = True
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def up(self) -> None:
        with self._cond:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.release()
        self.down()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                server = socket.create_connection((self.upstream.host, self.upstream.port))
            except OSError:
                client.close()
                continue
            with self._cond:
                self._sockets |= {client, server}
            self._start(self._to_server, client, server)
            self._start(self._to_client, server, client)

    def _allowance(self) -> int:
        with self._cond:
            if self._budget is None:
                return 1 << 62
            return max(0, self._budget - self.sent)

    def _to_server(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""
        try:
            while not self._closed:
                allowed = self._allowance()
                if pending and allowed:
                    chunk = pending[:allowed]
                    server.sendall(chunk)
                    pending = pending[len(chunk) :]
                    with self._cond:
                        self.sent += len(chunk)
                    continue
                with self._cond:
                    if pending:
                        self._waiting.add(id(client))
                        self._cond.notify_all()
                    else:
                        self._waiting.discard(id(client))
                readable, _, _ = select.select([client], [], [], 0.05)
                if readable:
                    data = client.recv(1 << 16)
                    if not data:
                        return  # the client went away: held bytes are dropped, the request cut
                    pending += data
        except OSError:
            return
        finally:
            with self._cond:
                self._waiting.discard(id(client))
            self._drop(client, server)

    def _to_client(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(1 << 16)
                if not data:
                    return
                client.sendall(data)
        except OSError:
            return
        finally:
            self._drop(client, server)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._cond:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                self._sockets.discard(sock)


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("nl")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto: S3Server) -> Iterator[GateProxy]:
    gate = GateProxy(moto)
    try:
        yield gate
    finally:
        gate.close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def errno_of(call: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno is not None
    return info.value.errno


def poll(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def missing(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        return bool(exc.response["Error"]["Code"] in ("404", "NoSuchKey"))
    return False


def body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def uploads(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """Incomplete multipart uploads: upload id → key."""
    found = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return {u["UploadId"]: u["Key"] for u in found}


def recovery_copies(cache: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The recovery folder: key → (data file, sidecar)."""
    folder = cache / "recovery"
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for sidecar in sorted(folder.glob("*.json")) if folder.exists() else []:
        info = json.loads(sidecar.read_text())
        found[info["key"]] = (folder / info["data"], info)
    return found


def log_text(mnt: Path) -> str:
    return mount_log(mnt).read_text(errors="replace")


@contextlib.contextmanager
def killed_at_the_end(status: str) -> Iterator[None]:
    """The block's mount ends with the daemon's exit ``status`` (MountError from mounted())."""
    with pytest.raises(MountError, match=f"exited with status {status}"):
        yield


# --------------------------------------------------------------------------- failed uploads

#: A key of nearly 1,000 bytes (the limit is 1,024): spaces, a tab, non-ASCII, shell characters.
DEEP = ["α" * 125, "b" * 250, "c d" * 83 + "e", "f" * 200]
NAME = "näme\twith spaces *?$.bin"


def test_refused_upload_is_eio_and_kept_in_the_recovery_folder(
    proxy: GateProxy, s3: Any, bucket: str, cache: Path, tmp_path: Path
) -> None:
    """The server goes away after the file is created: fsync() and close() are EIO, every
    failure (fsync, close, release, the final flush) rewrites one copy holding the latest
    bytes, the log names path, key and copy, and the daemon exits 1."""
    first, second = payload(1, 2 * MiB + 5), payload(2, 777)
    key = "/".join([*DEEP, NAME])
    assert 950 < len(key.encode()) <= 1024
    options = [f"cache_dir={cache}", "timeout=2"]
    with (
        killed_at_the_end("1"),
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
    ):
        os.makedirs(mnt.joinpath(*DEEP))
        fd = os.open(mnt.joinpath(*DEEP, NAME), os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.write(fd, first)
            proxy.down()
            assert errno_of(lambda: os.fsync(fd)) == errno.EIO
            (copy, info), *_ = recovery_copies(cache).values()
            assert info["key"] == key and copy.read_bytes() == first
            os.write(fd, second)
        finally:
            assert errno_of(lambda: os.close(fd)) == errno.EIO
        copies = recovery_copies(cache)
        assert list(copies) == [key]
        copy, info = copies[key]
        assert copy.read_bytes() == first + second  # the latest content replaced the first
        log = log_text(mnt)
        assert f"upload of {'/'.join([*DEEP, NAME])!r} (key {key!r}) failed" in log
        assert f"its data is kept in {copy}" in log
    # release and the final flush failed too, and rewrote the same copy: still one
    copies = recovery_copies(cache)
    assert list(copies) == [key]
    copy, info = copies[key]
    assert copy.read_bytes() == first + second
    assert info["bucket"] == bucket and info["size"] == len(first + second)
    assert info["path"] == "/" + key and info["endpoint"].endswith(f":{proxy.port}")
    assert sorted(p.name for p in copy.parent.iterdir()) == sorted([copy.name, copy.name + ".json"])
    assert len(copy.name.encode()) < 120 and "/" not in copy.name
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert missing(s3, bucket, key)
    assert "1 file(s) could not be uploaded before unmounting" in log_text(tmp_path / "mnt")


def test_copy_is_removed_once_the_file_is_uploaded_after_all(
    proxy: GateProxy, s3: Any, bucket: str, cache: Path, tmp_path: Path
) -> None:
    """close() is EIO while the server is away and the copy is there; once it is back, the
    unmount uploads the file, removes this mount's copy and exits 0."""
    data = payload(3, 300_000)
    with mounted(
        proxy.server, bucket, options=[f"cache_dir={cache}", "timeout=2"], tmp_path=tmp_path
    ) as mnt:
        fd = os.open(mnt / "later.txt", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        proxy.down()
        assert errno_of(lambda: os.close(fd)) == errno.EIO
        copy, _ = recovery_copies(cache)["later.txt"]
        assert copy.read_bytes() == data
        proxy.up()
    assert body(s3, bucket, "later.txt") == data
    assert recovery_copies(cache) == {}
    assert not copy.exists()


# --------------------------------------------------------------------------- unmount waits


@pytest.mark.parametrize(
    ("when", "how"),
    [
        ("closing", "sigterm"),
        ("closing", "umount-lazy"),
        ("open", "sigterm"),
        ("streaming", "sigterm"),
    ],
)
def test_unmount_waits_for_a_stalled_upload(
    proxy: GateProxy, s3: Any, bucket: str, tmp_path: Path, when: str, how: str
) -> None:
    """The upload is held by the proxy: in flight at close() ("closing"), started by the stop
    for a file still open and dirty ("open"), or its parts streaming while the file is
    written, 5 MiB each ("streaming"). The daemon is asked to stop and does not exit while
    the upload is held; released, it completes, the daemon exits 0 and no incomplete
    multipart upload is left."""
    streaming = when == "streaming"
    data = payload(4, (12 if streaming else 3) * MiB + 11)
    options = ["part_size_mb=5"] if streaming else []
    with (
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
        ThreadPoolExecutor(1) as pool,
    ):
        pid = daemon_pid(mnt)
        fd = os.open(mnt / "held.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        closing: Future[None] | None = None
        try:
            if streaming:
                proxy.hold(64 * 1024)  # CreateMultipartUpload goes through, the parts stall
            os.write(fd, data)
            if not streaming:
                proxy.hold(64 * 1024)
            if when == "closing":
                closing = pool.submit(os.close, fd)
                assert proxy.wait_held(), log_tail(mnt)
            if streaming:
                assert proxy.wait_held(), log_tail(mnt)
                assert list(uploads(s3, bucket).values()) == ["held.bin"]
            if how == "sigterm":
                os.kill(pid, signal.SIGTERM)
            else:
                subprocess.run(["umount", "-l", str(mnt)], check=True, timeout=30)
            time.sleep(1.5)
            assert proxy.wait_held(), log_tail(mnt)  # still uploading, or the stop is
            assert alive(pid), "s3fmfs exited with its upload still held"
            assert missing(s3, bucket, "held.bin")
            proxy.release()
            if closing is not None:
                assert closing.result(30) is None  # close() succeeded
            assert poll(lambda: not alive(pid), 30), log_tail(mnt)
        finally:
            proxy.release()
            if closing is None:
                with contextlib.suppress(OSError):  # the mount is gone by now
                    os.close(fd)
        assert not is_mounted(mnt)
    # mounted() asserted exit status 0
    assert body(s3, bucket, "held.bin") == data
    assert uploads(s3, bucket) == {}


def test_unmount_that_cannot_upload_keeps_the_data_and_exits_1(
    proxy: GateProxy, s3: Any, bucket: str, cache: Path, tmp_path: Path
) -> None:
    """SIGTERM with files open and dirty (5 MiB, 1,000 bytes, empty) while the server is
    away: the final uploads fail after their retries, every file's data goes to the recovery
    folder, and the exit status is 1."""
    files = {"open.bin": payload(5, 5 * MiB + 3), "d/small.txt": payload(6, 1000), "empty": b""}
    options = [f"cache_dir={cache}", "timeout=2"]
    with (
        killed_at_the_end("1"),
        mounted(proxy.server, bucket, options=options, tmp_path=tmp_path) as mnt,
    ):
        (mnt / "d").mkdir()
        fds = [os.open(mnt / name, os.O_WRONLY | os.O_CREAT, 0o644) for name in files]
        try:
            for fd, data in zip(fds, files.values(), strict=True):
                os.write(fd, data)
            proxy.down()
            os.kill(daemon_pid(mnt), signal.SIGTERM)
            assert poll(lambda: not alive(daemon_pid(mnt)), 30), log_tail(mnt)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
    copies = recovery_copies(cache)
    assert sorted(copies) == sorted(files)
    log = log_text(tmp_path / "mnt")
    for key, data in files.items():
        copy, info = copies[key]
        assert copy.read_bytes() == data and info["size"] == len(data)
        assert missing(s3, bucket, key)
        assert f"upload of {key!r} (key {key!r}) failed" in log
        assert f"its data is kept in {copy}" in log
    last = log.strip().splitlines()[-1]  # the final line names every copy, and nothing lost
    assert "3 file(s) could not be uploaded before unmounting" in last and "lost: none" in last
    for key, (copy, _) in copies.items():
        assert f"{key!r} in {copy}" in last


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.parametrize("before", ["new", "existing"])
def test_sigkill_mid_put_leaves_no_partial_object(
    proxy: GateProxy, s3: Any, bucket: str, cache: Path, tmp_path: Path, before: str
) -> None:
    """A 3 MiB file (one PUT at close) is held after its first MiB; SIGKILL: the key holds
    nothing, or its old content intact."""
    old = payload(6, 100_000)
    if before == "existing":
        s3.put_object(Bucket=bucket, Key="f.bin", Body=old)
    new = payload(7, 3 * MiB)
    with (
        killed_at_the_end("-9"),
        mounted(proxy.server, bucket, options=[f"cache_dir={cache}"], tmp_path=tmp_path) as mnt,
        ThreadPoolExecutor(1) as pool,
    ):
        fd = os.open(mnt / "f.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, new)
        start = proxy.sent
        proxy.hold(MiB)
        closing = pool.submit(os.close, fd)
        assert proxy.wait_held(), log_tail(mnt)
        assert proxy.sent - start == MiB  # the PUT is in flight: headers and part of the body
        os.kill(daemon_pid(mnt), signal.SIGKILL)
        assert poll(lambda: not alive(daemon_pid(mnt))), "SIGKILL did not kill s3fmfs"
        with pytest.raises(OSError):
            closing.result(30)  # the kernel aborts the connection: close() fails
    assert poll(proxy.idle, 5)  # the held connection was closed: the server saw the cut
    time.sleep(0.5)  # time enough for a server that kept cut bodies to store one
    if before == "new":
        assert missing(s3, bucket, "f.bin")
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    else:
        assert body(s3, bucket, "f.bin") == old


def test_sigkill_mid_multipart_then_next_mount_aborts_it(
    proxy: GateProxy, moto: S3Server, s3: Any, bucket: str, cache: Path, tmp_path: Path
) -> None:
    """A 12 MiB file streamed in 5 MiB parts under a prefix mount; SIGKILL while its parts
    are held: no object, the upload is left and journaled. The next mount with the same
    cache directory aborts it and logs it; the incomplete uploads of others under its prefix
    are logged and left, those outside it are not its business."""
    options = [f"cache_dir={cache}", "part_size_mb=5"]
    with (
        killed_at_the_end("-9"),
        mounted(proxy.server, bucket, prefix="pfx", options=options, tmp_path=tmp_path) as mnt,
    ):
        fd = os.open(mnt / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            proxy.hold(2 * MiB)  # CreateMultipartUpload goes through, part 1 stalls
            os.write(fd, payload(8, 12 * MiB))  # parts 1 and 2 start while it is written
            assert proxy.wait_held(), log_tail(mnt)
            assert poll(lambda: list(uploads(s3, bucket).values()) == ["pfx/big.bin"], 10)
            (left,) = uploads(s3, bucket)
            os.kill(daemon_pid(mnt), signal.SIGKILL)
            assert poll(lambda: not alive(daemon_pid(mnt))), "SIGKILL did not kill s3fmfs"
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    assert missing(s3, bucket, "pfx/big.bin")
    assert uploads(s3, bucket) == {left: "pfx/big.bin"}  # not an object, but not gone either
    journaled = [json.loads(p.read_text()) for p in cache.glob("uploads/*/*.json")]
    assert [(e["key"], e["upload_id"]) for e in journaled] == [("pfx/big.bin", left)]

    proxy.release()
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="pfx/foreign.bin")["UploadId"]
    outside = s3.create_multipart_upload(Bucket=bucket, Key="other/x.bin")["UploadId"]
    try:
        with mounted(proxy.server, bucket, prefix="pfx", options=options, tmp_path=tmp_path) as mnt:
            done = "aborted the incomplete multipart upload of 'pfx/big.bin' left by an earlier"
            assert poll(lambda: foreign in log_text(mnt)), log_tail(mnt)
            log = log_text(mnt)
            assert done in log and f"upload id {left}, initiated " in log, log_tail(mnt)
            assert "incomplete multipart upload of 'pfx/foreign.bin'" in log
            assert f"not aborted: upload id {foreign}, initiated " in log
            assert outside not in log
            assert uploads(s3, bucket) == {foreign: "pfx/foreign.bin", outside: "other/x.bin"}
            assert list(cache.glob("uploads/*/*.json")) == []  # the dead mount's journal is gone
            assert len(list(cache.glob("uploads/*/*.lock"))) == 1  # this mount's own
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key="pfx/foreign.bin", UploadId=foreign)
        s3.abort_multipart_upload(Bucket=bucket, Key="other/x.bin", UploadId=outside)
    assert list(cache.glob("uploads/*")) == []  # a clean exit leaves no journal behind


# --------------------------------------------------------------------------- without a mount


@pytest.fixture
async def store(moto: S3Server, s3: Any) -> Any:
    bucket = unique_bucket("nj")
    s3.create_bucket(Bucket=bucket)
    async with S3fmAuthConnection(
        "testing", "testing", False, moto.host, moto.port, CallingFormat.PATH, signature="v4"
    ) as conn:
        yield conn, bucket


async def test_journal_entry_exists_before_the_upload_id_is_used(
    store: Any, s3: Any, tmp_path: Path
) -> None:
    """The crash windows: the entry is on disk (without id) while CreateMultipartUpload is
    in flight, with the id once it returns (before any part), gone once completed."""
    conn, bucket = store
    journal = await UploadJournal.open(tmp_path, "http://x:1", bucket)
    s3store = S3Store(conn, bucket, journal=journal)
    seen: list[list[dict[str, Any]]] = []

    def entries() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in tmp_path.glob("uploads/*/*.json")]

    async def create() -> str:
        seen.append(entries())
        upload_id: str = await conn.create_multipart_upload(bucket, "k")
        return upload_id

    upload_id = await journal.create("k", create)
    assert [(e["key"], e["upload_id"]) for e in seen[0]] == [("k", None)]
    assert [(e["key"], e["upload_id"]) for e in entries()] == [("k", upload_id)]
    part = await s3store.upload_part("k", upload_id, 1, b"x" * 10, 10)
    await s3store.complete_multipart("k", upload_id, [part])
    assert entries() == [] and journal.pending() == set()
    assert body(s3, bucket, "k") == b"x" * 10
    refused = await UploadJournal.open(tmp_path, "http://x:1", "no-such-bucket-here")
    with pytest.raises(Exception, match="NoSuchBucket"):
        await S3Store(conn, "no-such-bucket-here", journal=refused).create_multipart("k", {})
    assert list(tmp_path.glob("uploads/*/*.json")) == []  # a refused creation leaves nothing
    await journal.close()
    await refused.close()


async def test_sweep_leaves_live_mounts_alone_and_aborts_dead_ones(
    store: Any, s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two mounts share a cache directory: the second's sweep neither aborts nor lists as
    foreign the first's upload while it lives; once it is gone (lock released, entry left),
    a third mount's sweep aborts it."""
    conn, bucket = store
    first = await UploadJournal.open(tmp_path, "http://x:1", bucket)
    upload_id = await S3Store(conn, bucket, journal=first).create_multipart("a/b", {})
    second = await UploadJournal.open(tmp_path, "http://x:1", bucket)
    await second.sweep(S3Store(conn, bucket, journal=second), "")
    assert uploads(s3, bucket) == {upload_id: "a/b"}
    assert upload_id not in caplog.text
    await first.close()  # a dead mount: its lock is free, its entry stays
    third = await UploadJournal.open(tmp_path, "http://x:1", bucket)
    await third.sweep(S3Store(conn, bucket, journal=third), "a/")
    assert uploads(s3, bucket) == {}
    assert f"'a/b' left by an earlier mount: upload id {upload_id}" in caplog.text
    for journal in (second, third):
        await journal.close()
    assert list(tmp_path.glob("uploads/*")) == []


async def test_sweep_failures_are_warnings(
    store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bucket that cannot be listed (here: gone) only costs a warning."""
    conn, _ = store
    journal = await UploadJournal.open(tmp_path, "http://x:1", "gone-bucket-zz")
    await journal.sweep(S3Store(conn, "gone-bucket-zz", journal=journal), "")
    assert "cannot list the incomplete multipart uploads" in caplog.text
    await journal.close()


def test_unusable_cache_directory_means_no_journal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    journal = trio.run(UploadJournal.open, blocker, "http://x:1", "b")
    assert journal.directory is None
    assert trio.run(journal.create, "k", _fixed_id) == "id"  # uploads still work


async def _fixed_id() -> str:
    return "id"


KEYS = [
    "a" * 1024,
    "d/" + "é" * 500,
    "x/../../etc/passwd",
    "line\nbreak\x01\x7f/..",
    ".hidden",
    "trailing/",
    "a" * 1024,  # the same key again: same copy
]


async def test_recovery_names_are_safe_and_one_per_key(tmp_path: Path) -> None:
    folder = RecoveryFolder(tmp_path / "recovery", "http://h:1", "bkt")
    paths: dict[str, Path] = {}
    for number, key in enumerate(KEYS):
        buffer = await WriteBuffer.create(None, MemoryPool())
        await buffer.pwrite(0, key.encode() + bytes([number]))
        copy = await folder.keep(buffer, key, key, (number, 1), RuntimeError("refused"))
        buffer.close()
        assert copy is not None
        assert copy.parent == tmp_path / "recovery"
        assert not copy.name.startswith(".") and len(copy.name.encode()) < 100
        assert all(c.isalnum() or c in "._-" for c in copy.name), copy.name
        assert copy.read_bytes() == key.encode() + bytes([number])
        paths[key] = copy
    assert len(set(paths.values())) == len(set(KEYS))
    assert len(list((tmp_path / "recovery").iterdir())) == 2 * len(set(KEYS))
    sidecars = {json.loads(p.read_text())["key"] for p in tmp_path.glob("recovery/*.json")}
    assert sidecars == set(KEYS)
    await folder.uploaded("a" * 1024)
    assert not paths["a" * 1024].exists()
    # another mount's copy of the same key is never overwritten, even under the same name
    mine = paths[".hidden"]
    when = datetime.datetime.strptime(mine.name[:16], "%Y%m%dT%H%M%SZ")
    assert mine.name == safe_name("http://h:1", "bkt", ".hidden", when)
    other = RecoveryFolder(tmp_path / "recovery", "http://h:1", "bkt")
    buffer = await WriteBuffer.create(None, MemoryPool())
    await buffer.pwrite(0, b"other")
    with pytest.MonkeyPatch.context() as patch:  # the same second as the first copy
        patch.setattr(recovery_mod, "safe_name", lambda *args: mine.name)
        theirs = await other.keep(buffer, ".hidden", ".hidden", (1, 1), RuntimeError("x"))
    buffer.close()
    assert theirs == mine.with_name(mine.name + "-2") and theirs.read_bytes() == b"other"
    assert mine.read_bytes() == b".hidden" + bytes([KEYS.index(".hidden")])


async def test_copy_of_a_5_tib_sparse_file_keeps_its_holes(tmp_path: Path) -> None:
    """A 5 TiB buffer holding 8 bytes of data: the copy is 5 TiB long, takes a few blocks
    and is written at once (the old copy wrote every zero, until the disk was full)."""
    folder = RecoveryFolder(tmp_path / "recovery", "http://h:1", "bkt", tmp_path / "fallback")
    buffer = await WriteBuffer.create(str(tmp_path))
    size = 5 << 40
    await buffer.pwrite(0, b"head")
    await buffer.truncate(size)
    await buffer.pwrite(size - 4, b"tail")
    started = time.monotonic()
    copy = await folder.keep(buffer, "huge.img", "huge.img", (1, 1), RuntimeError("refused"))
    buffer.close()
    assert copy is not None and copy.parent == tmp_path / "recovery"
    assert time.monotonic() - started < 10
    assert copy.stat().st_size == size and copy.stat().st_blocks * 512 <= 1 << 20
    with open(copy, "rb") as f:
        assert f.read(6) == b"head\0\0"
        f.seek(size - 6)
        assert f.read() == b"\0\0tail"
    assert not (tmp_path / "fallback").exists()


async def test_copy_goes_to_the_fallback_and_the_log_says_only_the_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The recovery folder cannot be made (a file is in the way): the copy goes to the
    fallback, and the log names it and says why not the first; with the fallback unusable
    too, no copy, and the log says the data is only in the write buffer."""
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"")
    data = payload(21, 2 * MiB)
    buffer = await WriteBuffer.create(str(tmp_path))
    await buffer.pwrite(0, data)
    folder = RecoveryFolder(blocker / "recovery", "http://h:1", "bkt", tmp_path / "state" / "r")
    copy = await folder.keep(buffer, "k", "p", (1, 1), RuntimeError("refused"))
    assert copy is not None and copy.parent == tmp_path / "state" / "r"
    assert copy.read_bytes() == data and folder.copy_of("k", (1, 1)) == copy
    assert f"its data is kept in {copy} (not in {blocker / 'recovery'}: " in caplog.text
    caplog.clear()
    nowhere = RecoveryFolder(blocker / "recovery", "http://h:1", "bkt", blocker / "state")
    assert await nowhere.keep(buffer, "k", "p", (1, 1), RuntimeError("refused")) is None
    buffer.close()
    assert nowhere.copy_of("k", (1, 1)) is None
    assert "no recovery copy could be written" in caplog.text
    assert f"its {len(data)} bytes are only in this mount's write buffer" in caplog.text
    assert "kept in" not in caplog.text
