"""Streaming: large bodies go through the client without being held in memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import S3Server

pytestmark = pytest.mark.soak

ROOT = Path(__file__).resolve().parent.parent


def test_1gib_round_trip_stays_under_100mb(moto: S3Server) -> None:
    """PUT 1 GiB from an async iterator, GET it streamed and spooled, PUT the spool file back:
    every digest equal and the client process's peak RSS under 100 MB."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.stream_roundtrip", moto.host, str(moto.port), "1024"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["received"] == result["size"] == 1 << 30
    assert result["copy_size"] == 1 << 30
    assert result["got_sha256"] == result["sent_sha256"]
    assert result["copy_sha256"] == result["sent_sha256"]
    assert result["spooled_to_file"] is True
    assert result["peak_rss_mib"] < 100, json.dumps(result)
