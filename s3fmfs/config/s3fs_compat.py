"""s3fs-fuse's mount options that s3fmfs accepts without an option of its own.

An s3fs fstab line with only the type changed (``fuse.s3fs`` → ``fuse.s3fmfs``) must mount and
mean the same. s3fs options that mean exactly what an s3fmfs option means are declared as
*aliases* on that option (:mod:`s3fmfs.config.options`: ``url`` → ``endpoint``,
``multipart_size`` → ``part_size_mb``...); s3fs options with a meaning of their own and an
s3fmfs equivalent are options of their own there (``uid``, ``umask``, ``mp_umask``,
``default_acl``, ``use_sse``...). This module holds the rest: s3fs options that are accepted
and either not applicable here or applied in some other way, each with the one line logged
(once, at mount) saying what happens instead.

Invariants:
- Each entry is declared once, in :data:`S3FS_ONLY`; its name is neither an option nor an
  alias (``index`` would raise at import) nor an fstab-only option.
- ``value`` says what the entry takes: ``flag`` (no value), ``value`` (one is needed) or
  ``any`` (either). A wrong shape is an ``OptionError`` naming it, like any other option.
- ``apply`` (when present) sets fields of the options from the value; it may raise
  ``OptionError`` (one line) when the value asks for something s3fmfs cannot do.
- Parsing stays pure: notes are collected on the options (``MountOptions.s3fs_notes``) and
  logged by the mount, never printed while parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .table import OptionError

Shape = Literal["flag", "value", "any"]


@dataclass(frozen=True)
class S3fsOnly:
    """An s3fs option accepted here with a note of what happens instead."""

    name: str
    value: Shape
    note: str  # logged once at mount: "s3fs option NAME: NOTE"
    apply: Callable[[Any, str], str | None] | None = None  # → a note replacing ``note``


def _servicepath(opts: Any, value: str) -> str | None:
    if value.strip("/"):
        raise OptionError(
            f"servicepath={value!r} is not supported: the endpoint (url=) must serve S3 at /"
        )
    return None


def _ssl_verify_hostname(opts: Any, value: str) -> str | None:
    if value.strip() == "0":
        opts.no_check_certificate = True
        return (
            "0: the endpoint's certificate is not verified at all (no_check_certificate), "
            "not only its host name"
        )
    return None


def _use_cache(opts: Any, value: str) -> str | None:
    if not value:
        return "empty: no local cache of object data (as in s3fs)"
    opts.cache_dir = value
    return (
        f"{value} is the cache directory (cache_dir): write buffers, recovery copies and the "
        "metadata cache; file contents are not kept there after upload (s3fs keeps them)"
    )


def _curldbg(opts: Any, value: str) -> str | None:
    opts.debug = True
    return None


#: Every s3fs option accepted without an s3fmfs option of its own, by name.
S3FS_ONLY: dict[str, S3fsOnly] = {
    entry.name: entry
    for entry in (
        S3fsOnly(
            "use_cache",
            "any",
            "the cache directory (cache_dir)",
            apply=_use_cache,
        ),
        S3fsOnly(
            "ensure_diskfree",
            "value",
            "not enforced: s3fmfs has no free-space guard; write buffers past their memory "
            "share go to disk, and a full disk fails the write",
        ),
        S3fsOnly(
            "max_stat_cache_size",
            "value",
            "ignored: the attribute cache is bounded by time (stat_ttl), not by entries",
        ),
        S3fsOnly(
            "complement_stat",
            "flag",
            "always on here: objects without x-amz-meta-mode get the default modes",
        ),
        S3fsOnly(
            "iam_role",
            "any",
            "not supported: credentials come from passwd_file=, the environment or "
            "~/.aws/credentials",
        ),
        S3fsOnly(
            "curldbg",
            "any",
            "requests are logged at debug level (debug)",
            apply=_curldbg,
        ),
        S3fsOnly(
            "nocopyapi",
            "flag",
            "not supported: renames and metadata changes use server-side copy",
        ),
        S3fsOnly(
            "norenameapi",
            "flag",
            "not supported: renames use server-side copy",
        ),
        S3fsOnly(
            "ssl_verify_hostname",
            "value",
            "the certificate and host name are verified (the default)",
            apply=_ssl_verify_hostname,
        ),
        S3fsOnly(
            "notsup_compat_dir",
            "flag",
            "ignored: directories in s3fs's older forms (dir, dir_$folder$) are always read",
        ),
        S3fsOnly(
            "compat_dir",
            "flag",
            "always on here: directories in s3fs's older forms (dir, dir_$folder$) are read",
        ),
        S3fsOnly(
            "max_dirty_data",
            "value",
            "ignored: a file's data is uploaded when it is closed or flushed, in parts of "
            "part_size_mb while it is written",
        ),
        S3fsOnly("del_cache", "flag", "ignored: there is no object data cache to delete"),
        S3fsOnly(
            "kernel_cache",
            "flag",
            "ignored: the kernel keeps a file's pages while the file is unchanged",
        ),
        S3fsOnly("big_writes", "flag", "always on here (FUSE 3)"),
        S3fsOnly("max_write", "value", "ignored: FUSE 3 negotiates the write size"),
        S3fsOnly(
            "default_permissions",
            "flag",
            "always on here: the kernel checks permissions against the shown owner and mode",
        ),
        S3fsOnly("instance_name", "value", "ignored: log lines name the bucket and mountpoint"),
        S3fsOnly(
            "servicepath",
            "value",
            "/ is the only path served (the default)",
            apply=_servicepath,
        ),
        S3fsOnly(
            "use_xattr",
            "any",
            "always on here: user.* attributes are x-amz-meta-* headers; s3fs's x-amz-meta-xattr "
            "map is read and kept",
        ),
        S3fsOnly(
            "ahbe_conf",
            "value",
            "not supported: no additional headers by file extension",
        ),
        S3fsOnly("noxmlns", "flag", "ignored: XML answers are read with or without a namespace"),
        S3fsOnly("cipher_suites", "value", "ignored: TLS uses Python's default cipher suites"),
        S3fsOnly("nosscache", "flag", "ignored: there is no shared stat cache"),
        S3fsOnly(
            "multireq_max",
            "value",
            "ignored: HEADs of a listing run concurrently, bounded by the connection pool",
        ),
        S3fsOnly(
            "nomultipart",
            "flag",
            "not supported: big files are uploaded in parts (part_size_mb)",
        ),
        S3fsOnly("singlepart_copy_limit", "value", "ignored: copies are single requests"),
        S3fsOnly("enable_content_md5", "flag", "ignored: bodies are checked by their ETag"),
        S3fsOnly(
            "disable_noobj_cache",
            "flag",
            "names found missing are remembered for neg_ttl seconds (neg_ttl=0 turns it off)",
        ),
    )
}


def shape_error(name: str, shape: Shape, has_value: bool, value: str) -> str | None:
    """The one-line error for an s3fs-only option given in the wrong shape, else None."""
    if shape == "flag" and has_value:
        return f"option {name!r} takes no value"
    if shape == "value" and (not has_value or value == ""):
        return f"option {name!r} needs a value ({name}=...)"
    return None


def note_for(entry: S3fsOnly, opts: Any, value: str) -> str:
    """Apply ``entry`` to ``opts``; the line to log at mount."""
    note = entry.apply(opts, value) if entry.apply is not None else None
    return f"s3fs option {entry.name}: {note or entry.note}"
