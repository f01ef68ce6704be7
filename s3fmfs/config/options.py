"""Mount options: the ``MountOptions`` dataclass, which declares every option, and the parser of
``-o a=b,c`` strings.

Invariants:
- Each option is declared once, on the field it sets (:func:`s3fmfs.config.table.option`):
  ``OPTIONS`` (name → :class:`~s3fmfs.config.table.Option`) is derived from the dataclass, so
  the parser, ``--help`` and ``docs/CONFIGURATION.md`` cannot disagree with it.
- s3fs-fuse's options are accepted by their s3fs names: as aliases when the meaning is the same,
  as options of their own when s3fs's meaning differs from s3fmfs's (``uid``/``gid``/``umask``
  force what every entry shows; ``default_uid``/``default_gid``/``default_umask`` are the
  defaults of objects without metadata), and the rest in ``s3fs_compat.S3FS_ONLY``, each noted
  once in ``s3fs_notes`` for the mount to log. ``endpoint=`` of a region (not a URL) sets the
  region, as in s3fs.
- An option in neither ``OPTIONS``, ``S3FS_ONLY`` nor ``IGNORED`` (fstab/mount(8) options;
  ``x-*`` and ``comment=`` with any value), a flag given a value, a value missing or malformed
  raises ``OptionError`` (one line, meant for stderr, naming the closest known option), never
  anything else.
- Parsing is pure: no environment, no network, no file access; defaults are the dataclass
  defaults. ``object_headers()`` (called by the mount) is where an SSE-C key file is read.
- ``fs_settings()`` is the only way the fs layer sees these options; ``object_headers()`` and
  ``request_headers()`` are what the store and the client add to requests.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import ipaddress
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..fs.attrs import Forced
from ..fs.keys import normalize_prefix
from ..fs.s3store import ObjectHeaders
from ..fs.settings import FsSettings
from .s3fs_compat import S3FS_ONLY, note_for, shape_error
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
WRITES = "Objects written"
LOG_LEVELS = {
    "crit": logging.CRITICAL,
    "err": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "dbg": logging.DEBUG,
}
LOG_LEVEL_SYNONYMS = {
    "critical": "crit",
    "error": "err",
    "warning": "warn",
    "information": "info",
    "debug": "dbg",
}
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "REDUCED_REDUNDANCY",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
)


def parse_sse(value: str) -> tuple[str, str]:
    """s3fs's ``use_sse`` value → (kind, argument): ("s3", ""), ("kms", KEY_ID or "" for
    $AWSSSEKMSID), ("c", FILE or "" for $AWSSSECKEYS); OptionError if malformed."""
    word, _, arg = value.partition(":")
    word = word.strip().lower()
    if word == "1" and not arg:
        return "s3", ""
    if word in ("kmsid", "k"):
        return "kms", arg
    if word in ("custom", "c"):
        if arg and not arg.startswith("/"):
            raise OptionError(f"use_sse: the key file must be an absolute path, not {arg!r}")
        return "c", arg
    raise OptionError(f"use_sse must be 1, kmsid:KEY_ID or custom:FILE, not {value!r}")


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
            aliases=("url", "host"),
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
            aliases=("use_path_request_style",),
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
    public_bucket: bool = option(
        False,
        Option(
            "public_bucket",
            "enum",
            "send requests unsigned (anonymous), for a public bucket; no credentials needed",
            choices=ON_OFF,
            synonyms=ON_OFF_SYNONYMS,
            bare="1",
        ),
        group=S3,
    )
    requester_pays: bool = option(
        False,
        Option(
            "requester_pays",
            "flag",
            "send x-amz-request-payer: requester with every request (the bucket owner does not "
            "pay)",
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
    default_acl: str | None = option(
        None,
        Option(
            "default_acl",
            "enum",
            "canned ACL (x-amz-acl) of every object written",
            metavar="ACL",
            choices={acl: acl for acl in CANNED_ACLS},
        ),
        group=WRITES,
    )
    storage_class: str | None = option(
        None,
        Option(
            "storage_class",
            "enum",
            "storage class (x-amz-storage-class) of every object written",
            metavar="CLASS",
            choices={c.lower(): c for c in STORAGE_CLASSES},
        ),
        group=WRITES,
    )
    use_sse: str | None = option(
        None,
        Option(
            "use_sse",
            "str",
            "server-side encryption of every object written, as s3fs: 1 (SSE-S3), "
            "kmsid:KEY_ID or k:KEY_ID (SSE-KMS), custom:FILE or c:FILE (SSE-C: the first key "
            "of FILE, also sent to read)",
            check=parse_sse,
            metavar="1|kmsid:ID|custom:FILE",
            bare="1",
        ),
        group=WRITES,
    )
    uid: int | None = option(
        None,
        Option(
            "uid",
            "id",
            "owner shown for EVERY entry, whatever its x-amz-meta-uid (s3fs's uid=)",
            default_text="each object's x-amz-meta-uid, else default_uid",
        ),
        group=OWNERS,
    )
    gid: int | None = option(
        None,
        Option(
            "gid",
            "id",
            "group shown for EVERY entry, whatever its x-amz-meta-gid (s3fs's gid=)",
            default_text="each object's x-amz-meta-gid, else default_gid",
        ),
        group=OWNERS,
    )
    umask: int | None = option(
        None,
        Option(
            "umask",
            "octal",
            "EVERY entry's mode becomes 0777 & ~umask, whatever its x-amz-meta-mode (s3fs's "
            "umask=)",
            default_text="each object's x-amz-meta-mode, else the default modes",
        ),
        group=OWNERS,
    )
    mp_umask: int | None = option(
        None,
        Option(
            "mp_umask",
            "octal",
            "the mount point's mode becomes 0777 & ~mp_umask (s3fs's mp_umask=; umask= wins)",
            default_text="like any directory",
        ),
        group=OWNERS,
    )
    default_uid: int = option(
        0,
        Option(
            "default_uid",
            "id",
            "owner of objects without x-amz-meta-uid",
            default_text="the mounting user",
        ),
        group=OWNERS,
    )
    default_gid: int = option(
        0,
        Option(
            "default_gid",
            "id",
            "group of objects without x-amz-meta-gid",
            default_text="the mounting user's group",
        ),
        group=OWNERS,
    )
    default_umask: int = option(
        0o022,
        Option("default_umask", "octal", "umask applied to the default modes"),
        group=OWNERS,
    )
    file_mode: int | None = option(
        None,
        Option(
            "file_mode",
            "octal",
            "mode of files without x-amz-meta-mode",
            default_text="0666 & ~default_umask",
        ),
        group=OWNERS,
    )
    dir_mode: int | None = option(
        None,
        Option(
            "dir_mode",
            "octal",
            "mode of directories without x-amz-meta-mode",
            default_text="0777 & ~default_umask",
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
        Option(
            "stat_ttl",
            "float",
            "seconds attributes are cached, here and in the kernel",
            aliases=("stat_cache_expire",),
        ),
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
    enable_noobj_cache: bool = option(
        False,
        Option(
            "enable_noobj_cache",
            "flag",
            "names found missing stay missing as long as attributes are cached (stat_ttl "
            "instead of neg_ttl), as in s3fs",
        ),
        group=CACHES,
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
    allow_root: bool = option(
        False,
        Option(
            "allow_root",
            "flag",
            "let root (besides the mounting user) access the mount (needs user_allow_other for "
            "non-root)",
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
    bucket_mkdir: bool = option(
        False,
        Option(
            "bucket_mkdir",
            "flag",
            "with s3:// (every bucket): mkdir and rmdir at the top level create and delete "
            "buckets (rmdir only of an empty one)",
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
    dbglevel: int | None = option(
        None,
        Option(
            "dbglevel",
            "enum",
            "log level, as s3fs names them",
            choices=LOG_LEVELS,
            synonyms=LOG_LEVEL_SYNONYMS,
            default_text="info; debug with debug or -d",
        ),
        group=FILES,
    )
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
            aliases=("multipart_size",),
        ),
        group=IO,
    )
    upload_concurrency: int = option(
        4,
        Option(
            "upload_concurrency",
            "int",
            "parts of one file uploaded at once",
            low=1,
            high=64,
            aliases=("parallel_count",),
        ),
        group=IO,
    )
    no_checksum: bool = option(
        False,
        Option(
            "no_checksum",
            "flag",
            "do not check bytes against their MD5: no Content-MD5 on uploads, no ETag "
            "comparison after uploads and reads (see SEMANTICS.md, Integrity)",
        ),
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
    list_object_max_keys: int = option(
        1000,
        Option(
            "list_object_max_keys",
            "int",
            "keys asked for per listing request (max-keys)",
            low=1,
            high=1000,
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
            aliases=("readwrite_timeout",),
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
    retries: int | None = option(
        None,
        Option(
            "retries",
            "int",
            "attempts of a request before the operation fails with EIO (s3fs's retries=; "
            "timeout= still bounds them)",
            low=1,
            high=1000,
            default_text="as many as fit in timeout",
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
    #: Lines the mount logs once at start: what s3fs options do here (not an option).
    s3fs_notes: list[str] = dataclasses.field(default_factory=list, compare=False)

    @property
    def default_file_mode(self) -> int:
        """Permission bits of files without metadata."""
        return (
            self.file_mode if self.file_mode is not None else 0o666 & ~self.default_umask
        ) & 0o7777

    @property
    def default_dir_mode(self) -> int:
        """Permission bits of directories without metadata."""
        return (
            self.dir_mode if self.dir_mode is not None else 0o777 & ~self.default_umask
        ) & 0o7777

    def fs_settings(self) -> FsSettings:
        """What the filesystem layer needs of these options."""
        return FsSettings(
            uid=self.default_uid,
            gid=self.default_gid,
            file_mode=self.default_file_mode,
            dir_mode=self.default_dir_mode,
            nometa=self.nometa,
            ro=self.ro,
            stat_ttl=self.stat_ttl,
            dir_ttl=self.dir_ttl,
            neg_ttl=self.stat_ttl if self.enable_noobj_cache else self.neg_ttl,
            readahead_mb=self.readahead_mb,
            read_concurrency=self.read_concurrency,
            part_size_mb=self.part_size_mb,
            upload_concurrency=self.upload_concurrency,
            forced=Forced(self.uid, self.gid, self.umask, self.mp_umask),
        )

    def request_headers(self) -> dict[str, str]:
        """Headers signed into every request (``requester_pays``)."""
        return {"x-amz-request-payer": "requester"} if self.requester_pays else {}

    def object_headers(self, environ: Mapping[str, str] | None = None) -> ObjectHeaders:
        """Headers of object writes and reads: ``default_acl``, ``storage_class``, ``use_sse``.
        Reads an SSE-C key file (or ``$AWSSSECKEYS``/``$AWSSSEKMSID`` as s3fs does):
        OptionError (one line) when it cannot."""
        environ = os.environ if environ is None else environ
        write: dict[str, str] = {}
        key: dict[str, str] = {}
        source: dict[str, str] = {}
        if self.default_acl:
            write["x-amz-acl"] = self.default_acl
        if self.storage_class:
            write["x-amz-storage-class"] = self.storage_class
        if self.use_sse:
            kind, arg = parse_sse(self.use_sse)
            if kind == "s3":
                write["x-amz-server-side-encryption"] = "AES256"
            elif kind == "kms":
                key_id = arg or environ.get("AWSSSEKMSID", "")
                if not key_id:
                    raise OptionError("use_sse=kmsid needs a key id (kmsid:KEY_ID or $AWSSSEKMSID)")
                write["x-amz-server-side-encryption"] = "aws:kms"
                write["x-amz-server-side-encryption-aws-kms-key-id"] = key_id
            else:
                raw = sse_c_key(arg, environ)
                b64 = base64.b64encode(raw).decode()
                md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()
                prefix = "x-amz-server-side-encryption-customer-"
                key = {
                    prefix + "algorithm": "AES256",
                    prefix + "key": b64,
                    prefix + "key-md5": md5,
                }
                source = {
                    "x-amz-copy-source-" + name[len("x-amz-") :]: v for name, v in key.items()
                }
                write.update(key)
        return ObjectHeaders(write=write, key=key, copy_source=source)

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


def _one_key(text: str) -> bytes | None:
    """An SSE-C key as s3fs reads it: base64 of 32 bytes, or 32 bytes as they are."""
    text = text.strip()
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) == 32:
        return raw
    if len(text.encode()) == 32:
        return text.encode()
    raise OptionError("use_sse: an SSE-C key must be 32 bytes, or base64 of 32 bytes")


def sse_c_key(path: str, environ: Mapping[str, str]) -> bytes:
    """The key objects are written with: the first of ``path`` (mode 0600, as s3fs requires),
    else of ``$AWSSSECKEYS`` (keys separated by ``:``)."""
    if path:
        try:
            info = os.stat(path)
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise OptionError(f"use_sse: key file {path} must not be readable by others (0600)")
            with open(path, encoding="utf-8") as keys:
                lines = keys.read().splitlines()
        except OSError as exc:
            raise OptionError(f"use_sse: cannot read key file {path}: {exc.strerror}") from None
    else:
        lines = environ.get("AWSSSECKEYS", "").split(":")
    for line in lines:
        if (raw := _one_key(line)) is not None:
            return raw
    where = f"key file {path}" if path else "$AWSSSECKEYS"
    raise OptionError(f"use_sse=custom: no key in {where}")


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


#: Every name ``-o`` knows, for "did you mean": options, aliases, s3fs-only options.
KNOWN_NAMES: tuple[str, ...] = (*OPTIONS, *S3FS_ONLY)
#: A region as ``endpoint=`` takes it (s3fs's meaning): words joined by hyphens, like
#: ``eu-west-1``, ``us-gov-west-1``, ``fr-par``; one word is refused (a typo of a URL, most
#: likely: ``region=`` takes any).
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")


def unknown(name: str) -> OptionError:
    """The error for an unknown option, naming the closest known one."""
    close = difflib.get_close_matches(name, KNOWN_NAMES, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return OptionError(f"unknown option {name!r}{hint}")


def _note(opts: MountOptions, line: str) -> None:
    if line not in opts.s3fs_notes:
        opts.s3fs_notes.append(line)


def parse_options(groups: list[str], base: MountOptions | None = None) -> MountOptions:
    """Apply ``-o`` groups (each ``a=b,c,...``) over ``base`` (or the defaults)."""
    opts = dataclasses.replace(base) if base is not None else MountOptions()
    opts.s3fs_notes = list(opts.s3fs_notes)  # never the base's own list
    for group in groups:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            has_value = bool(sep)
            if name.startswith("x-") or name == "comment":
                continue
            if name in IGNORED:
                if has_value:
                    raise OptionError(f"option {name!r} takes no value")
                continue
            compat = S3FS_ONLY.get(name)
            if compat is not None:
                if problem := shape_error(name, compat.value, has_value, value):
                    raise OptionError(problem)
                _note(opts, note_for(compat, opts, value))
                continue
            spec = OPTIONS.get(name)
            if spec is None:
                raise unknown(name)
            if name == "endpoint" and has_value and "://" not in value:
                # s3fs's endpoint= is the region; a URL keeps s3fmfs's meaning
                if not _REGION.fullmatch(value):
                    raise OptionError(
                        "endpoint must be a region (like eu-west-1) or http(s)://host, "
                        f"not {value!r}"
                    )
                opts.region = value
                _note(opts, f"s3fs option endpoint={value}: the region (region=)")
                continue
            if name != spec.name:  # s3fs's spelling: say ours once, e.g. "url is endpoint here"
                _note(opts, f"s3fs option {name}: {spec.name} here")
            if spec.bare is not None and not has_value:
                has_value, value = True, spec.bare
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
    if opts.allow_root and opts.allow_other:
        raise OptionError(
            "allow_root and allow_other exclude each other (allow_other includes root)"
        )
    return opts


def parse_bucket(spec: str) -> tuple[str, str]:
    """``BUCKET[:/PREFIX]`` or ``s3://BUCKET[/PREFIX]`` (the form of the aws CLI) → (bucket,
    normalized prefix); ``s3://`` (or ``s3:``) alone: ("", ""), every bucket of the account;
    OptionError if malformed."""
    if spec in ("s3://", "s3:"):
        return "", ""  # every bucket of the account (fs/buckets.py)
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
