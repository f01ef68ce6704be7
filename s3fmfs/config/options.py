"""Mount options: the ``MountOptions`` dataclass and the parser of ``-o a=b,c`` strings.

Invariants:
- ``OPTIONS`` lists every option the parser accepts, with its help text; ``IGNORED`` the
  fstab/mount(8) options accepted and ignored (``x-*`` and ``comment=`` with any value). An
  option in neither, a flag given a value, a value missing or malformed raises ``OptionError``
  (one line, meant for stderr), never anything else.
- Parsing is pure: no environment, no network, no file access; defaults are the dataclass
  defaults.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from .keys import normalize_prefix
from .settings import FsSettings

#: Every option: name → help. Flags take no value; the others take ``name=value``.
OPTIONS: dict[str, str] = {
    "endpoint": "URL of the S3 service, e.g. http://127.0.0.1:9000 (default https://rest.s3for.me)",
    "region": "region for Signature V4 (default us-east-1)",
    "sigv2": "sign requests with Signature V2",
    "sigv4": "sign requests with Signature V4 (the default except for S3for.me hosts)",
    "path_style": "address the bucket in the path (default when the host is an IP or localhost)",
    "virtual_host": "address the bucket as a subdomain (default for host names)",
    "ca_bundle": "PEM file (or hashed directory) of the CAs trusted for an https endpoint "
    "(default: the certifi bundle, or $SSL_CERT_FILE)",
    "no_check_certificate": "do not verify the endpoint's TLS certificate (insecure; warned)",
    "uid": "owner of objects without x-amz-meta-uid (default: the mounting user)",
    "gid": "group of objects without x-amz-meta-gid (default: the mounting user's group)",
    "umask": "octal umask applied to the default modes (default 022)",
    "file_mode": "octal mode of files without x-amz-meta-mode (default 0666 & ~umask)",
    "dir_mode": "octal mode of directories without x-amz-meta-mode (default 0777 & ~umask)",
    "nometa": "do not HEAD objects for metadata: listings only (faster; modes are defaults)",
    "stat_ttl": "seconds attributes are cached, here and in the kernel (default 5)",
    "dir_ttl": "seconds directory listings and names are cached (default 5)",
    "neg_ttl": "seconds a name found missing stays missing (default 5)",
    "ro": "mount read-only",
    "rw": "mount read-write (the default)",
    "allow_other": "let other users access the mount (needs user_allow_other for non-root)",
    "nonempty": "allow mounting over a non-empty directory (hiding its content)",
    "passwd_file": "credentials file: ACCESS:SECRET or BUCKET:ACCESS:SECRET lines, mode 0600",
    "profile": "profile of ~/.aws/credentials (default $AWS_PROFILE, else 'default')",
    "cache_dir": "directory of the write buffers (temporary files; default the system's temp dir)",
    "metacache": "on|off: keep HEADed metadata across mounts (default on; see metacache_file)",
    "metacache_file": "absolute path of the metadata cache (default CACHE/metadata.sqlite3, "
    "CACHE being cache_dir, else ~/.cache/s3fmfs)",
    "log_file": "log to this file instead of syslog/the journal when running as a daemon",
    "debug": "log every request (like -d)",
    "readahead_mb": "MiB of read-ahead all open files share, in memory (default 16)",
    "part_size_mb": "MiB of the parts of multipart uploads (default 8, at least 5; grows)",
    "upload_concurrency": "parts of one file uploaded at once (default 4)",
    "read_concurrency": "ranged GETs of one open file in flight at once (default 4)",
    "timeout": "seconds a request to the bucket is retried before the operation fails with EIO "
    "(default 120)",
    "read_timeout": "seconds a request may wait for the server to answer or take more bytes "
    "before it is retried (default 60)",
    "connect_timeout": "seconds to open a connection before the request is retried (default 10)",
    "hold_report": "seconds between the log lines of a stopping mount that holds data it could "
    "neither upload nor copy, and so does not exit (default 10)",
}

FLAGS = frozenset(
    {
        "sigv2",
        "sigv4",
        "path_style",
        "virtual_host",
        "nometa",
        "ro",
        "rw",
        "allow_other",
        "nonempty",
        "debug",
        "no_check_certificate",
    }
)

#: fstab / mount(8) options accepted and ignored (flags); ``x-*`` and ``comment=`` too.
IGNORED = frozenset(
    {
        "_netdev",
        "nofail",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "defaults",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "relatime",
        "noatime",
        "nodiratime",
        "strictatime",
        "lazytime",
        "async",
    }
)

#: How ``--help`` describes the ignored options.
IGNORED_HELP = (
    ", ".join(sorted(IGNORED))
    + ", comment=..., x-* (x-systemd.*, x-gvfs-*...): accepted for fstab and mount(8), ignored"
)


class OptionError(ValueError):
    """A bad option; ``str()`` is one line for the user."""


@dataclass
class MountOptions:
    """Everything a mount is configured with (bucket and mountpoint come separately)."""

    endpoint: str = "https://rest.s3for.me"
    region: str = "us-east-1"
    signature: str | None = None  # "v2" / "v4"; None: the client's default for the host
    path_style: bool | None = None  # None: decided from the endpoint's host
    ca_bundle: str | None = None  # None: the default trusted CAs
    no_check_certificate: bool = False
    uid: int = 0
    gid: int = 0
    umask: int = 0o022
    file_mode: int | None = None
    dir_mode: int | None = None
    nometa: bool = False
    stat_ttl: float = 5.0
    dir_ttl: float = 5.0
    neg_ttl: float = 5.0
    ro: bool = False
    allow_other: bool = False
    nonempty: bool = False
    passwd_file: str | None = None
    profile: str | None = None
    cache_dir: str | None = None
    metacache: bool = True
    metacache_file: str | None = None
    log_file: str | None = None
    debug: bool = False
    readahead_mb: int = 16
    part_size_mb: int = 8
    upload_concurrency: int = 4
    read_concurrency: int = 4
    timeout: float = 120.0
    read_timeout: float = 60.0
    connect_timeout: float = 10.0
    hold_report: float = 10.0

    @property
    def default_file_mode(self) -> int:
        """Permission bits of files without metadata."""
        return (self.file_mode if self.file_mode is not None else 0o666 & ~self.umask) & 0o7777

    @property
    def default_dir_mode(self) -> int:
        """Permission bits of directories without metadata."""
        return (self.dir_mode if self.dir_mode is not None else 0o777 & ~self.umask) & 0o7777

    def fs_settings(self) -> FsSettings:
        """What the filesystem layer needs of these options."""
        return FsSettings(
            uid=self.uid,
            gid=self.gid,
            file_mode=self.default_file_mode,
            dir_mode=self.default_dir_mode,
            nometa=self.nometa,
            ro=self.ro,
            stat_ttl=self.stat_ttl,
            dir_ttl=self.dir_ttl,
            neg_ttl=self.neg_ttl,
            readahead_mb=self.readahead_mb,
            read_concurrency=self.read_concurrency,
            part_size_mb=self.part_size_mb,
            upload_concurrency=self.upload_concurrency,
        )

    @property
    def endpoint_parts(self) -> tuple[bool, str, int]:
        """(is_secure, host, port) of the endpoint URL."""
        secure, host, port = parse_endpoint(self.endpoint)
        return secure, host, port

    @property
    def use_path_style(self) -> bool:
        """Path style when asked, else when the host is an IP address or localhost."""
        if self.path_style is not None:
            return self.path_style
        return host_wants_path_style(self.endpoint_parts[1])


def parse_endpoint(url: str) -> tuple[bool, str, int]:
    """``http(s)://host[:port]`` → (is_secure, host, port); OptionError if malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OptionError(f"endpoint: {exc}") from None
    if "@" in parts.netloc:  # never echoed: it may hold a secret
        raise OptionError(
            "endpoint must not carry user:password@ (credentials go in passwd_file= or the "
            "environment)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionError(f"endpoint must be http(s)://host[:port], not {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise OptionError(f"endpoint must not have a path or query: {url!r}")
    secure = parts.scheme == "https"
    return secure, parts.hostname, port or (443 if secure else 80)


def host_wants_path_style(host: str) -> bool:
    """IP addresses and localhost cannot carry a bucket subdomain."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _octal(name: str, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise OptionError(f"{name} must be an octal number, not {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise OptionError(f"{name} out of range: {value!r}")
    return mode


def _id(name: str, value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise OptionError(f"{name} must be a number, not {value!r}") from None
    if not 0 <= number < 2**32:
        raise OptionError(f"{name} out of range: {value!r}")
    return number


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise OptionError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 <= seconds < 1e9:
        raise OptionError(f"{name} out of range: {value!r}")
    return seconds


def _count(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise OptionError(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise OptionError(f"{name} must be between {low} and {high}, not {value!r}")
    return number


#: Bounds of the numeric I/O options (part sizes: S3 wants 5 MiB to 5 GiB).
COUNT_RANGES = {
    "readahead_mb": (0, 1 << 16),
    "part_size_mb": (1, 5 << 10),  # below 5 (S3's minimum) counts as 5
    "upload_concurrency": (1, 64),
    "read_concurrency": (1, 64),
}


def parse_options(groups: list[str], base: MountOptions | None = None) -> MountOptions:
    """Apply ``-o`` groups (each ``a=b,c,...``) over ``base`` (or the defaults)."""
    opts = dataclasses.replace(base) if base is not None else MountOptions()
    for group in groups:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, has_value, value = item.partition("=")
            if name.startswith("x-") or name == "comment":
                continue
            if name in IGNORED:
                if has_value:
                    raise OptionError(f"option {name!r} takes no value")
                continue
            if name not in OPTIONS:
                raise OptionError(f"unknown option {name!r}")
            if name in FLAGS:
                if has_value:
                    raise OptionError(f"option {name!r} takes no value")
                _set_flag(opts, name)
                continue
            if not has_value or value == "":
                raise OptionError(f"option {name!r} needs a value ({name}=...)")
            _set_value(opts, name, value)
    parse_endpoint(opts.endpoint)  # the default is valid; a base may not be
    if opts.ca_bundle and opts.no_check_certificate:
        raise OptionError("ca_bundle= and no_check_certificate contradict each other")
    return opts


def _set_flag(opts: MountOptions, name: str) -> None:
    if name == "sigv2":
        opts.signature = "v2"
    elif name == "sigv4":
        opts.signature = "v4"
    elif name == "path_style":
        opts.path_style = True
    elif name == "virtual_host":
        opts.path_style = False
    elif name == "rw":
        opts.ro = False
    else:
        setattr(opts, name, True)


def _set_value(opts: MountOptions, name: str, value: str) -> None:
    if name == "endpoint":
        parse_endpoint(value)
        opts.endpoint = value
    elif name == "region":
        opts.region = value
    elif name in ("uid", "gid"):
        setattr(opts, name, _id(name, value))
    elif name in ("umask", "file_mode", "dir_mode"):
        setattr(opts, name, _octal(name, value))
    elif name in ("stat_ttl", "dir_ttl", "neg_ttl"):
        setattr(opts, name, _seconds(name, value))
    elif name in ("timeout", "read_timeout", "connect_timeout", "hold_report"):
        seconds = _seconds(name, value)
        if seconds <= 0:
            raise OptionError(f"{name} must be more than 0 seconds, not {value!r}")
        setattr(opts, name, seconds)
    elif name in COUNT_RANGES:
        low, high = COUNT_RANGES[name]
        setattr(opts, name, _count(name, value, low, high))
    elif name in ("passwd_file", "profile", "cache_dir", "log_file", "ca_bundle"):
        setattr(opts, name, value)
    elif name == "metacache_file":
        if not value.startswith("/"):
            raise OptionError(f"metacache_file must be an absolute path, not {value!r}")
        opts.metacache_file = value
    elif name == "metacache":
        if value.lower() not in ("on", "off", "1", "0", "yes", "no", "true", "false"):
            raise OptionError(f"metacache must be on or off, not {value!r}")
        opts.metacache = value.lower() in ("on", "1", "yes", "true")
    else:  # pragma: no cover - OPTIONS and this function list the same names
        raise OptionError(f"unknown option {name!r}")


def parse_bucket(spec: str) -> tuple[str, str]:
    """``BUCKET[:/PREFIX]`` → (bucket, normalized prefix); OptionError if malformed."""
    bucket, _, prefix = spec.partition(":")
    if not bucket or "/" in bucket:
        raise OptionError(f"bad bucket {spec!r}: expected BUCKET or BUCKET:/PREFIX")
    try:
        return bucket, normalize_prefix(prefix)
    except ValueError as exc:
        raise OptionError(f"bad prefix in {spec!r}: {exc}") from None
