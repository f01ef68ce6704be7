"""``make bench`` in miniature: the harness (tests/bench/) runs end to end on tiny sizes, and its
checks reject wrong results (so a broken filesystem cannot produce a number).

The end-to-end run uses its own s3rver, s3fmfs only (no peers), one run, a 4 MiB object, 40
listed objects and 25 small files, on loopback and behind the latency proxy (10 ms): about a
minute. The report's and settings' logic is tested without FUSE in test_bench_report.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import checks
from tests.bench.config import Config, ConfigError
from tests.bench.data import MiB, big_bytes, ls_objects, small_tree, write_big
from tests.support.servers import S3RVER_JS

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parent.parent

needs_fuse_and_s3rver = pytest.mark.skipif(
    not os.path.exists("/dev/fuse")
    or shutil.which("fusermount3") is None
    or shutil.which("curl") is None
    or not S3RVER_JS.exists(),
    reason="needs /dev/fuse, fusermount3, curl and s3rver (make deps)",
)


@needs_fuse_and_s3rver
def test_tiny_bench_run(tmp_path: Path) -> None:
    out, js = tmp_path / "report.md", tmp_path / "results.json"
    env = {
        **os.environ,
        "BENCH_RUNS": "1",
        "BENCH_BIG_MIB": "4",
        "BENCH_LS_OBJECTS": "40",
        "BENCH_SMALL_FILES": "25",
        "BENCH_PEERS": "none",
        "BENCH_OUT": str(out),
        "BENCH_JSON": str(js),
        "BENCH_TIMEOUT": "30",
        "BENCH_LATENCY_MS": "0,10",
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),  # s3fmfs's default metadata cache: unused
        "HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modes = json.loads(js.read_text())["modes"]
    assert list(modes) == ["0", "10"]
    for results in modes.values():
        assert results["failures"] == {}, results["failures"]
        assert results["systems"] == ["raw", "s3fmfs"]
        for metric in ("read", "write", "ls", "ls-warm", "ls-again", "untar", "grep", "find"):
            for system in ("raw", "s3fmfs"):
                values = results["values"][f"{metric}|{system}"]
                assert len(values) == 1 and values[0] > 0, (metric, system, values)
        for workload in ("read", "write", "ls", "untar", "grep", "find"):
            (peak,) = results["rss"][f"{workload}|s3fmfs"]
            assert 5e6 < peak < 1e9, (workload, peak)  # a real daemon's VmHWM, in bytes
            for system in ("raw", "s3fmfs"):
                (counts,) = results["requests"][f"{workload}|{system}"]
                assert sum(counts.values()) > 0, (workload, system)
        # the raw grep: one listing, one GET per file, nothing else
        (grep,) = results["requests"]["grep|raw"]
        assert {k: n for k, n in grep.items() if n} == {"GET": 25, "LIST": 1}
    text = out.read_text()
    assert text == done.stdout
    for label in ("read a 4 MiB object", "`ls -l` of a folder of 40 objects", "untar 25 small"):
        assert label in text
    assert "## Loopback" in text and "## 10 ms each way" in text
    assert "| grep | GET 1 LIST 0.04 |" in text
    with open("/proc/self/mountinfo") as f:
        assert "s3fmfs-bench-" not in f.read(), "a benchmark mount was left behind"
    # every mount had its own cache_dir: nothing went to the user's cache
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


def test_checks_reject_wrong_results(tmp_path: Path) -> None:
    size = 3 * MiB + 123
    src = tmp_path / "big"
    write_big(src, 4)
    good = src.read_bytes()[:size]
    checks.check_big_samples("ok", lambda o, n: good[o : o + n], size)
    bad = bytearray(good)
    bad[size - 1] ^= 1  # the last byte is always sampled
    with pytest.raises(checks.CheckError):
        checks.check_big_samples("bad", lambda o, n: bytes(bad[o : o + n]), size)
    assert big_bytes(MiB - 2, 4) == good[MiB - 2 : MiB + 2]

    expected = ls_objects(3)
    lines = [f"-rw-r--r-- 1 root root {s} Jan  1 00:00 {n}" for n, s in expected.items()]
    checks.check_ls_output("total 3\n" + "\n".join(lines), expected)
    with pytest.raises(checks.CheckError):
        checks.check_ls_output("\n".join(lines[:2]), expected)
    with pytest.raises(checks.CheckError):
        checks.check_ls_output(
            "\n".join(lines).replace(" 1 root root 100", " 1 root root 1"), expected
        )

    files = small_tree(12)
    counts = [f"/m/{f.path}:{f.matches}" for f in files]
    checks.check_grep_output("\n".join(counts), "/m", files)
    with pytest.raises(checks.CheckError):
        checks.check_grep_output("\n".join(counts[1:]), "/m", files)
    stats = [f"{len(f.data)} /m/{f.path}" for f in files]
    checks.check_stat_output("\n".join(stats), "/m", files)
    with pytest.raises(checks.CheckError):
        checks.check_stat_output(
            "\n".join(["1 " + stats[0].split(" ", 1)[1], *stats[1:]]), "/m", files
        )

    listed = {f.path: len(f.data) for f in files} | {"": 0, "docs/": 0}
    assert checks.listing_complete(listed, files)
    assert not checks.listing_complete(listed | {"stray.txt": 1}, files)
    assert not checks.listing_complete({f.path: 0 for f in files}, files)
    assert checks.dd_bytes("4+0 records in\n4194304 bytes (4.2 MB) copied, 0.1 s\n") == 4194304
    with pytest.raises(checks.CheckError):
        checks.dd_bytes("dd: error reading: Input/output error\n")


def test_settings() -> None:
    cfg = Config.from_env({"BENCH_RUNS": "5", "BENCH_PEERS": "rclone", "BENCH_WORKLOADS": "ls"})
    assert (cfg.runs, cfg.peer_runs, cfg.peers, cfg.workloads) == (5, 5, ("rclone",), ("ls",))
    assert Config.from_env({}).peers == "auto"
    for bad in ({"BENCH_RUNS": "0"}, {"BENCH_BIG_MIB": "x"}, {"BENCH_PEERS": "goofys"}):
        with pytest.raises(ConfigError):
            Config.from_env(bad)
