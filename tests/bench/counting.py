"""The bench's s3rver, counting the measured systems' requests by kind (``s3rver_counting.js``).

Invariants:
- One s3rver process, two ports on one store: ``measured`` (what every measured system talks
  to, directly or through the latency proxy; every request counted) and ``control`` (the
  bench's seeding, checks and polls; never counted). Counting happens in the server, so it
  costs the measured systems nothing and is the same for all of them.
- Kinds: ``HEAD``; ``GET`` (an object); ``LIST`` (a GET of a bucket); ``PUT``; ``COPY`` (a
  PUT with ``x-amz-copy-source``); ``PART`` (a PUT with ``partNumber``); ``POST`` (multipart
  create/complete); ``DELETE`` (also a multi-object delete); ``OTHER``.
- A :class:`Meter` keeps the counts of one interval per measurement: the first ``start()``
  (the bench's ``drop()``, right before the clock starts) to the first ``stop()`` (right after
  the timed part), so a workload that times several commands (``ls``: first mount, again,
  warm) is counted for its first.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from s3fmfs.commands import demo_server
from tests.support.servers import DOMAIN, LOOPBACK, NODE_DIR, S3RVER_JS, S3Server

SCRIPT = Path(__file__).resolve().parent / "s3rver_counting.js"
KINDS = ("HEAD", "GET", "LIST", "PUT", "COPY", "PART", "POST", "DELETE", "OTHER")
_MEASURED = re.compile(rb"S3rver listening on [^\s:]+:(\d+)")
_CONTROL = re.compile(rb"control port (\d+)")


@dataclass(frozen=True)
class CountingS3rver:
    measured: S3Server
    control: S3Server

    def counts(self) -> dict[str, int]:
        """The counters now (requests on the measured port since the start, by kind)."""
        resp = httpx.get(f"{self.control.endpoint}/__bench/counts", timeout=10, trust_env=False)
        resp.raise_for_status()
        got = resp.json()
        return {k: int(got.get(k, 0)) for k in KINDS}


@contextmanager
def counting_s3rver() -> Iterator[CountingS3rver]:
    """The counting s3rver for the block (keys ``S3RVER``/``S3RVER``), data in a fresh
    temporary directory; stopped after, whatever happens."""
    if not S3RVER_JS.exists():
        raise demo_server.ServerStartError(f"{S3RVER_JS} missing: run `make npm`")
    with tempfile.TemporaryDirectory(prefix="s3fmfs-s3rver-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        log = Path(tmp) / "s3rver.log"
        argv = ["node", str(SCRIPT), LOOPBACK, str(data), DOMAIN.split(".", 1)[1]]
        env = {
            **os.environ,
            "NODE_OPTIONS": "--openssl-legacy-provider",
            "NODE_PATH": str(NODE_DIR / "node_modules"),
        }
        ports: list[int] = []

        def ready() -> bool:
            text = log.read_bytes()
            measured, control = _MEASURED.search(text), _CONTROL.search(text)
            if not (measured and control):
                return False
            ports[:] = [int(measured.group(1)), int(control.group(1))]
            return demo_server.answers(f"http://{LOOPBACK}:{ports[1]}/__bench/counts")

        with demo_server.process(argv, log, ready, env):
            yield CountingS3rver(
                S3Server(LOOPBACK, ports[0], "S3RVER", "S3RVER"),
                S3Server(LOOPBACK, ports[1], "S3RVER", "S3RVER"),
            )


class Meter:
    """The requests of one measurement's timed part (see the module doc)."""

    def __init__(self, server: CountingS3rver | None) -> None:
        self.server = server
        self._start: dict[str, int] | None = None
        self.delta: dict[str, int] | None = None

    def start(self) -> None:
        if self.server is not None and self._start is None:
            self._start = self.server.counts()

    def stop(self) -> None:
        if self.server is not None and self._start is not None and self.delta is None:
            end = self.server.counts()
            self.delta = {k: end[k] - self._start[k] for k in KINDS}
