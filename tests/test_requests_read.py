"""Requests per small file, counted: a real mount over moto through the counting proxy
(:mod:`tests.support.faultproxy`, no faults).

- A stat, open and read of a listed file costs one GET if it is at most 64 KiB (the stat's:
  its body serves the read), else a HEAD and one GET, whether 100 KiB or 3 MiB (a small object
  comes whole); reading past its end sends nothing.
- ``grep -r`` over N files never seen by the mount costs N GETs, one per file: no HEAD for
  those of at most 64 KiB (empty ones too), one HEAD each for larger ones; and the listings
  and the folders' probes.
- ``tar -xf`` of N small files costs one PUT per file and no COPY (mode and mtime set by tar
  ride on the upload), with ``--no-same-owner`` and without (as root: chown too); reading them
  back is one GET per file and nothing else; a chmod after the upload is still a COPY.

The counts by kind are printed (``pytest -s``) and asserted.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from s3fmfs.fs.bodies import SMALL
from tests.support.faultproxy import FaultProxy, Request, fault_proxy
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

#: Files of the grep and untar sets, and their sizes (mixed; some empty).
N_FILES = 50
SIZES = [0, 1, 100, 4096, 10_000, 65_536, 100_000, 300_000, 1 << 20, (1 << 20) + 1]
NEEDLE = b"needle"
#: The walks here take a second or two, under the 5 s default TTLs; on a loaded machine they may
#: not, and a lookup after its entry expired probes the name again: the counts would move.
LONG_TTLS = ["stat_ttl=300", "dir_ttl=300", "neg_ttl=300"]


def kind(request: Request) -> str:
    """HEAD, GET (an object's bytes), LIST, UPLOADS, PUT, COPY, or the method."""
    method = request.method
    parts = urlsplit(request.target)
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET" and "uploads" in query:
        return "UPLOADS"  # the mount's look for unfinished multipart uploads
    if method == "GET" and ("list-type" in query or "prefix" in query or "delimiter" in query):
        return "LIST"
    if method == "PUT" and request.header("x-amz-copy-source"):
        return "COPY"
    return method


def counts(proxy: FaultProxy, since: int = 0) -> Counter[str]:
    """Requests forwarded since the ``since``-th, by kind; without the mount's one look for
    unfinished uploads (in the background after mounting: it may land in any window)."""
    return Counter(k for k in (kind(r) for r in proxy.log[since:]) if k != "UPLOADS")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("reqs")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto: S3Server) -> Iterator[FaultProxy]:
    with fault_proxy(moto) as running:
        yield running


def body(i: int) -> bytes:
    """File ``i``'s content: ``SIZES`` in turn, the needle in every other non-empty one."""
    size = SIZES[i % len(SIZES)]
    text = (f"line {i}\n".encode() * (size // 7 + 1))[:size]
    if size >= len(NEEDLE) and i % 2:
        text = NEEDLE + text[len(NEEDLE) :]
    return text


def per_key(proxy: FaultProxy, bucket: str, since: int = 0) -> dict[str, Counter[str]]:
    """HEADs and GETs of objects (not listings) since the ``since``-th request, by key."""
    found: dict[str, Counter[str]] = {}
    for request in proxy.log[since:]:
        what = kind(request)
        path = unquote(urlsplit(request.target).path)
        if what in ("HEAD", "GET") and path.startswith(f"/{bucket}/"):
            found.setdefault(path[len(bucket) + 2 :], Counter())[what] += 1
    return found


def test_stat_open_read_close_is_one_get_for_a_small_file(
    proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """A listed file up to ``bodies.SMALL`` (64 KiB): its stat's GET brings the bytes the read
    wants; a larger one: a HEAD at the stat, one GET at the read (it comes whole)."""
    s3.put_object(Bucket=bucket, Key="small", Body=b"s" * 4096)
    s3.put_object(Bucket=bucket, Key="medium", Body=b"m" * 100_000)
    s3.put_object(Bucket=bucket, Key="bigger", Body=b"b" * (3 << 20))  # over the first window
    with mounted(proxy.server, bucket, tmp_path=tmp_path, options=LONG_TTLS) as mnt:
        assert sorted(os.listdir(mnt)) == ["bigger", "medium", "small"]
        expected = {"small": Counter(GET=1), "medium": Counter(HEAD=1, GET=1)}
        expected["bigger"] = expected["medium"]
        for name, size in (("small", 4096), ("medium", 100_000), ("bigger", 3 << 20)):
            start = len(proxy.log)
            assert (mnt / name).stat().st_size == size
            with open(mnt / name, "rb", buffering=0) as f:
                data = b""
                while chunk := f.read(4096):
                    data += chunk
                assert f.read(4096) == b""  # past the end: nothing sent
            assert data == name[0].encode() * size
            seen = counts(proxy, start)
            print(name, dict(seen))
            assert seen == expected[name], f"{name}: {dict(seen)}"


def test_grep_r_is_one_request_per_small_file(
    proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """Files up to 64 KiB (the empty ones too): one GET each, at their lookup, no HEAD;
    larger ones: a HEAD and one GET."""
    bodies = {f"tree/d{i % 3}/f{i:03d}.txt": body(i) for i in range(N_FILES)}
    for key, data in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    with mounted(proxy.server, bucket, tmp_path=tmp_path, options=LONG_TTLS) as mnt:
        start = len(proxy.log)
        done = subprocess.run(
            ["grep", "-r", "-c", NEEDLE.decode(), str(mnt / "tree")],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        seen = counts(proxy, start)
        by_key = per_key(proxy, bucket, start)
        print("grep -r", N_FILES, "files:", dict(seen))
    found = {
        line.rsplit(":", 1)[0]: int(line.rsplit(":", 1)[1])
        for line in done.stdout.decode().splitlines()
    }
    expected = {str(mnt / k): int(v.startswith(NEEDLE)) for k, v in bodies.items()}
    assert found == expected
    for key, data in bodies.items():
        wanted = Counter(GET=1) if len(data) <= SMALL else Counter(HEAD=1, GET=1)
        assert by_key.get(key) == wanted, (key, len(data), by_key.get(key))
    small = sum(1 for v in bodies.values() if len(v) <= SMALL)
    assert 0 < small < len(bodies)
    # the rest: per folder (tree and its 3) its marker and s3fs's forms, at most
    folders = 4
    assert seen["GET"] == len(bodies), dict(seen)
    assert seen["HEAD"] - (len(bodies) - small) <= 3 * folders, dict(seen)
    assert seen["LIST"] <= 2 * folders, dict(seen)  # a listing and a probe each, at most
    assert set(seen) <= {"GET", "HEAD", "LIST"}, dict(seen)


def tarball(path: Path, n: int) -> dict[str, bytes]:
    """A tarball of ``n`` small files in two folders (mode 0640, a fixed mtime, owner 1234)."""
    files = {f"src/p{i % 2}/f{i:03d}.c": body(i)[:20_000] for i in range(n)}
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("src", "src/p0", "src/p1"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o750
            info.mtime = 1_700_000_000
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.mtime = 1_700_000_000
            info.uid = info.gid = 1234
            tar.addfile(info, io.BytesIO(data))
    return files


def file_counts(proxy: FaultProxy, since: int, files: dict[str, bytes]) -> Counter[str]:
    """Requests on the files' own keys since the ``since``-th, by kind."""
    keys = {f"/{k}" for k in files}
    return Counter(
        kind(r) for r in proxy.log[since:] if any(urlsplit(r.target).path.endswith(k) for k in keys)
    )


@pytest.mark.parametrize("same_owner", [False, True], ids=["no-same-owner", "same-owner"])
def test_untar_is_one_put_per_file(
    proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path, same_owner: bool
) -> None:
    tar_path = tmp_path / "src.tar"
    files = tarball(tar_path, N_FILES)
    argv = ["tar", "-xf", str(tar_path)]
    if not same_owner:
        argv.insert(1, "--no-same-owner")
    with mounted(proxy.server, bucket, tmp_path=tmp_path, options=LONG_TTLS) as mnt:
        start = len(proxy.log)
        done = subprocess.run(argv, cwd=mnt, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        seen = counts(proxy, start)
        on_files = file_counts(proxy, start, files)
        print("untar", N_FILES, "files", argv[1], dict(seen), "on the files' keys", dict(on_files))
        st = (mnt / "src/p0/f000.c").stat()
        assert (st.st_mode & 0o777, st.st_mtime) == (0o640, 1_700_000_000)
        assert (st.st_uid, st.st_gid) == ((1234, 1234) if same_owner else (0, 0))
        assert (mnt / "src/p1").stat().st_mode & 0o777 == 0o750
        # reading back what was written: a GET per file with content, nothing else per file
        before = len(proxy.log)
        done = subprocess.run(
            ["grep", "-r", "-c", NEEDLE.decode(), "src"], cwd=mnt, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        again = counts(proxy, before)
        print("grep -r after untar", dict(again))
        assert again == Counter(GET=sum(1 for v in files.values() if v))
        # a change after the upload is still a copy in place
        before = len(proxy.log)
        os.chmod(mnt / "src/p0/f000.c", 0o600)
        assert counts(proxy, before)["COPY"] == 1
    for name, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    # each file: one PUT carrying its mode, owner and mtime; no HEAD (its folder was made
    # here: the name is known to be new), no copy
    assert on_files == Counter(PUT=N_FILES), dict(on_files)
    # each folder: its marker's PUT, then per attribute tar sets (mode, mtime; owner as root)
    # a HEAD and a copy; the lookups of "src" (not in the bucket) a listing and HEADs
    folders, changes = 3, 3 if same_owner else 2
    assert seen["PUT"] == N_FILES + folders, dict(seen)
    assert seen["COPY"] <= folders * changes, dict(seen)
    assert seen["HEAD"] <= folders * changes + 3, dict(seen)
