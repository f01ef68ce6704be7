"""Security through real mounts: TLS verification, secrets kept out of sight, passwd file
modes, other users kept out (or held to the stored modes), private cache folders.

- TLS: :mod:`tests.support.fakes3` serves https with a certificate of a CA made for the test
  (``cryptography``). Mounting it fails with one line about the certificate; ``ca_bundle=``
  with that CA mounts; ``no_check_certificate`` mounts and logs a warning.
- Secrets: a mount with a passwd file, and one with environment credentials, at ``-d``: the
  secret is in no log line, not in ``/proc/PID/cmdline`` (what ``ps`` shows as the process
  title), ``comm`` or ``Name``, nor in any file the mount wrote.
- A passwd file group or others can access, or an executable one, is refused: one line,
  exit 2, nothing mounted.
- As another user (uid 65534, ``subprocess``'s ``user=``): without ``allow_other`` every
  access is EACCES; with it, ``default_permissions`` makes the kernel enforce the modes and
  owners stored in ``x-amz-meta-mode/uid/gid``.
- ``cache_dir``, the metadata cache's folder, the log folder (and whatever the mount creates
  under them) are mode 0700; the metadata cache and write buffers are 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes3 import FakeObject, fake_s3, make_pki
from tests.support.mount import (
    daemon_pid,
    daemons_of,
    is_mounted,
    log_tail,
    mount_log,
    mounted,
    s3fmfs_command,
    unmount,
)
from tests.support.servers import S3Server, unique_bucket

pytestmark = [
    pytest.mark.system,
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

NOBODY = 65534
SECRET = "s3cr3t-Never-Shown-4f9a"


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("sec")
    s3.create_bucket(Bucket=name)
    return name


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment with no credentials but ``extra``, HOME at ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3FMFS_")) and k not in ("HOME", "XDG_CACHE_HOME")
    }
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def run_s3fmfs(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*s3fmfs_command(), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s3fmfs: "), done.stderr
    return lines[0]


@contextlib.contextmanager
def daemon_mount(*args: str | Path, mnt: Path, env: dict[str, str]) -> Iterator[int]:
    """``s3fmfs ARGS`` in daemon mode (it returns once mounted); the daemon's pid. Unmounted,
    and the daemon gone, on the way out whatever happens."""
    done = run_s3fmfs(*args, env=env)
    try:
        assert done.returncode == 0, done.stderr
        [pid] = daemons_of(mnt)
        yield pid
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        deadline = time.monotonic() + 20
        while daemons_of(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in daemons_of(mnt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not is_mounted(mnt) and daemons_of(mnt) == []


def as_nobody(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as uid/gid 65534 with no supplementary groups."""
    return subprocess.run(
        [str(a) for a in argv],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def denied(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "Permission denied" in done.stderr


# --------------------------------------------------------------------------- TLS


def test_tls_is_verified_by_default(tmp_path: Path):
    pki = make_pki(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")  # a CA that did not sign the server's certificate
    with fake_s3(tls=pki.server_context()) as fake:
        fake.objects["hello.txt"] = FakeObject(b"over TLS")
        env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
        mnt = (tmp_path / "mnt").resolve()
        mnt.mkdir()
        for extra in ("", f",ca_bundle={other.ca_pem}"):  # no CA, or the wrong CA
            done = run_s3fmfs("fake", mnt, "-o", f"endpoint={fake.endpoint}{extra}", env=env)
            line = one_line(done)
            assert done.returncode == 1
            assert line.startswith(
                f"s3fmfs: {mnt}: TLS certificate of {fake.endpoint} not trusted "
            )
            assert "-o ca_bundle=FILE" in line and "-o no_check_certificate" in line
            assert not is_mounted(mnt) and daemons_of(mnt) == []
        assert sum(fake.counts.values()) == 0  # refused at the handshake: not one request
        server = S3Server("127.0.0.1", fake.port, "key", "secret")
        trusted = [f"endpoint={fake.endpoint}", f"ca_bundle={pki.ca_pem}"]
        with mounted(server, fake.bucket, options=trusted, tmp_path=tmp_path) as path:
            assert (path / "hello.txt").read_bytes() == b"over TLS"
        assert "verification is OFF" not in log_tail(path)
        insecure = [f"endpoint={fake.endpoint}", "no_check_certificate"]
        with mounted(server, fake.bucket, options=insecure, tmp_path=tmp_path) as path:
            assert (path / "hello.txt").read_bytes() == b"over TLS"
        warning = (
            f"WARNING s3fmfs: TLS certificate verification is OFF for {fake.endpoint} "
            "(no_check_certificate)"
        )
        assert warning in log_tail(path)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("source", ["passwd_file", "environment"])
def test_secret_is_never_logged_nor_in_the_process_title(
    source: str, moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{bucket}:AKIATESTKEY:{SECRET}\n")
    passwd.chmod(0o600)
    cache = tmp_path / "cache"
    options = [
        f"cache_dir={cache}",
        *([f"passwd_file={passwd}"] if source == "passwd_file" else []),
    ]
    # moto takes any secret; the environment carries it in the "environment" case
    env_secret = "other-" + SECRET if source == "passwd_file" else SECRET
    server = S3Server(moto.host, moto.port, "AKIATESTKEY", env_secret)
    s3.put_object(Bucket=bucket, Key="there.txt", Body=b"x")
    with mounted(server, bucket, options=options, tmp_path=tmp_path, extra_args=["-d"]) as mnt:
        pid = daemon_pid(mnt)
        (mnt / "new.txt").write_bytes(b"written")
        assert (mnt / "there.txt").read_bytes() == b"x"
        assert not (mnt / "missing").exists()
        os.rename(mnt / "new.txt", mnt / "renamed.txt")
        sources = {
            "cmdline": Path(f"/proc/{pid}/cmdline").read_bytes(),
            "comm": Path(f"/proc/{pid}/comm").read_bytes(),
            "status": Path(f"/proc/{pid}/status").read_bytes(),
            "ps": subprocess.run(
                ["ps", "-o", "pid=,comm=,args=", "-p", str(pid)], capture_output=True, check=True
            ).stdout,
        }
    text = log_tail(mnt, 10_000_000)
    assert re.search(rf"PUT /{bucket}/new.txt -> 200", text), text[-3000:]  # -d is on
    expected = "passwd file" if source == "passwd_file" else "environment (AWS_ACCESS_KEY_ID)"
    assert f"credentials: {expected}" in text
    for name, data in sources.items():
        assert SECRET.encode() not in data, name
    assert SECRET not in text and "Signature=" not in text and "Authorization" not in text
    for path in [mount_log(mnt), *cache.rglob("*")]:  # everything the mount wrote
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o602, 0o644])
def test_passwd_file_others_can_access_is_refused(
    mode: int, moto: S3Server, bucket: str, tmp_path: Path
):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"AKIATESTKEY:{SECRET}\n")
    passwd.chmod(mode)
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    options = f"endpoint={moto.endpoint},passwd_file={passwd}"
    done = run_s3fmfs(bucket, mnt, "-o", options, env=clean_env(tmp_path))
    assert done.returncode == 2
    assert one_line(done) == (
        f"s3fmfs: {mnt}: passwd file {passwd} is accessible by group or others "
        f"(mode {mode:04o}): run chmod 600 {passwd}"
    )
    assert SECRET not in done.stderr
    assert not is_mounted(mnt) and daemons_of(mnt) == []


def test_executable_passwd_file_is_refused(moto: S3Server, bucket: str, tmp_path: Path):
    """Mode 0700 is private but executable: s3fs refuses it, so does s3fmfs."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"AKIATESTKEY:{SECRET}\n")
    passwd.chmod(0o700)
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    options = f"endpoint={moto.endpoint},passwd_file={passwd}"
    try:
        done = run_s3fmfs(bucket, mnt, "-o", options, env=clean_env(tmp_path))
        assert done.returncode == 2
        assert one_line(done) == (
            f"s3fmfs: {mnt}: passwd file {passwd} is executable (mode 0700): run chmod 600 {passwd}"
        )
        assert SECRET not in done.stderr
        assert not is_mounted(mnt) and daemons_of(mnt) == []
    finally:
        unmount(mnt)  # if it mounted after all (the daemon exits with its mount)


# --------------------------------------------------------------------------- other users


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that uid 65534 can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="s3fmfs-perm-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stored(s3: Any, bucket: str, key: str, body: bytes, mode: int, uid: int) -> None:
    meta = {"mode": str(mode), "uid": str(uid), "gid": str(uid), "mtime": "1700000000"}
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def mount_options(mnt: Path) -> list[str]:
    """The mount's options and super options, from /proc/self/mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mnt):
            return fields[5].split(",") + line.split(" - ", 1)[1].split()[2].split(",")
    raise AssertionError(f"{mnt} is not mounted")


def test_other_users_get_eacces_without_allow_other(
    moto: S3Server, s3: Any, bucket: str, open_dir: Path
):
    stored(s3, bucket, "public.txt", b"public", stat.S_IFREG | 0o644, 0)
    with mounted(moto, bucket, tmp_path=open_dir) as mnt:
        assert (mnt / "public.txt").read_bytes() == b"public"  # the mounting user: fine
        assert "allow_other" not in mount_options(mnt)
        argvs: list[list[str | Path]] = [["stat", mnt], ["ls", mnt], ["cat", mnt / "public.txt"]]
        for argv in argvs:
            done = as_nobody(*argv)
            assert denied(done), (argv, done.returncode, done.stderr)
        assert denied(as_nobody("touch", mnt / "new.txt"))
    assert "new.txt" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]


def test_default_permissions_enforce_the_stored_modes(
    moto: S3Server, s3: Any, bucket: str, open_dir: Path
):
    stored(s3, bucket, "public.txt", b"public", stat.S_IFREG | 0o644, 0)
    stored(s3, bucket, "private.txt", b"private", stat.S_IFREG | 0o600, 0)
    stored(s3, bucket, "nobodys.txt", b"nobody's", stat.S_IFREG | 0o600, NOBODY)
    stored(s3, bucket, "closed/", b"", stat.S_IFDIR | 0o700, 0)
    stored(s3, bucket, "closed/inner.txt", b"inner", stat.S_IFREG | 0o644, 0)
    with mounted(moto, bucket, options=["allow_other"], tmp_path=open_dir) as mnt:
        options = mount_options(mnt)
        assert "default_permissions" in options and "allow_other" in options
        assert sorted(as_nobody("ls", mnt).stdout.split()) == [
            "closed",
            "nobodys.txt",
            "private.txt",
            "public.txt",
        ]
        assert as_nobody("cat", mnt / "public.txt").stdout == "public"  # 0644 root: readable
        assert denied(as_nobody("cat", mnt / "private.txt"))  # 0600 root
        assert as_nobody("cat", mnt / "nobodys.txt").stdout == "nobody's"  # 0600, its owner
        assert denied(as_nobody("ls", mnt / "closed"))  # 0700 root
        assert denied(as_nobody("cat", mnt / "closed" / "inner.txt"))
        assert denied(as_nobody("sh", "-c", f"echo more >> {mnt / 'public.txt'}"))
        assert denied(as_nobody("touch", mnt / "new.txt"))  # the root: 0755, owned by root
        chmod = as_nobody("chmod", "666", mnt / "private.txt")  # not its owner: EPERM
        assert chmod.returncode != 0 and "Operation not permitted" in chmod.stderr
        assert as_nobody("sh", "-c", f"echo mine > {mnt / 'nobodys.txt'}").returncode == 0
        assert (mnt / "private.txt").read_bytes() == b"private"  # root is not held back
    body = s3.get_object(Bucket=bucket, Key="public.txt")["Body"].read()
    assert body == b"public"
    assert s3.get_object(Bucket=bucket, Key="nobodys.txt")["Body"].read() == b"mine\n"
    head = s3.head_object(Bucket=bucket, Key="private.txt")
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o600


# --------------------------------------------------------------------------- private folders


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_cache_metadata_and_log_folders_are_private(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(
        home, AWS_ACCESS_KEY_ID=moto.access_key_id, AWS_SECRET_ACCESS_KEY=moto.secret_access_key
    )
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    cache = tmp_path / "nested" / "cache"  # made by the mount, parents included
    meta = tmp_path / "meta" / "deeper" / "cache.sqlite3"
    s3.put_object(Bucket=bucket, Key="seen.txt", Body=b"x")
    options = f"endpoint={moto.endpoint},cache_dir={cache},metacache_file={meta}"
    with daemon_mount(bucket, mnt, "-o", options, mnt=mnt, env=env) as pid:
        os.listdir(mnt)  # HEADs: something for the metadata cache
        with open(mnt / "dirty.bin", "wb") as f:
            f.write(os.urandom(2 << 20))  # over 1 MiB: the write buffer is a file in cache_dir
            f.flush()
            buffers = [
                os.stat(f"/proc/{pid}/fd/{n}")
                for n in os.listdir(f"/proc/{pid}/fd")
                if os.readlink(f"/proc/{pid}/fd/{n}").startswith(str(cache))
            ]
            assert buffers and all(stat.S_IMODE(b.st_mode) == 0o600 for b in buffers)
    cache_modes = modes_under(cache)
    dirs = [p for p in [cache, *cache.rglob("*")] if p.is_dir()]
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in dirs), cache_modes
    assert stat.S_IMODE(meta.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(meta.stat().st_mode) == 0o600
    if not os.path.exists("/dev/log"):  # no syslog: the daemon logs into cache_dir
        assert "mounted" in (cache / "s3fmfs.log").read_text()
    # without cache_dir: ~/.cache/s3fmfs, made 0700, holds the metadata cache (and the log)
    with daemon_mount(bucket, mnt, "-o", f"endpoint={moto.endpoint}", mnt=mnt, env=env):
        os.listdir(mnt)
    default = home / ".cache" / "s3fmfs"
    assert stat.S_IMODE(default.stat().st_mode) == 0o700
    dirs = [p for p in [default, *default.rglob("*")] if p.is_dir()]
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in dirs), modes_under(default)
    assert stat.S_IMODE((default / "metadata.sqlite3").stat().st_mode) == 0o600
