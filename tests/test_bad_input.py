"""Bad input gets a clear errno or a one-line refusal, never a crash.

- Names and sizes through a real mount over moto: components over 255 bytes and keys over
  1,024 bytes are ENAMETOOLONG (create, mkdir, symlink, rename, lookup; a directory rename
  whose keys would grow too long copies nothing), names that are not UTF-8 are EINVAL and
  logged, writes and truncations past 5 TiB are EFBIG.
- Malformed mount options: one line on stderr, exit status 2, nothing mounted.
- A server answering garbage (:mod:`tests.support.fakes3`): invalid, truncated and 100 MB listings,
  GET bodies shorter or longer than their Content-Length, broken HEAD answers. Each operation
  fails with EIO and a warning in the daemon's log naming the request, and the daemon goes
  on serving the rest (then unmounts cleanly, exit status 0).
- A folder of 100,000 keys synthesized by the fake server lists completely, with and without
  ``nometa``, within a stated peak RSS.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from s3fmfs.fs import limits
from s3fmfs.fs.bodies import SMALL
from s3fmfs.fs.errno_map import FsError
from tests.support.fakes3 import SYNTHETIC_SIZE, FakeObject, FakeS3, Fault, fake_s3
from tests.support.mount import daemon_pid, is_mounted, log_tail, mounted, s3fmfs_command
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

TiB = 1 << 40
#: Folder size of the listing test, and the daemon's peak RSS allowed while listing it
#: (measured: about 180 MB with nometa, 190 MB with a HEAD per object; 45 MB at rest).
BIG_FOLDER = 100_000
BIG_FOLDER_RSS = 256 * 10**6
#: Seconds a failing request is retried in the fault tests (the mount's ``timeout=``).
FAULT_TIMEOUT = 3


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("bad")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def mnt(moto: S3Server, bucket: str, tmp_path: Path) -> Iterator[Path]:
    with mounted(moto, bucket, tmp_path=tmp_path) as path:
        yield path


def errno_of(call: Callable[[], object]) -> int:
    """The errno ``call`` fails with (assert it fails)."""
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno is not None
    return info.value.errno


def keys(s3: Any, bucket: str) -> list[str]:
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(found)


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


# --------------------------------------------------------------------------- names and sizes


def test_name_over_255_bytes_is_enametoolong(s3: Any, bucket: str, mnt: Path):
    fits, over = "n" * 255, "n" * 256
    accented = "é" * 128  # 128 characters, 256 bytes: bytes count, not characters
    (mnt / fits).write_bytes(b"255")
    (mnt / "src").write_bytes(b"s")
    for name in (over, accented):
        target = mnt / name
        assert errno_of(partial(target.write_bytes, b"x")) == errno.ENAMETOOLONG  # create
        assert errno_of(target.mkdir) == errno.ENAMETOOLONG
        assert errno_of(partial(target.symlink_to, "src")) == errno.ENAMETOOLONG
        assert errno_of(partial(os.rename, mnt / "src", target)) == errno.ENAMETOOLONG
        assert errno_of(partial(os.stat, target)) == errno.ENAMETOOLONG  # lookup
    assert sorted(os.listdir(mnt)) == sorted([fits, "src"])
    assert keys(s3, bucket) == sorted([fits, "src"])
    assert os.statvfs(mnt).f_namemax == 255


def test_key_over_1024_bytes_is_enametoolong(s3: Any, bucket: str, mnt: Path):
    parts = ["d" * 250, "e" * 250, "f" * 250, "g" * 250]  # "d…/e…/f…/g…/" = 1,004 bytes
    deep = mnt.joinpath(*parts)
    deep.mkdir(parents=True)
    prefix = "/".join(parts) + "/"
    assert len(prefix) == 1004
    (deep / ("a" * 20)).write_bytes(b"1024")  # key of exactly 1,024 bytes
    assert errno_of(lambda: (deep / ("b" * 21)).write_bytes(b"x")) == errno.ENAMETOOLONG
    assert errno_of(lambda: (deep / ("c" * 20)).mkdir()) == errno.ENAMETOOLONG  # marker: 1,025
    assert errno_of(lambda: (deep / ("s" * 21)).symlink_to("x")) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.stat(deep / ("b" * 21))) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.rename(deep / ("a" * 20), deep / ("b" * 21))) == (errno.ENAMETOOLONG)
    assert (deep / ("a" * 20)).read_bytes() == b"1024"
    # a directory whose keys would outgrow 1,024 bytes under its new name: nothing is copied
    (mnt / "short").mkdir()
    (mnt / "short" / ("z" * 200)).write_bytes(b"z")
    before = keys(s3, bucket)
    assert errno_of(lambda: os.rename(mnt / "short", deep / "longer")) == errno.ENAMETOOLONG
    assert keys(s3, bucket) == before
    assert (mnt / "short" / ("z" * 200)).read_bytes() == b"z"
    assert prefix + "a" * 20 in before
    assert max(len(k.encode()) for k in before) == 1024


def test_key_limit_counts_the_mount_prefix(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    prefix = "p" * 200  # the key is "ppp…/" + path: 201 bytes are taken
    with mounted(moto, bucket, prefix=prefix, tmp_path=tmp_path) as mnt:
        parts = ["d" * 250, "e" * 250, "f" * 250]
        deep = mnt.joinpath(*parts)
        deep.mkdir(parents=True)
        room = 1024 - len(prefix) - 1 - len("/".join(parts)) - 1  # 70 bytes
        (deep / ("a" * room)).write_bytes(b"fits")
        assert errno_of(lambda: (deep / ("a" * (room + 1))).write_bytes(b"x")) == (
            errno.ENAMETOOLONG
        )
    assert max(len(k) for k in keys(s3, bucket)) == 1024


def test_names_that_are_not_utf8_are_einval_and_logged(s3: Any, bucket: str, mnt: Path):
    bad = os.fsencode(str(mnt)) + b"/caf\xe9"  # Latin-1 "café"
    (mnt / "src").write_bytes(b"s")
    assert errno_of(lambda: open(bad, "wb")) == errno.EINVAL  # noqa: SIM115
    assert errno_of(lambda: os.mkdir(bad)) == errno.EINVAL
    assert errno_of(lambda: os.symlink(b"src", bad)) == errno.EINVAL
    assert errno_of(lambda: os.rename(mnt / "src", bad)) == errno.EINVAL
    assert errno_of(lambda: os.stat(bad)) == errno.EINVAL
    overlong = os.fsencode(str(mnt)) + b"/\xc0\xaf"  # an overlong "/": not UTF-8 either
    assert errno_of(lambda: os.mkdir(overlong)) == errno.EINVAL
    assert keys(s3, bucket) == ["src"]
    text = log_tail(mnt, 1_000_000)
    assert "name b'caf\\xe9' is not valid UTF-8: refused (EINVAL)" in text, text
    assert "name b'\\xc0\\xaf' is not valid UTF-8" in text


def test_writing_or_truncating_past_5_tib_is_efbig(s3: Any, bucket: str, mnt: Path):
    path = mnt / "big"
    with open(path, "wb", buffering=0) as f:
        f.write(b"start")
        fd = f.fileno()
        assert errno_of(lambda: os.pwrite(fd, b"x", limits.MAX_OBJECT_SIZE)) == errno.EFBIG
        assert errno_of(lambda: os.pwrite(fd, b"x", 6 * TiB)) == errno.EFBIG
        size = limits.MAX_OBJECT_SIZE + 1
        assert errno_of(lambda: os.ftruncate(fd, size)) == errno.EFBIG
        assert os.fstat(fd).st_size == 5
    assert errno_of(lambda: os.truncate(path, limits.MAX_OBJECT_SIZE + 1)) == errno.EFBIG
    assert path.read_bytes() == b"start"
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"start"


def test_write_crossing_5_tib_is_cut_at_the_limit():
    """POSIX: as many bytes as fit are written (a mount test would upload 5 TiB)."""
    limit = limits.MAX_OBJECT_SIZE
    assert limit == 5 * TiB
    assert limits.writable(limit - 3, 10) == 3
    assert limits.writable(0, 10) == 10
    assert limits.writable(limit, 0) == 0
    for offset in (limit, limit + 1):
        with pytest.raises(FsError) as info:
            limits.writable(offset, 1)
        assert info.value.errno == errno.EFBIG
    limits.check_size(limit)


# --------------------------------------------------------------------------- mount options


@pytest.mark.parametrize(
    "opts",
    [
        "readahead_mb=abc",
        "part_size_mb=-1",
        "upload_concurrency=0",
        "read_concurrency=1000",
        "endpoint=garbage",
        "endpoint=http://",
        "endpoint=http://h:port",
        "uid=x",
        "gid=-5",
        "umask=08",
        "file_mode=99999",
        "stat_ttl=nan",
        "dir_ttl=-1",
        "metacache=maybe",
        "metacache_file=relative.db",
        "region",
        "cache_dir=",
        "nometa=yes",
        "no_check_certificate=1",
        "ca_bundle=/nonexistent/ca.pem",
        "ca_bundle=/etc/hostname",
        "ca_bundle=/etc/ssl/certs,no_check_certificate",
        "allow-other",
        "ro,,bogus",
    ],
)
def test_malformed_option_is_one_line_and_exit_2(opts: str, tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    done = subprocess.run(
        [*s3fmfs_command(), "bucket", str(mnt), "-o", opts],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("s3fmfs: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not is_mounted(mnt.resolve())


def test_endpoint_with_credentials_is_refused_without_echoing_them(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    done = subprocess.run(
        [*s3fmfs_command(), "b", str(mnt), "-o", "endpoint=https://AKIAX:s3cr3t-in-url@h:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"s3fmfs: {mnt}: endpoint must not carry user:password@")
    assert "s3cr3t-in-url" not in done.stderr and "AKIAX" not in done.stderr


# --------------------------------------------------------------------------- a server's garbage

LISTING_FAULTS = {
    "invalid/": Fault.INVALID_XML,
    "truncated/": Fault.TRUNCATED_XML,
    "huge/": Fault.HUGE_XML,
    "huge-chunked/": Fault.HUGE_XML_CHUNKED,
}
GET_FAULTS = {"short-body": Fault.BODY_SHORTER, "long-body": Fault.BODY_LONGER}
HEAD_FAULTS = {"head-cut": Fault.HEAD_CUT, "head-bad-length": Fault.HEAD_BAD_LENGTH}
GOOD = bytes(range(256)) * 40
#: Past ``bodies.SMALL``: a lookup HEADs it (a smaller listed object's lookup is a GET).
HEADED = bytes(range(256)) * 257
assert len(HEADED) > SMALL


def seed_faults(fake: FakeS3) -> None:
    fake.objects["good.txt"] = FakeObject(GOOD)
    fake.objects["ok/inside.txt"] = FakeObject(b"inside")
    for prefix, fault in LISTING_FAULTS.items():
        fake.objects[prefix + "x"] = FakeObject(b"x")
        fake.faults[prefix] = fault
    for key, fault in GET_FAULTS.items():
        fake.objects[key] = FakeObject(GOOD)
        fake.faults[key] = fault
    for key, fault in {**HEAD_FAULTS, "head-junk": Fault.HEAD_JUNK}.items():
        fake.objects[key] = FakeObject(HEADED)  # HEADed (a small one's lookup is a GET)
        fake.faults[key] = fault


def assert_still_serving(mnt: Path) -> None:
    assert os.listdir(mnt / "ok") == ["inside.txt"]
    assert (mnt / "good.txt").read_bytes() == GOOD
    assert (mnt / "ok" / "inside.txt").read_bytes() == b"inside"


def test_garbage_from_the_server_is_eio_and_logged(tmp_path: Path):
    with fake_s3() as fake:
        seed_faults(fake)
        server = S3Server("127.0.0.1", fake.port, "key", "secret")
        opts = [f"timeout={FAULT_TIMEOUT}", "read_timeout=5", f"cache_dir={tmp_path / 'cache'}"]
        with mounted(server, fake.bucket, options=opts, tmp_path=tmp_path) as mnt:
            pid = daemon_pid(mnt)
            names = sorted(os.listdir(mnt))
            faulty = [p.rstrip("/") for p in LISTING_FAULTS]
            assert names == sorted(
                ["good.txt", "ok", *faulty, *GET_FAULTS, *HEAD_FAULTS, "head-junk"]
            )
            for prefix in LISTING_FAULTS:  # invalid, truncated, 100 MB announced or streamed
                assert errno_of(partial(os.listdir, mnt / prefix)) == errno.EIO
                assert_still_serving(mnt)
            for key in GET_FAULTS:  # Content-Length longer, or shorter, than the body
                assert errno_of((mnt / key).read_bytes) == errno.EIO
                assert_still_serving(mnt)
            for key in HEAD_FAULTS:  # HEAD cut in its headers, or a length that is no number
                assert errno_of(partial(os.stat, mnt / key)) == errno.EIO
                assert_still_serving(mnt)
            # junk after a HEAD answer: the HEAD itself is fine, the connection is dropped
            assert os.stat(mnt / "head-junk").st_size == len(HEADED)
            assert_still_serving(mnt)
            peak = peak_rss(pid)
            assert Path(f"/proc/{pid}").exists() and peak < 150 * 10**6
        counts = dict(fake.counts)
    print(f"\ngarbage answers: daemon peak RSS {peak / 1e6:.0f} MB; {counts}")
    # every fault was really served, and each failure left a warning naming its request
    for fault in [*LISTING_FAULTS.values(), *GET_FAULTS.values(), *HEAD_FAULTS.values()]:
        assert counts.get(fault.value, 0) >= 1, (fault, counts)
    text = log_tail(mnt, 10_000_000)
    assert "Traceback" not in text
    for prefix in LISTING_FAULTS:
        assert re.search(rf"WARNING .*readdir: .*\[list /fake/{prefix}\] → EIO", text), prefix
    assert re.search(r"WARNING .*invalid XML in ListBucket answer: not well-formed", text)
    assert re.search(r"WARNING .*invalid XML in ListBucket answer: (unclosed|no element)", text)
    assert re.search(r"100000000-byte answer refused: over the 16 MiB limit", text)
    assert re.search(r"GET /fake: answer refused: over the 16 MiB limit", text)
    assert re.search(
        r"WARNING .*read: GET /fake/short-body: (connection broken with [\d.:]+: )?peer closed",
        text,
    )
    assert re.search(r"WARNING .*read: GET /fake/long-body: .*body ended at byte", text)
    for key in HEAD_FAULTS:
        assert re.search(rf"WARNING .*lookup b'{key}': HEAD /fake/{key}: .* → EIO", text), key


# --------------------------------------------------------------------------- a huge folder


@pytest.mark.soak
@pytest.mark.parametrize("nometa", [True, False], ids=["nometa", "heads"])
def test_folder_of_100000_keys_lists_in_bounded_memory(nometa: bool, tmp_path: Path):
    """``ls -l`` of the folder: every entry, with its size and (HEADed, or default) mode."""
    with fake_s3() as fake:
        fake.folders["big/"] = BIG_FOLDER
        fake.folder_metadata = {"mode": str(0o100640)}
        server = S3Server("127.0.0.1", fake.port, "key", "secret")
        opts = [f"cache_dir={tmp_path / 'cache'}", *(["nometa"] if nometa else [])]
        with mounted(server, fake.bucket, options=opts, tmp_path=tmp_path) as mnt:
            pid = daemon_pid(mnt)
            at_rest = peak_rss(pid)
            started = time.monotonic()
            done = subprocess.run(
                ["ls", "-l", str(mnt / "big")], capture_output=True, text=True, timeout=600
            )
            took = time.monotonic() - started
            assert done.returncode == 0, done.stderr[-2000:]
            peak = peak_rss(pid)
        gets = fake.counts["GET object"]  # small objects: a GET instead of a HEAD
        lists, heads = fake.counts["GET"] - gets, fake.counts["HEAD"]
    lines = done.stdout.splitlines()[1:]  # after "total N"
    assert [line.rsplit(" ", 1)[1] for line in lines] == [f"{i:06d}" for i in range(BIG_FOLDER)]
    mode = "-rw-r--r--" if nometa else "-rw-r-----"  # defaults, or the HEADed metadata
    assert all(line.startswith(mode) for line in lines), lines[:3]
    assert all(line.split()[4] == str(SYNTHETIC_SIZE) for line in lines), lines[:3]
    print(
        f"\n{BIG_FOLDER:,} keys, nometa={nometa}: RSS {at_rest / 1e6:.0f} MB at rest, "
        f"peak {peak / 1e6:.0f} MB; {lists} GET (listings), {gets} GET of keys, {heads} HEAD"
    )
    assert peak < BIG_FOLDER_RSS, f"peak RSS {peak / 1e6:.0f} MB"
    pages = BIG_FOLDER // 1000
    # pages of 1,000, the mount's own checks, and a probe of ``big`` (a one-key listing among
    # its requests) each time the kernel's entry for it expires (dir_ttl, 5 s) during the ls
    assert pages <= lists <= pages + 10 + took / 5, (lists, took)
    # nometa: the lookups of ``big`` (HEADs of ``big`` and ``big_$folder$``), no HEAD per key
    assert heads <= 4 and gets == 0 if nometa else heads + gets >= BIG_FOLDER
