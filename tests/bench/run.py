"""``python -m tests.bench.run``: the whole benchmark (settings: :mod:`tests.bench.config`).

Starts the counting s3rver (:mod:`tests.bench.counting`), seeds it once (directly), runs the
microbenchmark once on loopback (``tests/bench/micro.py``, when present), then for each latency
mode (``BENCH_LATENCY_MS``: loopback, then each N behind one latency proxy that every measured
system goes through) measures every workload for raw, s3fmfs and the installed peers (runs
interleaved: run 1 of each system, then run 2…). Prints the report (one table per mode) on
stdout and writes it to ``BENCH_OUT`` (default: a temporary file, named on stderr). Progress
goes to stderr. A peer that takes longer than ``BENCH_PEER_TIMEOUT`` is shown as timed out.

Exit status: 0; 1 when a measurement of s3fmfs or raw failed (or, with ``BENCH_STRICT=1``, a
target was missed); 2 for bad settings or when s3rver/FUSE are missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench import checks, report, workloads
from tests.bench.config import Config, ConfigError
from tests.bench.counting import CountingS3rver, Meter, counting_s3rver
from tests.bench.data import MiB, ls_objects, small_tree, write_big, write_tarball
from tests.bench.raw import Bucket, seed
from tests.bench.systems import PEER_BINARIES, Mounter, Target, drop_caches
from tests.support.latency_proxy import latency_proxy
from tests.support.servers import S3RVER_JS, S3Server

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


@contextlib.contextmanager
def endpoint(server: CountingS3rver, latency_ms: int) -> Iterator[S3Server]:
    """Where the measured systems connect in a mode: s3rver's counted port, or a proxy N ms
    away in front of it."""
    if latency_ms == 0:
        yield server.measured
        return
    measured = server.measured
    with latency_proxy(measured.host, measured.port, latency_ms) as proxy:
        yield dataclasses.replace(measured, host=proxy.host, port=proxy.port)


MICRO_BUCKET = "bench-micro"


def microbenchmark(server: S3Server) -> tuple[dict[str, float] | None, str]:
    """``tests.bench.micro.measure`` once, in its own bucket (its figures, or None and why)."""
    if importlib.util.find_spec("tests.bench.micro") is None:
        return None, ""
    try:
        micro: Any = importlib.import_module("tests.bench.micro")
        Bucket(server, MICRO_BUCKET).create()
        figures = micro.measure(server, MICRO_BUCKET)
        return {str(k): float(v) for k, v in figures.items()}, ""
    except Exception as exc:  # the rest of the run is still worth having
        log(f"microbenchmark failed: {exc}\n{traceback.format_exc(limit=3)}")
        return None, f"failed: {one_line(exc)}"


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
    modes: dict[int, report.Results] = {}
    for latency in cfg.latencies:
        results = report.Results(systems, runs={s: cfg.runs for s in ("raw", "s3fmfs")})
        results.runs.update({p: cfg.peer_runs for p in peers})
        results.latency_ms = latency
        results.units = {w: report.units(w, cfg.ls_objects, cfg.small_files) for w in cfg.workloads}
        modes[latency] = results
    general = list(notes)
    started = datetime.datetime.now().astimezone()
    source = source_description()
    fingerprints: set[str] = set()
    load_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="s3fmfs-bench-"))
    big_size = cfg.big_mib * MiB
    big_dir = big_source_dir(big_size, workdir)
    failed_core = False
    micro: dict[str, float] | None = None
    micro_note = ""
    try:
        files = small_tree(cfg.small_files)
        tarball = workdir / "small-files.tar"
        write_tarball(tarball, files)
        big_src = big_dir / "big.bin"
        write_big(big_src, cfg.big_mib)
        expected_ls = ls_objects(cfg.ls_objects)
        with counting_s3rver() as server:
            bucket = Bucket(server.control, BUCKET)
            log(f"s3rver on {server.measured.endpoint}, control {server.control.endpoint}; "
                f"seeding {cfg.big_mib} MiB, {cfg.ls_objects} objects, "
                f"{cfg.small_files} files")  # fmt: skip
            t0 = time.perf_counter()
            seed(bucket, big_src, expected_ls, files)
            log(f"seeded in {time.perf_counter() - t0:.1f}s")
            micro, micro_note = microbenchmark(server.control)
            dropped: list[bool] = []

            def drop() -> None:
                dropped.append(drop_caches())

            for latency, results in modes.items():
                with endpoint(server, latency) as measured:
                    log(f"mode: {report.mode_name(latency)} (systems connect to "
                        f"{measured.endpoint})")  # fmt: skip
                    ctx = workloads.Context(
                        bucket,
                        Bucket(measured, BUCKET),
                        big_src,
                        big_size,
                        expected_ls,
                        files,
                        tarball,
                        cfg.timeout,
                        Meter(None),
                    )
                    target = Target(measured, BUCKET, workdir, cfg.s3fmfs_options)
                    for workload in cfg.workloads:
                        for run in range(max(results.runs.values())):
                            for system in systems:
                                if run >= results.runs[system]:
                                    continue
                                if system == "s3fmfs":
                                    fingerprints.add(source_fingerprint())
                                timeout = cfg.timeout
                                if system in peers:
                                    timeout = min(cfg.timeout, cfg.peer_timeout)
                                one = dataclasses.replace(ctx, timeout=timeout, meter=Meter(server))
                                tag = f"{latency}ms-{workload}-{system}-{run}"
                                failed_core |= not measure(
                                    system, workload, tag, one, target, drop, results
                                )
            if dropped and not all(dropped):
                general.append("caches NOT dropped (needs root): numbers are warm-cache")
        if cfg.runs != cfg.peer_runs and peers:
            general.append(
                f"median of {cfg.runs} runs for raw and s3fmfs, {cfg.peer_runs} for the peers"
            )
        if len(fingerprints) > 1:
            general.append(
                f"s3fmfs's sources changed during the run ({len(fingerprints)} versions "
                "mounted): its medians mix them"
            )
        general.append(
            f"load average (1 min) {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} "
            "at the end: the machine is shared, read ratios rather than absolute numbers"
        )
        general += versions(peers)
    finally:
        if big_dir != workdir:
            shutil.rmtree(big_dir, ignore_errors=True)
        keep_logs = failed_core or any(r.failures for r in modes.values())
        if keep_logs:
            (workdir / "small-files.tar").unlink(missing_ok=True)
            log(f"daemon logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    runs = f"median of {cfg.runs}" if cfg.runs > 1 else "1 run"
    header = (
        f"s3fmfs benchmark, {started:%Y-%m-%d %H:%M %Z}, {machine()}; s3rver, {runs}; fresh "
        f"mount and dropped caches before every measurement; s3fmfs {source}"
    )
    command_line = " ".join(
        f"{k}={v}"
        for k, v in sorted(os.environ.items())
        if k.startswith("BENCH_") and k not in ("BENCH_OUT", "BENCH_JSON")
    )
    parts = [header, "", f"Settings: {command_line or '(defaults)'}", ""]
    parts.append(report.render_micro(micro, micro_note))
    missed: list[str] = []
    if micro is not None and micro.get("head_ms", 0.0) > report.HEAD_CPU_LIMIT_MS:
        missed.append("micro: CPU per HEAD")
    for latency, results in modes.items():
        table = report.metrics(cfg.big_mib, cfg.ls_objects, cfg.small_files, latency)
        table = [m for m in table if m.workload in cfg.workloads]
        title = f"## {report.mode_name(latency).capitalize()}"
        if latency:
            title += " (every measured system behind the latency proxy)"
        parts.append(report.render(results, table, title))
        missed += [f"{report.mode_name(latency)}: {m}" for m in report.missed(results, table)]
    parts.append("Targets missed: " + ("; ".join(missed) if missed else "none") + "\n")
    if general:
        parts.append("Notes:\n\n" + "".join(f"- {note}\n" for note in general))
    text = "\n".join(parts)
    sys.stdout.write(text)
    out = Path(cfg.out) if cfg.out else Path(tempfile.mkstemp(prefix="bench-", suffix=".md")[1])
    out.write_text(text)
    log(f"report written to {out}")
    if cfg.json_out:
        data = {
            "micro": micro,
            "modes": {str(lat): r.to_json() for lat, r in modes.items()},
            "missed": missed,
        }
        Path(cfg.json_out).write_text(json.dumps(data, indent=1))
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
    tag: str,
    ctx: workloads.Context,
    target: Target,
    drop: workloads.Drop,
    results: report.Results,
) -> bool:
    """One measurement, recorded in ``results`` with its request counts; False when it failed
    for raw or s3fmfs (a peer's failure or timeout is only recorded)."""
    t0 = time.perf_counter()

    def drop_and_count() -> None:
        drop()
        ctx.meter.start()

    try:
        if system == "raw":
            values = workloads.raw_workload(workload, ctx, tag, drop_and_count)
            rss = None
        else:
            mounter = Mounter(system, target, tag)
            values = workloads.MOUNTED[workload](mounter, ctx, tag, drop_and_count)
            rss = mounter.peak_rss
        results.add(system, workload, values, rss, ctx.meter.delta)
        shown = ", ".join(f"{k}={v:.3g}" for k, v in values.items())
        rss_text = f", peak RSS {rss / 1e6:.0f} MB" if rss else ""
        counts = ctx.meter.delta or {}
        asked = " ".join(f"{k}={n}" for k, n in counts.items() if n)
        log(f"{tag}: {shown}{rss_text}; requests {asked or 'none'} "
            f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
        return True
    except (subprocess.TimeoutExpired, checks.CheckError) as exc:
        if system in ("raw", "s3fmfs") or not timed_out(exc):
            results.fail(system, workload, one_line(exc))
            log(f"{tag}: FAILED: {exc}\n{traceback.format_exc(limit=3)}")
            return system not in ("raw", "s3fmfs")
        results.fail(system, workload, f"{report.TIMED_OUT} (> {ctx.timeout:.0f} s)")
        log(f"{tag}: timed out after {ctx.timeout:.0f}s")
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


def timed_out(exc: Exception) -> bool:
    """A command past its timeout, or an upload not complete by then."""
    return isinstance(exc, subprocess.TimeoutExpired) or "not complete after" in str(exc)


if __name__ == "__main__":
    sys.exit(main())
