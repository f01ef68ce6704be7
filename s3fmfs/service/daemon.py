"""Running in the background: fork, and tell the parent through a pipe whether it mounted.

Invariants:
- :func:`spawn` forks BEFORE any thread or trio run exists (the caller has only parsed
  arguments and read files). The child calls ``setsid``, changes to ``/``, reads stdin from
  ``/dev/null`` and writes stdout/stderr to ``/dev/null`` (or the log file), then runs the
  mount with a :class:`PipeReporter`.
- The child writes exactly one line to the pipe: ``ready WHERE`` (where its log goes), or
  ``error STATUS MESSAGE``, and closes it. The parent prints the message (one line on stderr)
  and exits with STATUS, or, on ``ready``, checks ``os.path.ismount`` and exits 0, saying
  where the log goes (and ``s3fmfs status``) in one line on stderr when that is a terminal:
  silent for scripts, fstab and systemd. A child that dies without a word is
  reported as one line too (its exit status, and where its log is).
- The child's exit status is its mount's: 0 after a clean stop.
- Every line printed names the mount point (:func:`about`): ``mount -a`` shows which fstab
  line failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable

from .logs import log_target

log = logging.getLogger("s3fmfs")


def about(mountpoint: str, message: str) -> str:
    """``message``, prefixed with ``mountpoint: `` unless it names the mount point already."""
    return message if mountpoint and mountpoint in message else f"{mountpoint}: {message}"


class PipeReporter:
    """The child's side: one line to the waiting parent, then the pipe is closed."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # the parent is gone: nobody to tell
        finally:
            os.close(fd)

    def ready(self) -> None:
        self._send(f"ready {log_target()}")

    def failed(self, status: int, message: str) -> None:
        log.error("%s", message)
        self._send(f"error {status} {message}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _redirect_stdio(output: str | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = null
    if output:
        with contextlib.suppress(OSError):
            out = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def spawn(
    child: Callable[[PipeReporter], int],
    mountpoint: str,
    *,
    output: str | None = None,
    log_hint: str = "syslog",
) -> int:
    """Fork; run ``child`` in the background; the parent's exit status (see the docstring)."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon
        status = 1
        os.close(read_fd)
        reporter = PipeReporter(write_fd)
        try:
            os.setsid()
            os.chdir("/")
            _redirect_stdio(output)
            status = child(reporter)
        except BaseException as exc:  # the parent gets one line; the log gets the rest
            log.exception("daemon failed")
            reporter.failed(1, f"{type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            reporter.close()
            logging.shutdown()
            os._exit(status)
    os.close(write_fd)
    try:
        line = _read_line(read_fd)
    finally:
        os.close(read_fd)
    if line == "ready" or line.startswith("ready "):
        if os.path.ismount(mountpoint):
            where = line.removeprefix("ready").strip() or log_hint
            if sys.stderr.isatty():
                print(
                    f"s3fmfs: mounted on {mountpoint}; log: {where}; "
                    f"progress: s3fmfs status {mountpoint}",
                    file=sys.stderr,
                )
            return 0
        print(f"s3fmfs: {mountpoint} is not mounted after all (see {log_hint})", file=sys.stderr)
        return 1
    if line.startswith("error "):
        _, status_text, message = [*line.split(" ", 2), ""][:3]
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        print(f"s3fmfs: {about(mountpoint, message)}", file=sys.stderr)
        return int(status_text) if status_text.isdigit() and int(status_text) else 1
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    print(
        f"s3fmfs: {mountpoint}: the daemon exited (status {code}) before mounting; see {log_hint}",
        file=sys.stderr,
    )
    return 1
