"""Where the access key and secret come from: the s3fs-style chain, first found wins.

Order:

1. ``passwd_file=`` (the mount option), s3fs format;
2. ``S3FMFS_ACCESS_KEY_ID`` / ``S3FMFS_SECRET_ACCESS_KEY`` (``S3FMFS_SESSION_TOKEN``);
3. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``);
4. ``~/.aws/credentials`` (``$AWS_SHARED_CREDENTIALS_FILE``), section ``profile=``, else
   ``$AWS_PROFILE``, else ``default``; ``aws_session_token`` too;
5. ``~/.passwd-s3fmfs``, then ``/etc/passwd-s3fmfs`` (s3fs format).

Invariants:
- s3fs format: ``ACCESS:SECRET`` or ``BUCKET:ACCESS:SECRET`` lines; a line naming the bucket
  wins over a generic one; blank lines and ``#`` comments are ignored; a malformed line is an
  error naming its line number (never its content: it may hold a secret).
- A passwd file with any permission bit for group or others, or any execute bit, is refused
  with a clear message, as s3fs does; so is one that is not a regular file.
- Explicit choices fail loudly: ``passwd_file=`` that does not give the bucket a key pair, a
  ``profile=`` that does not exist, or only one of a pair of variables set, raise
  ``CredentialsError``. Only the implicit sources (``$AWS_PROFILE``'s section, the default
  profile, the two default passwd files) are skipped when absent.
- ``Credentials`` never shows the secret or the token: its ``repr`` hides them and ``source``
  says where they came from (what gets logged).

The endpoint and region (not secrets) come from the AWS CLI's places too, when no ``-o`` option
gives them (:func:`find_service_settings`): ``$AWS_ENDPOINT_URL_S3``, then ``$AWS_ENDPOINT_URL``,
then ``~/.aws/config`` (``$AWS_CONFIG_FILE``): the profile's ``[services NAME]`` section's
``s3 = endpoint_url = ...``, its own ``s3 = endpoint_url = ...``, then its ``endpoint_url``;
``region`` from the profile. The profile is the same one as for the key pair (``[default]``, or
``[profile NAME]``). A file that cannot be parsed is an error only when a profile was named.
"""

from __future__ import annotations

import configparser
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PASSWD_FILE = "/etc/passwd-s3fmfs"
USER_PASSWD_FILE = ".passwd-s3fmfs"


class CredentialsError(Exception):
    """No usable credentials; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Credentials:
    """A key pair (and session token), with where it was found."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME")
    return Path(home) if home else Path(os.path.expanduser("~"))


def check_private(path: Path) -> None:
    """Refuse a passwd file that is not a regular file, that group or others can access, or
    that is executable (s3fs refuses both)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CredentialsError(f"cannot read passwd file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"passwd file {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"passwd file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}"
        )
    if st.st_mode & stat.S_IXUSR:
        raise CredentialsError(
            f"passwd file {path} is executable "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}"
        )


def parse_passwd(text: str, bucket: str, name: str = "passwd file") -> tuple[str, str] | None:
    """The (access, secret) of ``bucket`` in s3fs-format ``text``; None if no line applies."""
    generic: tuple[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [part.strip() for part in line.split(":")]
        if len(fields) not in (2, 3) or not all(fields[-2:]):
            raise CredentialsError(
                f"{name} line {number}: expected ACCESS:SECRET or BUCKET:ACCESS:SECRET"
            )
        if len(fields) == 3:
            if fields[0] == bucket:
                return fields[1], fields[2]
        elif generic is None:
            generic = (fields[0], fields[1])
    return generic


def read_passwd_file(path: Path, bucket: str) -> Credentials | None:
    """Credentials for ``bucket`` from an s3fs-format file (permissions checked first)."""
    check_private(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read passwd file {path}: {exc}") from None
    pair = parse_passwd(text, bucket, f"passwd file {path}")
    if pair is None:
        return None
    return Credentials(pair[0], pair[1], None, f"passwd file {path}")


def _from_env(environ: Mapping[str, str], prefix: str) -> Credentials | None:
    access_name, secret_name = f"{prefix}_ACCESS_KEY_ID", f"{prefix}_SECRET_ACCESS_KEY"
    access = environ.get(access_name, "")
    secret = environ.get(secret_name, "")
    if not access and not secret:
        return None
    if not access or not secret:
        missing = access_name if not access else secret_name
        present = secret_name if not access else access_name
        raise CredentialsError(f"{present} is set but {missing} is not")
    token = environ.get(f"{prefix}_SESSION_TOKEN") or None
    return Credentials(access, secret, token, f"environment ({access_name})")


def read_aws_profile(path: Path, profile: str, *, required: bool) -> Credentials | None:
    """The key pair of ``[profile]`` in an AWS shared credentials file."""
    if not path.exists():
        if required:
            raise CredentialsError(f"profile {profile!r}: {path} does not exist")
        return None
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CredentialsError(f"cannot parse {path}: {message}") from None
    if not parser.has_section(profile):
        if required:
            raise CredentialsError(f"profile {profile!r} not found in {path}")
        return None
    section = parser[profile]
    access = section.get("aws_access_key_id", "").strip()
    secret = section.get("aws_secret_access_key", "").strip()
    if not access or not secret:
        raise CredentialsError(
            f"profile {profile!r} in {path} lacks aws_access_key_id or aws_secret_access_key"
        )
    token = section.get("aws_session_token", "").strip() or None
    return Credentials(access, secret, token, f"{path} profile {profile!r}")


def find_credentials(
    bucket: str,
    *,
    passwd_file: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
    system_passwd_file: str = SYSTEM_PASSWD_FILE,
) -> Credentials:
    """The first credentials of the chain (see the module docstring); CredentialsError if none."""
    env = os.environ if environ is None else environ
    if passwd_file:
        found = read_passwd_file(Path(passwd_file), bucket)
        if found is None:
            raise CredentialsError(f"passwd file {passwd_file} has no line for bucket {bucket!r}")
        return found
    for prefix in ("S3FMFS", "AWS"):
        found = _from_env(env, prefix)
        if found is not None:
            return found
    home = _home(env)
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(home / ".aws" / "credentials")
    name = profile or env.get("AWS_PROFILE") or "default"
    found = read_aws_profile(Path(shared), name, required=profile is not None)
    if found is not None:
        return found
    for path in (home / USER_PASSWD_FILE, Path(system_passwd_file)):
        if path.exists():
            found = read_passwd_file(path, bucket)
            if found is not None:
                return found
    raise CredentialsError(
        "no credentials: set S3FMFS_ACCESS_KEY_ID/S3FMFS_SECRET_ACCESS_KEY or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use -o passwd_file=, -o profile=, "
        f"~/.aws/credentials, ~/{USER_PASSWD_FILE} or {system_passwd_file}"
    )


@dataclass(frozen=True)
class ServiceSettings:
    """The endpoint and region found in the environment or ``~/.aws/config`` (None: not set)."""

    endpoint: str | None = None
    region: str | None = None
    source: str = ""


def _nested(value: str) -> dict[str, str]:
    """``s3 =`` followed by indented ``key = value`` lines (a value of several lines)."""
    found = {}
    for line in value.splitlines():
        key, sep, item = line.partition("=")
        if sep and key.strip():
            found[key.strip().lower()] = item.strip()
    return found


def find_service_settings(
    *, profile: str | None = None, environ: Mapping[str, str] | None = None
) -> ServiceSettings:
    """The endpoint and region of the AWS CLI's configuration (see the module docstring)."""
    env = os.environ if environ is None else environ
    name = profile or env.get("AWS_PROFILE") or "default"
    path = Path(env.get("AWS_CONFIG_FILE") or str(_home(env) / ".aws" / "config"))
    endpoint = region = None
    sources = []
    section: Mapping[str, str] = {}
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        if path.exists():
            parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        if profile is not None:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CredentialsError(f"cannot parse {path}: {message}") from None
        parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    title = "default" if name == "default" else f"profile {name}"
    for candidate in (title, name):  # [default] may be written [profile default]
        if parser.has_section(candidate):
            section = parser[candidate]
            break
    if section:
        services = section.get("services", "").strip()
        candidates = []
        if services and parser.has_section(f"services {services}"):
            candidates.append(_nested(parser[f"services {services}"].get("s3", "")))
        candidates.append(_nested(section.get("s3", "")))
        candidates.append({"endpoint_url": section.get("endpoint_url", "")})
        for values in candidates:
            if values.get("endpoint_url", "").strip():
                endpoint = values["endpoint_url"].strip()
                break
        region = section.get("region", "").strip() or None
    if endpoint or region:
        sources.append(f"{path} profile {name!r}")
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # the latter wins
        if env.get(variable, "").strip():
            endpoint = env[variable].strip()
            sources.append(f"${variable}")
    if endpoint:
        endpoint = endpoint.rstrip("/")
    return ServiceSettings(endpoint, region, ", ".join(sources))
