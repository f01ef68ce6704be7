"""Extended attributes on a real mount over moto, with the real tools: ``setfattr``/``getfattr``
(Debian ``attr``), ``rsync -aX`` both ways, ``cp -a``, a remount, ``s3.etag`` against the
object's ETag, ``s3.url`` fetched with curl, and s3fs-fuse's ``use_xattr`` header read."""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
    pytest.mark.skipif(
        shutil.which("setfattr") is None, reason="needs setfattr/getfattr (apt install attr)"
    ),
]


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert done.returncode == 0, f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def user_xattrs(path: Path) -> dict[str, bytes]:
    return {
        n: os.getxattr(path, n, follow_symlinks=False)
        for n in os.listxattr(path, follow_symlinks=False)
        if n.startswith("user.")
    }


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("xattr")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def mnt(moto: S3Server, bucket: str, tmp_path: Path) -> Iterator[Path]:
    with mounted(moto, bucket, tmp_path=tmp_path) as path:
        yield path


def test_setfattr_getfattr_and_a_remount(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        f = mnt / "f.txt"
        f.write_bytes(b"payload")
        run("setfattr", "-n", "user.color", "-v", "blue", f)
        run("setfattr", "-n", "user.bin", "-v", "0x00ff10", f)
        run("setfattr", "-n", "user.Mixed Case", "-v", "x", f)
        (mnt / "d").mkdir()
        run("setfattr", "-n", "user.dir", "-v", "yes", mnt / "d")
        assert run("getfattr", "--only-values", "-n", "user.color", f).stdout == "blue"
        bad = run("setfattr", "-n", "user.mode", "-v", "777", f, check=False)
        assert bad.returncode != 0 and "Operation not permitted" in bad.stderr
        missing = run("getfattr", "-n", "user.none", f, check=False)
        assert missing.returncode != 0 and "No such attribute" in missing.stderr
        run("setfattr", "-x", "user.bin", f)
        run("setfattr", "-n", "user.bin", "-v", "0x00ff10", f)
        # XATTR_CREATE of an existing name: EEXIST (pyfuse3 asks getxattr first)
        with pytest.raises(FileExistsError):
            os.setxattr(f, "user.color", b"red", os.XATTR_CREATE)
        with pytest.raises(OSError) as caught:
            os.setxattr(f, "user.absent", b"1", os.XATTR_REPLACE)
        assert caught.value.errno == errno.ENODATA
        # a buffer too small: ERANGE (pyfuse3 answers it from the value the core gives)
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(2)
        assert libc.getxattr(bytes(f), b"user.color", buf, 2) == -1
        assert ctypes.get_errno() == errno.ERANGE
        assert libc.listxattr(bytes(f), buf, 2) == -1
        assert ctypes.get_errno() == errno.ERANGE
        assert libc.getxattr(bytes(f), b"user.color", None, 0) == 4  # the size alone
    head = s3.head_object(Bucket=bucket, Key="f.txt")
    assert head["Metadata"]["color"] == "blue" and "mode" in head["Metadata"]
    assert s3.get_object(Bucket=bucket, Key="f.txt")["Body"].read() == b"payload"
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        got = user_xattrs(mnt / "f.txt")
        assert got == {"user.color": b"blue", "user.bin": b"\x00\xff\x10", "user.Mixed Case": b"x"}
        assert user_xattrs(mnt / "d") == {"user.dir": b"yes"}
        dump = run("getfattr", "-d", "-m", "-", mnt / "f.txt").stdout
        assert "user.color" in dump and "s3.etag" not in dump


def test_rsync_ax_and_cp_a_both_ways(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a" * 1000)
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    os.setxattr(src / "a.txt", "user.origin", b"local")
    os.setxattr(src / "a.txt", "user.blob", b"\x00\x01\x02\xfe")
    os.setxattr(src / "a.txt", "user.CamelName", "é".encode())
    os.setxattr(src / "sub" / "b.bin", "user.n", b"42")
    os.setxattr(src / "sub", "user.folder", b"1")
    run("rsync", "-aX", f"{src}/", f"{mnt}/data/")
    assert user_xattrs(mnt / "data" / "a.txt") == user_xattrs(src / "a.txt")
    assert user_xattrs(mnt / "data" / "sub" / "b.bin") == {"user.n": b"42"}
    assert user_xattrs(mnt / "data" / "sub") == {"user.folder": b"1"}
    # exact round trip: a second run finds nothing to change (rsync compares the xattrs)
    again = run("rsync", "-aX", "--itemize-changes", f"{src}/", f"{mnt}/data/").stdout
    assert again == ""
    back = tmp_path / "back"
    run("rsync", "-aX", f"{mnt}/data/", f"{back}/")
    for rel in ("a.txt", "sub/b.bin", "sub"):
        assert user_xattrs(back / rel) == user_xattrs(src / rel), rel
    assert (back / "sub" / "b.bin").read_bytes() == bytes(range(256))
    # cp -a, out of the mount and into it: quiet (no ACL or SELinux complaints)
    out = tmp_path / "cp-out"
    done = run("cp", "-a", mnt / "data", out)
    assert done.stderr == ""
    assert user_xattrs(out / "a.txt") == user_xattrs(src / "a.txt")
    done = run("cp", "-a", src, mnt / "copy")
    assert done.stderr == ""
    assert user_xattrs(mnt / "copy" / "sub" / "b.bin") == {"user.n": b"42"}
    assert run("ls", "-l", mnt / "copy").stderr == ""


def test_virtual_attributes(mnt: Path, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="obj.bin", Body=b"fetch me", ContentType="text/x-test")
    obj = mnt / "obj.bin"
    etag = s3.head_object(Bucket=bucket, Key="obj.bin")["ETag"].strip('"')
    assert os.getxattr(obj, "s3.etag") == etag.encode()
    assert os.getxattr(obj, "s3.storage-class") == b"STANDARD"
    assert os.getxattr(obj, "s3.content-type") == b"text/x-test"
    url = os.getxattr(obj, "s3.url").decode()
    fetched = run("curl", "-sf", "--noproxy", "*", url)
    assert fetched.stdout == "fetch me"
    assert not any(n.startswith("s3.") for n in os.listxattr(obj))
    with pytest.raises(PermissionError):
        os.setxattr(obj, "s3.etag", b"x")


def test_s3fs_use_xattr_objects_show_their_attributes(mnt: Path, s3: Any, bucket: str) -> None:
    raw = (
        '{"user.from-s3fs":"'
        + base64.b64encode(b"written by s3fs").decode()
        + '","user.Upper":"'
        + base64.b64encode(b"\x00\x01").decode()
        + '"}'
    )
    s3.put_object(
        Bucket=bucket,
        Key="s3fs.txt",
        Body=b"x",
        Metadata={"xattr": urllib.parse.quote(raw, safe="/"), "mode": "33188"},
    )
    got = user_xattrs(mnt / "s3fs.txt")
    assert got == {"user.from-s3fs": b"written by s3fs", "user.Upper": b"\x00\x01"}


@pytest.mark.skipif(shutil.which("s3fs") is None, reason="needs s3fs-fuse (apt install s3fs)")
@pytest.mark.skipif(os.geteuid() != 0, reason="s3fs's mounts here run as root")
def test_side_by_side_with_s3fs_use_xattr(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """s3fs-fuse with ``use_xattr`` and s3fmfs on one bucket: each reads the map names the
    other wrote; a name s3fmfs keeps in its own header is s3fmfs's alone (documented)."""
    from tests.test_s3fs_interop import S3FMFS_ONLY, S3FS_ONLY, fstab_options, s3fs_mounted

    passwd = tmp_path / "passwd"
    passwd.write_text(f"{moto.access_key_id}:{moto.secret_access_key}\n")
    passwd.chmod(0o600)
    options = f"{fstab_options(moto, passwd)},use_xattr"
    (tmp_path / "ours").mkdir()
    with (
        s3fs_mounted(bucket, f"{options},{S3FS_ONLY}", tmp_path / "s3fs") as theirs,
        mounted(
            moto,
            bucket,
            options=[*options.split(","), *S3FMFS_ONLY.split(",")],
            tmp_path=tmp_path / "ours",
        ) as ours,
    ):
        (theirs / "by-s3fs").write_bytes(b"s")
        os.setxattr(theirs / "by-s3fs", "user.Tag", b"T\x00\xff")
        os.setxattr(theirs / "by-s3fs", "user.plain", b"p")
        assert user_xattrs(ours / "by-s3fs") == {"user.Tag": b"T\x00\xff", "user.plain": b"p"}
        # a change here keeps s3fs's other names, and the mode s3fs wrote
        os.setxattr(ours / "by-s3fs", "user.Added Here", b"a")
        assert user_xattrs(theirs / "by-s3fs") == {
            "user.Tag": b"T\x00\xff",
            "user.plain": b"p",
            "user.Added Here": b"a",
        }
        assert (theirs / "by-s3fs").read_bytes() == b"s"
        (ours / "by-us").write_bytes(b"o")
        os.setxattr(ours / "by-us", "user.CamelCase", b"c")
        os.setxattr(ours / "by-us", "user.lower", b"l")
        assert user_xattrs(theirs / "by-us") == {"user.CamelCase": b"c"}  # lower: a header
        assert user_xattrs(ours / "by-us") == {"user.CamelCase": b"c", "user.lower": b"l"}
