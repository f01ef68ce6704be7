"""The mount's status socket: ``s3fmfs status MNT`` asks a live mount what it is doing.

Invariants:
- One Unix stream socket per mount, at :func:`socket_path` (named from the mount point's
  real path): in ``/run/s3fmfs/`` for root, else in ``$XDG_RUNTIME_DIR/s3fmfs/``, else in
  ``/tmp/s3fmfs-UID/``. The directory is made mode 0700 and must be ours and closed to group
  and others (else no socket is served: a warning, the mount goes on); the socket is mode 0600.
  A connection from another user (``SO_PEERCRED``; root excepted) is closed unanswered.
- Each connection gets one JSON document (``report()`` at that moment) and is closed; nothing
  is read from it. An answer that cannot be sent within ``SEND_TIMEOUT`` is dropped: a stuck
  client never holds the mount.
- The server runs in the mount's nursery (:func:`serve_status`); it removes its socket when it
  stops, and replaces one a dead mount left (nobody answers it), never a live mount's.
- Nothing here touches the filesystem's state: ``report`` reads counters, on the trio thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("s3fmfs")

SEND_TIMEOUT = 5.0
#: The longest answer a client reads (a mount with very many pending files is cut to fit).
MAX_ANSWER = 4 << 20


def socket_dir() -> Path:
    """Where this user's mounts put their status sockets."""
    uid = os.geteuid()
    if uid == 0:
        return Path("/run/s3fmfs")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "s3fmfs"
    return Path(tempfile.gettempdir()) / f"s3fmfs-{uid}"


def socket_path(mountpoint: str, directory: Path | None = None) -> Path:
    """The status socket of the mount at ``mountpoint``: readable, and short enough for a
    Unix socket address whatever the mount point (its tail and a hash of its real path).
    Only its parent is resolved: a ``stat`` of the mount itself would ask the mount (or
    wait forever, from the mount's own trio thread)."""
    absolute = os.path.abspath(mountpoint)
    parent, name = os.path.split(absolute)
    real = os.path.join(os.path.realpath(parent), name) if name else absolute
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", real).strip("-")[-40:] or "root"
    return (directory or socket_dir()) / f"{slug}-{digest}.sock"


def private_dir(path: Path) -> None:
    """Make ``path`` (mode 0700) or check it is ours and closed to others; OSError if not."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(f"{path} is not a directory of this user")
    if info.st_mode & 0o077:
        raise OSError(f"{path} is open to group or others (mode {info.st_mode & 0o777:o})")


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


async def _answer(conn: trio.socket.SocketType, report: Callable[[], dict[str, Any]]) -> None:
    with conn:
        uid = _peer_uid(conn)
        if uid is None or uid not in (os.geteuid(), 0):
            log.warning("status: refused a connection from uid %s", uid)
            return
        try:
            data = json.dumps(report(), indent=1).encode() + b"\n"
        except Exception as exc:  # a bug here must not stop the mount
            log.warning("status: no answer: %s", exc)
            data = json.dumps({"error": str(exc)}).encode() + b"\n"
        with trio.move_on_after(SEND_TIMEOUT):
            with contextlib.suppress(OSError):
                view = memoryview(data)
                while view:
                    sent = await conn.send(view)
                    view = view[sent:]


async def _live(path: Path) -> bool:
    """Whether a mount answers on the socket at ``path``."""
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(str(path))
        except OSError:
            return False
    return True


async def serve_status(
    path: Path,
    report: Callable[[], dict[str, Any]],
    *,
    task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``report()`` on the socket at ``path`` until cancelled; started with the path,
    or None when it cannot be served (logged as a warning)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private_dir(path.parent)
        if path.exists() or path.is_symlink():
            if await _live(path):
                raise OSError(f"{path} is served by another mount")
            path.unlink()
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        log.warning("no status socket (s3fmfs status will not answer): %s", exc)
        task_status.started(None)
        return
    ours = os.stat(path).st_ino
    try:
        task_status.started(path)
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(_answer, conn, report)
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == ours:
                path.unlink()


def ask(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The JSON document the mount at the socket ``path`` answers (blocking: the CLI's side).
    OSError when nobody answers, ValueError on a garbled answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        chunks: list[bytes] = []
        size = 0
        while chunk := client.recv(1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise ValueError("answer too long")
    answer = json.loads(b"".join(chunks))
    if not isinstance(answer, dict):
        raise ValueError("answer is not an object")
    return answer


# -- words for people --------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    """``512 MiB``, ``1.5 GiB``, ``300 KiB``, ``12 bytes``."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def progress_line(files: int, total: int, done: int) -> str:
    """``uploading 3 files, 512 MiB: 37% (190 MiB sent)``."""
    percent = 100 if total == 0 else min(100, done * 100 // total)
    noun = "file" if files == 1 else "files"
    sent = f" ({human_bytes(done)} sent)" if 0 < done < total else ""
    return f"uploading {files} {noun}, {human_bytes(total)}: {percent}%{sent}"
