"""``grep -r`` over small files through a fresh mount on s3rver, before and after a change:
elapsed seconds and requests by kind (s3rver's counts), alternating the two, and the raw
baseline (a listing, then one GET per file, sequentially). Not a test: a measurement.

    PYTHONPATH=. python -m tests.bench.grep_small BASE_SRC [FILES] [ROUNDS] [DELAY_MS]

``BASE_SRC``: a directory holding the ``s3fmfs`` package to compare with (e.g. ``git archive
MAIN s3fmfs | tar -x -C BASE_SRC``); the other is the one on ``PYTHONPATH`` (or installed).
``DELAY_MS``: the server that far away (the bench's latency proxy), else loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import raw
from tests.bench.counting import counting_s3rver
from tests.bench.data import NEEDLE, small_tree
from tests.bench.systems import Target, drop_caches, fresh_mount
from tests.support.latency_proxy import latency_proxy

BUCKET = "grepsmall"


def main() -> None:
    base_src = str(Path(sys.argv[1]).resolve())
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    delay_ms = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    here = os.environ.get("PYTHONPATH", "")
    files = small_tree(count)
    small = sum(1 for f in files if len(f.data) <= 64 << 10)
    print(f"{count} files, {small} of at most 64 KiB, {sum(len(f.data) for f in files)} bytes")
    variants = {"before": base_src, "after": here}
    times: dict[str, list[float]] = {"before": [], "after": [], "raw": []}
    reqs: dict[str, dict[str, int]] = {}
    with (
        counting_s3rver() as server,
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
    ):
        measured = server.measured
        if delay_ms:
            proxy = stack.enter_context(latency_proxy(measured.host, measured.port, delay_ms))
            measured = dataclasses.replace(measured, host=proxy.host, port=proxy.port)
        control = raw.Bucket(server.control, BUCKET)
        control.create()
        control.put_many({f"src/{f.path}": f.data for f in files})
        for r in range(rounds):
            for name, path in variants.items() if r % 2 == 0 else reversed(variants.items()):
                os.environ["PYTHONPATH"] = path
                target = Target(measured, BUCKET, Path(tmp))
                with fresh_mount("s3fmfs", target, f"{name}{r}") as mount:
                    drop_caches()
                    before = server.counts()
                    start = time.perf_counter()
                    done = subprocess.run(
                        ["grep", "-r", "-c", NEEDLE.decode(), str(mount.path / "src")],
                        capture_output=True,
                        check=False,
                    )
                    elapsed = time.perf_counter() - start
                    after = server.counts()
                if done.returncode != 0 or done.stdout.count(b"\n") != count:
                    raise SystemExit(f"{name}: grep failed: {done.stderr[-500:]!r}")
                times[name].append(elapsed)
                reqs[name] = {k: after[k] - before[k] for k in after if after[k] != before[k]}
                print(f"round {r} {name}: {elapsed:.3f} s {reqs[name]}", flush=True)
            before = server.counts()
            times["raw"].append(raw.grep(raw.Bucket(measured, BUCKET), "src/", files))
            after = server.counts()
            reqs["raw"] = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            print(f"round {r} raw: {times['raw'][-1]:.3f} s {reqs['raw']}", flush=True)
    os.environ["PYTHONPATH"] = here
    best = {k: statistics.median(v) for k, v in times.items()}
    for name in ("before", "after"):
        print(f"{name}: median {best[name]:.3f} s, raw/this {best['raw'] / best[name]:.2f}")
    print(f"after/before speed: {best['before'] / best['after']:.2f}x")


if __name__ == "__main__":
    main()
