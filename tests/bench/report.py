"""Results, medians, targets and the markdown tables of a run.

One :class:`Results` per latency mode (``BENCH_LATENCY_MS``: 0 = loopback, N = N ms each way);
:func:`render` makes one mode's section, :func:`render_micro` the microbenchmark's lines.

Ratio = s3fmfs / raw of the measured quantity: of rates (MB/s, files/s; higher is better) and
of times (s; lower is better). The targets are issue 12's: each is a function of s3fmfs's
median, its ratio to raw and the peers' medians (a target against s3fs cannot be told without
s3fs: ``n/a``). Requests per file are the server's counts of the timed part
(:mod:`tests.bench.counting`) divided by the files the workload touches (the listed objects
for ``ls``, 1 for the big object's read and write).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tests.bench.counting import KINDS

MB = 1e6
RSS_LIMIT_MB = 100.0
HEAD_CPU_LIMIT_MS = 0.35
TIMED_OUT = "timed out"
MICRO_LABELS = (("head_ms", "HEAD"), ("get4k_ms", "GET 4 KiB"), ("put4k_ms", "PUT 4 KiB"))

Holds = Callable[[float, "float | None", Mapping[str, "float | None"]], "bool | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    workload: str
    label: str
    unit: str
    higher_is_better: bool
    target: str  # shown in the table
    holds: Holds  # (s3fmfs's value, ratio to raw, peer -> value)


def _no_target(value: float, ratio: float | None, peers: Mapping[str, float | None]) -> None:
    return None


def _ratio_at_least(limit: float) -> Holds:
    return lambda value, ratio, peers: None if ratio is None else ratio >= limit


def _vs_s3fs(factor: float, higher_is_better: bool) -> Holds:
    """At least ``factor`` times s3fs's rate, or faster than s3fs (times)."""

    def holds(value: float, ratio: float | None, peers: Mapping[str, float | None]) -> bool | None:
        theirs = peers.get("s3fs")
        if theirs is None:
            return None
        return value >= factor * theirs if higher_is_better else value < theirs

    return holds


def _all(*checks: Holds) -> Holds:
    def holds(value: float, ratio: float | None, peers: Mapping[str, float | None]) -> bool | None:
        got = [c(value, ratio, peers) for c in checks]
        if False in got:
            return False
        return None if None in got else True

    return holds


def metrics(big_mib: int, ls_objects: int, small_files: int, latency_ms: int = 0) -> list[Metric]:
    """The table's rows and issue 12's targets for one latency mode."""
    big = f"{big_mib // 1024} GiB" if big_mib % 1024 == 0 else f"{big_mib} MiB"
    far = latency_ms > 0
    grep_target, grep_holds = (
        ("≥ 2× s3fs and ≥ 1× raw", _all(_vs_s3fs(2.0, True), _ratio_at_least(1.0)))
        if far
        else ("≥ 0.9× raw", _ratio_at_least(0.9))
    )
    untar_target, untar_holds = ("–", _no_target) if far else ("≥ 0.8× raw", _ratio_at_least(0.8))
    return [
        Metric("read", "read", f"read a {big} object (`dd bs=1M`)", "MB/s", True,
               "≥ s3fs", _vs_s3fs(1.0, True)),
        Metric("write", "write", f"write {big} until complete in the bucket (raw: boto3 "
               "`upload_file`)", "MB/s", True,
               "≥ 0.9× raw", _ratio_at_least(0.9)),
        Metric("write-put", "write", "… raw: one PUT of it (curl), for reference", "MB/s", True,
               "–", _no_target),
        Metric("ls", "ls", f"`ls -l` of a folder of {ls_objects:,} objects, first mount", "s",
               False, "< s3fs", _vs_s3fs(1.0, False)),
        Metric("ls-warm", "ls", "`ls -l`, new mount, warm metadata cache", "s", False,
               "–", _no_target),
        Metric("ls-again", "ls", "`ls -l` again in the same mount", "s", False,
               "–", _no_target),
        Metric("untar", "untar", f"untar {small_files:,} small files until all are in the bucket",
               "files/s", True, untar_target, untar_holds),
        Metric("grep", "grep", "`grep -r` over those files", "files/s", True, grep_target,
               grep_holds),
        Metric("find", "find", "`find -exec stat` over them", "s", False, "< s3fs",
               _vs_s3fs(1.0, False)),
    ]  # fmt: skip


def units(workload: str, ls_objects: int, small_files: int) -> int:
    """What a workload's requests are divided by: its files (listed objects for ``ls``)."""
    return {"read": 1, "write": 1, "ls": ls_objects}.get(workload, small_files)


@dataclass
class Results:
    systems: list[str]  # "raw", "s3fmfs", then the peers
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (metric, system)
    rss: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (workload, system)
    failures: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (workload, system)
    runs: dict[str, int] = field(default_factory=dict)  # system -> runs asked for
    notes: list[str] = field(default_factory=list)
    #: (workload, system) -> the server's request counts by kind, one dict per run
    requests: dict[tuple[str, str], list[dict[str, int]]] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)  # workload -> files it touches
    latency_ms: int = 0

    def add(
        self,
        system: str,
        workload: str,
        values: dict[str, float],
        rss: int | None,
        requests: dict[str, int] | None = None,
    ) -> None:
        for metric, value in values.items():
            self.values.setdefault((metric, system), []).append(value)
        if rss is not None:
            self.rss.setdefault((workload, system), []).append(rss)
        if requests is not None:
            self.requests.setdefault((workload, system), []).append(requests)

    def per_file(self, workload: str, system: str) -> dict[str, float] | None:
        """Median requests by kind of the runs, per file the workload touches."""
        got = self.requests.get((workload, system))
        if not got or self.failures.get((workload, system)):
            return None
        unit = max(1, self.units.get(workload, 1))
        return {k: statistics.median(r.get(k, 0) for r in got) / unit for k in KINDS}

    def fail(self, system: str, workload: str, note: str) -> None:
        self.failures.setdefault((workload, system), []).append(note)

    def median(self, metric: str, workload: str, system: str) -> float | None:
        if self.failures.get((workload, system)):
            return None
        got = self.values.get((metric, system))
        return statistics.median(got) if got else None

    def peak_rss_mb(self, workload: str, system: str) -> float | None:
        got = self.rss.get((workload, system))
        return max(got) / MB if got else None

    def to_json(self) -> dict[str, object]:
        return {
            "systems": self.systems,
            "runs": self.runs,
            "values": {f"{m}|{s}": v for (m, s), v in self.values.items()},
            "rss": {f"{w}|{s}": v for (w, s), v in self.rss.items()},
            "failures": {f"{w}|{s}": v for (w, s), v in self.failures.items()},
            "requests": {f"{w}|{s}": v for (w, s), v in self.requests.items()},
            "units": self.units,
            "latency_ms": self.latency_ms,
            "notes": self.notes,
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"


@dataclass(frozen=True)
class Verdict:
    metric: str
    value: float | None
    ratio: float | None
    holds: bool | None  # None: cannot tell (no value, no raw, no peer)


def verdicts(results: Results, table: list[Metric]) -> list[Verdict]:
    out = []
    peers = [s for s in results.systems if s not in ("raw", "s3fmfs")]
    for m in table:
        value = results.median(m.name, m.workload, "s3fmfs")
        base = results.median(m.name, m.workload, "raw")
        ratio = value / base if value is not None and base else None
        peer_values = {p: results.median(m.name, m.workload, p) for p in peers}
        for p in peers:  # a peer that timed out is slower than any time that finished
            notes = results.failures.get((m.workload, p), [])
            if notes and notes[0].startswith(TIMED_OUT):
                peer_values[p] = 0.0 if m.higher_is_better else float("inf")
        holds = None if value is None else m.holds(value, ratio, peer_values)
        out.append(Verdict(m.name, value, ratio, holds))
    return out


def rss_verdicts(results: Results, workloads: list[str]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for w in workloads:
        peak = results.peak_rss_mb(w, "s3fmfs")
        out[w] = None if peak is None else peak <= RSS_LIMIT_MB
    return out


def _mark(holds: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[holds]


def _count(value: float) -> str:
    if value == int(value):
        return str(int(value))
    if value >= 10:
        return f"{value:.0f}"
    if value >= 0.005:
        return f"{value:.2f}"
    return f"{value:.1g}"


def format_requests(per_file: Mapping[str, float] | None) -> str:
    """``HEAD 1.00 GET 1.00 LIST 0.01``: the kinds with any request, in :data:`KINDS` order."""
    if per_file is None:
        return "–"
    shown = [f"{k} {_count(per_file[k])}" for k in KINDS if per_file.get(k)]
    return " ".join(shown) or "none"


def mode_name(latency_ms: int) -> str:
    return "loopback" if latency_ms == 0 else f"{latency_ms} ms each way"


def missed(results: Results, table: list[Metric]) -> list[str]:
    """The targets missed in this mode, named ``metric`` or ``rss:workload``."""
    workloads = list(dict.fromkeys(m.workload for m in table))
    out = [v.metric for v in verdicts(results, table) if v.holds is False]
    out += [f"rss:{w}" for w, ok in rss_verdicts(results, workloads).items() if ok is False]
    return out


def render_micro(micro: Mapping[str, float] | None, note: str = "") -> str:
    """The microbenchmark's lines (CPU per request through s3fmfs's store and client)."""
    title = "CPU per request, s3fmfs's store and client (`tests/bench/micro.py`, loopback)"
    if micro is None:
        return f"{title}: microbenchmark not available{f' ({note})' if note else ''}.\n"
    head = micro.get("head_ms")
    held = None if head is None else head <= HEAD_CPU_LIMIT_MS
    parts = [f"{label} {micro[key]:.3f} ms" for key, label in MICRO_LABELS if key in micro]
    return (
        f"{title}: {', '.join(parts) or 'no figures'}; target HEAD ≤ {HEAD_CPU_LIMIT_MS} ms: "
        f"{_mark(held)}.\n"
    )


def render(results: Results, table: list[Metric], header: str) -> str:
    """The report: the workload table, the peak-RSS table, failures and notes."""
    peers = [s for s in results.systems if s not in ("raw", "s3fmfs")]
    workloads = list(dict.fromkeys(m.workload for m in table))
    footnotes: dict[tuple[str, str], str] = {}

    def cell(metric: Metric, system: str) -> str:
        notes = results.failures.get((metric.workload, system))
        if notes:
            key = (metric.workload, system)
            if key not in footnotes:
                footnotes[key] = f"{system}, {metric.workload}: {notes[0]}"
            what = TIMED_OUT if notes[0].startswith(TIMED_OUT) else "failed"
            return f"{what} [{list(footnotes).index(key) + 1}]"
        return _fmt(results.median(metric.name, metric.workload, system), metric.unit)

    lines = [header, ""]
    cols = ["workload", "raw", "s3fmfs", "s3fmfs/raw", *peers, "target", "met"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for m, v in zip(table, verdicts(results, table), strict=True):
        ratio = "–" if v.ratio is None else f"{v.ratio:.2f}"
        row = [m.label, cell(m, "raw"), cell(m, "s3fmfs"), ratio]
        row += [cell(m, p) for p in peers]
        row += [m.target, _mark(v.holds) if m.target != "–" else "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "s3fmfs/raw: ratio of the medians (of rates: higher is better; of times: lower is "
        "better). Every cell is checked (sizes, counts, sampled bytes).",
    ]
    lines += [
        "",
        "Requests per file, by kind, counted by the server during the timed part (median of "
        "the runs; `ls`: per listed object, first mount; read and write: for the one object):",
        "",
    ]
    systems = ["raw", "s3fmfs", *peers]
    lines.append("| workload | " + " | ".join(systems) + " |")
    lines.append("|" + "---|" * (len(systems) + 1))
    for w in workloads:
        row = [w] + [format_requests(results.per_file(w, s)) for s in systems]
        lines.append("| " + " | ".join(row) + " |")
    rss_ok = rss_verdicts(results, workloads)
    lines += ["", "Daemon peak RSS (VmHWM, MB = 10⁶ bytes; highest of the runs):", ""]
    cols = ["workload", "s3fmfs", *peers, "target", "met"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for w in workloads:
        row = [w]
        for system in ["s3fmfs", *peers]:
            peak = results.peak_rss_mb(w, system)
            row.append("–" if peak is None else f"{peak:.0f} MB")
        row += [f"≤ {RSS_LIMIT_MB:.0f} MB", _mark(rss_ok[w])]
        lines.append("| " + " | ".join(row) + " |")
    if footnotes:
        lines += ["", "Failures:", ""]
        lines += [f"[{i}] {note}" for i, note in enumerate(footnotes.values(), 1)]
    if results.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"
