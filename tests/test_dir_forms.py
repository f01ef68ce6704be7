"""s3fs's older directory forms read as directories, and go with them (issue 10, 4b).

Objects are written with boto3 exactly as s3fs (and older tools) wrote them: ``d_$folder$``
(empty), ``d2`` (zero bytes, ``x-amz-meta-mode: 16877``, owner and mtime), ``d3`` (zero bytes,
Content-Type ``application/x-directory``), each with or without keys under ``name/``.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket

pytestmark = pytest.mark.mounted

DIR_META = {"mode": "16877", "uid": "1234", "gid": "2345", "mtime": "1600000000"}


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique_bucket("forms")
    s3.create_bucket(Bucket=name)
    # with keys under them
    s3.put_object(Bucket=name, Key="d_$folder$", Body=b"")
    s3.put_object(Bucket=name, Key="d/a", Body=b"in d")
    s3.put_object(Bucket=name, Key="d2", Body=b"", Metadata=DIR_META)
    s3.put_object(Bucket=name, Key="d2/b", Body=b"in d2")
    s3.put_object(Bucket=name, Key="d3", Body=b"", ContentType="application/x-directory")
    s3.put_object(Bucket=name, Key="d3/c", Body=b"in d3")
    # empty ones
    s3.put_object(Bucket=name, Key="e_$folder$", Body=b"")
    s3.put_object(Bucket=name, Key="e2", Body=b"", Metadata={**DIR_META, "mode": "16832"})
    s3.put_object(Bucket=name, Key="e3", Body=b"", ContentType="application/x-directory")
    # neither: a plain file, empty
    s3.put_object(Bucket=name, Key="f", Body=b"")
    yield name


def keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def ls_l(directory: Path) -> dict[str, str]:
    """``ls -l``: name → its mode string."""
    out = subprocess.run(["ls", "-l", str(directory)], check=True, capture_output=True, text=True)
    return {line.split()[-1]: line.split()[0] for line in out.stdout.splitlines()[1:]}


def test_older_forms_are_directories(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        modes = ls_l(mnt)
        assert sorted(modes) == ["d", "d2", "d3", "e", "e2", "e3", "f"]  # no ``_$folder$``
        assert {n: m[0] for n, m in modes.items()} == {
            **dict.fromkeys(["d", "d2", "d3", "e", "e2", "e3"], "d"),
            "f": "-",
        }
        assert modes["e2"] == "drwx------"  # the mode in the metadata
        st = os.stat(mnt / "d2")
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (1234, 2345, 1600000000)
        assert os.listdir(mnt / "d") == ["a"]
        assert os.listdir(mnt / "d2") == ["b"]
        assert os.listdir(mnt / "d3") == ["c"]
        assert (mnt / "d3" / "c").read_bytes() == b"in d3"
        assert [os.listdir(mnt / e) for e in ("e", "e2", "e3")] == [[], [], []]
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:  # stat without a listing first
        for name in ("d", "d2", "d3", "e", "e2", "e3"):
            assert stat.S_ISDIR(os.stat(mnt / name).st_mode), name
        st = os.stat(mnt / "e2")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, int(st.st_mtime)) == (0o700, 1234, 1600000000)
        assert stat.S_ISREG(os.stat(mnt / "f").st_mode)


def test_rmdir_and_rm_r_remove_the_older_forms(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        ls_l(mnt)
        for name in ("e", "e2", "e3"):
            os.rmdir(mnt / name)
        subprocess.run(["rm", "-r", str(mnt / "d"), str(mnt / "d2")], check=True)
        assert sorted(os.listdir(mnt)) == ["d3", "f"]
    assert keys(s3, bucket) == ["d3", "d3/c", "f"]
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:  # no listing first: probes
        subprocess.run(["rm", "-r", str(mnt / "d3")], check=True)
        assert os.listdir(mnt) == ["f"]
    assert keys(s3, bucket) == ["f"]


def test_renaming_an_older_form_moves_it(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        os.rename(mnt / "d2", mnt / "n2")
        os.rename(mnt / "d", mnt / "n")
        os.rename(mnt / "e3", mnt / "n3")
        assert sorted(os.listdir(mnt)) == ["d3", "e", "e2", "f", "n", "n2", "n3"]
        st = os.stat(mnt / "n2")  # the metadata went with it
        assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (1234, 2345, 1600000000)
    assert keys(s3, bucket) == sorted(
        ["d3", "d3/c", "e2", "e_$folder$", "f", "n/", "n/a", "n2/", "n2/b", "n3/"]
    )


def test_nometa_knows_folders_not_objects(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    """Without HEADs, ``_$folder$`` (in the listing) and keys under a name make directories;
    an empty object ``e2``/``e3`` stays a file (only its HEAD would tell)."""
    with mounted(moto, bucket, options=["nometa"], tmp_path=tmp_path) as mnt:
        modes = ls_l(mnt)
        assert sorted(modes) == ["d", "d2", "d3", "e", "e2", "e3", "f"]
        kinds = {n: m[0] for n, m in modes.items()}
        assert kinds == {
            **dict.fromkeys(["d", "d2", "d3", "e"], "d"),
            "e2": "-",
            "e3": "-",
            "f": "-",
        }
        assert os.listdir(mnt / "d") == ["a"]
        assert os.listdir(mnt / "d2") == ["b"]
        subprocess.run(["rm", "-r", *(str(mnt / n) for n in ("d", "d2", "d3", "e"))], check=True)
        assert sorted(os.listdir(mnt)) == ["e2", "e3", "f"]
    assert keys(s3, bucket) == ["e2", "e3", "f"]


def test_attributes_of_older_forms() -> None:
    """Which objects are directories: by mode first, else by content type; ``_$folder$``."""
    from s3fmfs.fs.attrs import Defaults, Kind, attr_from_object, folder_name

    defaults = Defaults(0, 0, 0o644, 0o755)

    def kind(meta: dict[str, str] | None, content_type: str = "") -> Kind:
        attr = attr_from_object(
            is_dir=False,
            size=0,
            last_modified_ns=0,
            etag="",
            metadata=meta,
            defaults=defaults,
            content_type=content_type,
            key="k",
        )
        assert attr.old_forms == (("k",) if attr.kind is Kind.DIR else ())
        return attr.kind

    assert kind({"mode": "16877"}) is Kind.DIR
    assert kind({}, "application/x-directory") is Kind.DIR
    assert kind({}, "httpd/unix-directory; charset=x") is Kind.DIR
    assert kind({"mode": "33188"}, "application/x-directory") is Kind.FILE  # the mode wins
    assert kind(None, "application/x-directory") is Kind.FILE  # a listing cannot tell
    assert kind({}, "text/plain") is Kind.FILE
    assert folder_name("d_$folder$") == "d"
    assert folder_name("_$folder$") is None and folder_name("d") is None
