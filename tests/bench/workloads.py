"""The workloads on a mounted system; each returns metric → value after checking its result.

``drop()`` is called right before the timer starts (after any untimed preparation); it also
starts ``ctx.meter`` (the server-side request counts, :mod:`tests.bench.counting`), which each
workload stops right after its timed part, before its checks.

- read: ``dd if=MNT/big/big.bin of=/dev/null bs=1M``; checks dd's byte count and sampled
  ranges read again (``pread``) through the mount.
- write: ``dd if=SRC of=MNT/w-TAG.bin bs=1M``, then HEADs until the object has its size;
  checks the size and sampled ranges read back from the bucket.
- ls: ``ls -l MNT/ls`` on a fresh mount with empty caches ("first mount"), then again in the
  same mount ("again"); then, after dropping the kernel's caches, on a new mount that keeps
  the first one's state directory ("warm metadata cache": s3fmfs's persistent metadata cache,
  rclone's VFS cache; s3fs keeps nothing); checks every name and size, each time.
- untar: ``tar --no-same-owner -xf TARBALL -C MNT/untar/TAG``, then listings until every
  file is in the bucket with its size; checks the listing and sampled bodies read back.
- grep: ``grep -r -c NEEDLE MNT/src``; checks one count per file, each right.
- find: ``find MNT/src -type f -exec stat -c '%s %n' {} +``; checks every file's size.

"Until in the bucket": the clock stops at the start of the first HEAD or listing that shows
the complete result (for a mount that uploads on close, the first one after the command).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bench import checks, raw
from tests.bench.counting import Meter
from tests.bench.data import NEEDLE, SmallFile
from tests.bench.systems import Mounter

POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Context:
    bucket: raw.Bucket  # the bench's own view (s3rver's control port): seeding, checks, polls
    via: raw.Bucket  # where the measured systems go: counted port, or the latency proxy
    big_src: Path  # the big object as a local file (tmpfs when possible)
    big_size: int
    ls_expected: dict[str, int]
    files: list[SmallFile]
    tarball: Path
    timeout: float
    meter: Meter


Drop = Callable[[], None]
Metrics = dict[str, float]
MB = 1e6


def command(argv: list[str], timeout: float, ok: tuple[int, ...] = (0,)) -> tuple[str, str, float]:
    """Run ``argv`` (``LC_ALL=C``); stdout, stderr and the elapsed seconds."""
    env = {**os.environ, "LC_ALL": "C"}
    start = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise checks.CheckError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout, done.stderr, elapsed


def wait_until(done: Callable[[], bool], start: float, timeout: float, what: str) -> float:
    """Seconds from ``start`` to the start of the first ``done()`` that returned True."""
    while True:
        probe = time.perf_counter()
        if done():
            return probe - start
        if probe - start > timeout:
            raise checks.CheckError(f"{what}: not complete after {timeout:.0f}s")
        time.sleep(POLL_INTERVAL)


def read(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    with mounter.mount() as mnt:
        return _read(mnt, ctx, drop)


def _read(mnt: Path, ctx: Context, drop: Drop) -> Metrics:
    path = mnt / "big" / "big.bin"
    drop()
    _, err, elapsed = command(["dd", f"if={path}", "of=/dev/null", "bs=1M"], ctx.timeout)
    ctx.meter.stop()
    checks.check_size("dd read", checks.dd_bytes(err), ctx.big_size)
    fd = os.open(path, os.O_RDONLY)
    try:
        checks.check_big_samples("read", lambda o, n: os.pread(fd, n, o), ctx.big_size)
    finally:
        os.close(fd)
    return {"read": ctx.big_size / MB / elapsed}


def write_key(tag: str) -> str:
    return f"w-{tag}.bin"


def write(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    with mounter.mount() as mnt:
        return _write(mnt, ctx, tag, drop)


def _write(mnt: Path, ctx: Context, tag: str, drop: Drop) -> Metrics:
    key = write_key(tag)
    drop()
    start = time.perf_counter()
    _, err, _ = command(["dd", f"if={ctx.big_src}", f"of={mnt / key}", "bs=1M"], ctx.timeout)
    checks.check_size("dd write", checks.dd_bytes(err), ctx.big_size)
    elapsed = wait_until(
        lambda: ctx.bucket.head_size(key) == ctx.big_size, start, ctx.timeout, "upload"
    )
    ctx.meter.stop()
    raw.check_big_object(ctx.bucket, key, ctx.big_size, "write")
    return {"write": ctx.big_size / MB / elapsed}


def _ls(mnt: Path, ctx: Context) -> float:
    out, _, elapsed = command(["ls", "-l", str(mnt / "ls")], ctx.timeout)
    checks.check_ls_output(out, ctx.ls_expected)
    return elapsed


def ls(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    state = mounter.new_state()
    with mounter.mount(state) as mnt:
        drop()
        first = _ls(mnt, ctx)
        ctx.meter.stop()
        again = _ls(mnt, ctx)
    with mounter.mount(state) as mnt:
        drop()
        warm = _ls(mnt, ctx)
    return {"ls": first, "ls-warm": warm, "ls-again": again}


def untar_prefix(tag: str) -> str:
    return f"untar/{tag}/"


def untar(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    with mounter.mount() as mnt:
        return _untar(mnt, ctx, tag, drop)


def _untar(mnt: Path, ctx: Context, tag: str, drop: Drop) -> Metrics:
    prefix = untar_prefix(tag)
    dest = mnt / prefix
    dest.mkdir(parents=True)
    drop()
    start = time.perf_counter()
    command(["tar", "--no-same-owner", "-xf", str(ctx.tarball), "-C", str(dest)], ctx.timeout)
    elapsed = wait_until(
        lambda: checks.listing_complete(ctx.bucket.list_sizes(prefix), ctx.files),
        start,
        ctx.timeout,
        "untar upload",
    )
    ctx.meter.stop()
    sample = checks.sample_files(ctx.files)
    bodies = ctx.bucket.bodies({f.path: prefix + f.path for f in sample})
    checks.check_bodies("untar", bodies, ctx.files)
    return {"untar": len(ctx.files) / elapsed}


def grep(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    with mounter.mount() as mnt:
        return _grep(mnt, ctx, tag, drop)


def _grep(mnt: Path, ctx: Context, tag: str, drop: Drop) -> Metrics:
    root = str(mnt / "src")
    drop()
    out, _, elapsed = command(["grep", "-r", "-c", NEEDLE.decode(), root], ctx.timeout, ok=(0, 1))
    ctx.meter.stop()
    checks.check_grep_output(out, root, ctx.files)
    return {"grep": len(ctx.files) / elapsed}


def find(mounter: Mounter, ctx: Context, tag: str, drop: Drop) -> Metrics:
    with mounter.mount() as mnt:
        return _find(mnt, ctx, tag, drop)


def _find(mnt: Path, ctx: Context, tag: str, drop: Drop) -> Metrics:
    root = str(mnt / "src")
    drop()
    out, _, elapsed = command(
        ["find", root, "-type", "f", "-exec", "stat", "-c", "%s %n", "{}", "+"], ctx.timeout
    )
    ctx.meter.stop()
    checks.check_stat_output(out, root, ctx.files)
    return {"find": elapsed}


MOUNTED: dict[str, Callable[[Mounter, Context, str, Drop], Metrics]] = {
    "read": read,
    "write": write,
    "ls": ls,
    "untar": untar,
    "grep": grep,
    "find": find,
}


def raw_workload(workload: str, ctx: Context, tag: str, drop: Drop) -> Metrics:
    """The raw baseline of ``workload`` (see :mod:`tests.bench.raw`): timed requests through
    ``ctx.via``, checks through ``ctx.bucket``."""
    bucket, via = ctx.bucket, ctx.via
    drop()
    out: Metrics
    if workload == "read":
        elapsed = raw.read(via, "big/big.bin", ctx.big_size, ctx.timeout)
        out = {"read": ctx.big_size / MB / elapsed}
    elif workload == "write":
        key = write_key(tag)
        elapsed = raw.write(bucket, via, key, ctx.big_src, ctx.big_size, ctx.timeout)
        ctx.meter.stop()
        bucket.delete(key)
        drop()
        put = raw.write_put(bucket, via, key, ctx.big_src, ctx.big_size, ctx.timeout)
        out = {"write": ctx.big_size / MB / elapsed, "write-put": ctx.big_size / MB / put}
    elif workload == "ls":
        elapsed = raw.ls(via, "ls/", ctx.ls_expected)
        out = {"ls": elapsed, "ls-warm": elapsed, "ls-again": elapsed}
    elif workload == "untar":
        elapsed = raw.untar(bucket, via, untar_prefix(tag), ctx.tarball, ctx.files)
        out = {"untar": len(ctx.files) / elapsed}
    elif workload == "grep":
        out = {"grep": len(ctx.files) / raw.grep(via, "src/", ctx.files)}
    elif workload == "find":
        out = {"find": raw.stat(via, "src/", ctx.files)}
    else:
        raise ValueError(f"unknown workload {workload!r}")
    ctx.meter.stop()  # the checks went to the control port: not counted anyway
    return out


def cleanup(workload: str, ctx: Context, tag: str) -> None:
    """Remove what a write or untar measurement left in the bucket."""
    if workload == "write":
        ctx.bucket.delete(write_key(tag))
    elif workload == "untar":
        ctx.bucket.delete_prefix(untar_prefix(tag))
