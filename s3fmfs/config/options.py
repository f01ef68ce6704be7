"""Mount options: the ``MountOptions`` dataclass, which declares every option, and the parser of
``-o a=b,c`` strings.

Invariants:
- Each option is declared once, on the field it sets (:func:`s3fmfs.config.table.option`):
  ``OPTIONS`` (name → :class:`~s3fmfs.config.table.Option`) is derived from the dataclass, so
  the parser, ``--help`` and ``docs/CONFIGURATION.md`` cannot disagree with it.
- An option in neither ``OPTIONS`` nor ``IGNORED`` (fstab/mount(8) options; ``x-*`` and
  ``comment=`` with any value), a flag given a value, a value missing or malformed raises
  ``OptionError`` (one line, meant for stderr), never anything else.
- Parsing is pure: no environment, no network, no file access; defaults are the dataclass
  defaults.
- ``fs_settings()`` is the only way the fs layer sees these options.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..fs.keys import normalize_prefix
from ..fs.settings import FsSettings
from .table import FSTAB_ONLY, FSTAB_ONLY_HELP, Option, OptionError, collect, index, option

__all__ = [
    "DECLARED",
    "IGNORED",
    "IGNORED_HELP",
    "OPTIONS",
    "MountOptions",
    "Option",
    "OptionError",
    "parse_bucket",
    "parse_endpoint",
    "parse_options",
]


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


S3 = "The S3 service"
OWNERS = "Owners and modes"
CACHES = "Caches"
MOUNT = "The mount"
FILES = "Credentials and files"
IO = "Reads and uploads"
TIMEOUTS = "Timeouts"
ON_OFF = {"on": True, "off": False}
ON_OFF_SYNONYMS = {"1": "on", "yes": "on", "true": "on", "0": "off", "no": "off", "false": "off"}


@dataclass
class MountOptions:
    """Everything a mount is configured with (bucket and mountpoint come separately)."""

    endpoint: str = option(
        "https://rest.s3for.me",
        Option(
            "endpoint",
            "str",
            "URL of the S3 service, e.g. http://127.0.0.1:9000",
            check=parse_endpoint,
            metavar="URL",
        ),
        group=S3,
    )
    region: str = option("us-east-1", Option("region", "str", "region for Signature V4"), group=S3)
    signature: str | None = option(  # "v2" / "v4"; None: the client's default for the host
        None,
        Option("sigv2", "flag", "sign requests with Signature V2", sets="v2"),
        Option(
            "sigv4",
            "flag",
            "sign requests with Signature V4",
            sets="v4",
            default_text="the default except for S3for.me hosts",
        ),
        group=S3,
    )
    path_style: bool | None = option(  # None: decided from the endpoint's host
        None,
        Option(
            "path_style",
            "flag",
            "address the bucket in the path",
            default_text="the default when the host is an IP address or localhost",
        ),
        Option(
            "virtual_host",
            "flag",
            "address the bucket as a subdomain",
            sets=False,
            default_text="the default for host names",
        ),
        group=S3,
    )
    ca_bundle: str | None = option(  # None: the default trusted CAs
        None,
        Option(
            "ca_bundle",
            "path",
            "PEM file (or hashed directory) of the CAs trusted for an https endpoint",
            default_text="the certifi bundle, or $SSL_CERT_FILE",
        ),
        group=S3,
    )
    no_check_certificate: bool = option(
        False,
        Option(
            "no_check_certificate",
            "flag",
            "do not verify the endpoint's TLS certificate (insecure; warned)",
        ),
        group=S3,
    )
    uid: int = option(
        0,
        Option(
            "uid",
            "id",
            "owner of objects without x-amz-meta-uid",
            default_text="the mounting user",
        ),
        group=OWNERS,
    )
    gid: int = option(
        0,
        Option(
            "gid",
            "id",
            "group of objects without x-amz-meta-gid",
            default_text="the mounting user's group",
        ),
        group=OWNERS,
    )
    umask: int = option(
        0o022, Option("umask", "octal", "umask applied to the default modes"), group=OWNERS
    )
    file_mode: int | None = option(
        None,
        Option(
            "file_mode",
            "octal",
            "mode of files without x-amz-meta-mode",
            default_text="0666 & ~umask",
        ),
        group=OWNERS,
    )
    dir_mode: int | None = option(
        None,
        Option(
            "dir_mode",
            "octal",
            "mode of directories without x-amz-meta-mode",
            default_text="0777 & ~umask",
        ),
        group=OWNERS,
    )
    nometa: bool = option(
        False,
        Option(
            "nometa",
            "flag",
            "do not HEAD objects for metadata: listings only (faster; modes are defaults)",
        ),
        group=OWNERS,
    )
    stat_ttl: float = option(
        5.0,
        Option("stat_ttl", "float", "seconds attributes are cached, here and in the kernel"),
        group=CACHES,
    )
    dir_ttl: float = option(
        5.0,
        Option("dir_ttl", "float", "seconds directory listings and names are cached"),
        group=CACHES,
    )
    neg_ttl: float = option(
        5.0, Option("neg_ttl", "float", "seconds a name found missing stays missing"), group=CACHES
    )
    ro: bool = option(
        False,
        Option("ro", "flag", "mount read-only"),
        Option("rw", "flag", "mount read-write", sets=False),
        group=MOUNT,
    )
    allow_other: bool = option(
        False,
        Option(
            "allow_other",
            "flag",
            "let other users access the mount (needs user_allow_other for non-root)",
        ),
        group=MOUNT,
    )
    nonempty: bool = option(
        False,
        Option(
            "nonempty", "flag", "allow mounting over a non-empty directory (hiding its content)"
        ),
        group=MOUNT,
    )
    passwd_file: str | None = option(
        None,
        Option(
            "passwd_file",
            "path",
            "credentials file: ACCESS:SECRET or BUCKET:ACCESS:SECRET lines, mode 0600",
        ),
        group=FILES,
    )
    profile: str | None = option(
        None,
        Option(
            "profile",
            "str",
            "profile of ~/.aws/credentials",
            default_text="$AWS_PROFILE, else 'default'",
        ),
        group=FILES,
    )
    cache_dir: str | None = option(
        None,
        Option(
            "cache_dir",
            "path",
            "directory of the write buffers (temporary files), recovery copies, upload journal "
            "and metadata cache",
            default_text="$XDG_CACHE_HOME/s3fmfs, else ~/.cache/s3fmfs; write buffers in the "
            "system's temporary directory",
        ),
        group=FILES,
    )
    metacache: bool = option(
        True,
        Option(
            "metacache",
            "enum",
            "keep HEADed metadata across mounts, in metacache_file",
            choices=ON_OFF,
            synonyms=ON_OFF_SYNONYMS,
        ),
        group=FILES,
    )
    metacache_file: str | None = option(
        None,
        Option(
            "metacache_file",
            "path",
            "path of the metadata cache",
            absolute=True,
            default_text="metadata.sqlite3 in the cache directory",
        ),
        group=FILES,
    )
    log_file: str | None = option(
        None,
        Option(
            "log_file",
            "path",
            "log to this file instead of syslog/the journal when running as a daemon",
        ),
        group=FILES,
    )
    debug: bool = option(False, Option("debug", "flag", "log every request (like -d)"), group=FILES)
    readahead_mb: int = option(
        16,
        Option(
            "readahead_mb",
            "int",
            "MiB of read-ahead all open files share, in memory",
            low=0,
            high=1 << 16,
        ),
        group=IO,
    )
    part_size_mb: int = option(
        8,
        Option(
            "part_size_mb",
            "int",
            "MiB of the parts of multipart uploads; below 5 counts as 5, and parts grow for "
            "big files",
            low=1,
            high=5 << 10,
        ),
        group=IO,
    )
    upload_concurrency: int = option(
        4,
        Option("upload_concurrency", "int", "parts of one file uploaded at once", low=1, high=64),
        group=IO,
    )
    read_concurrency: int = option(
        4,
        Option(
            "read_concurrency",
            "int",
            "ranged GETs of one open file in flight at once",
            low=1,
            high=64,
        ),
        group=IO,
    )
    timeout: float = option(
        120.0,
        Option(
            "timeout",
            "float",
            "seconds a request to the bucket is retried before the operation fails with EIO",
            positive=True,
        ),
        group=TIMEOUTS,
    )
    read_timeout: float = option(
        60.0,
        Option(
            "read_timeout",
            "float",
            "seconds a request may wait for the server to answer or take more bytes before it "
            "is retried",
            positive=True,
        ),
        group=TIMEOUTS,
    )
    connect_timeout: float = option(
        10.0,
        Option(
            "connect_timeout",
            "float",
            "seconds to open a connection before the request is retried",
            positive=True,
        ),
        group=TIMEOUTS,
    )
    hold_report: float = option(
        10.0,
        Option(
            "hold_report",
            "float",
            "seconds between the log lines of a stopping mount that holds data it could "
            "neither upload nor copy, and so does not exit",
            positive=True,
        ),
        group=TIMEOUTS,
    )

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


def host_wants_path_style(host: str) -> bool:
    """IP addresses and localhost cannot carry a bucket subdomain."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


#: Every option, once, in declaration order.
DECLARED: tuple[Option, ...] = collect(MountOptions)
#: Every option by name (and alias), in declaration order.
OPTIONS: dict[str, Option] = index(DECLARED)
#: fstab / mount(8) options accepted and ignored (flags); ``x-*`` and ``comment=`` too.
IGNORED = FSTAB_ONLY
#: How ``--help`` describes the ignored options.
IGNORED_HELP = FSTAB_ONLY_HELP


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
            spec = OPTIONS.get(name)
            if spec is None:
                raise OptionError(f"unknown option {name!r}")
            if not spec.takes_value:
                if has_value:
                    raise OptionError(f"option {name!r} takes no value")
                setattr(opts, spec.field, spec.sets)
                continue
            if not has_value or value == "":
                raise OptionError(f"option {name!r} needs a value ({name}=...)")
            setattr(opts, spec.field, spec.parse(value, name))
    parse_endpoint(opts.endpoint)  # the default is valid; a base may not be
    if opts.ca_bundle and opts.no_check_certificate:
        raise OptionError("ca_bundle= and no_check_certificate contradict each other")
    return opts


def parse_bucket(spec: str) -> tuple[str, str]:
    """``BUCKET[:/PREFIX]`` or ``s3://BUCKET[/PREFIX]`` (the form of the aws CLI) → (bucket,
    normalized prefix); OptionError if malformed."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket or ":" in bucket:
            raise OptionError(f"bad bucket {spec!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
        try:
            return bucket, normalize_prefix(prefix)
        except ValueError as exc:
            raise OptionError(f"bad prefix in {spec!r}: {exc}") from None
    bucket, _, prefix = spec.partition(":")
    if not bucket or "/" in bucket:
        raise OptionError(f"bad bucket {spec!r}: expected BUCKET or BUCKET:/PREFIX")
    try:
        return bucket, normalize_prefix(prefix)
    except ValueError as exc:
        raise OptionError(f"bad prefix in {spec!r}: {exc}") from None
