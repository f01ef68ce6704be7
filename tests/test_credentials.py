"""The credentials chain (:mod:`s3fmfs.config.credentials`): order, formats, permissions, profiles.

Each test builds its own HOME in ``tmp_path`` and passes an explicit environment, so nothing
from the machine running the tests (``~/.aws``, ``AWS_*``) leaks in; the system file
``/etc/passwd-s3fmfs`` is replaced by a path under ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3fmfs.config.credentials import (
    CredentialsError,
    find_credentials,
    parse_passwd,
)


class Home:
    """A temporary HOME with helpers to write each credential source."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.system = root / "etc-passwd-s3fmfs"
        self.env: dict[str, str] = {"HOME": str(root)}

    def passwd(self, path: Path, text: str, mode: int = 0o600) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def user_passwd(self, text: str, mode: int = 0o600) -> Path:
        return self.passwd(self.root / ".passwd-s3fmfs", text, mode)

    def aws(self, text: str) -> Path:
        return self.passwd(self.root / ".aws" / "credentials", text, 0o600)

    def find(self, bucket: str = "bkt", **kwargs: str | None) -> tuple[str, str, str | None, str]:
        creds = find_credentials(
            bucket, environ=self.env, system_passwd_file=str(self.system), **kwargs
        )
        return creds.access_key_id, creds.secret_access_key, creds.session_token, creds.source


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


AWS_FILE = """\
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = default/secret+%x

[work]
aws_access_key_id=WORKKEY
aws_secret_access_key=worksecret
aws_session_token=worktoken
"""


def test_chain_order(home: Home, tmp_path: Path) -> None:
    """Each source wins over every later one; removing it reveals the next."""
    option_file = home.passwd(tmp_path / "opt-passwd", "OPTKEY:optsecret\n")
    home.passwd(home.system, "SYSKEY:syssecret\n")
    home.user_passwd("USERKEY:usersecret\n")
    home.aws(AWS_FILE)
    home.env.update(
        S3FMFS_ACCESS_KEY_ID="S3FMFSKEY",
        S3FMFS_SECRET_ACCESS_KEY="s3fmfssecret",
        AWS_ACCESS_KEY_ID="ENVKEY",
        AWS_SECRET_ACCESS_KEY="envsecret",
        AWS_SESSION_TOKEN="envtoken",
    )
    assert home.find(passwd_file=str(option_file))[:2] == ("OPTKEY", "optsecret")
    assert home.find()[:3] == ("S3FMFSKEY", "s3fmfssecret", None)
    for name in ("S3FMFS_ACCESS_KEY_ID", "S3FMFS_SECRET_ACCESS_KEY"):
        del home.env[name]
    assert home.find() == ("ENVKEY", "envsecret", "envtoken", "environment (AWS_ACCESS_KEY_ID)")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        del home.env[name]
    assert home.find()[:3] == ("DEFAULTKEY", "default/secret+%x", None)
    (home.root / ".aws" / "credentials").unlink()
    assert home.find()[:2] == ("USERKEY", "usersecret")
    (home.root / ".passwd-s3fmfs").unlink()
    assert home.find()[:2] == ("SYSKEY", "syssecret")
    home.system.unlink()
    with pytest.raises(CredentialsError, match="no credentials"):
        home.find()


def test_passwd_formats() -> None:
    text = """
# a comment, then a blank line

OTHER:otherkey:othersecret
GENERICKEY:genericsecret
  bkt : BKTKEY : bktsecret
SECONDGENERIC:ignored
"""
    assert parse_passwd(text, "bkt") == ("BKTKEY", "bktsecret")  # the bucket's line wins
    assert parse_passwd(text, "OTHER") == ("otherkey", "othersecret")
    assert parse_passwd(text, "other") == ("GENERICKEY", "genericsecret")  # case matters
    assert parse_passwd(text, "unknown") == ("GENERICKEY", "genericsecret")  # first generic
    assert parse_passwd("OTHER:k:s\n", "bkt") is None
    assert parse_passwd("# only comments\n\n", "bkt") is None


@pytest.mark.parametrize("line", ["onlyone", "a:b:c:d", "bkt::secret", "key:", ":secret"])
def test_malformed_passwd_line_names_the_line_not_the_secret(line: str) -> None:
    with pytest.raises(CredentialsError) as info:
        parse_passwd(f"# first\n{line}\n", "bkt", "passwd file F")
    assert "passwd file F line 2" in str(info.value)
    assert "secret" not in str(info.value).replace("ACCESS:SECRET", "")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620])
def test_passwd_file_readable_by_others_is_refused(home: Home, tmp_path: Path, mode: int) -> None:
    path = home.passwd(tmp_path / "pw", "KEY:secret\n", mode)
    with pytest.raises(CredentialsError, match=r"group or others.*chmod 600"):
        home.find(passwd_file=str(path))
    # the same rule for the default files
    home.user_passwd("KEY:secret\n", mode)
    with pytest.raises(CredentialsError, match="group or others"):
        home.find()
    (home.root / ".passwd-s3fmfs").unlink()
    home.passwd(home.system, "KEY:secret\n", mode)
    with pytest.raises(CredentialsError, match="group or others"):
        home.find()


@pytest.mark.parametrize("mode", [0o700, 0o500, 0o100])
def test_executable_passwd_file_is_refused(home: Home, tmp_path: Path, mode: int) -> None:
    """s3fs refuses a credentials file with an execute bit, even one only its owner has."""
    path = home.passwd(tmp_path / "pw", "KEY:secret\n", mode)
    with pytest.raises(CredentialsError) as info:
        home.find(passwd_file=str(path))
    assert str(info.value) == (
        f"passwd file {path} is executable (mode {mode:04o}): run chmod 600 {path}"
    )
    home.user_passwd("KEY:secret\n", mode)  # the same rule for the default files
    with pytest.raises(CredentialsError, match="is executable"):
        home.find()


def test_passwd_file_option_must_serve_the_bucket(home: Home, tmp_path: Path) -> None:
    path = home.passwd(tmp_path / "pw", "other:KEY:secret\n")
    with pytest.raises(CredentialsError, match="no line for bucket 'bkt'"):
        home.find(passwd_file=str(path))
    with pytest.raises(CredentialsError, match="cannot read passwd file"):
        home.find(passwd_file=str(tmp_path / "missing"))
    assert home.find("other", passwd_file=str(path))[:2] == ("KEY", "secret")
    # a default passwd file without a line for the bucket is skipped, not an error
    home.user_passwd("other:KEY:secret\n")
    home.passwd(home.system, "SYSKEY:syssecret\n")
    assert home.find()[:2] == ("SYSKEY", "syssecret")


def test_profiles(home: Home) -> None:
    home.aws(AWS_FILE)
    assert home.find()[:3] == ("DEFAULTKEY", "default/secret+%x", None)
    work = home.find(profile="work")
    assert work[:3] == ("WORKKEY", "worksecret", "worktoken") and "'work'" in work[3]
    home.env["AWS_PROFILE"] = "work"
    assert home.find()[0] == "WORKKEY"
    assert home.find(profile="default")[0] == "DEFAULTKEY"  # the option beats AWS_PROFILE
    with pytest.raises(CredentialsError, match="profile 'nosuch' not found"):
        home.find(profile="nosuch")
    # AWS_PROFILE naming a missing section: the chain goes on
    home.env["AWS_PROFILE"] = "nosuch"
    home.user_passwd("USERKEY:usersecret\n")
    assert home.find()[0] == "USERKEY"
    # AWS_SHARED_CREDENTIALS_FILE moves the file
    other = home.passwd(
        home.root / "elsewhere", "[x]\naws_access_key_id=X\naws_secret_access_key=Y\n"
    )
    home.env["AWS_SHARED_CREDENTIALS_FILE"] = str(other)
    assert home.find(profile="x")[:2] == ("X", "Y")


def test_incomplete_sources_are_errors(home: Home) -> None:
    home.env["AWS_ACCESS_KEY_ID"] = "K"
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY is not"):
        home.find()
    home.env.clear()
    home.env.update(HOME=str(home.root), S3FMFS_SECRET_ACCESS_KEY="s")
    with pytest.raises(CredentialsError, match="S3FMFS_ACCESS_KEY_ID is not"):
        home.find()
    del home.env["S3FMFS_SECRET_ACCESS_KEY"]
    home.aws("[default]\naws_access_key_id = K\n")
    with pytest.raises(CredentialsError, match="lacks"):
        home.find()
    home.aws("not an ini file")
    with pytest.raises(CredentialsError, match="cannot parse"):
        home.find()


def test_repr_hides_the_secret(home: Home) -> None:
    home.env.update(AWS_ACCESS_KEY_ID="K", AWS_SECRET_ACCESS_KEY="hidden", AWS_SESSION_TOKEN="tok")
    creds = find_credentials("b", environ=home.env, system_passwd_file=str(home.system))
    assert "hidden" not in repr(creds) and "tok" not in repr(creds) and "K" in repr(creds)


def test_cli_uses_the_chain_and_reports_refusals(home: Home, tmp_path: Path) -> None:
    """The command reads the same chain: a world-readable passwd file is one line (naming the
    mount point, as every error of the mount form does), exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3FMFS_"))} | {
        "HOME": str(home.root)
    }
    home.user_passwd("KEY:secret\n", 0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "s3fmfs.commands.cli", "bkt", str(mnt)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"s3fmfs: {mnt}: passwd file {home.root}/.passwd-s3fmfs is accessible by group or others "
        f"(mode 0644): run chmod 600 {home.root}/.passwd-s3fmfs"
    ]
