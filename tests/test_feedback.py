"""Feedback on long work: progress of a stop's uploads and of slow listings, ``-d`` request
lines, rotating log files, the request statistics and ``s3fmfs status``.

In-process tests first (the core over a ``MemStore`` on trio's mock clock, the client over
moto, the status server on a socket in ``tmp_path``), then mounted ones (s3fmfs in a
subprocess over moto, a slow uplink from :mod:`tests.support.throttle`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3fmfs.client import S3fmAuthConnection, S3fmError
from s3fmfs.client.stats import RequestStats, kind_of
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.service import logs
from s3fmfs.service.status import (
    ask,
    human_bytes,
    progress_line,
    serve_status,
    socket_path,
)
from tests.support.core import make_core
from tests.support.memstore import MemStore
from tests.support.mount import daemon_pid, daemons_of, mount_log, mounted, s3fmfs_command
from tests.support.servers import S3Server, unique_bucket
from tests.support.throttle import throttled

MiB = 1 << 20

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``setup_logging`` replaces the root logger's handlers: put them back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        for name, lvl in noisy.items():
            logging.getLogger(name).setLevel(lvl)


# --------------------------------------------------------------------------- words


def test_progress_line_and_sizes_read_well() -> None:
    assert human_bytes(12) == "12 bytes"
    assert human_bytes(300 << 10) == "300 KiB"
    assert human_bytes(1536 * MiB) == "1.5 GiB"
    assert progress_line(3, 512 * MiB, 0) == "uploading 3 files, 512 MiB: 0%"
    assert progress_line(1, 200 * MiB, 50 * MiB) == "uploading 1 file, 200 MiB: 25% (50.0 MiB sent)"
    assert progress_line(2, 10, 10) == "uploading 2 files, 10 bytes: 100%"


def test_request_kinds() -> None:
    assert kind_of("HEAD", "k", (), {}) == "HEAD"
    assert kind_of("GET", "k", (), {}) == "GET"
    assert kind_of("GET", "k", (), {"range": "bytes=0-9"}) == "GET range"
    assert kind_of("GET", "", (("list-type", "2"), ("prefix", "d/")), {}) == "LIST"
    assert kind_of("PUT", "k", (), {}) == "PUT"
    assert kind_of("PUT", "k", (("partNumber", "1"), ("uploadId", "u")), {}) == "PUT part"
    assert kind_of("PUT", "k", (), {"x-amz-copy-source": "b/k"}) == "COPY"
    assert kind_of("POST", "k", (("uploads", None),), {}) == "POST create upload"
    assert kind_of("POST", "k", (("uploadId", "u"),), {}) == "POST complete upload"
    assert kind_of("POST", "", (("delete", None),), {}) == "POST delete"
    assert kind_of("DELETE", "k", (), {}) == "DELETE"
    stats = RequestStats()
    stats.sent("HEAD", "k", (), {}, "404")
    stats.sent("HEAD", "k", (), {})
    stats.retried()
    assert stats.as_dict() == {
        "total": 2,
        "by_kind": {"HEAD": 2},
        "errors": {"404": 1},
        "retries": 1,
    }


# --------------------------------------------------------------------------- logs


def test_debug_lines_carry_the_time(restore_logging: None) -> None:
    where = logs.setup_logging(logging.DEBUG)
    assert where == "stderr"
    [handler] = logging.getLogger().handlers
    record = logging.LogRecord("s3fmfs.client", logging.DEBUG, "", 0, "GET /b/ -> 200", (), None)
    line = handler.format(record)
    assert re.fullmatch(r"s3fmfs: \d\d:\d\d:\d\d\.\d{3} DEBUG s3fmfs\.client: GET /b/ -> 200", line)
    logs.setup_logging(logging.INFO)  # a subcommand at INFO: no time
    [handler] = logging.getLogger().handlers
    assert handler.format(record) == "s3fmfs: DEBUG s3fmfs.client: GET /b/ -> 200"
    logs.setup_logging(logging.INFO, timestamps=True)  # a mount: the time
    [handler] = logging.getLogger().handlers
    assert re.match(r"s3fmfs: \d\d:\d\d:\d\d\.\d{3} ", handler.format(record))


def test_log_file_rotates_bounded(
    restore_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "ROTATE_BYTES", 4000)
    path = tmp_path / "logs" / "s3fmfs.log"
    assert logs.setup_logging(logging.INFO, daemon=True, log_file=str(path)) == str(path)
    log = logging.getLogger("s3fmfs")
    for i in range(400):
        log.info("line %04d %s", i, "x" * 60)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["s3fmfs.log", "s3fmfs.log.1", "s3fmfs.log.2", "s3fmfs.log.3"]
    assert all((path.parent / n).stat().st_size <= 4000 for n in names)
    assert "line 0399" in path.read_text()  # the newest in the file itself
    assert "line 0000" not in "".join((path.parent / n).read_text() for n in names)
    # the fallback file (no log_file=, no syslog) rotates the same way
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    cache = tmp_path / "cache"
    where = logs.setup_logging(logging.INFO, daemon=True, cache_dir=str(cache))
    assert where == str(logs.fallback_log_file(str(cache)))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert handler.maxBytes == 4000 and handler.backupCount == logs.ROTATE_KEEP
    assert logs.log_target() == where


async def test_debug_request_lines_show_the_query_and_stats_count(
    conn: S3fmAuthConnection, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = unique_bucket("fb")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a", Body=b"a")
    before = conn.stats.as_dict()
    with caplog.at_level(logging.DEBUG, logger="s3fmfs.client"):
        async for _ in conn.list_pages(bucket, "dir/", "/"):
            pass
        with pytest.raises(S3fmError):
            await conn.head(bucket, "missing")
    lines = [r.getMessage() for r in caplog.records if r.name == "s3fmfs.client"]
    listing = [line for line in lines if line.startswith(f"GET /{bucket}/?")]
    assert listing, lines
    assert re.fullmatch(
        rf"GET /{bucket}/\?\S*prefix=dir%2F\S* -> 200 \(\d+\.\d{{3}}s\)", listing[0]
    ), listing
    assert "delimiter=%2F" in listing[0] and "list-type=2" in listing[0]
    assert any(re.match(rf"HEAD /{bucket}/missing -> 404 ", line) for line in lines), lines
    after = conn.stats.as_dict()
    assert after["by_kind"].get("LIST", 0) - before["by_kind"].get("LIST", 0) == 1
    assert after["by_kind"].get("HEAD", 0) - before["by_kind"].get("HEAD", 0) == 1
    assert after["errors"].get("404", 0) - before["errors"].get("404", 0) == 1


# --------------------------------------------------------------------------- listing progress


async def test_a_slow_listing_logs_its_progress(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemStore(page_size=100)
    for i in range(1000):
        store.put_object(f"big/{i:05d}", b"x")
    for i in range(50):
        store.put_object(f"small/{i:05d}", b"x")
    core = make_core(store)
    store.delay("list", 1.0)  # ten pages: ten seconds
    with caplog.at_level(logging.INFO, logger="s3fmfs.fs"):
        assert len(await core.listings.list_dir("big")) == 1000
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listing ")]
    # after 3 s (3 pages), then every 5 s (8 pages), then the total
    assert lines == [
        "listing 'big/': 300 entries so far",
        "listing 'big/': 800 entries so far",
        "listing 'big/': 1,000 entries in 10.0s",
    ], lines
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="s3fmfs.fs"):
        assert len(await core.listings.list_dir("small")) == 50  # one page, 1 s: silent
    assert not [r for r in caplog.records if r.getMessage().startswith("listing ")]


# --------------------------------------------------------------------------- upload progress


async def _write_file(core: FsCore, name: str, size: int) -> int:
    fh, _ino, _attr = await core.create(ROOT_INODE, name.encode(), 0o644, os.O_WRONLY, 0, 0)
    chunk = b"z" * MiB
    for offset in range(0, size, MiB):
        await core.write(fh, offset, chunk[: min(MiB, size - offset)])
    return fh


async def test_upload_progress_counts_files_bytes_and_saves(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    store = MemStore()
    core = make_core(store, tmpdir=str(tmp_path))
    fh_a = await _write_file(core, "a", 3 * MiB)
    fh_b = await _write_file(core, "b", 2 * MiB)
    progress = core.upload_progress()
    assert {f.path for f in progress.files} == {"a", "b"}
    assert (progress.bytes_total, progress.bytes_done, progress.percent) == (5 * MiB, 0, 0)
    nodes = core.unsaved()
    store.delay("put", 10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.flush, fh_a)
        await trio.sleep(1)
        # a's save is under way: counted in the uploader
        assert set(core.uploader.sending) == {core.inodes.by_path["a"].ino}
        assert core.upload_progress(nodes).bytes_total == 5 * MiB
    # a is saved: counted whole among the nodes of the stop, and no more pending
    after = core.upload_progress(nodes)
    assert (after.bytes_done, after.percent) == (3 * MiB, 60)
    assert [f.path for f in core.upload_progress().files] == ["b"]
    await core.flush(fh_b)
    assert core.upload_progress(nodes).percent == 100 and not core.upload_progress().files
    assert core.uploader.sending == {}
    for fh in (fh_a, fh_b):
        await core.release(fh)


def test_sent_counts_the_bodies_in_flight() -> None:
    import io

    from s3fmfs.fs.upload import Sent

    sent = Sent()
    body = io.BytesIO(b"x" * 100)
    token = sent.begin(body)
    body.read(40)
    assert sent.bytes == 40
    other = sent.begin(b"bytes have no position")
    assert sent.bytes == 40
    sent.end(token, 100, ok=True)
    sent.end(other, 22, ok=False)  # a failed request leaves nothing counted
    assert sent.bytes == 100


# --------------------------------------------------------------------------- status server


async def test_status_socket_answers_is_private_and_goes_away(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    path = socket_path("/some/where/mnt", directory)
    assert path.parent == directory and path.name.startswith("some-where-mnt-")
    asked = 0

    def report() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"asked": asked}

    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_status, path, report)
        assert served == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert await trio.to_thread.run_sync(ask, path) == {"asked": 1}
        assert await trio.to_thread.run_sync(ask, path) == {"asked": 2}
        system_python = shutil.which("python3", path="/usr/bin:/bin")
        if os.geteuid() == 0 and system_python:  # another user cannot even reach it
            other = await trio.run_process(
                [
                    system_python,
                    "-c",
                    "import socket,sys\n"
                    "s=socket.socket(socket.AF_UNIX)\n"
                    "try: s.connect(sys.argv[1])\n"
                    "except PermissionError: sys.exit(3)\n",
                    str(path),
                ],
                user=65534,
                check=False,
            )
            assert other.returncode == 3
        # a second server for the same mount point refuses to take a live one's socket
        assert await nursery.start(serve_status, path, report) is None
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_status_socket_replaces_a_dead_mounts_socket(tmp_path: Path) -> None:
    import socket

    path = socket_path("/mnt/x", tmp_path / "run")
    path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_status, path, lambda: {"ok": True}) == path
        assert await trio.to_thread.run_sync(ask, path) == {"ok": True}
        nursery.cancel_scope.cancel()


async def test_status_socket_refuses_an_open_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_status, open_dir / "m.sock", dict) is None
    assert "open to group or others" in caplog.text


def test_status_command_without_a_mount_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*s3fmfs_command(), "status", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s3fmfs: no s3fmfs mount of yours answers")


# --------------------------------------------------------------------------- mounted


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("fb")
    s3.create_bucket(Bucket=name)
    return name


def status_of(mnt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*s3fmfs_command(), "status", str(mnt), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_fuse
def test_status_of_a_mount(moto: S3Server, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"hello")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert (mnt / "dir" / "a.txt").read_bytes() == b"hello"
        assert (mnt / "dir" / "a.txt").read_bytes() == b"hello"
        os.listdir(mnt / "dir")
        path = socket_path(str(mnt))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        done = status_of(mnt, "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["mountpoint"] == str(mnt) and answer["bucket"] == bucket
        assert answer["pid"] == daemon_pid(mnt)
        assert answer["uploads"]["files"] == 0
        requests = answer["requests"]
        assert requests["total"] >= 2 and requests["by_kind"].get("LIST", 0) >= 1, requests
        assert requests["by_kind"].get("GET", 0) + requests["by_kind"].get("HEAD", 0) >= 1
        assert set(answer["caches"]) >= {"attributes", "listings", "negative", "bodies"}
        text = status_of(mnt)
        assert text.returncode == 0, text.stderr
        assert f"{mnt}: {bucket} (pid {daemon_pid(mnt)})" in text.stdout
        assert "pending uploads: none" in text.stdout
        assert re.search(r"^  LIST +\d+$", text.stdout, re.M), text.stdout
        assert "log: stderr" in text.stdout
    assert not path.exists()  # removed at exit


#: Writes SIZE bytes into an existing file and keeps it open until its stdin closes: the
#: test process itself must hold no descriptor of the mount while it starts commands (a
#: forked child's close of it would wait for a mount no longer served).
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
chunk = b"b" * (1 << 20)
for offset in range(0, int(sys.argv[2]), len(chunk)):
    os.pwrite(fd, chunk, offset)
print("written", flush=True)
sys.stdin.read()
try:
    os.close(fd)
except OSError:
    pass
"""


@needs_fuse
def test_sigterm_with_a_pending_upload_logs_its_progress(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    size = 12 * MiB
    with throttled(moto, 2 * MiB) as slow, mounted(slow, bucket, tmp_path=tmp_path) as mnt:
        (mnt / "big").write_bytes(b"a")  # saved (small): the next open writes no stream
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(mnt / "big"), str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "written\n"
            os.kill(daemon_pid(mnt), signal.SIGTERM)  # stops with the file open and unsaved
            answer: dict[str, Any] = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the status socket answers during the stop
                done = status_of(mnt, "--json")
                if done.returncode == 0:
                    answer = json.loads(done.stdout)
                    if answer["uploads"]["files"]:
                        break
                time.sleep(0.2)
            assert answer and answer["uploads"]["files"] == 1, answer
            assert answer["uploads"]["bytes_total"] == size
            assert answer["uploads"]["pending"][0]["path"] == "big"
        finally:
            assert writer.stdin is not None
            writer.stdin.close()
            writer.wait(60)
    text = mount_log(mnt).read_text()
    assert "SIGTERM: unmounting" in text
    percents = [int(p) for p in re.findall(r"uploading 1 file, 12\.0 MiB: (\d+)%", text)]
    assert percents[0] == 0, text[-3000:]
    assert any(0 < p < 100 for p in percents), text[-3000:]  # in between, with bytes sent
    assert percents == sorted(percents)
    assert re.search(r"uploaded 1 of 1 file\(s\), 12\.0 MiB of 12\.0 MiB, in \d+\.\ds", text)
    assert re.search(r"s3fmfs: \d\d:\d\d:\d\d\.\d{3} INFO s3fmfs: uploading 1 file", text)
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == size


@needs_fuse
def test_a_daemon_says_where_its_log_is(moto: S3Server, bucket: str, tmp_path: Path) -> None:
    import pty

    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
    }
    opts = f"endpoint={moto.endpoint},log_file={log}"
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [*s3fmfs_command(), bucket, str(mnt), "-o", opts],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
            timeout=60,
            check=False,
        )
        os.close(slave)
        slave = -1
        said = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone or done
                break
            if not chunk:
                break
            said += chunk
            if b"\n" in said:
                break
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        pids = daemons_of(mnt)
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert done.returncode == 0 and done.stdout == b""
    line = said.decode().strip()
    assert line == f"s3fmfs: mounted on {mnt}; log: {log}; progress: s3fmfs status {mnt}", line
    first = log.read_text().splitlines()[0]
    where = re.escape(str(log))
    assert re.search(rf"INFO s3fmfs: s3fmfs \S+ \(pid \d+\): logging to {where}$", first), first
