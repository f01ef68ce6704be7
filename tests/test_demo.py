"""``s3fmfs demo``, run as a user runs it: a subprocess, stopped with SIGINT (Ctrl-C).

What it proves: the demo starts moto on loopback, seeds the bucket, mounts it on the given
mountpoint (created when missing), serves reads and writes, and on SIGINT uploads, unmounts,
stops the server (nothing listens on its port any more), removes the mountpoint it created and
exits 0 without a traceback. A non-empty mountpoint is refused with one line and status 2.
Nothing is left behind: the ``finally`` blocks unmount and kill whatever is still there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from s3fmfs.commands.demo_server import moto_available
from tests.support.mount import is_mounted

pytestmark = [pytest.mark.system, pytest.mark.mounted]

needs_moto = pytest.mark.skipif(not moto_available(), reason="moto[server] not installed")

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
ENDPOINT = re.compile(r"S3 server at (http://127\.0\.0\.1:(\d+))")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s3fmfs.commands.demo", *args]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (moto's server, before the demo is reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def _demo(mnt: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The demo mounting ``mnt``, output to ``log``; unmounted and killed whatever happens."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _command(str(mnt)),
            cwd=mnt.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    servers: list[int] = []
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (is_mounted(mnt) and os.path.ismount(mnt)):
            if proc.poll() is not None:
                pytest.fail(f"demo exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"demo did not mount in {MOUNT_TIMEOUT}s:\n{log.read_text()}")
            time.sleep(0.05)
        servers = _children(proc.pid)
        yield proc
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in servers:  # moto runs in a session of its own; only if the demo left it
            with suppress(OSError):
                if b"moto.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.killpg(pid, signal.SIGKILL)


@needs_moto
def test_demo_mounts_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    mnt = tmp_path / "demo mnt"  # missing: the demo creates it (and removes it at the end)
    log = tmp_path / "demo.log"
    with _demo(mnt, log) as proc:
        names = set(os.listdir(mnt))
        assert {"README.txt", "hello.sh", "photos", "docs", "inbox", "latest.png"} <= names
        assert "Café menu – été 2024.txt" in names
        assert "s3fmfs demo" in (mnt / "README.txt").read_text()
        assert (mnt / "photos" / "red.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert os.readlink(mnt / "latest.png") == "photos/blue.png"
        assert os.stat(mnt / "hello.sh").st_mode & 0o777 == 0o755
        assert os.stat(mnt / "docs" / "guide" / "private.txt").st_mode & 0o777 == 0o600
        assert (mnt / "docs" / "guide" / "getting-started.md").read_text().startswith("# ")
        run = subprocess.run([str(mnt / "hello.sh")], capture_output=True, text=True, check=True)
        assert run.stdout == "hello from an S3 object\n"

        (mnt / "new.txt").write_text("hi\n")
        assert (mnt / "new.txt").read_text() == "hi\n"
        (mnt / "inbox" / "2024").mkdir()
        (mnt / "new.txt").rename(mnt / "inbox" / "2024" / "new.txt")
        assert os.listdir(mnt / "inbox" / "2024") == ["new.txt"]

        output = log.read_text()
        match = ENDPOINT.search(output)
        assert match, output
        port = int(match.group(2))
        assert _listening(port)
        assert "Press Ctrl-C" in output
        assert f"endpoint={match.group(1)}" in output

        proc.send_signal(signal.SIGINT)
        status = proc.wait(EXIT_TIMEOUT)

    output = log.read_text()
    assert status == 0, output
    assert "Traceback" not in output, output
    assert not is_mounted(mnt)
    assert not mnt.exists()  # created by the demo, removed by it
    assert not _listening(port), output


@needs_moto
def test_demo_keeps_an_existing_mountpoint(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "demo.log"
    with _demo(mnt, log) as proc:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(EXIT_TIMEOUT)
    output = log.read_text()
    assert status == 0, output
    assert "Traceback" not in output, output
    assert not is_mounted(mnt)
    assert mnt.is_dir()


@needs_moto
def test_demo_refuses_a_non_empty_mountpoint(tmp_path: Path) -> None:
    mnt = tmp_path / "full"
    mnt.mkdir()
    (mnt / "keep.txt").write_text("mine")
    done = subprocess.run(
        _command(str(mnt)), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not empty" in done.stderr, done.stderr
    assert (mnt / "keep.txt").read_text() == "mine"


@needs_moto
def test_demo_refuses_a_file_as_mountpoint(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    done = subprocess.run(
        _command(str(target)), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not a directory" in done.stderr, done.stderr


def test_demo_without_moto_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from s3fmfs.commands import demo

    monkeypatch.setattr(demo, "moto_available", lambda: False)
    assert demo.main([str(tmp_path / "mnt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == demo.NEEDS_MOTO + "\n"
    assert not (tmp_path / "mnt").exists()
