"""The mounted systems (s3fmfs, s3fs-fuse, rclone mount): fresh mounts, peak RSS, dropped caches.

Invariants:
- :func:`fresh_mount` runs the daemon in the foreground (its own session, ``PR_SET_PDEATHSIG``,
  output appended to a log file, never a pipe), yields once the mountpoint is in
  ``/proc/self/mountinfo`` and answers ``stat``, and on the way out, whatever happened,
  unmounts (``fusermount3 -u`` retried while busy, then ``umount -l``), waits for the daemon
  (then SIGTERM, SIGKILL) and reaps it. When the block succeeded, an unclean unmount or a
  non-zero exit status raises :class:`MountError`.
- The daemon's peak RSS is its ``VmHWM`` (``/proc/PID/status``), sampled every 50 ms by a
  thread until the process exits: :attr:`Mount.peak_rss` (bytes), final after the block.
- Each mount gets its own mountpoint, and a state directory (s3fmfs's ``cache_dir=``: write
  buffers and the persistent metadata cache; rclone's VFS cache) under the run's work
  directory, new and empty unless a measurement passes the state of an earlier mount (the
  warm-metadata-cache ``ls``); a new one is removed after the unmount. The daemon's log
  (``logs/SYSTEM-TAG.log``) is kept until the end of the run. Nothing of a mount goes to
  ``~/.cache``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.mount import is_mounted, s3fmfs_command, unmount
from tests.support.servers import S3Server

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 120.0
KILL_GRACE = 5.0

SYSTEMS = ("s3fmfs", "s3fs", "rclone")
#: Debian package and binary of each peer.
PEER_BINARIES = {"s3fs": "s3fs", "rclone": "rclone"}


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies without cleaning up."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class MountError(RuntimeError):
    """A daemon did not mount, unmount or exit as it should; carries its log's tail."""


def tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def last_line(path: Path) -> str:
    lines = [line for line in tail(path).splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "(empty log)"


def drop_caches() -> bool:
    """``sync`` and drop the page, dentry and inode caches; False when not allowed (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def vm_hwm(pid: int) -> int | None:
    """The process's peak RSS in bytes, or None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's VmHWM until it exits (or :meth:`stop`); ``peak`` is the highest."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        value = vm_hwm(self.pid)
        if value is not None:
            self.peak = max(self.peak, value)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = vm_hwm(self.pid)
            if value is None:
                return
            self.peak = max(self.peak, value)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Mount:
    system: str
    path: Path
    pid: int
    peak_rss: int = 0
    notes: list[str] = field(default_factory=list)


class Mounter:
    """Fresh mounts of one system for one measurement; ``peak_rss``: the highest of them."""

    def __init__(self, system: str, target: Target, tag: str) -> None:
        self.system = system
        self.target = target
        self.tag = tag
        self.peak_rss = 0
        self._count = 0

    def new_state(self) -> Path:
        """A state directory that outlives a mount (removed with the run's work directory)."""
        path = self.target.workdir / f"state-{self.system}-{self.tag}"
        path.mkdir(mode=0o700)
        return path

    @contextlib.contextmanager
    def mount(self, state: Path | None = None) -> Iterator[Path]:
        self._count += 1
        tag = self.tag if self._count == 1 else f"{self.tag}-m{self._count}"
        made: Mount | None = None
        try:
            with fresh_mount(self.system, self.target, tag, state) as made:
                yield made.path
        finally:
            if made is not None:
                self.peak_rss = max(self.peak_rss, made.peak_rss)


@dataclass(frozen=True)
class Target:
    """What a mount connects to."""

    server: S3Server
    bucket: str
    workdir: Path  # the run's work directory (mountpoints, logs, state)
    s3fmfs_options: tuple[str, ...] = ()


def _argv_env(
    system: str, target: Target, mnt: Path, state: Path
) -> tuple[list[str], dict[str, str]]:
    server = target.server
    env = {**os.environ, "LC_ALL": "C"}
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CA_BUNDLE"):
        env.pop(name, None)  # rclone refuses a CA bundle with a plain-HTTP endpoint
    if system == "s3fmfs":
        # s3rver checks Signature V2 (V4 only for the key): sigv2 makes it check every request.
        opts = ",".join(
            [f"endpoint={server.endpoint}", "sigv2", f"cache_dir={state}", *target.s3fmfs_options]
        )
        env["AWS_ACCESS_KEY_ID"] = server.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = server.secret_access_key
        env["PYTHONUNBUFFERED"] = "1"
        return [*s3fmfs_command(), target.bucket, str(mnt), "-o", opts, "-f"], env
    if system == "s3fs":
        passwd = state / "passwd-s3fs"
        passwd.write_text(f"{server.access_key_id}:{server.secret_access_key}\n")
        passwd.chmod(0o600)
        opts = f"url={server.endpoint},use_path_request_style,passwd_file={passwd}"
        return ["s3fs", target.bucket, str(mnt), "-f", "-o", opts], env
    if system == "rclone":
        conf = state / "rclone.conf"
        conf.write_text("")
        env.update(
            {
                "RCLONE_CONFIG": str(conf),
                "RCLONE_CONFIG_BENCH_TYPE": "s3",
                "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.access_key_id,
                "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret_access_key,
                "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            }
        )
        argv = [
            "rclone",
            "mount",
            f"bench:{target.bucket}",
            str(mnt),
            "--vfs-cache-mode",
            "writes",  # what tar and rewrites need; uploads after --vfs-write-back (5 s)
            "--cache-dir",
            str(state / "cache"),
        ]
        return argv, env
    raise ValueError(f"unknown system {system!r}")


def _wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not is_mounted(mnt):
        if proc.poll() is not None:
            raise MountError(
                f"exited {proc.returncode} before mounting: {last_line(log)}\n{tail(log)}"
            )
        if time.monotonic() > deadline:
            raise MountError(f"did not mount in {MOUNT_TIMEOUT}s: {last_line(log)}\n{tail(log)}")
        time.sleep(0.05)
    while not os.path.ismount(mnt):  # stats the root through the daemon
        if time.monotonic() > deadline:
            raise MountError(f"in mountinfo but not answering:\n{tail(log)}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> list[str]:
    try:
        code = proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(KILL_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        return [f"still running {EXIT_TIMEOUT}s after the unmount: killed"]
    return [] if code == 0 else [f"exited with status {code}"]


@contextlib.contextmanager
def fresh_mount(
    system: str, target: Target, tag: str, state: Path | None = None
) -> Iterator[Mount]:
    """Mount the bucket with ``system`` at a new mountpoint for the block (see module doc);
    ``state``: an earlier mount's state directory to reuse (kept), else a new one."""
    base = target.workdir / f"{system}-{tag}"
    mnt = (base / "mnt").resolve()
    mnt.mkdir(parents=True)
    if state is None:
        state = base / "state"
        state.mkdir(mode=0o700)
    (target.workdir / "logs").mkdir(exist_ok=True)
    log = target.workdir / "logs" / f"{system}-{tag}.log"
    argv, env = _argv_env(system, target, mnt, state)
    with open(log, "ab") as out:
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
    sampler = RssSampler(proc.pid)
    mount = Mount(system, mnt, proc.pid)
    body_done = False
    try:
        _wait_mounted(mnt, proc, log)
        yield mount
        body_done = True
    finally:
        sampler.sample()
        problems = unmount(mnt)
        problems += _stop(proc)
        sampler.stop()
        mount.peak_rss = sampler.peak
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            problems.append("still mounted after the daemon exited")
        if not is_mounted(mnt):
            shutil.rmtree(base, ignore_errors=True)  # a reused state lives elsewhere
        if body_done and problems:
            raise MountError("; ".join(problems) + f": {last_line(log)}\n{tail(log)}")
