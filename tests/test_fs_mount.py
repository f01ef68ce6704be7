"""End-to-end tests of the mounted filesystem: s3fmfs in a subprocess over moto.

Every test gets a fresh bucket; objects are put and checked behind the mount with boto3
(path style, the ``moto`` session server). The tests are synchronous: they drive the mount with
``os`` calls and real Unix tools (cp, tar, rsync, grep, mv, sqlite3, git, df), the FUSE daemon
being another process (:mod:`tests.support.mount`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from tests.support.mount import daemon_pid, is_mounted, log_tail, mounted, s3fmfs_command
from tests.support.servers import S3Server, unique_bucket

MiB = 1 << 20
S3FS_MTIME = "mtime"
#: Bucket-behind-the-mount polls: longer than the 1 s TTLs given to such mounts.
POLL_SECONDS = 3.0
SHORT_TTLS = ("stat_ttl=1", "dir_ttl=1", "neg_ttl=1")


pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("fs")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def mnt(moto: S3Server, bucket: str, tmp_path: Path) -> Iterator[Path]:
    """The fresh bucket mounted with default options."""
    with mounted(moto, bucket, tmp_path=tmp_path) as path:
        yield path


def run(*argv: str | Path, cwd: Path | None = None, input: bytes | None = None) -> str:
    """Run a command; its stdout; assert it exits 0 (its output in the message)."""
    args = [str(a) for a in argv]
    done = subprocess.run(args, cwd=cwd, input=input, capture_output=True, timeout=120, check=False)
    out = done.stdout.decode(errors="replace")
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"{args} -> {done.returncode}\nstdout: {out}\nstderr: {err}"
    return out


def sh(script: str, cwd: Path | None = None) -> str:
    return run("sh", "-c", script, cwd=cwd)


def get(s3: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def head(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
    return answer


def put(s3: Any, bucket: str, key: str, body: bytes = b"", **meta: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update(obj["Key"] for obj in page.get("Contents", []))
    return found


def exists_in_s3(s3: Any, bucket: str, key: str) -> bool:
    return key in keys(s3, bucket, key)


def poll(check: Callable[[], bool], seconds: float = POLL_SECONDS) -> bool:
    """True as soon as ``check()`` is; False if it never is within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def errno_of(call: Callable[[], object]) -> int:
    """The errno ``call`` fails with (assert it fails)."""
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno is not None
    return info.value.errno


def make_tree(root: Path) -> dict[str, bytes]:
    """A local tree with nested dirs, empty files and dirs, binary files, a 5 MiB file and
    names with spaces, unicode and ``+``; returns relative path → content of every file."""
    rng = random.Random(1234)
    files: dict[str, bytes] = {
        "readme.txt": b"hello tree\n",
        "empty": b"",
        "bin/random.bin": rng.randbytes(70_000),
        "bin/zeros.bin": bytes(4096),
        "bin/big 5MiB.bin": rng.randbytes(5 * MiB),
        "deep/er/and/deeper/leaf.txt": b"leaf\n",
        "deep/er/empty file": b"",
        "names/with space.txt": b"space\n",
        "names/ünïcödé ✓.txt": "ünïcödé\n".encode(),
        "names/a+b=c&d.txt": b"plus\n",
        "names/100% #1?.txt": b"percent\n",
        "names/日本語/ファイル": b"nihongo\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty dir").mkdir()
    (root / "deep/er/empty too").mkdir()
    return files


def assert_same_tree(left: Path, right: Path) -> None:
    run("diff", "-r", left, right)
    # diff -r ignores missing empty dirs on neither side, but be explicit about names too
    left_names = sorted(str(p.relative_to(left)) for p in left.rglob("*"))
    right_names = sorted(str(p.relative_to(right)) for p in right.rglob("*"))
    assert left_names == right_names


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- 1. tools round trips


def test_cp_r_in_and_out(moto: S3Server, s3: Any, bucket: str, mnt: Path, tmp_path: Path):
    src = tmp_path / "src"
    files = make_tree(src)
    run("cp", "-r", src, mnt / "tree")
    assert_same_tree(src, mnt / "tree")
    out = tmp_path / "out"
    run("cp", "-r", mnt / "tree", out)
    assert_same_tree(src, out)
    # every file is an object with the same bytes; empty dirs are markers
    for rel, data in files.items():
        assert sha(get(s3, bucket, f"tree/{rel}")) == sha(data), rel
    assert exists_in_s3(s3, bucket, "tree/empty dir/")
    assert exists_in_s3(s3, bucket, "tree/deep/er/empty too/")

    # and through our own signed client, both ways
    async def both_ways() -> None:
        async with S3fmAuthConnection(
            moto.access_key_id,
            moto.secret_access_key,
            False,
            moto.host,
            moto.port,
            CallingFormat.PATH,
        ) as conn:
            for rel, data in files.items():
                got = await conn.get(bucket, f"tree/{rel}", spool_size=len(data) + 1)
                assert got.object.data == data, rel
            await conn.put(bucket, "from client/ü b+c.bin", bytes(range(256)) * 99)

    trio.run(both_ways)
    assert (mnt / "from client" / "ü b+c.bin").read_bytes() == bytes(range(256)) * 99


def test_tar_round_trip(mnt: Path, tmp_path: Path):
    src = tmp_path / "src"
    make_tree(src)
    (mnt / "t").mkdir()
    sh(f"tar -C '{src}' -cf - . | tar -C '{mnt / 't'}' -xf -")
    assert_same_tree(src, mnt / "t")
    out = tmp_path / "out"
    out.mkdir()
    sh(f"tar -C '{mnt / 't'}' -cf - . | tar -C '{out}' -xf -")
    assert_same_tree(src, out)
    # an archive file written into the mount and extracted from there
    run("tar", "-C", src, "-cf", mnt / "archive.tar", ".")
    out2 = tmp_path / "out2"
    out2.mkdir()
    run("tar", "-C", out2, "-xf", mnt / "archive.tar")
    assert_same_tree(src, out2)


def test_rsync_twice_transfers_nothing_the_second_time(mnt: Path, tmp_path: Path):
    src = tmp_path / "src"
    files = make_tree(src)
    first = run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/r/")
    assert f"Number of regular files transferred: {len(files)}" in first, first
    assert_same_tree(src, mnt / "r")
    second = run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/r/")
    assert "Number of regular files transferred: 0" in second, second
    # rsync -a kept modes and (second-precision) mtimes
    for rel in files:
        local, remote = (src / rel).stat(), (mnt / "r" / rel).stat()
        assert stat.S_IMODE(remote.st_mode) == stat.S_IMODE(local.st_mode), rel
        assert int(remote.st_mtime) == int(local.st_mtime), rel


def test_grep_r(mnt: Path):
    (mnt / "g/sub/deeper").mkdir(parents=True)
    (mnt / "g/one.txt").write_text("alpha\nneedle here\n")
    (mnt / "g/two.txt").write_text("nothing\n")
    (mnt / "g/sub/three with space.txt").write_text("x\ny needle\n")
    (mnt / "g/sub/deeper/four.bin").write_bytes(b"\0\1needle\2")
    listed = run("grep", "-rl", "needle", mnt / "g").splitlines()
    assert sorted(listed) == sorted(
        str(mnt / p) for p in ("g/one.txt", "g/sub/three with space.txt", "g/sub/deeper/four.bin")
    )
    count = run("grep", "-rc", "needle", mnt / "g" / "one.txt")
    assert count.strip() == "1"


def test_mv_files_and_trees(s3: Any, bucket: str, mnt: Path, tmp_path: Path):
    src = tmp_path / "src"
    files = make_tree(src)
    run("cp", "-r", src, mnt / "tree")
    # a file within the mount
    run("mv", mnt / "tree/readme.txt", mnt / "tree/names/moved readme.txt")
    assert not (mnt / "tree/readme.txt").exists()
    assert (mnt / "tree/names/moved readme.txt").read_bytes() == files["readme.txt"]
    # a whole tree within the mount
    run("mv", mnt / "tree", mnt / "renamed tree")
    assert not (mnt / "tree").exists()
    assert sorted(os.listdir(mnt)) == ["renamed tree"]
    assert keys(s3, bucket, "tree/") == set()
    moved = keys(s3, bucket, "renamed tree/")
    for rel, data in files.items():
        if rel == "readme.txt":
            continue
        assert f"renamed tree/{rel}" in moved
        assert sha((mnt / "renamed tree" / rel).read_bytes()) == sha(data), rel
    # a local tree moved in (copy + delete across filesystems) and back out
    run("mv", src, mnt / "from local")
    assert not src.exists()
    run("mv", mnt / "from local", tmp_path / "back")
    assert not (mnt / "from local").exists()
    assert (tmp_path / "back/bin/big 5MiB.bin").read_bytes() == files["bin/big 5MiB.bin"]
    assert keys(s3, bucket, "from local/") == set()


SQL_SCRIPT = """
CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
{inserts}
UPDATE t SET v = upper(v) WHERE id % 3 = 0;
DELETE FROM t WHERE id % 10 = 0;
CREATE INDEX t_v ON t (v);
"""
SQL_CHECK = "PRAGMA integrity_check; SELECT count(*), sum(length(v)), max(id) FROM t;"


def test_sqlite_random_writes(s3: Any, bucket: str, mnt: Path, tmp_path: Path):
    batches = []
    for batch in range(10):  # 10 transactions of 100 rows: journal, fsync, rewrites of pages
        rows = ",".join(
            f"({i}, 'row {i} ' || hex(randomblob(64)))"
            for i in range(batch * 100 + 1, batch * 100 + 101)
        )
        batches.append(f"BEGIN; INSERT INTO t (id, v) VALUES {rows}; COMMIT;")
    script = SQL_SCRIPT.format(inserts="\n".join(batches)).encode()
    db = mnt / "data.sqlite"
    run("sqlite3", db, input=script)
    checked = run("sqlite3", db, SQL_CHECK).splitlines()
    assert checked[0] == "ok"
    count, _, max_id = checked[1].split("|")
    assert (count, max_id) == ("900", "999")
    assert not (mnt / "data.sqlite-journal").exists()
    # the object in the bucket is the same database
    stored = tmp_path / "stored.sqlite"
    stored.write_bytes(get(s3, bucket, "data.sqlite"))
    assert stored.read_bytes() == db.read_bytes()
    assert run("sqlite3", stored, SQL_CHECK).splitlines() == checked
    assert "data.sqlite-journal" not in keys(s3, bucket)


def test_python_random_seek_write(s3: Any, bucket: str, mnt: Path):
    rng = random.Random(42)
    model = bytearray(rng.randbytes(1 * MiB))
    path = mnt / "random.bin"
    path.write_bytes(model)
    with open(path, "r+b") as f:
        for i in range(300):
            offset = rng.randrange(0, len(model) + 64 * 1024)
            chunk = rng.randbytes(rng.randrange(1, 64 * 1024))
            f.seek(offset)
            f.write(chunk)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset : offset + len(chunk)] = chunk
            if i % 50 == 49:
                f.flush()
                os.fsync(f.fileno())  # upload mid-way, then keep writing
                at = rng.randrange(0, len(model))
                f.seek(at)
                assert f.read(4096) == bytes(model[at : at + 4096])
    assert sha(path.read_bytes()) == sha(bytes(model))
    assert path.stat().st_size == len(model)
    assert sha(get(s3, bucket, "random.bin")) == sha(bytes(model))


def test_a_file_uploaded_whole_goes_up_in_the_mounts_parts(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    """``part_size_mb`` cuts a file uploaded whole at close too (written tail first, it is not
    streamed): 100 MiB in 5 MiB parts is 20 parts, the ETag's suffix (it was 16 MiB parts)."""
    chunk = os.urandom(MiB)
    with (
        mounted(moto, bucket, tmp_path=tmp_path, options=["part_size_mb=5"]) as mnt,
        open(mnt / "tail-first.bin", "wb") as f,
    ):
        for index in reversed(range(100)):
            f.seek(index * MiB)
            f.write(chunk)
    head = s3.head_object(Bucket=bucket, Key="tail-first.bin")
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].strip('"').endswith("-20"), head["ETag"]


def test_git_in_the_mount(mnt: Path):
    repo = mnt / "repo"
    repo.mkdir()
    git = ("git", "-c", "user.name=Test", "-c", "user.email=test@example.com")
    run(*git, "init", "-q", "-b", "main", cwd=repo)
    (repo / "README").write_text("hello\n")
    (repo / "src").mkdir()
    (repo / "src/main.py").write_text("print('hi')\n")
    (repo / "src/run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(repo / "src/run.sh", 0o755)
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "README").write_text("hello again\n")
    run(*git, "commit", "-q", "-am", "second", cwd=repo)
    log = run(*git, "log", "--format=%s", cwd=repo).splitlines()
    assert log == ["second", "first"]
    assert run(*git, "status", "--porcelain", cwd=repo) == ""
    run(*git, "fsck", "--no-progress", cwd=repo)
    shown = run(*git, "show", "HEAD~1:README", cwd=repo)
    assert shown == "hello\n"
    tree = run(*git, "ls-tree", "-r", "HEAD", cwd=repo)
    assert "100755 blob" in tree and "src/run.sh" in tree


def test_remount_keeps_data_and_metadata(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    src = tmp_path / "src"
    files = make_tree(src)
    mtime = 1_000_000_000  # 2001-09-09
    put(s3, bucket, "implicit/only/key", b"k")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        os.chmod(mnt / "implicit", 0o700)  # a directory without a marker object
        os.chown(mnt / "implicit/only", 42, 43)
        run("cp", "-r", src, mnt / "tree")
        f = mnt / "tree/readme.txt"
        os.chmod(f, 0o640)
        os.chown(f, 1234, 5678)
        os.utime(f, (mtime, mtime))
        d = mnt / "tree/deep"
        os.chmod(d, 0o750)
        os.chown(d, 4321, 8765)
        os.symlink("../readme.txt", mnt / "tree/names/link")
        before = {p: os.lstat(mnt / "tree" / p) for p in ("readme.txt", "deep", "names/link")}
        assert stat.S_IMODE(before["readme.txt"].st_mode) == 0o640
        assert (before["readme.txt"].st_uid, before["readme.txt"].st_gid) == (1234, 5678)
        assert int(before["readme.txt"].st_mtime) == mtime
    meta = head(s3, bucket, "tree/readme.txt")["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o640
    assert (meta["uid"], meta["gid"]) == ("1234", "5678")
    assert int(float(meta[S3FS_MTIME])) == mtime
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        run("diff", "-r", "--no-dereference", "-x", "link", src, mnt / "tree")
        for rel, data in files.items():
            assert sha((mnt / "tree" / rel).read_bytes()) == sha(data), rel
        for p, old in before.items():
            new = os.lstat(mnt / "tree" / p)
            assert new.st_mode == old.st_mode, p
            assert (new.st_uid, new.st_gid) == (old.st_uid, old.st_gid), p
            assert int(new.st_mtime) == int(old.st_mtime), p
        assert os.readlink(mnt / "tree/names/link") == "../readme.txt"
        assert (mnt / "tree/names/link").read_bytes() == files["readme.txt"]
        assert stat.S_IMODE(os.stat(mnt / "implicit").st_mode) == 0o700
        st = os.stat(mnt / "implicit/only")
        assert (st.st_uid, st.st_gid) == (42, 43)
        assert (mnt / "implicit/only/key").read_bytes() == b"k"
    assert stat.S_IMODE(int(head(s3, bucket, "implicit/")["Metadata"]["mode"])) == 0o700


def test_written_objects_have_s3fs_form(s3: Any, bucket: str, mnt: Path):
    data = bytes(range(256)) * 100
    (mnt / "file.bin").write_bytes(data)
    os.chmod(mnt / "file.bin", 0o604)
    (mnt / "dir").mkdir(mode=0o755)
    os.symlink("file.bin", mnt / "link")
    st = os.stat(mnt / "file.bin")
    got = s3.get_object(Bucket=bucket, Key="file.bin")
    assert got["Body"].read() == data
    meta = got["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o604
    assert int(meta["uid"]) == st.st_uid == os.getuid()
    assert int(meta["gid"]) == st.st_gid == os.getgid()
    assert abs(int(meta[S3FS_MTIME]) - time.time()) < 60
    assert int(meta[S3FS_MTIME]) == int(st.st_mtime)
    marker = s3.get_object(Bucket=bucket, Key="dir/")
    assert marker["Body"].read() == b""
    assert stat.S_ISDIR(int(marker["Metadata"]["mode"]))
    assert stat.S_IMODE(int(marker["Metadata"]["mode"])) == 0o755
    link = s3.get_object(Bucket=bucket, Key="link")
    assert link["Body"].read() == b"file.bin"
    assert stat.S_ISLNK(int(link["Metadata"]["mode"]))
    assert keys(s3, bucket) == {"file.bin", "dir/", "link"}


def test_objects_put_behind_show_up(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    put(s3, bucket, "a/b/c", b"deep")
    put(s3, bucket, "d/")
    put(s3, bucket, "with space/x y+z.txt", b"spaced")
    put(s3, bucket, "plain.txt", b"plain")
    put(
        s3,
        bucket,
        "meta.txt",
        b"meta",
        mode=str(stat.S_IFREG | 0o600),
        uid="1001",
        gid="1002",
        mtime="1234567890",
    )
    put(s3, bucket, "sym", b"plain.txt", mode=str(stat.S_IFLNK | 0o777))
    big = random.Random(7).randbytes(3 * MiB + 123)
    put(s3, bucket, "big.bin", big)
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert sorted(os.listdir(mnt)) == sorted(
            ["a", "d", "with space", "plain.txt", "meta.txt", "sym", "big.bin"]
        )
        rng = random.Random(8)
        with open(mnt / "big.bin", "rb") as f:  # random reads: ranged GETs, read-ahead resets
            for _ in range(100):
                at = rng.randrange(0, len(big) + 10)
                size = rng.randrange(1, 200_000)
                f.seek(at)
                assert f.read(size) == big[at : at + size], (at, size)
        assert sha((mnt / "big.bin").read_bytes()) == sha(big)
        # md5sum, cp and mmap read exactly the bytes the other client wrote
        md5 = run("md5sum", mnt / "big.bin").split()[0]
        assert md5 == hashlib.md5(big).hexdigest()
        run("cp", mnt / "big.bin", tmp_path / "copied.bin")
        assert (tmp_path / "copied.bin").read_bytes() == big
        with open(mnt / "big.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert len(m) == len(big)
            assert m[: 1 << 20] == big[: 1 << 20] and m[-4096:] == big[-4096:]
            assert hashlib.sha256(m).hexdigest() == sha(big)
        assert os.listdir(mnt / "a") == ["b"]
        assert os.listdir(mnt / "a/b") == ["c"]
        assert os.listdir(mnt / "d") == []
        assert (mnt / "a").is_dir() and (mnt / "a/b").is_dir() and (mnt / "d").is_dir()
        assert (mnt / "a/b/c").read_bytes() == b"deep"
        assert (mnt / "with space/x y+z.txt").read_bytes() == b"spaced"
        st = os.stat(mnt / "plain.txt")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
        assert (st.st_uid, st.st_gid, st.st_size) == (os.getuid(), os.getgid(), 5)
        assert stat.S_IMODE(os.stat(mnt / "a").st_mode) == 0o755
        st = os.stat(mnt / "meta.txt")
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (1001, 1002, 1234567890)
        assert stat.S_ISLNK(os.lstat(mnt / "sym").st_mode)
        assert os.readlink(mnt / "sym") == "plain.txt"
        assert (mnt / "sym").read_bytes() == b"plain"
        listing = run("ls", "-la", mnt)
        assert "with space" in listing and "sym -> plain.txt" in listing


def test_mount_options(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    put(s3, bucket, "dir/file", b"12345")
    put(s3, bucket, "meta", b"m", mode=str(stat.S_IFREG | 0o640))
    options: tuple[str, ...] = ("uid=1000", "gid=2000", "file_mode=0600", "dir_mode=0700", "ro")
    with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
        st = os.stat(mnt / "dir/file")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o600)
        st = os.stat(mnt / "dir")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o700)
        assert stat.S_IMODE(os.stat(mnt / "meta").st_mode) == 0o640  # metadata wins
        assert (mnt / "dir/file").read_bytes() == b"12345"
        assert errno_of(lambda: (mnt / "new").write_bytes(b"x")) == errno.EROFS
        assert errno_of(lambda: os.unlink(mnt / "dir/file")) == errno.EROFS
        assert errno_of(lambda: os.mkdir(mnt / "newdir")) == errno.EROFS
    assert keys(s3, bucket) == {"dir/file", "meta"}
    put(s3, bucket, "meta2", b"m2", mode=str(stat.S_IFREG | 0o640))
    options = ("nometa", "default_umask=077", "allow_other", "debug")
    with mounted(moto, bucket, tmp_path=tmp_path, options=options) as mnt:
        assert "allow_other" in Path("/proc/self/mounts").read_text()
        # nometa: "listings only, modes are defaults", whether found by lookup or by readdir
        assert stat.S_IMODE(os.stat(mnt / "dir").st_mode) == 0o700
        assert sorted(os.listdir(mnt)) == ["dir", "meta", "meta2"]
        assert stat.S_IMODE(os.stat(mnt / "meta2").st_mode) == 0o600  # after readdir
        assert (mnt / "meta").read_bytes() == b"m"
        assert f"/{bucket}/meta " in log_tail(mnt, 100_000)  # debug: requests are logged
    with mounted(moto, bucket, tmp_path=tmp_path, options=("nometa", "default_umask=077")) as mnt:
        assert stat.S_IMODE(os.stat(mnt / "meta").st_mode) == 0o600  # direct lookup


# --------------------------------------------------------------------------- 2. directories


def test_key_with_control_character_does_not_break_the_mount(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    """XML 1.0 cannot carry U+0001: listings must ask for ``encoding-type=url``."""
    for key in ("ctl/ok", "ctl/bad\x01name", "top"):
        put(s3, bucket, key, b"data")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert sorted(os.listdir(mnt)) == ["ctl", "top"]
        assert "ok" in os.listdir(mnt / "ctl")
        assert set(os.listdir(mnt / "ctl")) <= {"ok", "bad\x01name"}
        assert (mnt / "ctl/ok").read_bytes() == b"data"
        (mnt / "made\x02here").write_bytes(b"made")
        assert "made\x02here" in os.listdir(mnt)
    assert get(s3, bucket, "made\x02here") == b"made"


def test_file_and_dir_of_the_same_name(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    put(s3, bucket, "x", b"file x")
    put(s3, bucket, "x/y", b"y inside")
    put(s3, bucket, "m", b"file m")
    put(s3, bucket, "m/")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert sorted(os.listdir(mnt)) == ["m", "x"]  # each name once
        assert (mnt / "x").is_dir()
        assert os.listdir(mnt / "x") == ["y"]
        assert (mnt / "x/y").read_bytes() == b"y inside"
        assert (mnt / "m").is_dir()
        assert os.listdir(mnt / "m") == []
        assert run("ls", "-la", mnt).count(" x\n") == 1


def test_invalid_keys_are_skipped(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    long_name = "n" * 300
    bad = ["x//y", "./a", "a/../b", long_name, f"{long_name}/f", f"ok dir/{long_name}"]
    for key in [*bad, "ok.txt", "ok dir/fine"]:
        put(s3, bucket, key, b"data")
    assert keys(s3, bucket) >= set(bad)  # the server kept them as given
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        listing = run("ls", "-la", mnt)
        assert "ok.txt" in listing and long_name not in listing
        names = set(os.listdir(mnt))
        assert {"ok.txt", "ok dir"} <= names
        assert names <= {"ok.txt", "ok dir", "x", "a"}  # x/ and a/ prefixes may stay as dirs
        assert os.listdir(mnt / "ok dir") == ["fine"]
        run("ls", "-laR", mnt)
        for dirpath, dirnames, filenames in os.walk(mnt):
            for name in dirnames + filenames:
                assert name not in ("", ".", "..") and len(name.encode()) <= 255
                os.lstat(os.path.join(dirpath, name))  # every listed name answers
        assert (mnt / "ok.txt").read_bytes() == b"data"
        assert (mnt / "ok dir/fine").read_bytes() == b"data"


def test_prefix_mount_shows_only_the_subtree(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    for key in ("some/prefix/a.txt", "some/prefix/sub/b.txt", "some/other.txt", "top.txt"):
        put(s3, bucket, key, key.encode())
    put(s3, bucket, "some/prefixed.txt", b"not under some/prefix/")
    with mounted(moto, bucket, prefix="some/prefix", tmp_path=tmp_path) as mnt:
        assert sorted(os.listdir(mnt)) == ["a.txt", "sub"]
        assert (mnt / "a.txt").read_bytes() == b"some/prefix/a.txt"
        assert (mnt / "sub/b.txt").read_bytes() == b"some/prefix/sub/b.txt"
        assert not (mnt / "other.txt").exists()
        (mnt / "new.txt").write_bytes(b"new")
        (mnt / "newdir").mkdir()
    assert get(s3, bucket, "some/prefix/new.txt") == b"new"
    assert exists_in_s3(s3, bucket, "some/prefix/newdir/")
    assert not exists_in_s3(s3, bucket, "new.txt")


# --------------------------------------------------------------------------- 3. writes


def test_append_overwrite_and_o_trunc(s3: Any, bucket: str, mnt: Path):
    f = mnt / "f.txt"
    sh(f"echo one > '{f}'; echo two >> '{f}'; printf three >> '{f}'")
    assert f.read_bytes() == b"one\ntwo\nthree"
    assert get(s3, bucket, "f.txt") == b"one\ntwo\nthree"
    with open(f, "ab") as out:
        out.write(b"!")
    assert get(s3, bucket, "f.txt") == b"one\ntwo\nthree!"
    f.write_bytes(b"new")  # O_TRUNC then write
    assert f.read_bytes() == b"new"
    assert get(s3, bucket, "f.txt") == b"new"
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)  # truncation alone is a change
    os.close(fd)
    assert f.stat().st_size == 0
    assert get(s3, bucket, "f.txt") == b""
    sh(f": > '{mnt / 'created-empty'}'")
    assert get(s3, bucket, "created-empty") == b""


def test_truncate_grow_and_shrink(s3: Any, bucket: str, mnt: Path):
    f = mnt / "t.bin"
    f.write_bytes(b"abcd")
    os.truncate(f, 10)
    assert f.read_bytes() == b"abcd" + bytes(6)
    assert get(s3, bucket, "t.bin") == b"abcd" + bytes(6)
    os.truncate(f, 2)
    assert f.read_bytes() == b"ab"
    assert f.stat().st_size == 2
    assert get(s3, bucket, "t.bin") == b"ab"
    with open(f, "r+b") as g:  # ftruncate on an open file, then write past it
        g.truncate(1)
        g.seek(3)
        g.write(b"z")
    assert f.read_bytes() == b"a\0\0z"
    assert get(s3, bucket, "t.bin") == b"a\0\0z"
    os.truncate(f, 3 * MiB)
    assert f.stat().st_size == 3 * MiB
    assert get(s3, bucket, "t.bin") == b"a\0\0z" + bytes(3 * MiB - 4)


def test_sparse_writes(s3: Any, bucket: str, mnt: Path):
    f = mnt / "sparse"
    with open(f, "wb") as out:
        out.write(b"start")
        out.seek(2 * MiB)
        out.write(b"middle")
        out.seek(5 * MiB + 7)
        out.write(b"end")
    expected = bytearray(5 * MiB + 10)
    expected[0:5] = b"start"
    expected[2 * MiB : 2 * MiB + 6] = b"middle"
    expected[5 * MiB + 7 :] = b"end"
    assert f.stat().st_size == len(expected)
    assert sha(f.read_bytes()) == sha(bytes(expected))
    assert sha(get(s3, bucket, "sparse")) == sha(bytes(expected))


def test_file_open_twice_shares_writes(s3: Any, bucket: str, mnt: Path):
    f = mnt / "shared"
    f.write_bytes(b"0123456789")
    fd1 = os.open(f, os.O_RDWR)
    fd2 = os.open(f, os.O_RDWR)
    try:
        os.pwrite(fd1, b"AB", 0)
        assert os.pread(fd2, 10, 0) == b"AB23456789"
        os.pwrite(fd2, b"XYZ", 8)
        assert os.pread(fd1, 20, 0) == b"AB234567XYZ"
        assert os.fstat(fd1).st_size == 11
        os.close(fd1)
        fd1 = -1
        os.pwrite(fd2, b"!", 11)  # still writable after the other close (and its upload)
    finally:
        if fd1 >= 0:
            os.close(fd1)
        os.close(fd2)
    assert f.read_bytes() == b"AB234567XYZ!"
    assert get(s3, bucket, "shared") == b"AB234567XYZ!"


def test_open_close_without_write_uploads_nothing(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    put(s3, bucket, "keep.txt", b"unchanged")
    before = head(s3, bucket, "keep.txt")
    time.sleep(1.1)  # LastModified has one-second precision
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        f = mnt / "keep.txt"
        assert f.read_bytes() == b"unchanged"
        for flags in (os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_WRONLY):
            fd = os.open(f, flags)
            os.fsync(fd)
            os.close(fd)
        with open(f, "r+b") as g:
            g.seek(3)
            g.read(2)
    after = head(s3, bucket, "keep.txt")
    assert after["ETag"] == before["ETag"]
    assert after["LastModified"] == before["LastModified"]
    assert after["Metadata"] == before["Metadata"] == {}


# --------------------------------------------------------------------------- 4. namespace


def test_unlink_while_open(s3: Any, bucket: str, mnt: Path):
    f = mnt / "doomed"
    f.write_bytes(b"still here")
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        assert not f.exists()
        assert "doomed" not in os.listdir(mnt)
        assert not exists_in_s3(s3, bucket, "doomed")
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b"STILL", 0)
        assert os.pread(fd, 100, 0) == b"STILL here"
        os.fsync(fd)
        assert os.fstat(fd).st_size == 10
    finally:
        os.close(fd)
    time.sleep(0.2)
    assert not f.exists()
    assert not exists_in_s3(s3, bucket, "doomed")
    # a new file of the same name is a new file
    f.write_bytes(b"reborn")
    assert get(s3, bucket, "doomed") == b"reborn"


def test_mkdir_rmdir(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    put(s3, bucket, "implicit/only/key", b"k")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        (mnt / "d").mkdir()
        assert exists_in_s3(s3, bucket, "d/")
        assert errno_of(lambda: os.mkdir(mnt / "d")) == errno.EEXIST
        (mnt / "d/f").write_bytes(b"")
        assert errno_of(lambda: os.rmdir(mnt / "d")) == errno.ENOTEMPTY
        os.unlink(mnt / "d/f")
        (mnt / "d/sub").mkdir()
        assert errno_of(lambda: os.rmdir(mnt / "d")) == errno.ENOTEMPTY
        os.rmdir(mnt / "d/sub")
        os.rmdir(mnt / "d")
        assert not (mnt / "d").exists()
        assert keys(s3, bucket, "d/") == set()
        # a directory that exists only as a key prefix
        assert errno_of(lambda: os.rmdir(mnt / "implicit")) == errno.ENOTEMPTY
        assert errno_of(lambda: os.rmdir(mnt / "implicit/only")) == errno.ENOTEMPTY
        assert exists_in_s3(s3, bucket, "implicit/only/key")
        assert errno_of(lambda: os.rmdir(mnt / "implicit/only/key")) == errno.ENOTDIR
        # a key put behind the mount into a directory the mount made
        (mnt / "e").mkdir()
        assert os.listdir(mnt / "e") == []
        put(s3, bucket, "e/hidden", b"h")
        assert errno_of(lambda: os.rmdir(mnt / "e")) == errno.ENOTEMPTY
        assert exists_in_s3(s3, bucket, "e/hidden")


def test_rename_over_existing_file(s3: Any, bucket: str, mnt: Path):
    (mnt / "a").write_bytes(b"from a")
    (mnt / "b").write_bytes(b"old b, longer")
    os.chmod(mnt / "a", 0o600)
    os.rename(mnt / "a", mnt / "b")
    assert not (mnt / "a").exists()
    assert (mnt / "b").read_bytes() == b"from a"
    assert stat.S_IMODE((mnt / "b").stat().st_mode) == 0o600
    assert sorted(os.listdir(mnt)) == ["b"]
    assert keys(s3, bucket) == {"b"}
    assert get(s3, bucket, "b") == b"from a"
    assert int(head(s3, bucket, "b")["Metadata"]["mode"]) == stat.S_IFREG | 0o600
    # a file over an empty directory, or a directory over a file, is refused
    (mnt / "dir").mkdir()
    assert errno_of(lambda: os.rename(mnt / "b", mnt / "dir")) == errno.EISDIR
    assert errno_of(lambda: os.rename(mnt / "dir", mnt / "b")) == errno.ENOTDIR


def test_rename_directory_with_many_keys(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    bodies = {f"big/{i // 30}/file {i}.txt": f"body {i}".encode() for i in range(150)}
    bodies["big/"] = b""
    bodies["big/x/"] = b""
    for key, body in bodies.items():
        put(s3, bucket, key, body)
    put(s3, bucket, "big-sibling", b"not in big/")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert len(os.listdir(mnt / "big")) == 6
        os.rename(mnt / "big", mnt / "moved")
        assert not (mnt / "big").exists()
        assert sorted(os.listdir(mnt / "moved")) == sorted(["0", "1", "2", "3", "4", "x"])
        assert (mnt / "moved/4/file 149.txt").read_bytes() == b"body 149"
        assert (mnt / "big-sibling").read_bytes() == b"not in big/"
    assert keys(s3, bucket, "big/") == set()
    moved = keys(s3, bucket, "moved/")
    assert {k.replace("moved/", "big/", 1) for k in moved} >= set(bodies) - {"big/"}
    for key in ("big/0/file 0.txt", "big/4/file 149.txt"):
        assert get(s3, bucket, key.replace("big/", "moved/", 1)) == bodies[key]


@pytest.mark.soak
def test_large_directory_listing_and_rm_r(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    names = {f"f{i:05d}" for i in range(1100)}  # more than one listing page (1000)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: put(s3, bucket, f"many/{n}", n.encode()), sorted(names)))
    put(s3, bucket, "many/sub/inner", b"inner")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        listed = os.listdir(mnt / "many")
        assert len(listed) == len(set(listed)) == 1101
        assert set(listed) == names | {"sub"}
        ls = run("ls", "-l", mnt / "many").splitlines()
        assert len(ls) == 1102  # "total" line
        assert (mnt / "many/f01099").read_bytes() == b"f01099"
        run("rm", "-r", mnt / "many")
        assert not (mnt / "many").exists()
        assert os.listdir(mnt) == []
    assert keys(s3, bucket) == set()


def test_parallel_writers(s3: Any, bucket: str, mnt: Path):
    rng = random.Random(5)
    datas = {f"p{i}/file{i}": rng.randbytes(rng.randrange(1, 400_000)) for i in range(24)}

    def write(item: tuple[str, bytes]) -> None:
        rel, data = item
        (mnt / rel).parent.mkdir(exist_ok=True)
        with open(mnt / rel, "wb") as f:
            for start in range(0, len(data), 65536):
                f.write(data[start : start + 65536])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, datas.items()))
    assert len(os.listdir(mnt)) == 24
    for rel, data in datas.items():
        assert sha((mnt / rel).read_bytes()) == sha(data), rel
        assert sha(get(s3, bucket, rel)) == sha(data), rel


def test_rename_open_dirty_file(s3: Any, bucket: str, mnt: Path):
    (mnt / "dir").mkdir()
    fd = os.open(mnt / "draft", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first half, ")
        os.rename(mnt / "draft", mnt / "dir/final")
        os.write(fd, b"second half")
    finally:
        os.close(fd)
    assert (mnt / "dir/final").read_bytes() == b"first half, second half"
    assert not (mnt / "draft").exists()
    assert get(s3, bucket, "dir/final") == b"first half, second half"
    assert keys(s3, bucket) == {"dir/", "dir/final"}
    # an open, already uploaded file renamed, then written through its descriptor
    with open(mnt / "dir/final", "r+b") as f:
        os.rename(mnt / "dir/final", mnt / "renamed")
        f.seek(0)
        f.write(b"FIRST")
    assert (mnt / "renamed").read_bytes() == b"FIRST half, second half"
    assert keys(s3, bucket) == {"dir/", "renamed"}
    assert get(s3, bucket, "renamed") == b"FIRST half, second half"


def test_open_files_across_namespace_changes(s3: Any, bucket: str, mnt: Path):
    # a dirty file inside a directory renamed while the file is open
    (mnt / "d").mkdir()
    fd = os.open(mnt / "d/f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"part1 ")
        os.rename(mnt / "d", mnt / "e")
        os.write(fd, b"part2")
    finally:
        os.close(fd)
    assert keys(s3, bucket) == {"e/", "e/f"}
    assert get(s3, bucket, "e/f") == b"part1 part2"
    # unlinked while open, name reused: the old descriptor never overwrites the new file
    (mnt / "x").write_bytes(b"old x")
    fd = os.open(mnt / "x", os.O_RDWR)
    try:
        os.unlink(mnt / "x")
        (mnt / "x").write_bytes(b"new x")
        os.pwrite(fd, b"OLD", 0)
        assert os.pread(fd, 10, 0) == b"OLD x"
    finally:
        os.close(fd)
    assert (mnt / "x").read_bytes() == b"new x"
    assert get(s3, bucket, "x") == b"new x"
    # a file renamed over one held open: closing the victim uploads nothing
    (mnt / "a").write_bytes(b"aaaa")
    (mnt / "b").write_bytes(b"bbbb")
    fd = os.open(mnt / "b", os.O_RDWR)
    try:
        os.rename(mnt / "a", mnt / "b")
        os.pwrite(fd, b"BB", 0)
        assert os.pread(fd, 10, 0) == b"BBbb"
    finally:
        os.close(fd)
    assert (mnt / "b").read_bytes() == b"aaaa"
    assert get(s3, bucket, "b") == b"aaaa"
    # O_TRUNC through a second descriptor is seen by the first
    (mnt / "t").write_bytes(b"0123456789")
    fd = os.open(mnt / "t", os.O_RDWR)
    try:
        os.close(os.open(mnt / "t", os.O_WRONLY | os.O_TRUNC))
        assert os.pread(fd, 10, 0) == b""
    finally:
        os.close(fd)
    assert get(s3, bucket, "t") == b""
    # an editor's save (write a temporary, rename it over) while a reader is open
    (mnt / "doc").write_bytes(b"v1")
    with open(mnt / "doc", "rb") as reader:
        (mnt / "doc.tmp").write_bytes(b"v2 longer")
        os.rename(mnt / "doc.tmp", mnt / "doc")
        assert reader.read() == b"v1"
    assert (mnt / "doc").read_bytes() == get(s3, bucket, "doc") == b"v2 longer"
    assert keys(s3, bucket) == {"e/", "e/f", "x", "b", "t", "doc"}


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    result = _libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old))


def test_renameat2_flags(s3: Any, bucket: str, mnt: Path):
    (mnt / "a").write_bytes(b"a")
    (mnt / "b").write_bytes(b"b")
    assert errno_of(lambda: renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE)) == errno.EEXIST
    assert (mnt / "b").read_bytes() == b"b"
    renameat2(mnt / "a", mnt / "c", RENAME_NOREPLACE)
    assert (mnt / "c").read_bytes() == b"a" and not (mnt / "a").exists()
    assert errno_of(lambda: renameat2(mnt / "b", mnt / "c", RENAME_EXCHANGE)) == errno.EINVAL
    assert (mnt / "b").read_bytes() == b"b" and (mnt / "c").read_bytes() == b"a"
    assert keys(s3, bucket) == {"b", "c"}


def test_symlink_readlink(s3: Any, bucket: str, mnt: Path):
    (mnt / "target.txt").write_bytes(b"target")
    os.symlink("target.txt", mnt / "rel")
    os.symlink("/nonexistent/abs path", mnt / "dangling")
    assert os.readlink(mnt / "rel") == "target.txt"
    assert os.readlink(mnt / "dangling") == "/nonexistent/abs path"
    assert stat.S_ISLNK(os.lstat(mnt / "rel").st_mode)
    assert (mnt / "rel").read_bytes() == b"target"
    assert os.lstat(mnt / "dangling").st_size == len("/nonexistent/abs path")
    assert errno_of(lambda: os.symlink("x", mnt / "rel")) == errno.EEXIST
    assert get(s3, bucket, "dangling") == b"/nonexistent/abs path"
    assert stat.S_ISLNK(int(head(s3, bucket, "rel")["Metadata"]["mode"]))
    os.unlink(mnt / "rel")
    assert (mnt / "target.txt").read_bytes() == b"target"
    assert not exists_in_s3(s3, bucket, "rel")


def test_link_is_eperm_and_statvfs_works(mnt: Path):
    (mnt / "f").write_bytes(b"f")
    assert errno_of(lambda: os.link(mnt / "f", mnt / "g")) == errno.EPERM
    assert not (mnt / "g").exists()
    vfs = os.statvfs(mnt)
    assert vfs.f_bsize > 0 and vfs.f_blocks > 0 and vfs.f_bavail > 0
    assert vfs.f_namemax >= 255
    df = run("df", "-P", mnt).splitlines()
    assert len(df) == 2 and df[1].split()[-1] == str(mnt)


# --------------------------------------------------------------------------- 5. caches


def test_own_changes_visible_at_once(mnt: Path):
    assert os.listdir(mnt) == []
    (mnt / "f").write_bytes(b"1")
    assert os.listdir(mnt) == ["f"]
    assert (mnt / "f").stat().st_size == 1
    with open(mnt / "f", "ab") as out:
        out.write(b"23")
    assert (mnt / "f").stat().st_size == 3
    assert (mnt / "f").read_bytes() == b"123"
    os.rename(mnt / "f", mnt / "g")
    assert os.listdir(mnt) == ["g"] and not (mnt / "f").exists()
    (mnt / "d").mkdir()
    assert sorted(os.listdir(mnt)) == ["d", "g"]
    os.rmdir(mnt / "d")
    os.unlink(mnt / "g")
    assert os.listdir(mnt) == []
    assert not (mnt / "g").exists()
    (mnt / "g").write_bytes(b"again")  # the negative entry is gone
    assert (mnt / "g").read_bytes() == b"again"
    run("touch", "-d", "@1500000000", mnt / "g")
    assert int((mnt / "g").stat().st_mtime) == 1500000000
    run("touch", mnt / "g")
    assert abs((mnt / "g").stat().st_mtime - time.time()) < 60
    os.chmod(mnt / "g", 0o600)
    assert stat.S_IMODE((mnt / "g").stat().st_mode) == 0o600


def test_changes_behind_the_mount_appear_within_ttl(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    put(s3, bucket, "old.txt", b"version 1")
    put(s3, bucket, "dir/one", b"1")
    with mounted(moto, bucket, tmp_path=tmp_path, options=SHORT_TTLS) as mnt:
        assert sorted(os.listdir(mnt)) == ["dir", "old.txt"]
        assert os.listdir(mnt / "dir") == ["one"]
        assert not (mnt / "new.txt").exists()  # now cached as missing
        assert (mnt / "old.txt").read_bytes() == b"version 1"

        put(s3, bucket, "new.txt", b"new")
        put(s3, bucket, "old.txt", b"version 2, longer")
        put(s3, bucket, "dir/two", b"2")
        put(s3, bucket, "late/dir/file", b"late")

        def new_visible() -> bool:
            return (mnt / "new.txt").exists() and (mnt / "new.txt").read_bytes() == b"new"

        assert poll(new_visible)
        assert poll(lambda: (mnt / "old.txt").read_bytes() == b"version 2, longer")
        assert poll(lambda: sorted(os.listdir(mnt / "dir")) == ["one", "two"])
        assert poll(lambda: "late" in os.listdir(mnt))
        assert (mnt / "late/dir/file").read_bytes() == b"late"

        s3.delete_object(Bucket=bucket, Key="new.txt")
        s3.delete_object(Bucket=bucket, Key="dir/one")
        assert poll(lambda: not (mnt / "new.txt").exists())
        assert poll(lambda: os.listdir(mnt / "dir") == ["two"])
        assert errno_of(lambda: (mnt / "new.txt").read_bytes()) == errno.ENOENT


# --------------------------------------------------------------------------- 6. errors


def test_enoent(mnt: Path):
    missing = mnt / "missing"
    assert errno_of(lambda: missing.read_bytes()) == errno.ENOENT
    assert errno_of(lambda: os.stat(missing)) == errno.ENOENT
    assert errno_of(lambda: os.listdir(missing)) == errno.ENOENT
    assert errno_of(lambda: os.unlink(missing)) == errno.ENOENT
    assert errno_of(lambda: os.rmdir(missing)) == errno.ENOENT
    assert errno_of(lambda: os.rename(missing, mnt / "other")) == errno.ENOENT
    assert errno_of(lambda: (mnt / "no/such/dir/file").write_bytes(b"")) == errno.ENOENT
    assert errno_of(lambda: os.readlink(missing)) == errno.ENOENT
    assert os.listdir(mnt) == []


def test_mount_failures_exit_nonzero_with_a_message(moto: S3Server, tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    cases = {
        "no such bucket": ["no-such-bucket-s3fmfs", f"endpoint={moto.endpoint}"],
        "unknown option": [unique_bucket(), f"endpoint={moto.endpoint},frobnicate=1"],
        "bad endpoint": [unique_bucket(), "endpoint=ftp://127.0.0.1"],
    }
    for what, (source, opts) in cases.items():
        done = subprocess.run(
            [*s3fmfs_command(), source, str(mnt), "-o", opts, "-f"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode != 0, what
        assert done.stderr.strip(), what  # says why
        assert "Traceback" not in done.stderr, (what, done.stderr)
        assert not is_mounted(mnt.resolve()), what


def test_failed_upload_is_eio_at_close(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    put(s3, bucket, "existing.txt", b"x")
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        assert os.listdir(mnt) == ["existing.txt"]
        s3.delete_object(Bucket=bucket, Key="existing.txt")
        s3.delete_bucket(Bucket=bucket)
        try:
            fd = os.open(mnt / "lost file.txt", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"nowhere to go")
            finally:
                assert errno_of(lambda: os.close(fd)) == errno.EIO
            assert poll(lambda: "lost file.txt" in log_tail(tmp_path / "mnt"), 2.0), log_tail(
                tmp_path / "mnt"
            )
            # the mount is alive: ls answers (with an error or not), nothing hangs
            assert os.path.ismount(mnt)
            done = subprocess.run(["ls", "-la", mnt], capture_output=True, timeout=30)
            assert b"not connected" not in done.stderr, done.stderr
            os.statvfs(mnt)
        finally:
            s3.create_bucket(Bucket=bucket)  # so that the final flush, if any, succeeds
        assert poll(lambda: os.path.ismount(mnt) and isinstance(os.listdir(mnt), list))


def test_sigterm_uploads_open_dirty_files_and_exits_0(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        fd = os.open(mnt / "unsaved", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.write(fd, b"written, never closed")
            os.kill(daemon_pid(mnt), signal.SIGTERM)
            assert poll(lambda: not is_mounted(mnt), 15.0), log_tail(mnt)
        finally:
            with contextlib.suppress(OSError):  # the connection is gone
                os.close(fd)
        # mounted() asserts the daemon exited 0
    assert get(s3, bucket, "unsaved") == b"written, never closed"
    assert int(head(s3, bucket, "unsaved")["Metadata"]["mode"]) == stat.S_IFREG | 0o640


def test_no_leftover_processes_or_mounts(tmp_path_factory: pytest.TempPathFactory):
    """Run last in this file: every mount above was unmounted and every daemon reaped."""
    base = str(tmp_path_factory.getbasetemp())
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert [line for line in mounts if base in line] == []
    ps = subprocess.run(["ps", "-eo", "ppid,args"], capture_output=True, text=True).stdout
    children = [line for line in ps.splitlines() if line.split()[0] == str(os.getpid())]
    assert [line for line in children if "s3fmfs" in line] == []
