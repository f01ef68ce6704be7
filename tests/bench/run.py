"""``python -m tests.bench.run``: the whole benchmark (settings: :mod:`tests.bench.config`).

Starts s3rver, seeds it once, measures every workload for raw, s3fmfs and the installed peers
(runs interleaved: run 1 of each system, then run 2…), prints the report on stdout and writes
it to ``BENCH_OUT`` (default: a temporary file, named on stderr). Progress goes to stderr.

Exit status: 0; 1 when a measurement of s3fmfs or raw failed (or, with ``BENCH_STRICT=1``, a
target was missed); 2 for bad settings or when s3rver/FUSE are missing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.bench import report, workloads
from tests.bench.config import Config, ConfigError
from tests.bench.data import MiB, ls_objects, small_tree, write_big, write_tarball
from tests.bench.raw import Bucket, seed
from tests.bench.systems import PEER_BINARIES, Mounter, Target, drop_caches
from tests.support.servers import S3RVER_JS, s3rver

BUCKET = "bench"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def choose_peers(cfg: Config) -> tuple[list[str], list[str]]:
    """The peers to run, and notes about those left out."""
    wanted = list(PEER_BINARIES) if cfg.peers == "auto" else list(cfg.peers)
    chosen, notes = [], []
    for peer in wanted:
        if shutil.which(PEER_BINARIES[peer]):
            chosen.append(peer)
        else:
            notes.append(f"{peer} not installed (`make bench PEERS=1` installs it from Debian)")
    return chosen, notes


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    distro = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {distro or platform.system()}"


def versions(peers: list[str]) -> list[str]:
    out = []
    for peer in peers:
        argv = [PEER_BINARIES[peer], "--version"] if peer == "s3fs" else ["rclone", "version"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            first = (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            first = "unknown version"
        out.append(f"{peer}: {first}")
    return out


REPO = Path(__file__).resolve().parents[2]


def source_fingerprint() -> str:
    """A digest of s3fmfs's sources as a mount started now would import them (the package is
    installed in editable mode: a mount runs the working tree)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "s3fmfs").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def source_description() -> str:
    """``git`` commit of the tree, and whether s3fmfs/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "s3fmfs"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"sources {source_fingerprint()}"
    state = " with uncommitted changes in s3fmfs/" if dirty else ""
    return f"commit {rev}{state} (sources {source_fingerprint()})"


def big_source_dir(size: int, workdir: Path) -> Path:
    """tmpfs (/dev/shm) when it has room, so the write source is not re-read from disk after
    the caches are dropped; else the work directory."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 2 * size:
            return Path(tempfile.mkdtemp(prefix="s3fmfs-bench-", dir=shm))
    except OSError:
        pass
    return workdir


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def main() -> int:
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if not S3RVER_JS.exists():
        print(f"bench: {S3RVER_JS} missing: run `make npm`", file=sys.stderr)
        return 2
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        print("bench: needs /dev/fuse and fusermount3 (apt install fuse3)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C: every finally runs (unmounts, s3rver, temporary files).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name in ("NO_PROXY", "no_proxy"):  # loopback traffic never goes to a proxy
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1,localhost"]))

    peers, notes = choose_peers(cfg)
    systems = ["raw", "s3fmfs", *peers]
    results = report.Results(systems, runs={s: cfg.runs for s in ("raw", "s3fmfs")})
    results.runs.update({p: cfg.peer_runs for p in peers})
    results.notes += notes
    started = datetime.datetime.now().astimezone()
    source = source_description()
    fingerprints: set[str] = set()
    load_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="s3fmfs-bench-"))
    big_size = cfg.big_mib * MiB
    big_dir = big_source_dir(big_size, workdir)
    failed_core = False
    try:
        files = small_tree(cfg.small_files)
        tarball = workdir / "small-files.tar"
        write_tarball(tarball, files)
        big_src = big_dir / "big.bin"
        write_big(big_src, cfg.big_mib)
        expected_ls = ls_objects(cfg.ls_objects)
        with s3rver() as server:
            bucket = Bucket(server, BUCKET)
            log(f"s3rver on {server.endpoint}; seeding {cfg.big_mib} MiB, {cfg.ls_objects} "
                f"objects, {cfg.small_files} files")  # fmt: skip
            t0 = time.perf_counter()
            seed(bucket, big_src, expected_ls, files)
            log(f"seeded in {time.perf_counter() - t0:.1f}s")
            ctx = workloads.Context(
                bucket, big_src, big_size, expected_ls, files, tarball, cfg.timeout
            )
            target = Target(server, BUCKET, workdir, cfg.s3fmfs_options)
            dropped: list[bool] = []

            def drop() -> None:
                dropped.append(drop_caches())

            for workload in cfg.workloads:
                for run in range(max(results.runs.values())):
                    for system in systems:
                        if run >= results.runs[system]:
                            continue
                        if system == "s3fmfs":
                            fingerprints.add(source_fingerprint())
                        failed_core |= not measure(
                            system, workload, run, ctx, target, drop, results
                        )
            if dropped and not all(dropped):
                results.notes.append("caches NOT dropped (needs root): numbers are warm-cache")
        if cfg.runs != cfg.peer_runs and peers:
            results.notes.append(
                f"median of {cfg.runs} runs for raw and s3fmfs, {cfg.peer_runs} for the peers"
            )
        if len(fingerprints) > 1:
            results.notes.append(
                f"s3fmfs's sources changed during the run ({len(fingerprints)} versions "
                "mounted): its medians mix them"
            )
        results.notes.append(
            f"load average (1 min) {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} "
            "at the end: the machine is shared, read ratios rather than absolute numbers"
        )
        results.notes += versions(peers)
    finally:
        if big_dir != workdir:
            shutil.rmtree(big_dir, ignore_errors=True)
        keep_logs = failed_core or any(results.failures)
        if keep_logs:
            (workdir / "small-files.tar").unlink(missing_ok=True)
            log(f"daemon logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    table = report.metrics(cfg.big_mib, cfg.ls_objects, cfg.small_files)
    table = [m for m in table if m.workload in cfg.workloads]
    runs = f"median of {cfg.runs}" if cfg.runs > 1 else "1 run"
    header = (
        f"s3fmfs benchmark, {started:%Y-%m-%d %H:%M %Z}, {machine()}; s3rver on loopback, "
        f"{runs}; fresh mount and dropped caches before every measurement; s3fmfs {source}"
    )
    text = report.render(results, table, header)
    sys.stdout.write(text)
    out = Path(cfg.out) if cfg.out else Path(tempfile.mkstemp(prefix="bench-", suffix=".md")[1])
    out.write_text(text)
    log(f"report written to {out}")
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(results.to_json(), indent=1))
    missed = [v.metric for v in report.verdicts(results, table) if v.holds is False]
    missed += [
        f"rss:{w}" for w, ok in report.rss_verdicts(results, list(cfg.workloads)).items() if not ok
    ]
    if failed_core:
        log("a measurement of s3fmfs or raw failed")
        return 1
    if cfg.strict and missed:
        log(f"targets missed: {', '.join(missed)}")
        return 1
    return 0


def measure(
    system: str,
    workload: str,
    run: int,
    ctx: workloads.Context,
    target: Target,
    drop: workloads.Drop,
    results: report.Results,
) -> bool:
    """One measurement, recorded in ``results``; False when it failed for raw or s3fmfs."""
    tag = f"{workload}-{system}-{run}"
    t0 = time.perf_counter()
    try:
        if system == "raw":
            values = workloads.raw_workload(workload, ctx, tag, drop)
            rss = None
        else:
            mounter = Mounter(system, target, tag)
            values = workloads.MOUNTED[workload](mounter, ctx, tag, drop)
            rss = mounter.peak_rss
        results.add(system, workload, values, rss)
        shown = ", ".join(f"{k}={v:.3g}" for k, v in values.items())
        rss_text = f", peak RSS {rss / 1e6:.0f} MB" if rss else ""
        log(f"{tag}: {shown}{rss_text} ({time.perf_counter() - t0:.1f}s)")
        return True
    except Exception as exc:  # a failed measurement is a result
        results.fail(system, workload, one_line(exc))
        log(f"{tag}: FAILED: {exc}\n{traceback.format_exc(limit=3)}")
        return system not in ("raw", "s3fmfs")
    finally:
        try:
            workloads.cleanup(workload, ctx, tag)
        except Exception as exc:
            log(f"{tag}: cleanup failed: {one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
