"""A local S3 server in a child process: moto's (``python -m moto.server``) for ``s3fmfs demo``,
and any server for the tests (``tests/servers.py`` runs moto and s3rver through this).

Invariants:
- The server is a child in its own session (so a Ctrl-C in the terminal does not reach it:
  the caller decides when it stops), bound to 127.0.0.1, its output in a log file (never a
  pipe). If this process dies without stopping it, the kernel sends it SIGTERM
  (``PR_SET_PDEATHSIG``).
- :func:`process` yields only once ``ready()`` is true; a server that exits or does not get
  ready in ``STARTUP_TIMEOUT`` seconds is a :class:`ServerStartError` carrying its log's tail.
  On the way out the process group is stopped (SIGTERM, then SIGKILL after ``STOP_GRACE``)
  and reaped, whatever happened.
- :func:`moto` picks a free port before the start (moto needs it on its command line, and may
  need it in its environment), so a start that loses the port to another process is retried
  on a new one, ``attempts`` times.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 5.0
START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """The server process died or did not answer in time; carries its output's tail."""


def moto_available() -> bool:
    """moto and its server extra (flask) are importable by this interpreter."""
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask"))


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the caller retries if it is taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    """True once anything answers HTTP at ``url``, whatever the status."""
    try:
        httpx.get(url, timeout=1.0, trust_env=False)
    except httpx.TransportError:
        return False
    return True


def tail(path: Path, limit: int = 3000) -> str:
    """The end of a log file ("" when unreadable)."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies without stopping it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group of ``proc``: SIGTERM, then SIGKILL; always reap it."""
    if proc.poll() is None:  # still ours: its pid is its process group id (own session)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@contextlib.contextmanager
def process(
    argv: list[str],
    log: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends, after ``ready()`` turned true; raise if it died."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{' '.join(argv[:3])} exited with status {proc.returncode}:\n{tail(log)}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{' '.join(argv[:3])} did not answer in {STARTUP_TIMEOUT:.0f}s:\n{tail(log)}"
                )
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def moto(
    log: Path,
    env: Callable[[int], Mapping[str, str]] | None = None,
    attempts: int = START_ATTEMPTS,
) -> Iterator[int]:
    """moto's S3 server on a free loopback port for the block; yields the port.

    ``env(port)`` is the server's environment (default: this process's).
    """
    for attempt in range(attempts):
        port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
        # /moto-api/ answers without counting as an action for INITIAL_NO_AUTH_ACTION_COUNT.
        url = f"http://{LOOPBACK}:{port}/moto-api/"
        started = False
        try:
            ready = functools.partial(answers, url)
            with process(argv, log, ready, env(port) if env else None):
                started = True
                yield port
                return
        except ServerStartError:
            lost_port = "Address already in use" in tail(log)
            if started or not lost_port or attempt == attempts - 1:
                raise
