"""The bench's settings, targets, request counts and report (tests/bench/), without FUSE:
``BENCH_LATENCY_MS`` and the peers' timeout parse; issue 12's targets hold or not per mode;
requests per file are shown by kind; the counting s3rver counts each kind on its measured port
only; boto3 signs as s3rver checks (the write baseline).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bench import report
from tests.bench.config import Config, ConfigError
from tests.bench.counting import KINDS, Meter, counting_s3rver
from tests.bench.raw import Bucket, boto3_client, upload_config, upload_settings
from tests.support.servers import S3RVER_JS

needs_s3rver = pytest.mark.skipif(
    not S3RVER_JS.exists() or shutil.which("node") is None, reason="needs s3rver (make npm)"
)


def test_latency_settings() -> None:
    assert Config.from_env({}).latencies == (0, 10)
    assert Config.from_env({"BENCH_LATENCY_MS": "10"}).latencies == (10,)
    assert Config.from_env({"BENCH_LATENCY_MS": " 0, 20,0 "}).latencies == (0, 20)
    cfg = Config.from_env({"BENCH_PEER_TIMEOUT": "30", "BENCH_RUNS": "2"})
    assert (cfg.peer_timeout, cfg.timeout, cfg.peer_runs) == (30.0, 900.0, 2)
    for bad in (
        {"BENCH_LATENCY_MS": "-1"},
        {"BENCH_LATENCY_MS": "10ms"},
        {"BENCH_PEER_TIMEOUT": "0"},
    ):
        with pytest.raises(ConfigError):
            Config.from_env(bad)


def results_with(values: dict[tuple[str, str], float], latency: int) -> report.Results:
    results = report.Results(["raw", "s3fmfs", "s3fs", "rclone"], latency_ms=latency)
    for (metric, system), value in values.items():
        workload = "ls" if metric.startswith("ls") else metric.split("-")[0]
        results.add(system, workload, {metric: value}, None)
    return results


def held(results: report.Results, latency: int) -> dict[str, bool | None]:
    table = report.metrics(1024, 10_000, 1475, latency)
    return {v.metric: v.holds for v in report.verdicts(results, table)}


def test_targets_per_mode() -> None:
    values = {
        ("read", "raw"): 500.0, ("read", "s3fmfs"): 400.0, ("read", "s3fs"): 390.0,
        ("write", "raw"): 100.0, ("write", "s3fmfs"): 89.0,
        ("ls", "raw"): 1.0, ("ls", "s3fmfs"): 3.0, ("ls", "s3fs"): 3.5,
        ("untar", "raw"): 100.0, ("untar", "s3fmfs"): 80.0,
        ("grep", "raw"): 100.0, ("grep", "s3fmfs"): 95.0, ("grep", "s3fs"): 50.0,
        ("find", "raw"): 1.0, ("find", "s3fmfs"): 2.0, ("find", "s3fs"): 2.0,
    }  # fmt: skip
    loopback = held(results_with(values, 0), 0)
    assert loopback["read"] is True  # ≥ s3fs, whatever raw does
    assert loopback["write"] is False  # 0.89× boto3's multipart
    assert loopback["ls"] is True and loopback["find"] is False  # strictly faster than s3fs
    assert loopback["untar"] is True and loopback["grep"] is True  # 0.8× and 0.95× raw
    assert loopback["ls-warm"] is None and loopback["write-put"] is None  # no targets
    far = held(results_with(values, 10), 10)
    assert far["untar"] is None  # no untar target at 10 ms
    assert far["grep"] is False  # ≥ 2× s3fs holds, ≥ raw does not
    faster = held(results_with(values | {("grep", "s3fmfs"): 100.0}, 10), 10)
    assert faster["grep"] is True
    no_s3fs = {k: v for k, v in values.items() if k[1] != "s3fs"}
    no_s3fs[("grep", "s3fmfs")] = 100.0  # ≥ raw: the rest cannot be told without s3fs
    assert held(results_with(no_s3fs, 10), 10)["grep"] is None


def test_a_timed_out_peer_is_slower_than_any_result() -> None:
    results = results_with({("ls", "raw"): 1.0, ("ls", "s3fmfs"): 50.0}, 10)
    results.fail("s3fs", "ls", f"{report.TIMED_OUT} (> 180 s)")
    assert held(results, 10)["ls"] is True
    table = report.metrics(1024, 10_000, 1475, 10)
    text = report.render(results, table, "## 10 ms")
    assert "timed out [1]" in text and "[1] s3fs, ls: timed out (> 180 s)" in text
    results.fail("rclone", "find", "boom")
    assert "failed [2]" in report.render(results, table, "## 10 ms")


def test_requests_per_file() -> None:
    results = report.Results(["raw", "s3fmfs"], units={"grep": 100, "read": 1})
    zero = dict.fromkeys(KINDS, 0)
    results.add("raw", "grep", {"grep": 1.0}, None, zero | {"GET": 100, "LIST": 1})
    for heads in (120, 100, 300):  # the median of the runs, kind by kind
        results.add("s3fmfs", "grep", {"grep": 1.0}, 1, zero | {"HEAD": heads, "GET": 100})
    results.add("s3fmfs", "read", {"read": 1.0}, 1, zero | {"GET": 7})
    assert report.format_requests(results.per_file("grep", "raw")) == "GET 1 LIST 0.01"
    assert report.format_requests(results.per_file("grep", "s3fmfs")) == "HEAD 1.20 GET 1"
    assert report.format_requests(results.per_file("read", "s3fmfs")) == "GET 7"
    assert report.format_requests(results.per_file("read", "raw")) == "–"  # not measured
    assert report.format_requests(dict.fromkeys(KINDS, 0.0)) == "none"
    assert report.format_requests(zero | {"LIST": 0.0004}) == "LIST 0.0004"
    table = [m for m in report.metrics(1, 100, 100) if m.workload in ("grep", "read")]
    text = report.render(results, table, "## Loopback")
    assert "| grep | GET 1 LIST 0.01 | HEAD 1.20 GET 1 |" in text
    assert report.units("ls", 10_000, 1475) == 10_000
    assert report.units("find", 10_000, 1475) == 1475
    assert report.units("write", 10_000, 1475) == 1


def test_microbenchmark_lines() -> None:
    assert "microbenchmark not available" in report.render_micro(None)
    good = report.render_micro({"head_ms": 0.3, "get4k_ms": 0.5, "put4k_ms": 0.6})
    assert "HEAD 0.300 ms" in good and "PUT 4 KiB 0.600 ms" in good and ": yes" in good
    assert "**no**" in report.render_micro({"head_ms": 0.9})


def test_missed_targets_include_rss() -> None:
    results = results_with({("find", "raw"): 1.0, ("find", "s3fmfs"): 2.0}, 0)
    results.add("s3fmfs", "find", {}, 150_000_000)
    results.add("s3fs", "find", {"find": 1.5}, 1)
    table = [m for m in report.metrics(1, 10, 10) if m.workload == "find"]
    assert report.missed(results, table) == ["find", "rss:find"]


def test_boto3_baseline_cuts_as_s3fmfs_does() -> None:
    part_size, concurrency = upload_settings()
    cfg = upload_config()
    assert (cfg.multipart_chunksize, cfg.max_concurrency) == (part_size, concurrency)
    assert part_size >= 5 << 20 and concurrency >= 1


@needs_s3rver
def test_counting_s3rver_counts_measured_requests_by_kind(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(b"x" * (11 << 20))
    with counting_s3rver() as server:
        control = Bucket(server.control, "bench-count")
        control.create()
        measured = Bucket(server.measured, "bench-count")
        before = server.counts()
        meter = Meter(server)
        meter.start()
        client = boto3_client(server.measured)  # Signature V2, checked by s3rver
        from boto3.s3.transfer import TransferConfig

        client.upload_file(
            str(src),
            "bench-count",
            "big",
            Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20),
        )
        client.copy_object(
            Bucket="bench-count", Key="copy", CopySource={"Bucket": "bench-count", "Key": "big"}
        )
        measured.put_many({"a": b"1", "b": b"2"})
        assert measured.head_size("a") == 1
        measured.list_sizes("")
        measured.bodies({"a": "a"})
        measured.delete("b")
        assert control.head_size("big") == 11 << 20  # the control port: not counted
        meter.stop()
        meter.start()  # a second interval is not counted
        measured.delete("a")
        meter.stop()
        assert meter.delta == {
            "HEAD": 1,
            "GET": 1,
            "LIST": 1,
            "PUT": 2,
            "COPY": 1,
            "PART": 3,
            "POST": 2,
            "DELETE": 1,
            "OTHER": 0,
        }
        assert server.counts()["DELETE"] == before["DELETE"] + 2
        wrong = boto3_client(
            type(server.measured)(server.measured.host, server.measured.port, "S3RVER", "bad")
        )
        with pytest.raises(Exception, match=r"403|Forbidden|SignatureDoesNotMatch"):
            wrong.head_object(Bucket="bench-count", Key="big")


def test_microbenchmark_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """run.py calls ``tests.bench.micro.measure`` when the module exists, in its own bucket,
    and turns its absence or failure into a line of the report, not a failed run."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    from tests.bench import run
    from tests.support.servers import S3Server

    server = S3Server("127.0.0.1", 1, "k", "s")
    created: list[str] = []
    monkeypatch.setattr(Bucket, "create", lambda self: created.append(self.name))
    fake = types.ModuleType("tests.bench.micro")
    fake.__spec__ = importlib.machinery.ModuleSpec("tests.bench.micro", None)
    calls: list[tuple[S3Server, str]] = []

    def measure(srv: S3Server, bucket: str, n: int = 2000) -> dict[str, float]:
        calls.append((srv, bucket))
        return {"head_ms": 0.25, "get4k_ms": 0.4, "put4k_ms": 0.5}

    fake.measure = measure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.bench.micro", fake)
    assert run.microbenchmark(server) == ({"head_ms": 0.25, "get4k_ms": 0.4, "put4k_ms": 0.5}, "")
    assert calls == [(server, run.MICRO_BUCKET)] and created == [run.MICRO_BUCKET]

    def broken(srv: S3Server, bucket: str, n: int = 2000) -> dict[str, float]:
        raise RuntimeError("no store")

    fake.measure = broken  # type: ignore[attr-defined]
    figures, note = run.microbenchmark(server)
    assert figures is None and "no store" in note
    assert "not available (failed: RuntimeError: no store)" in report.render_micro(figures, note)

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "tests.bench.micro")
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tests.bench.micro" else real_find_spec(name, *a),
    )
    assert run.microbenchmark(server) == (None, "")
