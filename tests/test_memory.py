"""The daemon gives memory back after a large listing (issue 10, 4e).

A listing of many objects fills the caches, the inode table (readdirplus entries) and the readdir
snapshot. Once the kernel forgets the inodes (``drop_caches``), the handle is released and the
TTLs have passed, the daemon must come back near its idle size: bounded caches that drop expired
entries, nodes dropped on forget, snapshots freed at releasedir, and the C heap trimmed.

The folder is synthetic (``tests.support.fakes3``: 20,000 keys cost nothing to set up, where moto
takes about 9 ms per PUT: 3 minutes), and listed with ``nometa``: no HEAD per object, so
``ls -l`` takes seconds and every entry is in the caches, the inode table and the snapshot at
once. ``S3FMFS_MEMORY_HEADS=1`` lists with HEADs instead (minutes; the figures in README),
``S3FMFS_MEMORY_OBJECTS`` sets the count.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.fakes3 import fake_s3
from tests.support.mount import daemon_pid, mounted
from tests.support.servers import S3Server

pytestmark = [pytest.mark.system, pytest.mark.mounted]

N_OBJECTS = int(os.environ.get("S3FMFS_MEMORY_OBJECTS", "20000"))
TTL = 1.0
#: how long the daemon has to give the memory back once the kernel forgot the inodes
SETTLE_SECONDS = 20.0
#: the allowed growth over idle: 20 %, plus slack for what a first listing loads for good
#: (code paths, interned strings, the allocator's bookkeeping)
RATIO = 1.2
SLACK_KIB = 4 * 1024


def vm_kib(pid: int, field: str) -> int:
    """``field`` (VmRSS, VmHWM) of ``/proc/PID/status``, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def drop_kernel_caches() -> None:
    """Make the kernel forget dentries and inodes (it sends FORGETs to the daemon)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError:
        pytest.skip("needs root to write /proc/sys/vm/drop_caches")


def test_memory_comes_back_after_a_large_listing(tmp_path: Path) -> None:
    """Idle, ``ls -l`` of the folder, the kernel forgets, the TTLs pass: back near idle."""
    nometa = os.environ.get("S3FMFS_MEMORY_HEADS") is None
    with fake_s3() as fake:
        fake.folders["big/"] = N_OBJECTS
        fake.folders["small/"] = 3
        fake.folder_metadata = {"mode": str(0o100640), "uid": "1000", "mtime": "1700000000"}
        server = S3Server("127.0.0.1", fake.port, "key", "secret")
        opts = [f"cache_dir={tmp_path / 'cache'}", f"stat_ttl={TTL},dir_ttl={TTL},neg_ttl={TTL}"]
        opts += ["nometa"] if nometa else os.environ.get("S3FMFS_MEMORY_OPTS", "").split()
        with mounted(server, fake.bucket, options=opts, tmp_path=tmp_path) as mnt:
            pid = daemon_pid(mnt)
            # warm up: the code paths of a listing, then forgotten as the big one will be
            subprocess.run(["ls", "-l", str(mnt / "small")], check=True, capture_output=True)
            time.sleep(2 * TTL)
            drop_kernel_caches()
            time.sleep(2 * TTL)
            idle = vm_kib(pid, "VmRSS")
            started = time.monotonic()
            done = subprocess.run(
                ["ls", "-l", str(mnt / "big")], check=True, capture_output=True, text=True
            )
            assert len(done.stdout.splitlines()) == N_OBJECTS + 1  # "total" + one line each
            took = time.monotonic() - started
            after_ls = vm_kib(pid, "VmRSS")
            peak = vm_kib(pid, "VmHWM")
            drop_kernel_caches()
            limit = idle * RATIO + SLACK_KIB
            deadline = time.monotonic() + SETTLE_SECONDS
            after = vm_kib(pid, "VmRSS")
            while after > limit and time.monotonic() < deadline:
                time.sleep(0.5)
                after = vm_kib(pid, "VmRSS")
    figures = (
        f"{N_OBJECTS:,} objects, nometa={nometa}: daemon VmRSS idle {idle / 1024:.1f} MiB, "
        f"after ls -l ({took:.1f} s) {after_ls / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB), after "
        f"drop_caches and the TTLs {after / 1024:.1f} MiB (limit {limit / 1024:.1f} MiB)"
    )
    print("\n" + figures)
    assert after <= limit, figures


def test_expire_drops_expired_entries_and_renews_emptied_caches() -> None:
    """Without being touched, a TTLCache keeps expired entries: ``expire`` drops them, and a
    cache emptied after holding many is a new object (its table shrinks)."""
    from s3fmfs.fs.attrs import Attr, Kind
    from s3fmfs.fs.cache import RENEW_AFTER, MetadataCache

    now = [0.0]
    cache = MetadataCache(1.0, 1.0, 1.0, timer=lambda: now[0])
    attr = Attr(Kind.FILE, 0o100644, 0, 0, 1, 0)
    cache.store_listing("big", {f"f{i}": attr for i in range(RENEW_AFTER)})
    cache.store_missing("gone")
    attrs = cache.attrs
    assert cache.expire() == 0 and len(cache.attrs) == RENEW_AFTER
    now[0] = 2.0
    assert cache.expire() == RENEW_AFTER + 2  # the attributes, the listing, the negative entry
    assert len(cache.attrs) == len(cache.dirs) == len(cache.negative) == 0
    assert cache.attrs is not attrs
    cache.store_attr("a", attr)  # the new cache works as the old one
    assert cache.attr("a") == attr
