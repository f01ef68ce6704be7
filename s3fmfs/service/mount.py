"""The mount's lifecycle: connect, check the bucket, mount, serve, and stop cleanly.

Invariants:
- One order, always: connection → bucket check → store → core → adapter → ``pyfuse3.init``
  → ``main``.
- The bucket check is one ListObjects request of one key (a GET: its error body names the
  code, which a HEAD cannot) with a short retry budget, so a wrong secret, a missing bucket or an
  unreachable endpoint is reported within seconds, as one line (:func:`describe_failure`).
- The mount is announced (``Reporter.ready``, then ``READY=1`` to systemd) only once it is
  live: ``os.path.ismount`` is true, which needs ``pyfuse3.main`` to answer the kernel. Just
  before, as root, the kernel's read-ahead on it is raised (``raise_read_ahead``, best effort).
- SIGINT/SIGTERM call ``pyfuse3.terminate()`` (through trio's signal handling, on the trio
  thread); when ``main`` returns for any reason, ``STOPPING=1`` goes to systemd and every
  dirty file is uploaded (or copied) before ``pyfuse3.close(unmount=True)`` (called once),
  shielded from cancellation.
  Signals stay caught until then: a later SIGTERM is logged and ignored, never fatal.
- What libfuse and ``fusermount3`` (which libfuse runs to mount as a user) write on stderr
  during ``pyfuse3.init`` is captured (fd 2 into a temporary file for the call, then written
  on to the real stderr): a failure's line ends with it, e.g. fusermount3's reason for
  refusing ``allow_other``, instead of only ``fuse_session_mount failed``.
- Errors before mounting are one line through ``Reporter.failed`` and exit status 1; a clean
  stop is 0, and 1 when some file could not be uploaded at the end (each logged with its path,
  its data kept in a recovery copy: ``fs/recovery.py``, opened by ``service/keep.py``).
- The process never exits while data is only in its buffers (neither in the bucket nor in a
  recovery copy): ``_stop`` unmounts, then retries the upload and the copies until one
  succeeds, logging what it holds every ``hold_report`` seconds; only SIGKILL ends it. Its
  last line says which files were uploaded, which kept where, which (if any) lost.
- The first line says where the log goes (a daemon's; in the foreground it is stderr). While
  mounted, a status socket (``service/status.py``) answers ``s3fmfs status MNT``: pending
  uploads, requests by kind, errors, retries, cache hits; it is removed at exit.
- A stop with unsaved files says at once how much it has to upload (``uploading 3 files,
  512 MiB: 0%``), then how far it is every ``PROGRESS_EVERY`` seconds until done, and the
  total at the end (stderr in the foreground, the log of a daemon).
- Without a bucket (``s3://``) the mount serves every bucket of the account
  (``all_buckets``, ``fs/buckets.py``): the check lists the buckets, each bucket's core is made
  on first use, and the stop uploads the unsaved files of all of them at once (one progress).
- Multipart uploads are journaled under the cache directory; once serving, a background task
  aborts those a killed earlier mount left and lists the others (``fs/journal.py``): it
  delays nothing, and its failures are warnings.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyfuse3
import trio

from .. import __version__
from ..client import RetryPolicy, S3fmAuthConnection, S3fmError
from ..config import tls
from ..config.options import MountOptions, OptionError
from ..fs.adapter import S3fmOperations
from ..fs.buckets import BucketsCore
from ..fs.core import FsCore
from ..fs.inodes import Node
from ..fs.s3store import S3Store
from . import sdnotify
from .all_buckets import describe_account_failure, open_all_buckets
from .connection import connection_for, describe_failure, integrity_of, mount_retry
from .daemon import about
from .keep import metacache_for_mount, recovery_for_mount
from .logs import log_target
from .status import human_bytes, progress_line, serve_status, socket_path

log = logging.getLogger("s3fmfs")

#: The bucket check gives up after this (an unreachable endpoint is reported quickly).
CHECK_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, total_timeout=15.0)
CHECK_CONNECT_TIMEOUT = 5.0
#: How long the mount may take to answer its first ``stat`` before it is declared failed.
READY_TIMEOUT = 30.0
#: The kernel's read-ahead on the mount, KiB. FUSE_INIT leaves the mount's bdi at 128 KiB, so a
#: sequential reader's pages are asked for 128 KiB at a time; at 1 MiB the kernel sends reads of
#: 1 MiB, an eighth of the requests (measured: a fifth less daemon CPU per byte read).
READ_AHEAD_KB = 1024
#: Pending files listed by name in a status answer (the biggest; the count has them all).
STATUS_FILES = 50
#: Seconds between two lines of a stop's upload progress (the first is at once).
PROGRESS_EVERY = 3.0


@dataclass(repr=False)
class MountConfig:
    """What a mount needs beyond its options."""

    bucket: str
    prefix: str
    mountpoint: str
    options: MountOptions
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    credentials_source: str = ""

    def __repr__(self) -> str:  # never the secret
        return (
            f"MountConfig(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"mountpoint={self.mountpoint!r}, access_key_id={self.access_key_id!r})"
        )


class Reporter(Protocol):
    """Told once whether the mount came up (the daemon's parent waits for this).

    ``failed`` is where a failure before the mount is live is said: once, one line.
    """

    def ready(self) -> None: ...

    def failed(self, status: int, message: str) -> None: ...


class StderrReporter:
    """Foreground: failures are one line on stderr (not logged as well: that is stderr too),
    naming the mount point."""

    def __init__(self, mountpoint: str = "") -> None:
        self.mountpoint = mountpoint

    def ready(self) -> None:
        pass

    def failed(self, status: int, message: str) -> None:
        text = about(self.mountpoint, message) if self.mountpoint else message
        print(f"s3fmfs: {text}", file=sys.stderr, flush=True)


class MountFailure(Exception):
    """A failure before the mount is live; ``str()`` is one line for the user."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_connection(config: MountConfig, **kwargs: object) -> S3fmAuthConnection:
    """The signed client for the mount's endpoint, addressing style and signature."""
    return connection_for(
        config.options,
        config.access_key_id,
        config.secret_access_key,
        config.session_token,
        **{"retry": mount_retry(config.options), **kwargs},
    )


async def check_bucket(config: MountConfig) -> None:
    """List one key under the prefix; MountFailure (one line) when that fails."""
    conn = build_connection(
        config, retry=CHECK_RETRY, connect_timeout=CHECK_CONNECT_TIMEOUT, timeout=30.0
    )
    async with conn:
        try:
            if not config.bucket:  # every bucket: the account's list
                await conn.list_all_my_buckets()
                return
            pages = conn.list_pages(config.bucket, config.prefix, "/", page_size=1)
            async with contextlib.aclosing(pages):
                async for _ in pages:
                    break
        except (S3fmError, OSError) as exc:
            if not config.bucket:
                raise MountFailure(describe_account_failure(exc, config)) from None
            raise MountFailure(
                describe_failure(exc, config.bucket, config.options.endpoint, config.access_key_id)
            ) from None


def fuse_options(opts: MountOptions, source: str = "s3fmfs") -> set[str]:
    """libfuse mount options: the source (``BUCKET[:/PREFIX]``, as mount(8) and df show it)
    and type (``fuse.s3fmfs``) for mtab, kernel permission checks."""
    result = set(pyfuse3.default_options)  # default_permissions
    fsname = source.replace(",", "_").replace("\\", "_")  # a comma would split the options
    result |= {f"fsname={fsname}", "subtype=s3fmfs", "default_permissions"}
    if opts.ro:
        result.add("ro")
    if opts.allow_other:
        result.add("allow_other")
    if opts.allow_root:
        result.add("allow_root")
    return result


async def _terminate_on_signal(signals: AsyncIterator[int]) -> None:
    """The first SIGINT/SIGTERM stops serving; later ones are logged and ignored, since
    the files still unsaved are being uploaded."""
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if stopping:
            log.info("%s: already stopping (uploading unsaved files)", name)
            continue
        log.info("%s: unmounting", name)
        stopping = True
        pyfuse3.terminate()


async def _announce_when_live(config: MountConfig, reporter: Reporter) -> None:
    """Once the mount answers ``stat``: report ready and send READY=1 (else fail and stop)."""
    deadline = trio.current_time() + READY_TIMEOUT
    while not await trio.to_thread.run_sync(os.path.ismount, config.mountpoint):
        if trio.current_time() > deadline:
            message = f"{config.mountpoint} did not come up in {READY_TIMEOUT:.0f}s"
            reporter.failed(1, message)
            pyfuse3.terminate()
            return
        await trio.sleep(0.02)
    log.info(
        "mounted %s%s on %s",
        config.bucket or "every bucket (s3://)",
        f":/{config.prefix}" if config.prefix else "",
        config.mountpoint,
    )
    await trio.to_thread.run_sync(raise_read_ahead, config.mountpoint)
    reporter.ready()
    sdnotify.notify("READY=1")


def raise_read_ahead(mountpoint: str, kb: int = READ_AHEAD_KB) -> None:
    """Best effort, as root: raise the mount's bdi ``read_ahead_kb`` to ``kb`` (never lower it).

    Only once the mount is live: the kernel sets it when the daemon answers FUSE_INIT (inside
    ``pyfuse3.main``), undoing a value written right after ``pyfuse3.init``. A ``stat`` of the
    mountpoint, so never on the trio thread (the filesystem answers it). A failure is a debug
    line: reads work the same, with more requests."""
    if os.geteuid() != 0:
        return
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "r+") as bdi:
            if int(bdi.read().strip() or 0) < kb:
                bdi.seek(0)
                bdi.write(str(kb))
    except (OSError, ValueError) as exc:
        log.debug("read_ahead_kb of %s left as it was: %s", mountpoint, exc)


#: The most of libfuse's and fusermount3's stderr output kept for the failure line.
CAPTURE_LIMIT = 2000


@contextlib.contextmanager
def stderr_captured() -> Iterator[list[str]]:
    """Point fd 2 at a temporary file for the block; the text written there is appended to the
    yielded list on the way out (and copied on to the real stderr, which is the log in daemon
    mode). libfuse runs fusermount3 with our fd 2: its reason for a refused mount lands here."""
    found: list[str] = []
    sys.stderr.flush()
    try:
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
    except OSError:  # no capture: the block runs as it would have
        yield found
        return
    with tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            data = tmp.read()
            if data:
                with contextlib.suppress(OSError):
                    os.write(2, data)
            found.append(data.decode("utf-8", "replace")[:CAPTURE_LIMIT])


def captured_reason(text: str) -> str:
    """The captured stderr as one line (``; `` between its lines), or ''."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


async def serve(config: MountConfig, reporter: Reporter | None = None) -> int:
    """Mount and serve until unmounted or signalled; the exit status."""
    reporter = reporter or StderrReporter(config.mountpoint)
    if log_target() != "stderr":
        log.info("s3fmfs %s (pid %d): logging to %s", __version__, os.getpid(), log_target())
    if config.credentials_source:
        log.info("credentials: %s", config.credentials_source)
    for note in config.options.s3fs_notes:  # once each: what s3fs options do here
        log.info("%s", note)
    tls.warn_if_unverified(config.options)
    try:
        headers = config.options.object_headers()  # reads an SSE-C key file
    except OptionError as exc:
        reporter.failed(2, str(exc))
        return 2
    try:
        await check_bucket(config)
    except MountFailure as exc:
        reporter.failed(exc.status, str(exc))
        return exc.status
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(build_connection(config))
        if not config.bucket:  # every bucket (service/all_buckets.py)
            fs: FsCore | BucketsCore = await stack.enter_async_context(
                open_all_buckets(config, conn, headers)
            )
            sweep = None
        else:
            meta = await stack.enter_async_context(
                metacache_for_mount(config.options, config.bucket)
            )
            kept = await stack.enter_async_context(
                recovery_for_mount(config.options, config.bucket)
            )
            store = S3Store(
                conn,
                config.bucket,
                page_size=config.options.list_object_max_keys,
                journal=kept.journal,
                headers=headers,
                integrity=integrity_of(config.options),
            )
            fs = FsCore(
                store,
                config.options.fs_settings(),
                prefix=config.prefix,
                tmpdir=config.options.cache_dir,
                metacache=meta,
                recovery=kept.folder,
            )
            sweep = functools.partial(kept.journal.sweep, store, config.prefix)
        ops = S3fmOperations(fs)
        captured: list[str] = []
        try:
            source = config.bucket + (f":/{config.prefix}" if config.prefix else "") or "s3://"
            with stderr_captured() as captured:
                pyfuse3.init(ops, config.mountpoint, fuse_options(config.options, source))
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if reason := captured_reason("".join(captured)):
                detail = f"{detail} ({reason})"
            message = f"cannot mount on {config.mountpoint}: {detail}"
            reporter.failed(1, message)
            return 1
        failed = 0
        # Once mounted, SIGINT/SIGTERM never kill the process: the receiver turns the first into
        # a clean stop, and when it closes it restores SIG_IGN, so one arriving during the final
        # uploads or after them (systemd sends SIGTERM again after umount) is ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # the status socket answers until the very end: during the last uploads too
            async with trio.open_nursery() as status:
                report = _status_report(config, conn, fs)
                await status.start(serve_status, socket_path(config.mountpoint), report)
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(fs.run_background)  # read-ahead, streamed parts
                        nursery.start_soon(_terminate_on_signal, signals)
                        nursery.start_soon(_announce_when_live, config, reporter)
                        if sweep is not None:
                            nursery.start_soon(sweep)  # uploads a killed mount left
                        await pyfuse3.main()
                        nursery.cancel_scope.cancel()
                finally:
                    failed = await _stop(_cores(fs), config)
                    status.cancel_scope.cancel()
        return 1 if failed else 0


def _cores(fs: FsCore | BucketsCore) -> list[tuple[str, FsCore]]:
    """(bucket, core) of each bucket served: one with a bucket named (its name ''), else every
    bucket opened (``fs/buckets.py``)."""
    return fs.cores() if isinstance(fs, BucketsCore) else [("", fs)]


def _status_report(
    config: MountConfig, conn: S3fmAuthConnection, core: FsCore | BucketsCore
) -> Callable[[], dict[str, Any]]:
    """What ``s3fmfs status`` shows, made anew at each question."""
    started = time.time()

    def report() -> dict[str, Any]:
        progress = core.upload_progress()
        return {
            "mountpoint": config.mountpoint,
            "bucket": config.bucket,
            "prefix": config.prefix,
            "pid": os.getpid(),
            "version": __version__,
            "started": started,
            "uptime": round(time.time() - started, 1),
            "log": log_target(),
            "uploads": {
                "files": len(progress.files),
                "bytes_total": progress.bytes_total,
                "bytes_done": progress.bytes_done,
                "percent": progress.percent,
                "pending": [  # the biggest first, a bounded answer however many
                    {"path": f.path, "size": f.size, "sent": f.sent}
                    for f in sorted(progress.files, key=lambda f: -f.size)[:STATUS_FILES]
                ],
            },
            "requests": conn.stats.as_dict(),
            "caches": core.cache_stats(),
        }

    return report


#: Each bucket's files with unsaved data when a stop began: (bucket, its core, the files).
Pending = list[tuple[str, FsCore, list[Node]]]


def _progress(pending: Pending) -> tuple[int, int, int]:
    """(files, bytes in all, bytes sent) of the uploads of ``pending``, every bucket's."""
    files = total = done = 0
    for _, core, nodes in pending:
        progress = core.upload_progress(nodes)
        files += len(progress.files)
        total += progress.bytes_total
        done += progress.bytes_done
    return files, total, done


async def _report_progress(pending: Pending) -> None:
    """Say how far the uploads of ``pending`` are, at once and every ``PROGRESS_EVERY`` s."""
    while True:
        log.info("%s", progress_line(*_progress(pending)))
        await trio.sleep(PROGRESS_EVERY)


#: Longest pause between two attempts of a stopping mount to save data it still holds.
HOLD_RETRY_MAX = 30.0


@dataclass
class Saved:
    """What the stop did with the files that had unsaved data (paths as they were saved)."""

    uploaded: list[str]
    kept: list[tuple[str, Path]]
    lost: list[tuple[str, int]]


def _held(core: FsCore, nodes: list[Node]) -> list[Node]:
    """Those of ``nodes`` whose current data is only in this process: neither uploaded nor in
    a recovery copy (and still there to be saved)."""
    return [
        node
        for node in nodes
        if node.dirty
        and node.path_attached
        and node.buffer is not None
        and not node.buffer.closed
        and core.recovery.copy_of(core.keys.file_key(node.path), (node.ino, node.version)) is None
    ]


def _sizes(nodes: list[Node]) -> str:
    return ", ".join(f"{n.path!r} ({n.buffer.size if n.buffer else 0} bytes)" for n in nodes)


async def _hold(core: FsCore, held: list[Node], config: MountConfig, bucket: str = "") -> None:
    """Try again and again to upload (else copy) ``held`` until every one is safe, saying what
    is held and where it will go every ``hold_report`` seconds. Only SIGKILL ends this."""
    period = config.options.hold_report
    places = " or ".join(str(p) for p in core.recovery.places) or "nowhere (no recovery folder)"

    async def report() -> None:
        while True:
            total = sum(n.buffer.size for n in held if n.buffer is not None)
            log.error(
                "not exiting: %d file(s), %d bytes, are neither in the bucket nor in a recovery "
                "copy, only in this process: %s; retrying the upload to bucket %r, else a copy "
                "in %s, until one succeeds (SIGTERM is ignored; SIGKILL would lose them); "
                "this attempt: %d%% sent",
                len(held),
                total,
                _sizes(held),
                bucket or config.bucket,
                places,
                core.upload_progress(held).percent,
            )
            await trio.sleep(period)

    pause = 1.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        while held:
            await trio.sleep(pause)
            pause = min(2 * pause, HOLD_RETRY_MAX)
            await core.flush_all(held)
            held[:] = _held(core, held)
        nursery.cancel_scope.cancel()


def _outcome(core: FsCore, nodes: list[Node], paths: dict[int, str]) -> Saved:
    saved = Saved([], [], [])
    for node in nodes:
        path = node.path if node.path_attached else paths[node.ino]
        if not node.dirty:
            saved.uploaded.append(path)
            continue
        copy = core.recovery.copy_of(core.keys.file_key(path), (node.ino, node.version))
        if copy is not None:
            saved.kept.append((path, copy))
        else:
            saved.lost.append((path, node.buffer.size if node.buffer else 0))
    return saved


def _final_line(mountpoint: str, saved: Saved) -> None:
    """One line saying what became of every file that had unsaved data: only what is true."""
    uploaded = ", ".join(repr(p) for p in saved.uploaded) or "none"
    if not saved.kept and not saved.lost:
        if saved.uploaded:
            log.info("unmounted %s; uploaded at the end: %s", mountpoint, uploaded)
        else:
            log.info("unmounted %s", mountpoint)
        return
    kept = ", ".join(f"{p!r} in {copy}" for p, copy in saved.kept) or "none"
    lost = ", ".join(f"{p!r} ({size} bytes)" for p, size in saved.lost) or "none"
    log.error(
        "unmounted %s; %d file(s) could not be uploaded before unmounting: their data is kept "
        "in recovery copies: %s; lost: %s; uploaded at the end: %s",
        mountpoint,
        len(saved.kept) + len(saved.lost),
        kept,
        lost,
        uploaded,
    )


async def _stop(cores: list[tuple[str, FsCore]], config: MountConfig) -> int:
    """Upload every unsaved file of every bucket served, then unmount; the number of files not
    uploaded. A file that can be neither uploaded nor copied keeps the process alive
    (unmounted, retrying)."""
    sdnotify.notify("STOPPING=1")
    with trio.CancelScope(shield=True):
        pending: Pending = [(name, core, core.unsaved()) for name, core in cores]
        pending = [entry for entry in pending if entry[2]]
        paths = {(name, node.ino): node.path for name, _, nodes in pending for node in nodes}
        began = trio.current_time()
        async with trio.open_nursery() as progress:
            if pending:
                progress.start_soon(_report_progress, pending)
            async with trio.open_nursery() as uploads:  # the buckets' uploads at once
                for _, core, _ in pending:
                    uploads.start_soon(core.flush_all)
            progress.cancel_scope.cancel()
        if pending:
            files, total, done = _progress(pending)
            log.info(
                "uploaded %d of %d file(s), %s of %s, in %.1fs",
                sum(1 for _, _, nodes in pending for node in nodes if not node.dirty),
                files,
                human_bytes(done),
                human_bytes(total),
                trio.current_time() - began,
            )
        held = [(name, core, _held(core, nodes)) for name, core, nodes in pending]
        held = [entry for entry in held if entry[2]]
        unmounted = bool(held)  # pyfuse3.close only once: a second one is a double free
        if held:
            # The filesystem is served no more: leave it (whoever used it gets an error
            # instead of hanging), and stay until the data is safe.
            pyfuse3.close(unmount=True)
            log.info("unmounted %s, still holding unsaved data", config.mountpoint)
            async with trio.open_nursery() as holding:
                for name, core, nodes in held:
                    holding.start_soon(_hold, core, nodes, config, name)
        saved = Saved([], [], [])
        for name, core, nodes in pending:
            mine = {node.ino: paths[(name, node.ino)] for node in nodes}
            one = _outcome(core, nodes, mine)
            shown = (lambda p, n=name: f"{n}/{p}") if name else (lambda p: p)
            saved.uploaded += [shown(p) for p in one.uploaded]
            saved.kept += [(shown(p), copy) for p, copy in one.kept]
            saved.lost += [(shown(p), size) for p, size in one.lost]
        for _, core in cores:
            await core.destroy()
        if not unmounted:
            pyfuse3.close(unmount=True)
        _final_line(config.mountpoint, saved)
    return len(saved.kept) + len(saved.lost)


def run(config: MountConfig, reporter: Reporter | None = None) -> int:
    """Run ``serve`` under trio (in this process: the foreground, or the daemon's child)."""
    return trio.run(serve, config, reporter)
