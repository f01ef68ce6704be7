"""``make install``: a runtime of its own that outlives the clone it was installed from.

The install runs from a copy of this tree (Makefile, pyproject, README, the package) into a
temporary ``INSTALL_DIR``/``BINDIR``/``SBINDIR``, twice (idempotent); then the copy is deleted,
and what was installed must still answer ``--version``/``--help`` and mount a bucket over moto
through the installed ``mount.s3fmfs``. The runtime holds only s3fmfs and its runtime
dependencies (no test tools) and nothing in it names the clone; ``make uninstall`` with the same
variables removes the runtime and only its own links.

System tier: the install builds a venv (and pyfuse3 from source unless pip cached the wheel).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.mount import daemons_of, is_mounted, unmount
from tests.support.servers import S3Server, unique_bucket

pytestmark = [pytest.mark.system]

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600.0
MOUNT_TIMEOUT = 30.0
TEST_TOOLS = ("pytest", "moto", "mypy", "boto3", "ruff", "hypothesis")


@dataclass
class Installed:
    """Where ``make install`` put things (all under one temporary directory)."""

    base: Path
    runtime: Path
    bindir: Path
    sbindir: Path
    clone: Path

    @property
    def make_vars(self) -> list[str]:
        return [
            f"INSTALL_DIR={self.runtime}",
            f"BINDIR={self.bindir}",
            f"SBINDIR={self.sbindir}",
        ]


def _env() -> dict[str, str]:
    """Our environment without any venv on PATH: make must use the system's python3."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if "venv" not in p]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(path or ["/usr/bin", "/bin"])
    return env


def make(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(directory), "--no-print-directory", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=_env(),
        check=False,
    )


def copy_tree(dest: Path) -> None:
    """What ``make install`` needs of the clone, without its venv, git or caches."""
    dest.mkdir()
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "s3fmfs", dest / "s3fmfs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Installed twice from a copy of the tree, the copy then deleted; uninstalled after."""
    if shutil.which("make") is None or shutil.which("python3") is None:
        pytest.skip("needs make and python3")
    base = tmp_path_factory.mktemp("install")
    inst = Installed(base, base / "opt", base / "bin", base / "sbin", base / "clone")
    copy_tree(inst.clone)
    try:
        for attempt in (1, 2):
            done = make(inst.clone, "install", *inst.make_vars)
            assert done.returncode == 0, f"make install #{attempt}:\n{done.stdout}{done.stderr}"
        shutil.rmtree(inst.clone)  # the clone (and any venv of it) is gone
        yield inst
    finally:
        make(ROOT, "uninstall", *inst.make_vars)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_links_point_into_the_runtime(installed: Installed) -> None:
    for link in (installed.bindir / "s3fmfs", installed.sbindir / "mount.s3fmfs"):
        assert link.is_symlink(), link
        assert Path(os.readlink(link)) == installed.runtime / "bin" / link.name
    assert sorted(p.name for p in installed.bindir.iterdir()) == ["s3fmfs"]
    assert sorted(p.name for p in installed.sbindir.iterdir()) == ["mount.s3fmfs"]


def test_installed_commands_run_without_the_clone(installed: Installed) -> None:
    assert not installed.clone.exists()
    version = run([str(installed.bindir / "s3fmfs"), "--version"])
    assert version.returncode == 0 and version.stdout.startswith("s3fmfs "), version.stderr
    helped = run([str(installed.bindir / "s3fmfs"), "--help"])
    assert helped.returncode == 0 and "endpoint" in helped.stdout, helped.stderr
    helper = run([str(installed.sbindir / "mount.s3fmfs"), "--help"])
    assert helper.returncode == 0 and "usage: mount.s3fmfs" in helper.stdout, helper.stderr
    # the helper runs the s3fmfs of the same installation
    fake = run([str(installed.sbindir / "mount.s3fmfs"), "bkt", "/mnt/x", "-f", "-v"])
    assert fake.returncode == 0, fake.stderr
    assert f"{installed.runtime / 'bin' / 's3fmfs'} bkt /mnt/x" in fake.stderr


def test_runtime_holds_only_runtime_dependencies(installed: Installed) -> None:
    listed = run([str(installed.runtime / "bin" / "python"), "-m", "pip", "list"])
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0].lower() for line in listed.stdout.splitlines()[2:] if line.strip()}
    assert {"s3fmfs", "pyfuse3", "trio", "httpx", "cachetools"} <= names
    assert not names & set(TEST_TOOLS), names & set(TEST_TOOLS)
    # nothing refers to the clone: installed from a wheel, not editable
    clone = str(installed.clone).encode()
    for path in installed.runtime.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
            assert clone not in path.read_bytes(), path
    # owned by whoever installed, nobody else may write
    for path in [installed.runtime, *installed.runtime.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert st.st_uid == os.geteuid(), path
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


@pytest.mark.mounted
@pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
)
def test_installed_helper_mounts_over_moto(
    installed: Installed, moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    bucket = unique_bucket("inst")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hi\n")
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    log = tmp_path / "s3fmfs.log"
    env = {k: v for k, v in _env().items() if not k.startswith(("AWS_", "S3FMFS_"))}
    env.update(HOME=str(tmp_path), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    opts = f"endpoint={moto.endpoint},path_style,log_file={log},_netdev"
    try:
        done = run([str(installed.sbindir / "mount.s3fmfs"), bucket, str(mnt), "-o", opts], env=env)
        assert done.returncode == 0, done.stderr + (log.read_text() if log.exists() else "")
        assert is_mounted(mnt)
        assert (mnt / "hello.txt").read_bytes() == b"hi\n"
        (mnt / "new.txt").write_bytes(b"new\n")
        daemons = daemons_of(mnt)
        assert daemons, "no s3fmfs process serves the mount"
        assert str(installed.runtime) in Path(f"/proc/{daemons[0]}/cmdline").read_text()
    finally:
        problems = unmount(mnt)
    assert not problems, problems
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while daemons_of(mnt) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not daemons_of(mnt), "s3fmfs did not exit after the unmount"
    body = s3.get_object(Bucket=bucket, Key="new.txt")["Body"].read()
    assert body == b"new\n"


def test_uninstall_removes_the_runtime_and_only_its_links(tmp_path: Path) -> None:
    """Run last in this file (after the module fixture's install): its own small install."""
    base = tmp_path
    inst = Installed(base, base / "opt", base / "bin", base / "sbin", base / "clone")
    copy_tree(inst.clone)
    done = make(inst.clone, "install", *inst.make_vars)
    assert done.returncode == 0, done.stdout + done.stderr
    done = make(ROOT, "uninstall", *inst.make_vars)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not inst.runtime.exists()
    assert not list(inst.bindir.iterdir()) and not list(inst.sbindir.iterdir())
    # not ours: kept
    (inst.bindir / "s3fmfs").write_text("#!/bin/sh\n")
    (inst.sbindir / "mount.s3fmfs").symlink_to("/elsewhere/mount.s3fmfs")
    inst.runtime.mkdir()
    (inst.runtime / "data").write_text("someone else's\n")
    assert make(ROOT, "uninstall", *inst.make_vars).returncode == 0
    assert (inst.bindir / "s3fmfs").exists() and (inst.sbindir / "mount.s3fmfs").is_symlink()
    assert (inst.runtime / "data").exists()
    # nor will install build over a directory that is not an s3fmfs runtime
    refused = make(inst.clone, "install", *inst.make_vars)
    assert refused.returncode != 0 and "not an s3fmfs runtime" in refused.stdout
