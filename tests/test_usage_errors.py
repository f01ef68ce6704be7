"""Errors that name their cause, and the sources and settings people type (issue 13).

- The mount form's source may be ``s3://BUCKET[/PREFIX]`` (the aws CLI's), like ``BUCKET:/PREFIX``.
- Missing arguments print the usage line and the error (exit 2); every error of the mount form
  and of ``mount.s3fmfs`` names the mount point; ``mount.s3fmfs --help``/``--version`` work.
- The endpoint and region come from ``$AWS_ENDPOINT_URL_S3``/``$AWS_ENDPOINT_URL`` and
  ``~/.aws/config`` when ``-o`` does not give them (``-o`` > environment > file > default), for
  the mount, ``ls`` and ``presign``.
- What libfuse and fusermount3 print while mounting reaches the failure line: a non-root
  ``allow_other`` without ``user_allow_other`` says so, in daemon mode and with ``-f``.

The first part runs in-process; the rest (marked) runs the command over moto.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3fmfs.commands import cli, mount_helper
from s3fmfs.commands.common import UsageError, parse_command_options
from s3fmfs.config.credentials import find_service_settings
from s3fmfs.config.options import OptionError, parse_bucket
from s3fmfs.service.daemon import about
from s3fmfs.service.mount import captured_reason, stderr_captured
from tests.support.mount import daemons_of, is_mounted, s3fmfs_command, unmount
from tests.support.servers import S3Server, unique_bucket

DEFAULT_ENDPOINT = "https://rest.s3for.me"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own, and no AWS_* variable from ours."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3FMFS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".aws").mkdir()
    return tmp_path


def write_config(home: Path, text: str) -> None:
    (home / ".aws" / "config").write_text(text)


# --------------------------------------------------------------------------- in-process


def test_s3_url_is_a_source() -> None:
    assert parse_bucket("s3://bkt") == ("bkt", "")
    assert parse_bucket("s3://bkt/") == ("bkt", "")
    assert parse_bucket("s3://bkt/some/prefix") == ("bkt", "some/prefix/")
    assert parse_bucket("s3://bkt/some//prefix/") == parse_bucket("bkt:/some/prefix")
    assert parse_bucket("s3://") == ("", "")  # every bucket of the account (fs/buckets.py)
    for bad in ("s3:///x", "s3://a:b/c", "s3://bkt/../x"):
        with pytest.raises(OptionError):
            parse_bucket(bad)
    assert parse_bucket("bkt:/p") == ("bkt", "p/")  # the usual form is unchanged


def test_missing_arguments_print_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["bucket"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2, err
        assert err[0].startswith("usage: s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o ")
        assert err[1].startswith("s3fmfs: ") and "MOUNTPOINT" in err[1]


def test_mount_form_errors_name_the_mount_point(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with pytest.raises(SystemExit) as exited:
        cli.main(["bkt", str(mnt), "-o", "x"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == f"s3fmfs: {mnt}: unknown option 'x'"
    # a message naming it already is not prefixed again
    with pytest.raises(SystemExit):
        cli.main(["bkt", str(tmp_path / "gone")])
    err = capsys.readouterr().err.strip()
    assert err == f"s3fmfs: mountpoint {tmp_path / 'gone'} does not exist"
    assert about("/mnt/b", "no such bucket 'x'") == "/mnt/b: no such bucket 'x'"
    assert about("/mnt/b", "cannot mount on /mnt/b: busy") == "cannot mount on /mnt/b: busy"


def test_helper_help_version_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "-h"):
        assert mount_helper.main([flag]) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: mount.s3fmfs ") and "endpoint=URL" in out
        assert "passwd_file" in out and "fstab" in out
    for flag in ("--version", "-V"):
        assert mount_helper.main([flag]) == 0
        assert capsys.readouterr().out.startswith("mount.s3fmfs (s3fmfs ")
    assert mount_helper.main(["bkt", "/mnt/b", "-x"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "mount.s3fmfs: /mnt/b: unknown flag -x" and err[1].startswith("usage: ")
    assert mount_helper.main(["bkt", "/mnt/b", "-t", "ext4"]) == 1
    assert capsys.readouterr().err.startswith("mount.s3fmfs: /mnt/b: filesystem type 'ext4'")
    # fstab's s3:// source goes to s3fmfs as written
    args = mount_helper.parse_args(["s3://bkt/pre", "/mnt/b", "-o", "rw,_netdev,ro"])
    assert mount_helper.build_command(args)[-4:] == ["s3://bkt/pre", "/mnt/b", "-o", "ro"]


def test_service_settings_from_config_file(home: Path) -> None:
    assert find_service_settings() == find_service_settings()  # nothing: all None
    assert find_service_settings().endpoint is None
    write_config(
        home,
        "[default]\nendpoint_url = http://127.0.0.1:9000/\nregion = eu-west-2\n"
        "[profile dev]\nservices = local\nendpoint_url = http://dev.example:1\n"
        "[services local]\ns3 =\n  endpoint_url = http://127.0.0.1:4566\n"
        "[profile nested]\ns3 =\n  endpoint_url = http://nested.example:2\n"
        "[profile bare]\nregion = ap-south-1\n",
    )
    default = find_service_settings()
    assert (default.endpoint, default.region) == ("http://127.0.0.1:9000", "eu-west-2")
    assert "config" in default.source
    assert find_service_settings(profile="dev").endpoint == "http://127.0.0.1:4566"
    assert find_service_settings(profile="nested").endpoint == "http://nested.example:2"
    bare = find_service_settings(profile="bare")
    assert (bare.endpoint, bare.region) == (None, "ap-south-1")
    env = {"HOME": str(home), "AWS_PROFILE": "dev"}
    assert find_service_settings(environ=env).endpoint == "http://127.0.0.1:4566"
    env["AWS_ENDPOINT_URL"] = "http://generic.example:3"
    assert find_service_settings(environ=env).endpoint == "http://generic.example:3"
    env["AWS_ENDPOINT_URL_S3"] = "http://s3.example:4"
    assert find_service_settings(environ=env).endpoint == "http://s3.example:4"
    other = home / "other-config"
    other.write_text("[default]\nendpoint_url = http://other.example:5\n")
    env = {"HOME": str(home), "AWS_CONFIG_FILE": str(other)}
    assert find_service_settings(environ=env).endpoint == "http://other.example:5"


def test_option_beats_environment_beats_file_beats_default(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_command_options([]).endpoint == DEFAULT_ENDPOINT
    write_config(home, "[default]\nendpoint_url = http://file.example:1\nregion = r-file\n")
    assert parse_command_options([]).endpoint == "http://file.example:1"
    assert parse_command_options([]).region == "r-file"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env.example:2")
    assert parse_command_options([]).endpoint == "http://env.example:2"
    given = parse_command_options(["endpoint=http://opt.example:3,region=r-opt"])
    assert (given.endpoint, given.region) == ("http://opt.example:3", "r-opt")
    # -o profile= picks the config's profile too
    write_config(home, "[profile p]\nendpoint_url = http://p.example:4\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert parse_command_options(["profile=p"]).endpoint == "http://p.example:4"
    # a malformed endpoint says where it came from; ignored when -o gives one
    write_config(home, "[default]\nendpoint_url = ftp://nope\n")
    with pytest.raises(UsageError, match="config"):
        parse_command_options([])
    assert parse_command_options(["endpoint=http://ok.example"]).endpoint == "http://ok.example"


def test_s3fs_names_of_endpoint_and_region_count_as_given(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``url=`` (s3fs's name of the endpoint) beats the environment; s3fs's
    ``endpoint=REGION`` gives the region only, so the endpoint still comes from it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env.example:2")
    write_config(home, "[default]\nregion = r-file\n")
    assert parse_command_options(["url=http://s3fs.example:7"]).endpoint == "http://s3fs.example:7"
    regional = parse_command_options(["endpoint=eu-west-1"])
    assert (regional.endpoint, regional.region) == ("http://env.example:2", "eu-west-1")


def test_stderr_captured_collects_what_children_write(capfd: pytest.CaptureFixture[str]) -> None:
    with stderr_captured() as found:
        subprocess.run(
            ["sh", "-c", "echo 'fusermount3: option allow_other only allowed' >&2"], check=True
        )
        os.write(2, b"fuse: second line\n")
    assert captured_reason("".join(found)) == (
        "fusermount3: option allow_other only allowed; fuse: second line"
    )
    assert "second line" in capfd.readouterr().err  # still written on to the real stderr
    with stderr_captured() as nothing:
        pass
    assert nothing == [""]


# --------------------------------------------------------------------------- commands over moto


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "S3FMFS_")) and k not in ("HOME", "XDG_CACHE_HOME")
    }
    env.update(HOME=str(home), **extra)
    return env


def s3fmfs(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*s3fmfs_command(), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def end_mount(mnt: Path) -> None:
    problems = unmount(mnt)
    deadline = time.monotonic() + 30
    while daemons_of(mnt) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not problems and not daemons_of(mnt), problems


needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
)


@pytest.mark.system
def test_ls_and_presign_use_the_config_endpoint(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    bucket = unique_bucket("cfg")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k.txt", Body=b"abc")
    (tmp_path / ".aws").mkdir()
    write_config(tmp_path, f"[profile m]\nendpoint_url = {moto.endpoint}\nregion = us-east-1\n")
    env = clean_env(
        tmp_path, AWS_PROFILE="m", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    )
    listed = s3fmfs("ls", f"s3://{bucket}", env=env)
    assert listed.returncode == 0 and listed.stdout.split()[-1] == "k.txt", listed.stderr
    url = s3fmfs("presign", f"{bucket}/k.txt", env=env)
    assert url.returncode == 0 and url.stdout.startswith(f"{moto.endpoint}/{bucket}/k.txt?")
    # the environment wins over the file: a dead endpoint there fails the listing
    env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"
    dead = s3fmfs("ls", bucket, env=env)
    assert dead.returncode == 1 and "127.0.0.1:9" in dead.stderr, dead.stderr


@pytest.mark.system
@pytest.mark.mounted
@needs_fuse
def test_mount_s3_url_with_the_config_endpoint(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    """``s3fmfs s3://BUCKET/PREFIX MNT`` with no -o at all: endpoint from ~/.aws/config."""
    bucket = unique_bucket("url")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="pre/in.txt", Body=b"inside\n")
    s3.put_object(Bucket=bucket, Key="out.txt", Body=b"outside\n")
    (tmp_path / ".aws").mkdir()
    write_config(tmp_path, f"[default]\nendpoint_url = {moto.endpoint}\n")
    mnt = (tmp_path / "mnt").resolve()
    mnt.mkdir()
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        done = s3fmfs(f"s3://{bucket}/pre", mnt, env=env)
        assert done.returncode == 0, done.stderr
        assert is_mounted(mnt) and sorted(os.listdir(mnt)) == ["in.txt"]
    finally:
        end_mount(mnt)
    # a missing bucket's failure names the mount point (what mount -a shows)
    done = s3fmfs(f"s3://{unique_bucket('none')}", mnt, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"s3fmfs: {mnt}: no such bucket"), done.stderr


def _user_allow_other() -> bool:
    try:
        text = Path("/etc/fuse.conf").read_text()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in text.splitlines())


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody (65534) can use: its HOME, a mount point it owns, and ``fuse``, a
    0666 copy of /dev/fuse's node (bound over /dev/fuse in a private mount namespace where
    the real node is 0600)."""
    base = Path(tempfile.mkdtemp(prefix="s3fmfs-nobody-"))
    try:
        base.chmod(0o755)
        for name in ("home", "mnt"):
            (base / name).mkdir()
            os.chown(base / name, 65534, 65534)
        try:
            os.mknod(base / "fuse", 0o666 | stat.S_IFCHR, os.stat("/dev/fuse").st_rdev)
            os.chmod(base / "fuse", 0o666)
        except OSError as exc:
            pytest.skip(f"cannot make a copy of /dev/fuse's node: {exc}")
        yield base
    finally:
        if is_mounted(base / "mnt"):
            end_mount(base / "mnt")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.system
@pytest.mark.mounted
@needs_fuse
@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_fusermount_reason_reaches_the_terminal(
    moto: S3Server, s3: Any, nobody_dir: Path, foreground: bool
) -> None:
    """As a user, allow_other without user_allow_other: fusermount3's reason, not only
    libfuse's ``fuse_session_mount failed``."""
    fusermount = shutil.which("fusermount3")
    tools = ("setpriv", "unshare", "mount")
    if os.geteuid() != 0 or fusermount is None or not all(shutil.which(t) for t in tools):
        pytest.skip("needs root, unshare(1) and setpriv(1) to run as nobody")
    if not os.stat(fusermount).st_mode & stat.S_ISUID:
        pytest.skip("fusermount3 is not setuid: a user cannot mount at all")
    if _user_allow_other():
        pytest.skip("/etc/fuse.conf has user_allow_other: allow_other is allowed")
    bucket = unique_bucket("user")
    s3.create_bucket(Bucket=bucket)
    mnt = nobody_dir / "mnt"
    env = clean_env(
        nobody_dir / "home", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    env["F"] = str(nobody_dir / "fuse")
    argv = [*s3fmfs_command(), bucket, str(mnt), "-o", f"endpoint={moto.endpoint},allow_other"]
    if foreground:
        argv.append("-f")
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    script = 'mount --bind "$F" /dev/fuse && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *user, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert not is_mounted(mnt)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if "cannot mount" in line]
    if not foreground:  # the daemon's parent prints one line; the log has the rest
        assert done.stderr.strip().splitlines() == lines, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"s3fmfs: cannot mount on {mnt}: "), lines[0]
    assert "user_allow_other" in lines[0], lines[0]
