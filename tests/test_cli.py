"""The ``s3fmfs`` command for real: daemon mode, prechecks, options, ``ls``, ``presign``, logs.

Every mount here runs the installed console script in a subprocess over the session's moto
(or moto with V4 checks, or s3rver for V2 URLs); nothing is mocked. The daemon is found
through ``/proc`` (its command line names the mountpoint). While a test runs a daemon, this
process is made a child subreaper (``PR_SET_CHILD_SUBREAPER``), so the orphaned daemon becomes
our child and its exit status can be read: a clean stop must be 0. Every test unmounts,
reaps and kills in ``finally``: no mount and no process is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.config.options import IGNORED, OPTIONS, parse_options
from tests.support.mount import daemons_of, is_mounted, mounted, s3fmfs_command
from tests.support.servers import S3Server, free_port, unique_bucket

pytestmark = [
    pytest.mark.system,
    pytest.mark.mounted,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
]

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36
SECRET_MARK = "s3cr3t-never-shown"
IGNORED_IN_FSTAB = [
    *sorted(IGNORED),
    "x-systemd.automount",
    "x-systemd.requires=network-online.target",
    "x-gvfs-show",
    "comment=hello",
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("cli")
    s3.create_bucket(Bucket=name)
    return name


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without any credential source but ``extra``; HOME is ``home``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3FMFS_")) and k not in ("HOME", "XDG_CACHE_HOME")
    }
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def creds_env(home: Path, server: S3Server, secret: str | None = None) -> dict[str, str]:
    return clean_env(
        home,
        AWS_ACCESS_KEY_ID=server.access_key_id,
        AWS_SECRET_ACCESS_KEY=secret or server.secret_access_key,
    )


def s3fmfs(
    *args: str | Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*s3fmfs_command(), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def poll(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def reap(pid: int, timeout: float = 30.0) -> int | None:
    """Wait for our (subreaped) child ``pid``; its exit code, None if it was not our child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def cleanup(mnt: Path) -> None:
    """Unmount ``mnt`` and end every daemon serving it, whatever state things are in."""
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
    for pid in daemons_of(mnt):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if reap(pid, 5.0) is None and pid in daemons_of(mnt):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid, 5.0)


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    path = (tmp_path / "mnt").resolve()
    path.mkdir()
    with subreaper():
        try:
            yield path
        finally:
            cleanup(path)
    assert not is_mounted(path) and daemons_of(path) == []


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("s3fmfs: "), lines
    return lines[0]


# --------------------------------------------------------------------------- the daemon


def test_daemon_mounts_serves_and_exits_after_unmount(
    moto: S3Server, s3: Any, bucket: str, mnt: Path, tmp_path: Path
):
    log = tmp_path / "daemon.log"
    opts = ",".join([f"endpoint={moto.endpoint}", f"log_file={log}", "debug", *IGNORED_IN_FSTAB])
    env = creds_env(tmp_path, moto, secret=SECRET_MARK)
    done = s3fmfs(f"{bucket}:/", mnt, "-o", opts, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    # the command returned with the mount live and a daemon serving it
    assert is_mounted(mnt) and os.path.ismount(mnt)
    [pid] = daemons_of(mnt)
    assert os.getsid(pid) == pid  # its own session
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert SECRET_MARK.encode() not in cmdline
    assert SECRET_MARK.encode() not in Path(f"/proc/{pid}/comm").read_bytes()
    (mnt / "dir").mkdir()
    (mnt / "dir" / "hello.txt").write_bytes(b"served by the daemon")
    assert (mnt / "dir" / "hello.txt").read_bytes() == b"served by the daemon"
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == (
        b"served by the daemon"
    )
    again = s3fmfs(bucket, mnt, "-o", f"endpoint={moto.endpoint}", env=env)
    assert "already an s3fmfs mount" in one_line_error(again) and again.returncode == 2
    assert daemons_of(mnt) == [pid]
    stop = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    assert reap(pid) == 0  # a clean stop is exit status 0
    assert daemons_of(mnt) == [] and not is_mounted(mnt)
    text = log.read_text()
    # -o debug: every request, with method, target (query too), status and duration; no secret
    assert re.search(rf"PUT /{bucket}/dir/hello.txt -> 200 \(\d+\.\d+s\)", text), text
    assert re.search(rf"GET /{bucket}/\?\S*list-type=2\S* -> 200", text), text
    assert "credentials: environment (AWS_ACCESS_KEY_ID)" in text
    assert SECRET_MARK not in text and "Signature=" not in text and "Credential=" not in text


def test_daemon_sigterm_uploads_unsaved_files_and_exits_0(
    moto: S3Server, s3: Any, bucket: str, mnt: Path, tmp_path: Path
):
    cache = tmp_path / "cache"
    opts = f"endpoint={moto.endpoint},cache_dir={cache},log_file={tmp_path / 'log'}"
    done = s3fmfs(bucket, mnt, "-o", opts, env=creds_env(tmp_path, moto))
    assert done.returncode == 0, done.stderr
    assert cache.is_dir() and (cache.stat().st_mode & 0o777) == 0o700
    [pid] = daemons_of(mnt)
    fd = os.open(mnt / "unsaved", os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.write(fd, b"written, never closed")
        # the write buffer lives in cache_dir (an anonymous temporary file)
        held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        assert any(target.startswith(str(cache)) for target in held), held
        os.kill(pid, signal.SIGTERM)
        assert reap(pid) == 0
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert not is_mounted(mnt)
    assert s3.get_object(Bucket=bucket, Key="unsaved")["Body"].read() == b"written, never closed"


def test_nonempty_mountpoint(moto: S3Server, bucket: str, mnt: Path, tmp_path: Path):
    (mnt / "existing").write_text("x")
    env = creds_env(tmp_path, moto)
    refused = s3fmfs(bucket, mnt, "-o", f"endpoint={moto.endpoint}", env=env)
    assert "not empty" in one_line_error(refused) and refused.returncode == 2
    assert not is_mounted(mnt)
    done = s3fmfs(bucket, mnt, "-o", f"endpoint={moto.endpoint},nonempty", env=env)
    assert done.returncode == 0, done.stderr
    assert is_mounted(mnt) and os.listdir(mnt) == []  # the bucket hides the directory
    [pid] = daemons_of(mnt)
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    assert reap(pid) == 0
    assert (mnt / "existing").read_text() == "x"
    if not os.path.exists("/dev/log"):  # no syslog: the log file under ~/.cache/s3fmfs
        fallback = tmp_path / ".cache" / "s3fmfs" / "s3fmfs.log"
        assert f"INFO s3fmfs: mounted {bucket} on {mnt}" in fallback.read_text()
        assert (fallback.parent.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize(
    "case",
    ["no credentials", "wrong secret", "unknown key", "no such bucket", "unreachable", "missing"],
)
def test_precheck_failures_are_one_line(
    case: str, moto: S3Server, moto_auth: S3Server, bucket: str, mnt: Path, tmp_path: Path
):
    target = mnt
    source = bucket
    opts = f"endpoint={moto.endpoint}"
    env = creds_env(tmp_path, moto)
    expect = ""
    if case == "no credentials":
        env = clean_env(tmp_path)
        expect = "no credentials"
    elif case in ("wrong secret", "unknown key"):
        source = unique_bucket("auth")
        opts = f"endpoint={moto_auth.endpoint}"
        if case == "wrong secret":
            env = creds_env(tmp_path, moto_auth, secret="wrong-" + SECRET_MARK)
            expect = "SignatureDoesNotMatch"
        else:
            env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="AKIANOSUCHKEY", AWS_SECRET_ACCESS_KEY="x")
            expect = "InvalidAccessKeyId"
    elif case == "no such bucket":
        source = unique_bucket("missing")
        expect = "no such bucket"
    elif case == "unreachable":
        opts = f"endpoint=http://127.0.0.1:{free_port()}"  # nothing listens there
        expect = "cannot reach endpoint"
    elif case == "missing":
        target = mnt / "does-not-exist"
        expect = "does not exist"
    started = time.monotonic()
    done = s3fmfs(source, target, "-o", opts, env=env)
    line = one_line_error(done)
    assert expect in line, line
    assert SECRET_MARK not in done.stderr
    assert time.monotonic() - started < 30
    assert not is_mounted(mnt) and daemons_of(mnt) == []


def test_fuse_unavailable(moto: S3Server, bucket: str, mnt: Path, tmp_path: Path):
    """/dev/fuse missing, and not a device: a private mount namespace hides the real one."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to hide /dev/fuse")
    empty_dev = tmp_path / "dev"
    empty_dev.mkdir()
    (empty_dev / "null").touch()
    regular = tmp_path / "fuse"
    regular.touch()
    env = {**creds_env(tmp_path, moto), "E": str(empty_dev), "F": str(regular)}
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace: {probe.stderr.strip()}")
    argv = [*s3fmfs_command(), bucket, str(mnt), "-o", f"endpoint={moto.endpoint}"]
    scripts = {
        "does not exist": 'mount --bind /dev/null "$E/null" && mount --bind "$E" /dev',
        "not a character device": 'mount --bind "$F" /dev/fuse',
    }
    for expect, script in scripts.items():
        unshare = ["unshare", "-m", "--propagation", "private"]
        done = subprocess.run(
            [*unshare, "sh", "-c", f'{script} && exec "$@"', "sh", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        line = one_line_error(done)
        assert "FUSE unavailable" in line and expect in line, line
        assert done.returncode == 1
    assert not is_mounted(mnt)


@pytest.mark.skip(
    reason="fusermount3 is only needed (and checked) when not root; tests run as root"
)
def test_fusermount_missing() -> None:
    pass


# --------------------------------------------------------------------------- options and help


@pytest.mark.parametrize(
    "opts",
    ["bogus", "frobnicate=1", "ro=1", "uid", "uid=x", "umask=9", "endpoint=ftp://x", "noauto=1"],
)
def test_bad_options_exit_2_with_one_line(opts: str, mnt: Path, tmp_path: Path):
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    done = s3fmfs("bucket", mnt, "-o", opts, env=env)
    one_line_error(done)
    assert done.returncode == 2


def test_every_ignored_fstab_option_is_accepted():
    opts = parse_options([",".join([*IGNORED_IN_FSTAB, "rw", "ro"])])
    assert opts.ro
    assert not parse_options(["ro,rw"]).ro
    for name in ("dev", "suid", "exec", "nodev", "nosuid", "noexec", "defaults", "relatime"):
        assert name in IGNORED
    for name in ("noatime", "users", "owner", "group", "_netdev", "nofail", "auto", "noauto"):
        assert name in IGNORED
    assert "user" in IGNORED


def test_help_lists_every_option(tmp_path: Path):
    done = s3fmfs("--help", env=clean_env(tmp_path))
    assert done.returncode == 0
    for name in [*OPTIONS, *IGNORED, "x-*", "comment=", "x-systemd", "--log-level", "-f", "-d"]:
        assert name in done.stdout, name
    for word in ("passwd_file", "S3FMFS_ACCESS_KEY_ID", "~/.aws/credentials", "presign", " ls "):
        assert word in done.stdout, word


def test_version(tmp_path: Path):
    from s3fmfs import __version__

    done = s3fmfs("--version", env=clean_env(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == f"s3fmfs {__version__}"


def test_subcommand_dispatch(tmp_path: Path):
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    # `--` forces the mount form: "ls" is the bucket, the mountpoint is checked
    forced = s3fmfs("--", "ls", tmp_path / "nowhere", env=env)
    assert "does not exist" in one_line_error(forced) and forced.returncode == 2
    bad = s3fmfs("ls", "b", "-o", "nosuch", env=env)
    assert "unknown option" in one_line_error(bad) and bad.returncode == 2


# --------------------------------------------------------------------------- logging


def test_foreground_debug_logs_requests_to_stderr(moto: S3Server, bucket: str, tmp_path: Path):
    from tests.support.mount import log_tail

    server = dataclasses.replace(moto, secret_access_key=SECRET_MARK)  # moto takes any
    with mounted(server, bucket, tmp_path=tmp_path, extra_args=["-d"]) as path:
        (path / "logged file.txt").write_bytes(b"x")
        assert (path / "logged file.txt").read_bytes() == b"x"
    text = log_tail(path, 1_000_000)
    assert re.search(rf"PUT /{bucket}/logged file.txt -> 200 \(\d+\.\d+s\)", text), text
    assert re.search(rf"HEAD /{bucket}/logged file.txt -> 404 NoSuchKey", text), text
    assert SECRET_MARK not in text and "Signature" not in text and "Credential" not in text


def test_log_level_warning_hides_info(moto: S3Server, bucket: str, tmp_path: Path):
    from tests.support.mount import log_tail

    with mounted(
        moto, bucket, tmp_path=tmp_path, extra_args=["-d", "--log-level", "warning"]
    ) as path:
        (path / "f").write_bytes(b"x")
    text = log_tail(path, 1_000_000)
    assert " INFO " not in text and " DEBUG " not in text and "PUT /" not in text


# --------------------------------------------------------------------------- client commands


def test_ls(moto: S3Server, s3: Any, bucket: str, tmp_path: Path):
    for key, body in {"a.txt": b"12345", "dir/b.txt": b"1", "dir/sub/c.txt": b"123"}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    env = creds_env(tmp_path, moto)
    opts = ["-o", f"endpoint={moto.endpoint}"]
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

    top = s3fmfs("ls", bucket, *opts, env=env)
    assert top.returncode == 0, top.stderr
    lines = top.stdout.splitlines()
    assert lines[0] == " " * 27 + "PRE dir/"
    assert re.fullmatch(rf"{date} +5 a\.txt", lines[1]) and len(lines) == 2, lines
    assert len(lines[1]) == len("2024-01-01 00:00:00") + 1 + 10 + 1 + len("a.txt")

    sub = s3fmfs("ls", f"{bucket}/dir/", *opts, env=env).stdout.splitlines()
    assert sub[0].endswith(" PRE sub/") and re.fullmatch(rf"{date} +1 b\.txt", sub[1])

    deep = s3fmfs("ls", f"s3://{bucket}/dir", "-r", *opts, env=env).stdout.splitlines()
    assert [line.split()[-1] for line in deep] == ["dir/b.txt", "dir/sub/c.txt"]

    buckets = s3fmfs("ls", *opts, env=env).stdout
    assert re.search(rf"^{date} {bucket}$", buckets, re.M), buckets

    missing = s3fmfs("ls", unique_bucket("none"), *opts, env=env)
    assert "no such bucket" in one_line_error(missing) and missing.returncode == 1


def test_presign_v2_works_with_curl(s3rver_server: S3Server, tmp_path: Path):
    server = s3rver_server
    name = unique_bucket("presign")

    async def create() -> None:
        async with S3fmAuthConnection(
            server.access_key_id,
            server.secret_access_key,
            False,
            server.host,
            server.port,
            CallingFormat.PATH,
            signature="v2",
        ) as conn:
            await conn.create_bucket(name)

    trio.run(create)
    env = creds_env(tmp_path, server)
    opts = ["-o", f"endpoint={server.endpoint},sigv2"]
    put = s3fmfs("presign", f"{name}/a b+c.txt", "--method", "PUT", *opts, env=env)
    assert put.returncode == 0, put.stderr
    put_url = put.stdout.strip()
    assert "AWSAccessKeyId=S3RVER" in put_url and "Signature=" in put_url
    body = tmp_path / "body"
    body.write_bytes(b"uploaded through a presigned URL")
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    assert (
        subprocess.run([*curl, "-T", str(body), put_url], capture_output=True, text=True).stdout
        == "200"
    )
    get = s3fmfs("presign", f"{name}/a b+c.txt", "--expires", "120", *opts, env=env)
    got = subprocess.run(["curl", "-s", "-f", get.stdout.strip()], capture_output=True)
    assert got.returncode == 0 and got.stdout == b"uploaded through a presigned URL"
    expires = int(parse_qs(urlsplit(get.stdout.strip()).query)["Expires"][0])
    assert abs(expires - (time.time() + 120)) < 30
    delete = s3fmfs("presign", f"{name}/a b+c.txt", "--method", "delete", *opts, env=env)
    assert (
        subprocess.run(
            [*curl, "-X", "DELETE", delete.stdout.strip()], capture_output=True, text=True
        ).stdout
        == "204"
    )
    gone = subprocess.run(["curl", "-s", "-f", get.stdout.strip()], capture_output=True)
    assert gone.returncode != 0


def test_presign_v4_shape(moto: S3Server, tmp_path: Path):
    env = creds_env(tmp_path, moto, secret=SECRET_MARK)
    done = s3fmfs(
        "presign",
        "some-bucket/dir/key.txt",
        "--expires",
        "900",
        "-o",
        f"endpoint={moto.endpoint},region=eu-west-3",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    url = urlsplit(done.stdout.strip())
    assert (url.scheme, url.netloc, url.path) == (
        "http",
        f"{moto.host}:{moto.port}",
        "/some-bucket/dir/key.txt",
    )
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert re.fullmatch(
        rf"{moto.access_key_id}/\d{{8}}/eu-west-3/s3/aws4_request", query["X-Amz-Credential"]
    )
    assert query["X-Amz-Expires"] == "900" and query["X-Amz-SignedHeaders"] == "host"
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert SECRET_MARK not in done.stdout
    too_long = s3fmfs(
        "presign", "b/k", "--expires", str(8 * 86400), "-o", f"endpoint={moto.endpoint}", env=env
    )
    assert one_line_error(too_long) and too_long.returncode == 2
    no_key = s3fmfs("presign", "just-a-bucket", env=env)
    assert "BUCKET/KEY" in one_line_error(no_key) and no_key.returncode == 2


# --------------------------------------------------------------------------- systemd


def test_foreground_notifies_systemd_ready_only_when_live(
    moto: S3Server, s3: Any, bucket: str, mnt: Path, tmp_path: Path
):
    """Type=notify: READY=1 arrives once the mount answers; STOPPING=1 at SIGTERM; exit 0."""
    import socket

    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = {**creds_env(tmp_path, moto), "NOTIFY_SOCKET": address}
        log = tmp_path / "fg.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*s3fmfs_command(), bucket, str(mnt), "-o", f"endpoint={moto.endpoint}", "-f"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            assert sock.recv(4096) == b"READY=1", log.read_text()
            assert is_mounted(mnt) and os.path.ismount(mnt)  # live when announced
            fd = os.open(mnt / "unsaved", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"flushed at SIGTERM")
                proc.send_signal(signal.SIGTERM)
                assert sock.recv(4096) == b"STOPPING=1"
                assert proc.wait(30) == 0, log.read_text()
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not is_mounted(mnt)
    assert s3.get_object(Bucket=bucket, Key="unsaved")["Body"].read() == b"flushed at SIGTERM"


def test_daemon_notifies_ready(moto: S3Server, bucket: str, mnt: Path, tmp_path: Path):
    import socket

    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = {**creds_env(tmp_path, moto), "NOTIFY_SOCKET": address}
        opts = f"endpoint={moto.endpoint},log_file={tmp_path / 'log'}"
        done = s3fmfs(bucket, mnt, "-o", opts, env=env)
        assert done.returncode == 0, done.stderr
        assert sock.recv(4096) == b"READY=1"
        [pid] = daemons_of(mnt)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        assert sock.recv(4096) == b"STOPPING=1"
        assert reap(pid) == 0
