"""Mount s3fmfs in a subprocess for end-to-end tests (pyfuse3's ``test/util.py`` pattern).

Invariants:
- :func:`mounted` runs ``s3fmfs BUCKET[:/PREFIX] MNT -o endpoint=URL,... -f`` in its own session,
  its output appended to ``<MNT>.log`` (:func:`mount_log`), never a pipe; the daemon gets
  SIGTERM if the test process dies (``PR_SET_PDEATHSIG``).
- The block runs only once the mountpoint is in ``/proc/self/mountinfo`` and
  ``os.path.ismount`` agrees; a daemon that exits or does not mount in time raises
  :class:`MountError` with the log's tail.
- On the way out, whatever happened: ``fusermount3 -u`` (retried while busy), ``umount -l`` as
  the last resort, the daemon waited for, then SIGTERM/SIGKILL if it lingers. No process and no
  mount is ever left behind. When the block itself succeeded, a clean unmount and exit status
  0 are asserted (:class:`MountError` otherwise).
- Remounting is mounting again with the same ``tmp_path``: same mountpoint, same log file
  (each start appends a header line)::

      with mounted(server, bucket, tmp_path=tmp_path) as mnt:
          (mnt / "f").write_bytes(b"x")
      with mounted(server, bucket, tmp_path=tmp_path) as mnt:  # remount
          assert (mnt / "f").read_bytes() == b"x"
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import S3Server

MOUNT_TIMEOUT = 20.0
UNMOUNT_TIMEOUT = 10.0
EXIT_TIMEOUT = 30.0
KILL_GRACE = 5.0

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


#: Mountpoint → pid of the daemon serving it, while :func:`mounted` runs.
_DAEMONS: dict[Path, int] = {}


class MountError(AssertionError):
    """The daemon did not mount, unmount or exit as it should; carries its log's tail."""


def s3fmfs_command() -> list[str]:
    """The console script next to this interpreter, else ``python -m s3fmfs.commands.cli``."""
    script = Path(sys.executable).parent / "s3fmfs"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "s3fmfs.commands.cli"]


def mount_log(mnt: Path) -> Path:
    """The daemon log of the mountpoint ``mnt`` (shared by remounts at the same place)."""
    return mnt.with_name(mnt.name + ".log")


def daemon_pid(mnt: Path) -> int:
    """The pid of the s3fmfs process serving ``mnt`` (inside a :func:`mounted` block)."""
    return _DAEMONS[mnt]


def log_tail(mnt: Path, limit: int = 4000) -> str:
    try:
        return mount_log(mnt).read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    out = bytearray()
    raw = field.encode()
    i = 0
    while i < len(raw):
        if raw[i] == ord("\\") and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def daemons_of(mnt: Path) -> list[int]:
    """Pids of live (not zombie) s3fmfs processes whose command line names ``mnt``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and str(mnt).encode() in cmdline and any(b"s3fmfs" in a for a in cmdline):
            found.append(int(entry.name))
    return found


def is_mounted(mnt: Path) -> bool:
    """Whether ``mnt`` (an absolute, resolved path) is a mount point; never touches the mount."""
    target = str(mnt)
    with open("/proc/self/mountinfo") as f:
        return any(_unescape(line.split()[4]) == target for line in f if line.strip())


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_mounted(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not is_mounted(mnt):
        if proc.poll() is not None:
            raise MountError(f"s3fmfs exited {proc.returncode} before mounting:\n{log_tail(mnt)}")
        if time.monotonic() > deadline:
            raise MountError(f"s3fmfs did not mount in {MOUNT_TIMEOUT}s:\n{log_tail(mnt)}")
        time.sleep(0.05)
    if not os.path.ismount(mnt):  # stats the root through the daemon: it answers
        raise MountError(f"{mnt} in mountinfo but not os.path.ismount:\n{log_tail(mnt)}")


def unmount(mnt: Path) -> list[str]:
    """Unmount ``mnt``; the problems met (empty: a clean ``fusermount3 -u``)."""
    if not is_mounted(mnt):
        return []
    deadline = time.monotonic() + UNMOUNT_TIMEOUT
    last = ""
    while True:
        try:
            done = subprocess.run(
                ["fusermount3", "-u", str(mnt)],
                capture_output=True,
                text=True,
                timeout=UNMOUNT_TIMEOUT,
                check=False,
            )
            last = done.stderr.strip() or f"status {done.returncode}"
            if done.returncode == 0 or not is_mounted(mnt):
                return []
        except subprocess.TimeoutExpired:
            last = "fusermount3 -u timed out"
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False, timeout=30)
    return [f"fusermount3 -u failed ({last}); lazily unmounted"]


def _stop(proc: subprocess.Popen[bytes]) -> list[str]:
    """Wait for the daemon to exit; terminate it if it lingers. The problems met."""
    try:
        code = proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        problems = [f"s3fmfs still running {EXIT_TIMEOUT}s after unmount: killed"]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(KILL_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        return problems
    return [] if code == 0 else [f"s3fmfs exited with status {code}"]


@contextmanager
def mounted(
    server: S3Server,
    bucket: str,
    *,
    prefix: str = "",
    options: Iterable[str] = (),
    tmp_path: Path,
    extra_args: Iterable[str] = (),
) -> Iterator[Path]:
    """Mount ``bucket`` (``:/prefix``) of ``server`` at ``tmp_path/mnt`` for the block."""
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir(exist_ok=True)
    if is_mounted(mnt):
        raise MountError(f"{mnt} is already mounted")
    source = f"{bucket}:/{prefix.strip('/')}" if prefix else bucket
    opts = ",".join([f"endpoint={server.endpoint}", *options])
    argv = [*s3fmfs_command(), source, str(mnt), "-o", opts, "-f", *extra_args]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AWS_SESSION_TOKEN", None)
    log = mount_log(mnt)
    with open(log, "ab") as out:
        out.write(f"==== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    body_done = False
    _DAEMONS[mnt] = proc.pid
    try:
        _wait_mounted(mnt, proc)
        yield mnt
        body_done = True
    finally:
        _DAEMONS.pop(mnt, None)
        problems = unmount(mnt)
        problems += _stop(proc)
        if is_mounted(mnt):  # the daemon died with the mount up, or the lazy unmount failed
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            problems.append("still mounted after the daemon exited")
        if body_done and problems:
            raise MountError("; ".join(problems) + f"\n{log_tail(mnt)}")
