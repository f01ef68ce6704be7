"""Watching a mount's daemon during long tests: a stall watchdog and a memory sampler.

Invariants:
- :class:`Watchdog` never lets a test hang on a deadlocked mount: when a worker has made no
  progress for ``stall`` seconds, or the run has lasted ``limit`` seconds, it records why (each
  worker's last step, the daemon's stacks when ``py-spy`` is installed, the log's tail) and
  SIGKILLs the daemon. The kernel then aborts the FUSE connection, so every system call blocked
  in the mount fails (ENOTCONN) and the workers return; the test reports ``failure``.
- :class:`MemorySampler` reads ``VmRSS``/``VmHWM`` of ``/proc/PID/status`` every ``period``
  seconds until stopped; ``peak_hwm`` is the highest ``VmHWM`` seen (the kernel's own peak, so
  a spike between two samples still counts).
- Both run in daemon threads; the watchdog stops with its context manager, the sampler with
  ``stop()`` (it may outlive a block: the unmount's uploads count), callers use ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.mount import log_tail

KiB = 1024
STACKS_TIMEOUT = 20.0


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def python_stacks(pid: int) -> str:
    """The Python stacks of ``pid`` by ``py-spy dump`` when it is installed (diagnostics only)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return "(py-spy not installed: no stacks)"
    try:
        done = subprocess.run(
            [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(py-spy failed: {exc})"
    return (done.stdout + done.stderr)[-6000:]


class Watchdog:
    """Kills the daemon (see the module docstring) when a worker stops making progress."""

    def __init__(self, stall: float, limit: float, daemon: Callable[[], tuple[int, Path] | None]):
        self.stall = stall
        self.limit = limit
        self.daemon = daemon  # → (pid, mountpoint) of the daemon serving now, if any
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._beats: dict[str, tuple[float, str]] = {}  # worker → (last progress, its step)
        self._started = time.monotonic()
        self._stop = threading.Event()

    def beat(self, worker: str, step: str) -> None:
        """``worker`` made progress and now starts ``step``."""
        with self._lock:
            self._beats[worker] = (time.monotonic(), step)

    def done(self, worker: str) -> None:
        """``worker`` finished: it is no longer watched."""
        with self._lock:
            self._beats.pop(worker, None)

    def _check(self) -> str | None:
        now = time.monotonic()
        if now - self._started > self.limit:
            return f"the run lasted more than {self.limit:.0f}s"
        with self._lock:
            stalled = {w: s for w, (t, s) in self._beats.items() if now - t > self.stall}
        if stalled:
            steps = "; ".join(f"{w}: {s}" for w, s in sorted(stalled.items()))
            return f"{len(stalled)} worker(s) made no progress for {self.stall:.0f}s: {steps}"
        return None

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            why = self._check()
            if why is not None:
                self._fire(why)
                return

    def _fire(self, why: str) -> None:
        """Record why (with the daemon's stacks and log), then kill the daemon."""
        serving = self.daemon()
        if serving is None:
            self.failure = why
            return
        pid, mnt = serving
        # py-spy in a thread of its own: starting a process closes this process's
        # descriptors on the mount, which waits for the daemon (forever, if it is stuck)
        stacks: list[str] = []
        dumper = threading.Thread(target=lambda: stacks.append(python_stacks(pid)), daemon=True)
        dumper.start()
        dumper.join(STACKS_TIMEOUT)
        dump = stacks[0] if stacks else "(no stacks: py-spy could not start in time)"
        self.failure = f"{why}\ndaemon {pid} stacks:\n{dump}\nlog tail:\n{log_tail(mnt)}"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # aborts the FUSE connection: syscalls return

    @contextmanager
    def running(self) -> Iterator[Watchdog]:
        thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


class MemorySampler:
    """Samples a process's resident memory (see the module docstring)."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid = pid
        self.period = period
        self.peak_rss_kib = 0
        self.peak_hwm_kib = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []  # (seconds since start, VmRSS in KiB)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        rss = proc_status_kib(self.pid, "VmRSS")
        hwm = proc_status_kib(self.pid, "VmHWM")
        if rss is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.samples += 1
            self.timeline.append((time.monotonic() - self._started, rss))
        if hwm is not None:
            self.peak_hwm_kib = max(self.peak_hwm_kib, hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def rss_at(self, fraction: float) -> int:
        """VmRSS (KiB) of the sample nearest ``fraction`` of the sampled time."""
        if not self.timeline:
            return 0
        when = self.timeline[-1][0] * fraction
        return min(self.timeline, key=lambda s: abs(s[0] - when))[1]

    def start(self) -> None:
        self._started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after one last sample); harmless when not started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()
