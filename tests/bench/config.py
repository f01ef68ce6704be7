"""The benchmark's settings, all from ``BENCH_*`` environment variables (``make bench`` passes
its command-line variables through the environment, so ``make bench BENCH_RUNS=1`` works).

| variable | default | meaning |
|---|---|---|
| ``BENCH_RUNS`` | 3 | runs per system and workload (the cell is their median) |
| ``BENCH_PEER_RUNS`` | ``BENCH_RUNS`` | runs for s3fs and rclone |
| ``BENCH_BIG_MIB`` | 1024 | size of the read/write object, MiB |
| ``BENCH_LS_OBJECTS`` | 10000 | objects in the listed folder |
| ``BENCH_SMALL_FILES`` | 1475 | files in the untar/grep/find set |
| ``BENCH_PEERS`` | ``auto`` | ``auto`` (those installed), ``none``, or a list: ``s3fs,rclone`` |
| ``BENCH_WORKLOADS`` | all | a subset: ``read,write,ls,untar,grep,find`` |
| ``BENCH_S3FMFS_OPTIONS`` | (none) | extra ``-o`` options for s3fmfs, appended to ``sigv2`` |
| ``BENCH_OUT`` | a temporary file | where the markdown report is written too |
| ``BENCH_JSON`` | (none) | where the raw results are written as JSON |
| ``BENCH_STRICT`` | 0 | 1: exit 1 when a target is missed too |
| ``BENCH_TIMEOUT`` | 900 | seconds one workload command may take |
| ``BENCH_PEER_TIMEOUT`` | 180 | the same for s3fs and rclone, then ``timed out`` (run goes on) |
| ``BENCH_LATENCY_MS`` | ``0,10`` | one table per value, ms each way (0: loopback); see below |

``BENCH_LATENCY_MS=N`` (N > 0): every measured system (raw, s3fmfs and the peers) talks to
s3rver through one latency proxy (``tests/support/latency_proxy.py``) delaying every byte N ms
each way; ``BENCH_LATENCY_MS=10`` alone gives just that table. Seeding and checks go direct.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

WORKLOADS = ("read", "write", "ls", "untar", "grep", "find")
PEERS = ("s3fs", "rclone")


class ConfigError(ValueError):
    """A ``BENCH_*`` variable that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


def _names(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> list[str]:
    raw = env.get(name, "").strip() or default
    if raw == "all":
        return list(allowed)
    if raw == "none":
        return []
    chosen = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in allowed]
    if unknown:
        raise ConfigError(f"{name}: unknown {unknown}; choose from {', '.join(allowed)}")
    return [n for n in allowed if n in chosen]


@dataclass(frozen=True)
class Config:
    runs: int = 3
    peer_runs: int = 3
    big_mib: int = 1024
    ls_objects: int = 10_000
    small_files: int = 1475
    peers: str | tuple[str, ...] = "auto"  # "auto", or the peers asked for
    workloads: tuple[str, ...] = WORKLOADS
    s3fmfs_options: tuple[str, ...] = ()
    out: str = ""
    json_out: str = ""
    strict: bool = False
    timeout: float = 900.0
    peer_timeout: float = 180.0
    latencies: tuple[int, ...] = (0, 10)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        runs = _int(env, "BENCH_RUNS", 3)
        peers_raw = env.get("BENCH_PEERS", "").strip() or "auto"
        peers: str | tuple[str, ...] = (
            "auto" if peers_raw == "auto" else tuple(_names(env, "BENCH_PEERS", PEERS, "auto"))
        )
        options = tuple(
            o.strip() for o in env.get("BENCH_S3FMFS_OPTIONS", "").split(",") if o.strip()
        )
        return cls(
            runs=runs,
            peer_runs=_int(env, "BENCH_PEER_RUNS", runs),
            big_mib=_int(env, "BENCH_BIG_MIB", 1024),
            ls_objects=_int(env, "BENCH_LS_OBJECTS", 10_000),
            small_files=_int(env, "BENCH_SMALL_FILES", 1475),
            peers=peers,
            workloads=tuple(_names(env, "BENCH_WORKLOADS", WORKLOADS, "all")),
            s3fmfs_options=options,
            out=env.get("BENCH_OUT", "").strip(),
            json_out=env.get("BENCH_JSON", "").strip(),
            strict=env.get("BENCH_STRICT", "0").strip() not in ("", "0", "no", "false"),
            timeout=float(_int(env, "BENCH_TIMEOUT", 900)),
            peer_timeout=float(_int(env, "BENCH_PEER_TIMEOUT", 180)),
            latencies=_latencies(env),
        )


def _latencies(env: Mapping[str, str]) -> tuple[int, ...]:
    raw = env.get("BENCH_LATENCY_MS", "").strip() or "0,10"
    out: list[int] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part.isdigit():
            raise ConfigError(f"BENCH_LATENCY_MS={raw!r}: expected milliseconds, e.g. 0,10")
        if int(part) not in out:
            out.append(int(part))
    return tuple(out)
