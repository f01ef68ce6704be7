"""pjdfstest's open, mkdir, rmdir, unlink, rename and truncate suites on a mount (issue 14).

Built from ``../shared/third_party/pjdfstest-85a8aea.tar.gz`` (the archive kept beside the
clone; skipped, saying why, without it or without autoconf, automake, gcc or prove) into a
session directory, then run as root with ``prove`` from a directory of a mount with
``allow_other`` (pjdfstest switches to other users to check permissions). The figure asserted
is the share of CASES passed (TAP "ok N" / "not ok N"), what docs/TESTING.md reports next to
s3fs-fuse 1.90 (83%) and rclone (47%); the per-file failures are printed (``-s`` shows them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import pjdfstest
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.soak,
    pytest.mark.skipif(os.geteuid() != 0, reason="pjdfstest runs as root (it switches users)"),
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3",
    ),
]

#: Share of the 5,981 cases that must pass (measured: see docs/TESTING.md, "pjdfstest").
MIN_PASSED = 0.975  # measured: 5,873 of 5,981 (98.2%)
#: Some suites only, by hand (``PJDFSTEST_SUITES=open,rename``): the share is still asserted.
SUITES = tuple(filter(None, os.environ.get("PJDFSTEST_SUITES", "").split(","))) or (
    pjdfstest.SUITES
)


@pytest.fixture(scope="session")
def pjdfstest_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = pjdfstest.missing()
    if why is not None:
        pytest.skip(why)
    return pjdfstest.build(tmp_path_factory.mktemp("pjdfstest-build"))


def test_pjdfstest_cases(pjdfstest_tree: Path, moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("pjd")
    s3.create_bucket(Bucket=bucket)
    with mounted(moto, bucket, options=["allow_other"], tmp_path=tmp_path) as mnt:
        results = pjdfstest.run(pjdfstest_tree, mnt, SUITES)
    print(results.report())
    if SUITES == pjdfstest.SUITES:
        assert results.total >= 5_900, results.report()  # every suite ran to its plan
    share = results.passed / results.total
    assert share >= MIN_PASSED, results.report()
