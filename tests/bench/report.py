"""Results, medians, targets and the markdown tables of a run.

Ratio = s3fmfs / raw of the measured quantity: of rates (MB/s, files/s; higher is better) and
of times (s; lower is better), so each target reads as in the issue (write ≥ 0.8× raw,
``ls -l`` ≤ 2× raw…).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

MB = 1e6
RSS_LIMIT_MB = 100.0


@dataclass(frozen=True)
class Metric:
    name: str
    workload: str
    label: str
    unit: str
    higher_is_better: bool
    target: str  # shown in the table
    holds: Callable[[float, float | None, float | None], bool | None]  # (s3fmfs, ratio, best peer)


def _ratio_at_least(limit: float) -> Callable[[float, float | None, float | None], bool | None]:
    return lambda value, ratio, best: None if ratio is None else ratio >= limit


def _ratio_at_most(limit: float) -> Callable[[float, float | None, float | None], bool | None]:
    return lambda value, ratio, best: None if ratio is None else ratio <= limit


def _beats_peers(value: float, ratio: float | None, best: float | None) -> bool | None:
    return None if best is None else value >= best


def metrics(big_mib: int, ls_objects: int, small_files: int) -> list[Metric]:
    big = f"{big_mib // 1024} GiB" if big_mib % 1024 == 0 else f"{big_mib} MiB"
    return [
        Metric("read", "read", f"read a {big} object (`dd bs=1M`)", "MB/s", True,
               "≥ best peer", _beats_peers),
        Metric("write", "write", f"write {big} until the object is complete in the bucket",
               "MB/s", True, "≥ 0.8× raw", _ratio_at_least(0.8)),
        Metric("ls", "ls", f"`ls -l` of a folder of {ls_objects:,} objects, first mount", "s",
               False, "≤ 2× raw", _ratio_at_most(2.0)),
        Metric("ls-warm", "ls", "`ls -l`, new mount, warm metadata cache", "s", False,
               "≤ 1.3× raw", _ratio_at_most(1.3)),
        Metric("ls-again", "ls", "`ls -l` again in the same mount (no target)", "s", False,
               "–", lambda value, ratio, best: None),
        Metric("untar", "untar", f"untar {small_files:,} small files until all are in the bucket",
               "files/s", True, "≥ 0.8× raw", _ratio_at_least(0.8)),
        Metric("grep", "grep", "`grep -r` over those files", "files/s", True, "≥ 0.9× raw",
               _ratio_at_least(0.9)),
        Metric("find", "find", "`find -exec stat` over them", "s", False, "≤ 2× raw",
               _ratio_at_most(2.0)),
    ]  # fmt: skip


@dataclass
class Results:
    systems: list[str]  # "raw", "s3fmfs", then the peers
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (metric, system)
    rss: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (workload, system)
    failures: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (workload, system)
    runs: dict[str, int] = field(default_factory=dict)  # system -> runs asked for
    notes: list[str] = field(default_factory=list)

    def add(self, system: str, workload: str, values: dict[str, float], rss: int | None) -> None:
        for metric, value in values.items():
            self.values.setdefault((metric, system), []).append(value)
        if rss is not None:
            self.rss.setdefault((workload, system), []).append(rss)

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
        peer_values = [results.median(m.name, m.workload, p) for p in peers]
        known = [v for v in peer_values if v is not None]
        best = (max(known) if m.higher_is_better else min(known)) if known else None
        holds = None if value is None else m.holds(value, ratio, best)
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
            return f"failed [{list(footnotes).index(key) + 1}]"
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
