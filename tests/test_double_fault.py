"""Nothing lost to a double fault: the upload fails AND the disk of the cache directory is full.

Real mounts (:mod:`tests.support.mount`) over moto through
:class:`tests.test_nothing_lost.GateProxy` (down: the server is unreachable), each with
``cache_dir=`` on a small tmpfs of its own (``mount -t tmpfs -o size=…``, unmounted in
``finally``) that holds the write buffers and the
recovery folder, and the fallback folder (``$XDG_STATE_HOME/s3fmfs/recovery``) under the test's
own directory, or on that same tmpfs when there must be no room anywhere.

- A sparse 1 GiB file (4 bytes, then ``ftruncate``) gets its copy on a 100 MB tmpfs: holes kept.
- A dense 3 MB file, written by ``dd``, on a 5 MB tmpfs: the copy goes to the fallback folder,
  and the log and the final line name it (never a place that does not hold the data).
- With no room anywhere, SIGTERM does not end the daemon: it unmounts, says every
  ``hold_report`` seconds what it holds, and exits once the server is back and the upload
  went through, with the object complete.
- Unfinished ``.NAME.tmp`` copies (a mount killed mid-copy) are removed by the next mount,
  unless a live process holds them locked.
- ``cp`` of 50 MB into a mount whose 5 MB cache fills is ENOSPC at ``write()``, and the object
  and ``ls -l`` hold exactly the bytes written successfully (also for Python's ``os.write``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import daemon_pid, is_mounted, log_tail, mounted
from tests.support.servers import S3Server
from tests.test_nothing_lost import (
    GateProxy,
    MiB,
    alive,
    body,
    errno_of,
    killed_at_the_end,
    log_text,
    missing,
    payload,
    poll,
)
from tests.test_nothing_lost import bucket as bucket  # the fixtures of test_nothing_lost
from tests.test_nothing_lost import proxy as proxy

pytestmark = [
    pytest.mark.system,
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or os.geteuid() != 0,
        reason="needs /dev/fuse and root (tmpfs mounts)",
    ),
]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` for the block, unmounted whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fallback folder's parent, under the test's directory (the mount inherits it)."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home / "s3fmfs" / "recovery"


def copies_in(folder: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """A recovery folder's copies: key → (data file, sidecar)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for sidecar in sorted(folder.glob("*.json")) if folder.exists() else []:
        info = json.loads(sidecar.read_text())
        found[info["key"]] = (folder / info["data"], info)
    return found


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def final_line(mnt: Path) -> str:
    return log_text(mnt).strip().splitlines()[-1]


NO_CLAIM = "until the mount ends"  # what the old log promised, with the data then lost


def test_sparse_file_copy_keeps_its_holes(
    proxy: GateProxy,
    s3: Any,
    bucket: str,
    state: Path,
    tmp_path: Path,
) -> None:
    """4 bytes, then ``ftruncate`` to 1 GiB, with the server away and a 100 MB cache: close()
    is EIO and the copy is there, 1 GiB long, with its holes (a few blocks on disk)."""
    with (
        tmpfs(tmp_path / "cache", "100m") as cache,
        killed_at_the_end("1"),
        mounted(
            proxy.server, bucket, options=[f"cache_dir={cache}", "timeout=2"], tmp_path=tmp_path
        ) as mnt,
    ):
        fd = os.open(mnt / "sparse.img", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"head")
            os.ftruncate(fd, 1 << 30)
            proxy.down()
        finally:
            assert errno_of(lambda: os.close(fd)) == errno.EIO
        copies = copies_in(cache / "recovery")
        assert list(copies) == ["sparse.img"], log_tail(mnt)
        copy, info = copies["sparse.img"]
        assert info["size"] == 1 << 30 and copy.stat().st_size == 1 << 30
        assert copy.stat().st_blocks * 512 <= 1 << 20  # holes kept: not a dense GiB
        with open(copy, "rb") as f:
            assert f.read(8) == b"head\0\0\0\0"
            f.seek((1 << 30) - 4)
            assert f.read() == b"\0" * 4
        assert f"its data is kept in {copy}" in log_text(mnt)
        assert names(state) == []  # the fallback was not needed
    assert [n for n in names(cache / "recovery") if n.endswith(".tmp")] == []
    assert missing(s3, bucket, "sparse.img")
    last = final_line(tmp_path / "mnt")
    assert f"'sparse.img' in {copy}" in last and "lost: none" in last


def test_dense_copy_goes_to_the_fallback_when_the_cache_is_full(
    proxy: GateProxy,
    s3: Any,
    bucket: str,
    state: Path,
    tmp_path: Path,
) -> None:
    """3 MB written by ``dd`` into a mount whose 5 MB cache holds the buffer: no room there
    for the copy, so it goes to the fallback folder, whole; the cache keeps no ``.tmp``; the
    log and the final line name the copy where it is."""
    data = payload(11, 3 * MiB + 7)
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    with (
        tmpfs(tmp_path / "cache", "5m") as cache,
        killed_at_the_end("1"),
        mounted(
            proxy.server, bucket, options=[f"cache_dir={cache}", "timeout=2"], tmp_path=tmp_path
        ) as mnt,
    ):
        # dd copies from a pipe: the server goes away once every byte is written, before
        # dd closes its output
        dd = subprocess.Popen(
            ["dd", f"if={fifo}", f"of={mnt / 'dense.bin'}", "bs=1M"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with open(fifo, "wb") as feed:
                feed.write(data)
                feed.flush()
                assert poll(lambda: (mnt / "dense.bin").stat().st_size == len(data), 30)
                proxy.down()
            _, err = dd.communicate(timeout=60)
        finally:
            if dd.poll() is None:
                dd.kill()
                dd.wait()
        assert dd.returncode != 0 and "Input/output error" in err, err
        copies = copies_in(state)
        assert list(copies) == ["dense.bin"], log_tail(mnt)
        copy, info = copies["dense.bin"]
        assert copy.read_bytes() == data and info["size"] == len(data)
        assert names(cache / "recovery") == []  # no copy, no leftover .tmp
        log = log_text(mnt)
        assert f"its data is kept in {copy} (not in {cache / 'recovery'}: " in log
        assert NO_CLAIM not in log
        os.kill(daemon_pid(mnt), signal.SIGTERM)
        assert poll(lambda: not alive(daemon_pid(mnt)), 30), log_tail(mnt)
    assert missing(s3, bucket, "dense.bin") or body(s3, bucket, "dense.bin") == b""  # created
    last = final_line(tmp_path / "mnt")
    assert "1 file(s) could not be uploaded before unmounting" in last
    assert f"'dense.bin' in {copy}" in last and "lost: none" in last
    assert "not exiting" not in log_text(tmp_path / "mnt")  # the copy was safe: no waiting


def test_with_no_room_anywhere_sigterm_waits_until_the_upload_succeeds(
    proxy: GateProxy,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback folder on the same full tmpfs: no copy can be made anywhere. SIGTERM
    unmounts, but the daemon stays, saying what it holds; once the server is back the
    upload goes through, the daemon exits 0 and the object is complete."""
    data = payload(12, 3 * MiB + 5)
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(tmpfs(tmp_path / "cache", "5m"))
        monkeypatch.setenv("XDG_STATE_HOME", str(cache / "state"))  # the fallback: full too
        options = [f"cache_dir={cache}", "timeout=2", "hold_report=0.5"]
        mnt = stack.enter_context(mounted(proxy.server, bucket, options=options, tmp_path=tmp_path))
        pid = daemon_pid(mnt)
        try:
            fd = os.open(mnt / "held.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                proxy.down()
            finally:
                assert errno_of(lambda: os.close(fd)) == errno.EIO
            log = log_text(mnt)
            assert "no recovery copy could be written" in log, log_tail(mnt)
            assert NO_CLAIM not in log
            os.kill(pid, signal.SIGTERM)
            assert poll(lambda: log_text(mnt).count("not exiting: 1 file(s)") >= 3, 30), log_tail(
                mnt
            )
            assert alive(pid), "s3fmfs exited holding data it could not save"
            assert not is_mounted(mnt)  # unmounted: nobody hangs on it meanwhile
            os.kill(pid, signal.SIGTERM)  # a second SIGTERM changes nothing
            time.sleep(1)
            assert alive(pid)
            holding = log_text(mnt).rsplit("not exiting: ", 1)[1].splitlines()[0]
            assert f"'held.bin' ({len(data)} bytes)" in holding and bucket in holding
            assert str(cache / "recovery") in holding
            assert missing(s3, bucket, "held.bin")
        finally:
            proxy.up()
        assert poll(lambda: not alive(pid), 60), log_tail(mnt)
    # mounted() asserted exit status 0
    assert body(s3, bucket, "held.bin") == data
    assert final_line(tmp_path / "mnt").endswith("uploaded at the end: 'held.bin'")


def test_unfinished_copies_are_removed_at_the_next_mount(
    moto: S3Server,
    bucket: str,
    state: Path,
    tmp_path: Path,
) -> None:
    """``.NAME.tmp`` files in both recovery folders (a mount killed mid-copy) are removed and
    logged by the next mount; one a live process holds locked (a copy being written) stays,
    and so do whole copies."""
    with tmpfs(tmp_path / "cache", "5m") as cache:
        folder = cache / "recovery"
        folder.mkdir()
        state.mkdir(parents=True)
        left = folder / ".20260101T000000Z-0123456789abcdef-big.bin.tmp"
        left.write_bytes(b"x" * MiB)
        fallback_left = state / ".20260101T000000Z-0123456789abcdef-big.bin.json.tmp"
        fallback_left.write_bytes(b"{")
        busy = folder / ".20260101T000001Z-fedcba9876543210-busy.bin.tmp"
        whole = folder / "20260101T000000Z-0123456789abcdef-kept.bin"
        whole.write_bytes(b"kept")
        with open(busy, "wb") as locked:
            fcntl.flock(locked, fcntl.LOCK_EX)
            with mounted(moto, bucket, options=[f"cache_dir={cache}"], tmp_path=tmp_path) as mnt:
                log = log_text(mnt)
                assert not left.exists() and not fallback_left.exists()
                assert busy.exists() and whole.read_bytes() == b"kept"
                assert f"removed {left} ({MiB} bytes): an unfinished recovery copy" in log
                assert f"removed {fallback_left} (1 bytes)" in log
                assert str(busy) not in log


def test_cp_into_a_full_cache_is_enospc_and_the_object_holds_what_was_written(
    proxy: GateProxy,
    s3: Any,
    bucket: str,
    state: Path,
    tmp_path: Path,
) -> None:
    """``cp`` of 50 MB into a mount whose 5 MB cache fills: ``cp`` fails with ENOSPC, and the
    object and ``ls -l`` agree, holding a prefix of the source. The same with ``os.write``
    of 1 MiB chunks, where the bytes written successfully are known: exactly those."""
    data = payload(13, 50 * MiB)
    source = tmp_path / "big.src"
    source.write_bytes(data)
    with (
        tmpfs(tmp_path / "cache", "5m") as cache,
        mounted(proxy.server, bucket, options=[f"cache_dir={cache}"], tmp_path=tmp_path) as mnt,
    ):
        cp = subprocess.run(
            ["cp", str(source), str(mnt / "cp.bin")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cp.returncode != 0 and "No space left on device" in cp.stderr, cp.stderr
        size = (mnt / "cp.bin").stat().st_size
        listed = subprocess.run(
            ["ls", "-l", str(mnt / "cp.bin")], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listed[4]) == size
        stored = body(s3, bucket, "cp.bin")
        assert 0 < len(stored) == size < len(data)
        assert stored == data[:size]

        written = 0
        fd = os.open(mnt / "py.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as info:
                while written < len(data):
                    written += os.write(fd, data[written : written + MiB])
            assert info.value.errno == errno.ENOSPC
        finally:
            os.close(fd)  # uploads what was written
        assert 0 < written < len(data)
        assert (mnt / "py.bin").stat().st_size == written
        assert body(s3, bucket, "py.bin") == data[:written]
    assert names(state) == []
