"""Mounting the way a system does: mount(8), fstab, ``mount.s3fmfs``, systemd units, shutdown.

These tests change the machine for real, and undo every change in ``finally``:
- ``make install`` builds its runtime venv in a temporary ``INSTALL_DIR`` and links
  ``/usr/local/bin/s3fmfs`` and ``/sbin/mount.s3fmfs`` (where mount(8) finds them) to it, for
  the module, run twice (it must be idempotent); ``make uninstall`` removes them afterwards and
  whatever was there before is put back. (tests/test_install.py checks the runtime itself.)
- Mounts are made with ``mount -t fuse.s3fmfs`` (``/sbin/mount.fuse3`` runs ``s3fmfs``),
  ``mount -t s3fmfs`` (``/sbin/mount.s3fmfs``) and ``mount -T FSTAB DIR`` (a private fstab:
  ``/etc/fstab`` is never touched). Each is unmounted, and the s3fmfs process serving it
  waited for, killed only if it lingers; no mount and no process is left behind.
- systemd is not PID 1 here: units are checked with ``systemd-analyze verify``, and the
  template service's own ExecStart/ExecStop lines are run as systemd would run them
  (specifiers, EnvironmentFile, ``$MAINPID``, ``NOTIFY_SOCKET``).

Where a feature of s3fmfs itself is still missing (daemon mode: mount(8) returning once the mount
is live; ``READY=1``), the test checks everything else and then reports an xfail naming it.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from s3fmfs.commands import mount_helper
from s3fmfs.config import options as fs_options
from s3fmfs.service import sdnotify
from tests.support.mount import is_mounted, mounted
from tests.support.servers import S3Server, free_port, s3_client, unique_bucket

pytestmark = [pytest.mark.system, pytest.mark.mounted]

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = ROOT / "systemd"
BINDIR = Path("/usr/local/bin")
SBINDIR = Path("/sbin")
#: What ``make install`` links (into its runtime's bin).
LINKS = [BINDIR / "s3fmfs", SBINDIR / "mount.s3fmfs"]

MiB = 1 << 20
MOUNT_TIMEOUT = 30.0  # until the mount shows in mountinfo
RETURN_TIMEOUT = 15.0  # until mount(8) returns once the mount is live (daemon mode)
EXIT_TIMEOUT = 60.0  # until the s3fmfs process exits after an unmount (uploads included)
COMMAND_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600.0  # make install: a venv, pyfuse3 built from source unless pip cached it

NO_DAEMON_MODE = "daemon mode missing: mount(8) did not return once the mount was live"

_SYSTEM_MARKS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) and make install need root"),
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
    ),
    pytest.mark.skipif(
        not (SBINDIR / "mount.fuse3").exists(), reason="needs /sbin/mount.fuse3 (fuse3)"
    ),
]


def system(test: Any) -> Any:
    """Mark a test that mounts or installs for real (root, /dev/fuse, mount.fuse3)."""
    for mark in _SYSTEM_MARKS:
        test = mark(test)
    return test


def supports(option: str) -> bool:
    """Whether s3fmfs's option parser knows ``option`` (features landing in parallel)."""
    return option in fs_options.OPTIONS


# --------------------------------------------------------------------------- install fixture


def _save(path: Path, backup_dir: Path) -> tuple[str, str] | None:
    """Put aside what is at ``path`` (a link target, or the file itself)."""
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.exists():
        backup = backup_dir / path.name
        shutil.move(path, backup)
        return ("file", str(backup))
    return None


def _restore(path: Path, saved: tuple[str, str] | None) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    if saved is None:
        return
    kind, value = saved
    if kind == "link":
        path.symlink_to(value)
    else:
        shutil.move(value, path)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """``make -C ROOT ARGS`` (install builds its own runtime: never the dev venv)."""
    return subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """``make install`` (twice: idempotent) with its runtime in a temporary ``INSTALL_DIR``, the
    links where mount(8) finds them, for the module; uninstalled and restored after. The
    runtime's ``bin``."""
    backup_dir = Path(tempfile.mkdtemp(prefix="s3fmfs-install-backup-"))
    runtime = backup_dir / "runtime"
    saved = {path: _save(path, backup_dir) for path in LINKS}
    try:
        for attempt in (1, 2):
            done = make("install", f"INSTALL_DIR={runtime}")
            assert done.returncode == 0, f"make install #{attempt}:\n{done.stdout}{done.stderr}"
        for link in LINKS:
            assert os.readlink(link) == str(runtime / "bin" / link.name), link
        yield runtime / "bin"
    finally:
        make("uninstall", f"INSTALL_DIR={runtime}")
        for path, state in saved.items():
            _restore(path, state)
        shutil.rmtree(backup_dir, ignore_errors=True)


# --------------------------------------------------------------------------- S3 and mount helpers


def body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Credentials:
    """How a mount gets its key pair: ``passwd_file=`` when s3fmfs has it, else the env."""

    options: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def credentials(server: S3Server, tmp_path: Path) -> Credentials:
    """A 0600 passwd file (and no key in the environment), or AWS_* variables."""
    if supports("passwd_file"):
        passwd = tmp_path / "passwd-s3fmfs"
        passwd.write_text(f"{server.access_key_id}:{server.secret_access_key}\n")
        passwd.chmod(0o600)
        return Credentials(options=[f"passwd_file={passwd}"])
    return Credentials(
        env={
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        }
    )


def mount_env(creds: Credentials, home: Path) -> dict[str, str]:
    """The environment of mount(8): ours without any S3 key, HOME elsewhere, plus ``creds``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "S3FMFS_")) and name != "NOTIFY_SOCKET"
    }
    env["HOME"] = str(home)
    env.update(creds.env)
    return env


def base_options(server: S3Server, creds: Credentials, tmp_path: Path) -> list[str]:
    opts = [f"endpoint={server.endpoint}", *creds.options]
    if supports("log_file"):
        opts.append(f"log_file={tmp_path / 's3fmfs.log'}")
    return opts


def log_of(tmp_path: Path) -> str:
    try:
        return (tmp_path / "s3fmfs.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def serving(mnt: Path) -> list[psutil.Process]:
    """The s3fmfs processes whose command line names ``mnt`` (not mount(8) nor its helpers)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline: list[str] = proc.info["cmdline"] or []
        if proc.pid == os.getpid() or str(mnt) not in cmdline:
            continue
        if any(
            os.path.basename(arg) == "s3fmfs" or arg == "s3fmfs.commands.cli" for arg in cmdline
        ):
            found.append(proc)
    return found


def wait_gone(procs: list[psutil.Process], timeout: float = EXIT_TIMEOUT) -> list[str]:
    """Wait for ``procs`` to exit; SIGTERM then SIGKILL the ones that linger. Problems met."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if not alive:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        _, alive = psutil.wait_procs(alive, timeout=5)
        if not alive:
            break
    return [f"s3fmfs still running {timeout:.0f}s after the unmount: killed"]


def wait_exited(pid: int, timeout: float = EXIT_TIMEOUT) -> bool:
    """Whether ``pid`` (maybe our child: not reaped here) exited within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, **kwargs
    )


def _read_until_eof(stream: Any, timeout: float) -> tuple[bytes, bool]:
    """What ``stream`` (a pipe) holds until EOF; False if EOF did not come in ``timeout``."""
    fd = stream.fileno()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)


@dataclass
class SystemMount:
    """A mount made by mount(8) (see :func:`system_mounted`)."""

    mnt: Path
    command: subprocess.Popen[bytes]
    #: mount(8) exited 0 once the mount was live and s3fmfs went on in the background.
    returned: bool = False
    output: str = ""
    #: s3fmfs processes serving the mount, found once it was live.
    daemons: list[psutil.Process] = field(default_factory=list)


@contextlib.contextmanager
def system_mounted(
    argv: list[str], mnt: Path, env: dict[str, str], tmp_path: Path
) -> Iterator[SystemMount]:
    """Run the mount(8) command ``argv`` mounting ``mnt``; the block runs once it is live.

    On the way out, whatever happened: a lazy unmount if the block left it mounted, the s3fmfs
    process waited for (killed if it lingers), mount(8) too. After a successful block, any of
    those problems fails the test.
    """
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    state = SystemMount(mnt, proc)
    body_done = False
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, _ = _read_until_eof(proc.stdout, 2)
                raise AssertionError(
                    f"{shlex.join(argv)}: status {proc.poll()}, not mounted:\n"
                    f"{out.decode(errors='replace')}\n{log_of(tmp_path)}"
                )
            time.sleep(0.05)
        assert os.path.ismount(mnt), f"{mnt} in mountinfo but not answering"
        try:
            proc.wait(RETURN_TIMEOUT)
        except subprocess.TimeoutExpired:
            state.returned = False
        else:
            out, eof = _read_until_eof(proc.stdout, 5)
            state.output = out.decode(errors="replace")
            assert proc.returncode == 0, f"mount(8) exited {proc.returncode}:\n{state.output}"
            assert eof, "the s3fmfs daemon keeps mount(8)'s output pipe open"
            state.returned = True
        state.daemons = serving(mnt)
        assert state.daemons, f"no s3fmfs process serving {mnt}"
        yield state
        body_done = True
    finally:
        problems = []
        if is_mounted(mnt):
            run(["umount", "-l", str(mnt)])
            problems.append("left mounted by the test: lazily unmounted")
        problems += wait_gone(state.daemons or serving(mnt))
        try:
            proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            problems.append("mount(8) still running after the unmount: killed")
        proc.stdout.close()
        if body_done and problems:
            raise AssertionError("; ".join(problems) + f"\n{log_of(tmp_path)}")


def mount_entry(mnt: Path) -> tuple[str, str]:
    """(fstype, source) of ``mnt`` in ``/proc/self/mountinfo``."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == str(mnt):
                fstype, source = right.split()[:2]
                return fstype, source
    raise AssertionError(f"{mnt} is not mounted")


def unmount(how: str, mnt: Path) -> None:
    """Unmount ``mnt`` with ``umount`` or ``fusermount3 -u``, lazily or not; assert it worked."""
    argv = {
        "umount": ["umount", str(mnt)],
        "umount-lazy": ["umount", "-l", str(mnt)],
        "fusermount3": ["fusermount3", "-u", str(mnt)],
        "fusermount3-lazy": ["fusermount3", "-u", "-z", str(mnt)],
    }[how]
    done = run(argv)
    assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
    assert not is_mounted(mnt)


def new_bucket(s3: Any) -> str:
    bucket = unique_bucket("sys")
    s3.create_bucket(Bucket=bucket)
    return bucket


def mountpoint(tmp_path: Path) -> Path:
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    return mnt


# --------------------------------------------------------------------------- sdnotify


@pytest.fixture
def notify_dir() -> Iterator[Path]:
    """A short directory for AF_UNIX socket paths (108 bytes at most)."""
    path = Path(tempfile.mkdtemp(prefix="s3fmfs-notify-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_sdnotify_without_socket_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False


def test_sdnotify_path_socket(monkeypatch: pytest.MonkeyPatch, notify_dir: Path) -> None:
    path = notify_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"
        assert sdnotify.notify("STOPPING=1\nSTATUS=unmounting") is True
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=unmounting"
        assert os.environ["NOTIFY_SOCKET"] == str(path)  # kept for the next message


def test_sdnotify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"s3fmfs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_sdnotify_errors_are_false_never_raised(
    monkeypatch: pytest.MonkeyPatch, notify_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="s3fmfs.sdnotify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "missing"))
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:9999")
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@s3fmfs-nobody-{uuid.uuid4().hex}")
    assert sdnotify.notify("READY=1") is False
    stream = notify_dir / "stream"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(stream))
        listener.listen()
        monkeypatch.setenv("NOTIFY_SOCKET", str(stream))
        assert sdnotify.notify("READY=1") is False  # not a datagram socket
    assert "READY=1" in caplog.text  # each failure logged at debug level


# --------------------------------------------------------------------------- mount.s3fmfs (unit)


def test_helper_parses_mount8_command_line() -> None:
    args = mount_helper.parse_args(
        ["bkt:/pre", "/mnt/x", "-s", "-fnv", "-o", "ro,_netdev", "-t", "s3fmfs"]
    )
    assert (args.source, args.mountpoint) == ("bkt:/pre", "/mnt/x")
    assert (args.fake, args.sloppy, args.verbose) == (True, True, True)
    assert args.options == ["ro,_netdev"]
    assert args.fstype == "s3fmfs"
    plain = mount_helper.parse_args(["bkt", "/mnt/x", "-o", "a=1", "-o", "b"])
    assert (plain.fake, plain.sloppy, plain.verbose) == (False, False, False)
    assert plain.options == ["a=1", "b"]
    with pytest.raises(mount_helper.UsageError):
        mount_helper.parse_args(["bkt"])
    with pytest.raises(mount_helper.UsageError):
        mount_helper.parse_args(["bkt", "/mnt/x", "-t", "nfs"])
    with pytest.raises(mount_helper.UsageError):
        mount_helper.parse_args(["bkt", "/mnt/x", "-o"])
    with pytest.raises(mount_helper.UsageError):
        mount_helper.parse_args(["bkt", "/mnt/x", "-x"])


def test_helper_drops_mount_only_options() -> None:
    groups = [
        "rw,_netdev,nofail,noauto,auto,user,users,defaults,x-systemd.automount",
        "comment=x-gvfs-show,endpoint=http://127.0.0.1:9000,ro,passwd_file=/etc/p,dev,suid",
    ]
    # dev/suid: fstab-only too (s3fmfs would ignore them): the option table's one list
    assert mount_helper.filesystem_options(groups) == (
        "endpoint=http://127.0.0.1:9000,ro,passwd_file=/etc/p"
    )
    assert mount_helper.filesystem_options(["bogus=1,ro,nometa"], sloppy=True) == "ro,nometa"
    assert mount_helper.filesystem_options(["bogus=1,ro"]) == "bogus=1,ro"  # s3fmfs says no


def test_helper_runs_s3fmfs_in_daemon_mode() -> None:
    args = mount_helper.parse_args(["bkt", "/mnt/x", "-o", "_netdev,ro", "-t", "fuse.s3fmfs"])
    command = mount_helper.build_command(args)
    script = Path(sys.executable).parent / "s3fmfs"
    expected = [str(script)] if script.exists() else [sys.executable, "-m", "s3fmfs.commands.cli"]
    assert command == [*expected, "bkt", "/mnt/x", "-o", "ro"]
    assert "-f" not in command  # mount(8)'s -f is "fake": never s3fmfs's foreground


def test_helper_fake_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert mount_helper.main(["bkt", "/mnt/x", "-f", "-v", "-o", "nofail,ro"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("mount.s3fmfs: ") and err.rstrip().endswith("bkt /mnt/x -o ro")
    assert mount_helper.main(["bkt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mount.s3fmfs: expected SPEC and DIR") and "usage:" in err


# --------------------------------------------------------------------------- make install


@system
def test_make_install_links_where_mount_finds_them(installed: Path, tmp_path: Path) -> None:
    for link in LINKS:
        assert link.is_symlink() and Path(os.readlink(link)) == installed / link.name, link
    # mount(8) finds /sbin/mount.s3fmfs; its -f (fake) reaches the helper, which mounts nothing.
    mnt = mountpoint(tmp_path)
    done = run(
        ["mount", "-f", "-v", "-t", "s3fmfs", "bkt", str(mnt), "-o", "endpoint=http://127.0.0.1:9"],
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert f"bkt {mnt} -o endpoint=http://127.0.0.1:9" in done.stderr
    assert "mount.s3fmfs: " in done.stderr
    assert not is_mounted(mnt)


# --------------------------------------------------------------------------- mount(8)


@system
def test_mount_type_fuse_s3fmfs(moto: S3Server, s3: Any, installed: Path, tmp_path: Path) -> None:
    """``mount -t fuse.s3fmfs``: mount.fuse3 runs /usr/local/bin/s3fmfs; ``umount`` ends it."""
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="old/hello.txt", Body=b"hello from boto3\n")
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    opts = ",".join(base_options(moto, creds, tmp_path))
    argv = ["mount", "-t", "fuse.s3fmfs", bucket, str(mnt), "-o", opts]
    data = payload(1, 3 * MiB + 5)
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        assert mount_entry(mnt)[0] == "fuse.s3fmfs"
        assert (mnt / "old" / "hello.txt").read_bytes() == b"hello from boto3\n"
        (mnt / "new").mkdir()
        (mnt / "new" / "file.bin").write_bytes(data)
        assert (mnt / "new" / "file.bin").read_bytes() == data
        unmount("umount", mnt)
        assert not wait_gone(m.daemons), "s3fmfs did not exit after umount"
    assert body(s3, bucket, "new/file.bin") == data
    if not m.returned:
        pytest.xfail(NO_DAEMON_MODE)


@system
@pytest.mark.parametrize("form", ["colon", "s3url"])
def test_mount_type_s3fmfs_through_helper(
    moto: S3Server, s3: Any, installed: Path, tmp_path: Path, form: str
) -> None:
    """``mount -t s3fmfs BUCKET:/PREFIX`` (or ``s3://BUCKET/PREFIX``): /sbin/mount.s3fmfs,
    fstab-only options dropped."""
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="pre/in.txt", Body=b"inside\n")
    s3.put_object(Bucket=bucket, Key="out.txt", Body=b"outside\n")
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    opts = ",".join(
        [*base_options(moto, creds, tmp_path), "_netdev", "nofail", "x-systemd.mount-timeout=30"]
    )
    source = f"{bucket}:/pre" if form == "colon" else f"s3://{bucket}/pre"
    argv = ["mount", "-t", "s3fmfs", source, str(mnt), "-o", opts]
    data = payload(2, 100_000)
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        assert mount_entry(mnt)[0] == "fuse.s3fmfs"
        assert sorted(os.listdir(mnt)) == ["in.txt"]
        (mnt / "written.bin").write_bytes(data)
        unmount("umount", mnt)
        assert not wait_gone(m.daemons), "s3fmfs did not exit after umount"
    assert body(s3, bucket, "pre/written.bin") == data
    if not m.returned:
        pytest.xfail(NO_DAEMON_MODE)


@system
@pytest.mark.parametrize("fstype", ["fuse.s3fmfs", "s3fmfs"])
def test_fstab_line(moto_auth: S3Server, installed: Path, tmp_path: Path, fstype: str) -> None:
    """A private fstab (``mount -T``): ``mount DIR`` / ``umount DIR``; the key from the file.

    moto checks signatures here: the mount works only if s3fmfs read the right key pair.
    """
    s3 = s3_client(moto_auth, attempts=5)
    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    creds = credentials(moto_auth, tmp_path)
    opts = ",".join(
        [
            "_netdev",
            "nofail",
            "noauto",
            "x-systemd.automount",
            "x-systemd.idle-timeout=10min",
            *base_options(moto_auth, creds, tmp_path),
        ]
    )
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\n{bucket} {mnt} {fstype} {opts} 0 0\n")
    data = payload(3, 2 * MiB)
    argv = ["mount", "-T", str(fstab), str(mnt)]
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        (mnt / "from-fstab.bin").write_bytes(data)
        assert sorted(os.listdir(mnt)) == ["from-fstab.bin"]
        done = run(["umount", str(mnt)])
        assert done.returncode == 0, done.stderr
        assert not wait_gone(m.daemons), "s3fmfs did not exit after umount"
    assert body(s3, bucket, "from-fstab.bin") == data
    if not m.returned:
        pytest.xfail(NO_DAEMON_MODE)


@system
def test_fstab_line_every_bucket(moto_auth: S3Server, installed: Path, tmp_path: Path) -> None:
    """``s3://`` as an fstab source (through /sbin/mount.s3fmfs): every bucket, each a folder."""
    s3 = s3_client(moto_auth, attempts=5)
    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    creds = credentials(moto_auth, tmp_path)
    opts = ",".join(["_netdev", "nofail", "noauto", *base_options(moto_auth, creds, tmp_path)])
    fstab = tmp_path / "fstab"
    fstab.write_text(f"s3:// {mnt} s3fmfs {opts} 0 0\n")
    data = payload(4, 100_000)
    argv = ["mount", "-T", str(fstab), str(mnt)]
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        assert bucket in os.listdir(mnt)
        (mnt / bucket / "from-fstab.bin").write_bytes(data)
        done = run(["umount", str(mnt)])
        assert done.returncode == 0, done.stderr
        assert not wait_gone(m.daemons), "s3fmfs did not exit after umount"
    assert body(s3, bucket, "from-fstab.bin") == data
    if not m.returned:
        pytest.xfail(NO_DAEMON_MODE)


@system
@pytest.mark.parametrize("fstype", ["fuse.s3fmfs", "s3fmfs"])
def test_mount_failure_is_reported_by_mount(
    moto: S3Server, installed: Path, tmp_path: Path, fstype: str
) -> None:
    """A bucket that cannot be reached: mount(8) fails with s3fmfs's line, nothing is left."""
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    opts = ",".join([f"endpoint={endpoint}", *creds.options])
    env = mount_env(creds, tmp_path)
    done = run(["mount", "-t", fstype, "nobucket", str(mnt), "-o", opts], env=env)
    try:
        assert done.returncode != 0
        assert endpoint in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert f"s3fmfs: {mnt}: " in done.stderr, done.stderr  # mount -a: which line failed
        assert not is_mounted(mnt) and not serving(mnt)
        bad = run(["mount", "-t", fstype, "nobucket", str(mnt), "-o", "no_such_option"], env=env)
        assert bad.returncode != 0 and "no_such_option" in bad.stderr, bad.stderr
        assert f"s3fmfs: {mnt}: unknown option 'no_such_option'" in bad.stderr, bad.stderr
    finally:
        if is_mounted(mnt):
            run(["umount", "-l", str(mnt)])
        wait_gone(serving(mnt), timeout=5)


# --------------------------------------------------------------------------- clean shutdown


SHUTDOWN_FILES = {f"d/f{i}": size for i, size in enumerate([0, 1, 4096, MiB + 7, 9 * MiB])}


@system
@pytest.mark.parametrize(
    "how", ["umount", "fusermount3", "umount-lazy", "fusermount3-lazy", "sigterm"]
)
def test_clean_shutdown_uploads_every_byte(
    moto: S3Server, s3: Any, installed: Path, tmp_path: Path, how: str
) -> None:
    """Write, stop at once, wait for s3fmfs to exit: every byte is in the bucket.

    Lazy unmounts return while a file is still open (and written to after the unmount);
    SIGTERM reaches s3fmfs while a file is open with unsaved data.
    """
    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    opts = ",".join(base_options(moto, creds, tmp_path))
    argv = ["mount", "-t", "fuse.s3fmfs", bucket, str(mnt), "-o", opts]
    expected = {key: payload(i, size) for i, (key, size) in enumerate(SHUTDOWN_FILES.items())}
    held_first, held_second = payload(100, 3 * MiB + 1), payload(101, 5 * MiB)
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        (mnt / "d").mkdir()
        for key, data in expected.items():
            (mnt / key).write_bytes(data)
        fd = -1
        if how in ("umount-lazy", "fusermount3-lazy", "sigterm"):
            fd = os.open(mnt / "d" / "held.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, held_first)
        try:
            if how == "sigterm":
                for proc in m.daemons:
                    proc.send_signal(signal.SIGTERM)
                expected["d/held.bin"] = held_first
                assert not wait_gone(m.daemons), "s3fmfs did not exit after SIGTERM"
            else:
                unmount(how, mnt)
                if fd >= 0:  # detached, but the open file still works and s3fmfs serves it
                    assert os.write(fd, held_second) == len(held_second)
                    os.close(fd)
                    fd = -1
                    expected["d/held.bin"] = held_first + held_second
                assert not wait_gone(m.daemons), f"s3fmfs did not exit after {how}"
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        assert not is_mounted(mnt)
    for key, data in expected.items():
        got = body(s3, bucket, key)
        assert len(got) == len(data) and got == data, key


@system
def test_foreground_sigterm_uploads_open_file(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    """``s3fmfs -f`` (as systemd runs it) stopped by SIGTERM with a file open: saved, exit 0."""
    from tests.support.mount import daemon_pid

    bucket = new_bucket(s3)
    data = payload(7, 4 * MiB + 3)
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        fd = os.open(mnt / "open.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.kill(daemon_pid(mnt), signal.SIGTERM)
            assert wait_exited(daemon_pid(mnt)), "s3fmfs did not exit after SIGTERM"
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    assert body(s3, bucket, "open.bin") == data


@system
def test_repeated_sigterm_while_stopping_loses_nothing(
    moto: S3Server, s3: Any, tmp_path: Path
) -> None:
    """systemd sends SIGTERM again after umount: signals during the final uploads are ignored,
    every open file is saved and the exit status is 0."""
    from tests.support.mount import daemon_pid

    bucket = new_bucket(s3)
    files = {f"open{i}.bin": payload(20 + i, 6 * MiB + i) for i in range(4)}
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        fds = []
        try:
            for name, data in files.items():
                fd = os.open(mnt / name, os.O_WRONLY | os.O_CREAT, 0o644)
                fds.append(fd)
                os.write(fd, data)
            pid = daemon_pid(mnt)
            for _ in range(20):  # the first stops serving; the rest land during the uploads
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                time.sleep(0.01)
            assert wait_exited(pid), "s3fmfs did not exit after SIGTERM"
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
    for name, data in files.items():
        assert body(s3, bucket, name) == data, name


# --------------------------------------------------------------------------- systemd


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values...]}} (no line continuations are used)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: continuation lines are not expected"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def expand_command(line: str, specifiers: dict[str, str], env: dict[str, str]) -> list[str]:
    """An Exec*= line as systemd runs it: prefixes, specifiers, words, ``${VAR}``, ``$$``."""
    line = line.lstrip("-@:+!")
    line = re.sub(r"%[a-zA-Z%]", lambda m: specifiers[m.group()], line)
    words = []
    for word in shlex.split(line):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:  # $VAR alone: split at whitespace
            words += env.get(whole.group(1), "").split()
            continue
        word = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word)
        words.append(word.replace("$$", "$"))
    return words


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze missing: `make apt` installs Debian's systemd package")
    return path


UNITS = ["mnt-s3fmfs.mount", "mnt-s3fmfs.automount", "s3fmfs@.service"]


@system
@pytest.mark.parametrize("name", UNITS)
def test_units_pass_systemd_analyze_verify(installed: Path, name: str, tmp_path: Path) -> None:
    analyze = systemd_analyze()
    paths = [SYSTEMD_DIR / name]
    if name == "s3fmfs@.service":  # an instance too, as `systemctl enable` would make it
        instance = tmp_path / "s3fmfs@mnt-bucket.service"
        instance.symlink_to(SYSTEMD_DIR / name)
        paths.append(instance)
    for path in paths:
        done = run([analyze, "verify", str(path)], cwd=SYSTEMD_DIR)
        assert done.returncode == 0 and not done.stderr.strip(), f"{path.name}:\n{done.stderr}"


def test_mount_units_agree_with_their_names_and_fstab() -> None:
    mount = read_unit(SYSTEMD_DIR / "mnt-s3fmfs.mount")
    automount = read_unit(SYSTEMD_DIR / "mnt-s3fmfs.automount")
    where = mount["Mount"]["Where"][0]
    assert automount["Automount"]["Where"] == [where]
    if shutil.which("systemd-escape"):
        escaped = run(["systemd-escape", "-p", "--suffix=mount", where]).stdout.strip()
        assert escaped == "mnt-s3fmfs.mount"
    assert mount["Mount"]["Type"] == ["fuse.s3fmfs"]
    options = mount["Mount"]["Options"][0].split(",")
    assert "_netdev" in options and any(o.startswith("passwd_file=") for o in options)
    # the options the unit gives mount(8) are accepted by s3fmfs (after mount.fuse3's pass)
    fs_options.parse_options(
        [mount_helper.filesystem_options(mount["Mount"]["Options"]), "dev,suid"]
    )
    template = read_unit(SYSTEMD_DIR / "s3fmfs@.service")
    service = template["Service"]
    assert service["Type"] == ["notify"]
    assert service["EnvironmentFile"] == ["/etc/s3fmfs/%i.conf"]
    assert " -f " in service["ExecStart"][0]
    # a usage/configuration error (exit status 2) is not restarted every RestartSec forever
    assert service["Restart"] == ["on-failure"]
    assert "2" in " ".join(service["RestartPreventExitStatus"]).split()
    # a missing mount point fails the unit (an Assert), it does not skip it (a Condition)
    assert template["Unit"]["AssertPathIsDirectory"] == ["%f"]
    assert not any(key.startswith("Condition") for key in template["Unit"])


@system
def test_mount_unit_command(moto: S3Server, s3: Any, installed: Path, tmp_path: Path) -> None:
    """What systemd runs for mnt-s3fmfs.mount (``mount WHAT WHERE -t TYPE -o OPTIONS``)."""
    unit = read_unit(SYSTEMD_DIR / "mnt-s3fmfs.mount")["Mount"]
    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    options = [
        o for o in unit["Options"][0].split(",") if not o.startswith("passwd_file=")
    ] + base_options(moto, creds, tmp_path)
    argv = ["mount", bucket, str(mnt), "-t", unit["Type"][0], "-o", ",".join(options)]
    with system_mounted(argv, mnt, mount_env(creds, tmp_path), tmp_path) as m:
        assert m.returned, NO_DAEMON_MODE  # systemd waits for mount(8) to return
        (mnt / "unit.txt").write_bytes(b"from the mount unit\n")
        unmount("umount", mnt)  # what stopping the unit runs
        assert not wait_gone(m.daemons)
    assert body(s3, bucket, "unit.txt") == b"from the mount unit\n"


@dataclass
class Notifications:
    """What a service sent to its NOTIFY_SOCKET, each with whether the mount was live then."""

    sock: socket.socket
    mnt: Path
    seen: list[tuple[str, bool]] = field(default_factory=list)

    def receive(self, timeout: float) -> None:
        """Collect datagrams for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            live = is_mounted(self.mnt) and os.path.ismount(self.mnt)
            self.seen.append((data.decode(errors="replace"), live))

    def states(self) -> list[str]:
        return [line for message, _ in self.seen for line in message.splitlines()]

    def ready(self) -> bool | None:
        """None: no READY=1; else whether the mount was live when it arrived."""
        for message, live in self.seen:
            if "READY=1" in message.splitlines():
                return live
        return None

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = MOUNT_TIMEOUT) -> None:
        """Until READY=1 arrives, the process exits, or the mount is up without it for 10 s."""
        deadline = time.monotonic() + timeout
        mounted_at: float | None = None
        while self.ready() is None and proc.poll() is None and time.monotonic() < deadline:
            self.receive(0.1)
            if mounted_at is None and is_mounted(self.mnt):
                mounted_at = time.monotonic()
            if mounted_at is not None and time.monotonic() - mounted_at > 10:
                return


@contextlib.contextmanager
def notify_socket(directory: Path, mnt: Path) -> Iterator[tuple[str, Notifications]]:
    path = directory / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield str(path), Notifications(sock, mnt)


@contextlib.contextmanager
def service_process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Any]:
    """A foreground s3fmfs (as systemd's main process); always gone after the block."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    mnt = Path(argv[argv.index("-f") - 1])
    try:
        yield proc
    finally:
        if is_mounted(mnt):
            run(["fusermount3", "-u", "-z", str(mnt)])
        try:
            proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if is_mounted(mnt):
            run(["umount", "-l", str(mnt)])


@system
def test_ready_only_once_mounted(moto: S3Server, s3: Any, tmp_path: Path, notify_dir: Path) -> None:
    """``s3fmfs -f`` with NOTIFY_SOCKET: READY=1 only when the mount answers; STOPPING=1 on stop."""
    from tests.support.mount import s3fmfs_command

    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    creds = credentials(moto, tmp_path)
    argv = [
        *s3fmfs_command(),
        bucket,
        str(mnt),
        "-f",
        "-o",
        ",".join(base_options(moto, creds, tmp_path)),
    ]
    with notify_socket(notify_dir, mnt) as (address, notes):
        env = {**mount_env(creds, tmp_path), "NOTIFY_SOCKET": address}
        with service_process(argv, env, tmp_path / "fg.log") as proc:
            notes.wait_ready(proc)
            ready = notes.ready()
            if ready is not None:
                (mnt / "f.txt").write_bytes(b"ready\n")
                unmount("fusermount3", mnt)
                assert proc.wait(EXIT_TIMEOUT) == 0
                notes.receive(0.5)
        if ready is None:
            pytest.xfail(f"no READY=1 from s3fmfs -f; got {notes.states()}")
    assert ready is True, f"READY=1 before the mount was live: {notes.seen}"
    assert "STOPPING=1" in notes.states()
    assert body(s3, bucket, "f.txt") == b"ready\n"


@system
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "file-open"])
def test_template_service_start_ready_stop(
    moto: S3Server, s3: Any, installed: Path, tmp_path: Path, notify_dir: Path, busy: bool
) -> None:
    """s3fmfs@.service's own ExecStart/ExecStop lines, run as systemd runs them.

    ExecStop returns only once s3fmfs has exited, every byte uploaded; with a file still open
    (``fusermount3 -u`` refuses: busy) it falls back to SIGTERM, which saves the file too.
    """
    service = read_unit(SYSTEMD_DIR / "s3fmfs@.service")["Service"]
    bucket = new_bucket(s3)
    mnt = mountpoint(tmp_path)
    systemd_analyze()  # systemd-escape comes with it
    instance = run(["systemd-escape", "-p", str(mnt)]).stdout.strip()
    creds = credentials(moto, tmp_path)
    conf = {"BUCKET": bucket, "OPTIONS": ",".join(base_options(moto, creds, tmp_path))}
    specifiers = {"%f": str(mnt), "%i": instance, "%I": str(mnt), "%%": "%"}
    # systemd's environment: its PATH, the EnvironmentFile, nothing of ours
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", **conf, **creds.env}
    start = expand_command(service["ExecStart"][0], specifiers, env)
    assert start[0] == str(BINDIR / "s3fmfs") and "-f" in start
    data, held = payload(11, 2 * MiB + 9), payload(12, 3 * MiB)
    with notify_socket(notify_dir, mnt) as (address, notes):
        with service_process(
            start, {**env, "NOTIFY_SOCKET": address}, tmp_path / "svc.log"
        ) as proc:
            notes.wait_ready(proc)
            assert notes.ready() is True, f"no READY=1 while live: {notes.seen}"
            (mnt / "data.bin").write_bytes(data)
            fd = os.open(mnt / "held.bin", os.O_WRONLY | os.O_CREAT, 0o644) if busy else -1
            try:
                if busy:
                    os.write(fd, held)
                # PID 1 reaps its main process as soon as it exits (``kill -0`` sees zombies)
                reaper = threading.Thread(target=proc.wait, daemon=True)
                reaper.start()
                stop_env = {**env, "MAINPID": str(proc.pid)}
                for line in service["ExecStop"]:
                    done = run(expand_command(line, specifiers, stop_env), env=stop_env)
                    assert done.returncode == 0, done.stderr
                    if busy and "fusermount3" in line:  # refused, so SIGTERM did the stop
                        assert "busy" in done.stderr, done.stderr
                # systemd signals what is left once ExecStop returns: nothing may be left
                reaper.join(5)
                assert proc.returncode is not None, "ExecStop returned before s3fmfs exited"
                assert proc.returncode == 0
            finally:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        assert not is_mounted(mnt)
    assert body(s3, bucket, "data.bin") == data
    if busy:
        assert body(s3, bucket, "held.bin") == held
