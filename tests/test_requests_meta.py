"""What listing a folder and walking a tree cost in requests, through a real mount (FUSE over
moto, behind the counting ``faultproxy``): a names-only ``ls`` costs the listing, ``ls -l`` at
most one HEAD per object (modes and symlinks right), a ``find``-style walk the listings and one
request per object (small objects: a GET instead of a HEAD, ``s3fmfs.fs.bodies``)."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, fault_proxy
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

N = 150
CACHES_OFF = ["stat_ttl=0", "dir_ttl=0", "neg_ttl=0", "metacache=off"]


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("reqmeta")
    s3.create_bucket(Bucket=name)
    return name


def started(proxy: FaultProxy) -> Counter[str]:
    """The requests so far, once the mount's own at start are in: a listing of one key (the
    bucket is there) and of pending multipart uploads (recovery), both GETs."""
    deadline = time.monotonic() + 10
    while proxy.methods["GET"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return Counter(proxy.methods)


def since(proxy: FaultProxy, before: Counter[str]) -> Counter[str]:
    return proxy.methods - before


def fill_folder(s3: Any, bucket: str) -> list[str]:
    names = [f"f{i:04d}" for i in range(N)]
    for i, name in enumerate(names):
        meta = {"mode": str(0o100600)} if i % 3 == 0 else {}
        s3.put_object(Bucket=bucket, Key=name, Body=b"x" * i, Metadata=meta)
    s3.put_object(Bucket=bucket, Key="link", Body=b"f0001", Metadata={"mode": str(0o120777)})
    return names


def test_names_only_ls_costs_the_listing(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    names = fill_folder(s3, bucket)
    with (
        fault_proxy(moto) as proxy,
        mounted(proxy.server, bucket, options=CACHES_OFF, tmp_path=tmp_path) as mnt,
    ):
        before = started(proxy)
        assert sorted(os.listdir(mnt)) == sorted([*names, "link"])
        spent = since(proxy, before)
        assert spent["HEAD"] == 0
        assert spent["GET"] == 1  # one listing page


def test_ls_l_costs_one_head_per_object_and_shows_modes_and_symlinks(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    names = fill_folder(s3, bucket)
    with (
        fault_proxy(moto) as proxy,
        mounted(proxy.server, bucket, options=CACHES_OFF, tmp_path=tmp_path) as mnt,
    ):
        before = started(proxy)
        seen = {entry: os.lstat(mnt / entry) for entry in os.listdir(mnt)}
        spent = since(proxy, before)
        assert spent["HEAD"] <= N + 1
        assert spent["GET"] == 1  # the listing; no probe
        for i, name in enumerate(names):
            mode = 0o100600 if i % 3 == 0 else 0o100644
            assert (seen[name].st_mode, seen[name].st_size) == (mode, i), name
        assert stat.S_ISLNK(seen["link"].st_mode)
        assert os.readlink(mnt / "link") == "f0001"


def test_a_tree_walk_costs_the_listings_and_one_request_per_object(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    dirs = [f"d{i}" for i in range(6)] + [f"d{i}/sub" for i in range(6)]
    files = [f"{d}/f{j}" for d in dirs for j in range(8)]
    for key in files:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    with (
        fault_proxy(moto) as proxy,
        mounted(proxy.server, bucket, options=["metacache=off"], tmp_path=tmp_path) as mnt,
    ):
        before = started(proxy)
        found = []
        for top, _, walked in os.walk(mnt):  # find -exec stat {}
            for name in walked:
                path = Path(top) / name
                assert os.lstat(path).st_size == 4
                found.append(str(path.relative_to(mnt)))
        spent = since(proxy, before)
        assert sorted(found) == sorted(files)
        # one listing per directory, none twice; each (small) object once, a GET instead of a
        # HEAD (``bodies``); each directory's marker at most
        assert spent["GET"] == 1 + len(dirs) + len(files)
        assert spent["HEAD"] <= len(dirs)
