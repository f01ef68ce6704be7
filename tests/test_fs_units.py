"""The filesystem layer's small pure modules: keys, attrs, options, errno table, caches,
read-ahead, and the command line's usage errors."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from s3fmfs.client import errors as s3
from s3fmfs.config.options import (
    OPTIONS,
    MountOptions,
    OptionError,
    host_wants_path_style,
    parse_bucket,
    parse_options,
)
from s3fmfs.fs.attrs import Attr, Defaults, Kind, attr_from_object, metadata_of, parse_s3_time
from s3fmfs.fs.cache import MetadataCache
from s3fmfs.fs.errno_map import FsError, to_errno
from s3fmfs.fs.keys import KeyMap, normalize_prefix, valid_name
from s3fmfs.fs.readahead import ReadBudget
from s3fmfs.service.mount import raise_read_ahead

DEFAULTS = Defaults(uid=1, gid=2, file_mode=0o644, dir_mode=0o755)


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ok"),
    [("a", True), ("", False), (".", False), ("..", False), ("a/b", False), ("x" * 255, True)],
)
def test_valid_name(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


def test_valid_name_counts_bytes() -> None:
    assert not valid_name("x" * 256)
    assert valid_name("é" * 127) and not valid_name("é" * 128)  # 2 bytes each


def test_key_map() -> None:
    keys = KeyMap("/some//prefix/")
    assert keys.prefix == "some/prefix/"
    assert keys.file_key("a/b") == "some/prefix/a/b"
    assert keys.dir_prefix("") == "some/prefix/"
    assert keys.dir_prefix("a") == "some/prefix/a/"
    assert keys.path_of("some/prefix/a/b/") == "a/b"
    assert keys.path_of("other/a") is None
    assert keys.path_of("some/prefix/a//b") is None
    assert keys.path_of("some/prefix/a/../b") is None
    with pytest.raises(ValueError):
        normalize_prefix("a/../b")


# -- attrs -----------------------------------------------------------------------------------------


def test_parse_s3_time() -> None:
    assert parse_s3_time("2020-09-13T12:26:40.000Z") == 1_600_000_000 * 10**9
    assert parse_s3_time("Sun, 13 Sep 2020 12:26:40 GMT") == 1_600_000_000 * 10**9
    assert parse_s3_time("garbage") == 0
    assert parse_s3_time("") == 0


def test_attr_from_s3fs_metadata() -> None:
    meta = {"mode": str(0o100600), "uid": "10", "gid": "20", "mtime": "1600000000"}
    attr = attr_from_object(
        is_dir=False, size=5, last_modified_ns=7, etag="e", metadata=meta, defaults=DEFAULTS
    )
    assert (attr.kind, attr.mode, attr.uid, attr.gid, attr.size) == (
        Kind.FILE,
        0o100600,
        10,
        20,
        5,
    )
    assert attr.mtime_ns == 1_600_000_000 * 10**9 and attr.complete
    assert metadata_of(attr) == meta
    # s3fs-fuse's ctime is dropped by any write (s3fs then shows LastModified, the write's
    # time); its atime and others' metadata are kept.
    kept = metadata_of(attr, {"ctime": "1500000000", "atime": "1500000001", "color": "red"})
    assert kept == {**meta, "atime": "1500000001", "color": "red"}


def test_attr_defaults_and_odd_metadata() -> None:
    listed = attr_from_object(
        is_dir=False, size=1, last_modified_ns=7, etag="", metadata=None, defaults=DEFAULTS
    )
    assert (listed.mode, listed.uid, listed.gid, listed.mtime_ns) == (0o100644, 1, 2, 7)
    assert not listed.complete
    odd = attr_from_object(
        is_dir=False,
        size=1,
        last_modified_ns=7,
        etag="",
        metadata={"mode": "493", "uid": "x", "mtime": "1.5"},  # no type bits, bad uid
        defaults=DEFAULTS,
    )
    assert (odd.mode, odd.uid, odd.mtime_ns) == (stat.S_IFREG | 0o755, 1, 1_500_000_000)
    # s3fs-fuse writes mtime -1 on the marker of a directory it inferred (chmod of a
    # prefix); it shows LastModified for an mtime <= 0, and so do we.
    for unknown in ("-1", "0", "-1.5", "0.0"):
        inferred = attr_from_object(
            is_dir=True,
            size=0,
            last_modified_ns=7 * 10**9,
            etag="",
            metadata={"mode": str(stat.S_IFDIR | 0o700), "mtime": unknown},
            defaults=DEFAULTS,
        )
        assert inferred.mtime_ns == 7 * 10**9, unknown
    link = attr_from_object(
        is_dir=False,
        size=3,
        last_modified_ns=0,
        etag="",
        metadata={"mode": str(stat.S_IFLNK | 0o777)},
        defaults=DEFAULTS,
    )
    assert link.kind is Kind.SYMLINK
    directory = attr_from_object(
        is_dir=True,
        size=0,
        last_modified_ns=0,
        etag="",
        metadata={"mode": str(stat.S_IFREG | 0o700)},  # a marker claiming to be a file
        defaults=DEFAULTS,
    )
    assert directory.kind is Kind.DIR and directory.mode == stat.S_IFDIR | 0o700


def test_with_changes_keeps_type_bits() -> None:
    attr = Attr(Kind.DIR, stat.S_IFDIR | 0o755, 0, 0, 0, 0)
    assert attr.with_changes(mode=0o100700).mode == stat.S_IFDIR | 0o700


# -- options ------------------------------------------------------------------------------------


def test_parse_options() -> None:
    opts = parse_options(
        [
            "endpoint=http://127.0.0.1:9000,region=eu-west-1,sigv2",
            "default_uid=5,default_gid=6,default_umask=077,nometa,stat_ttl=1.5,dir_ttl=0,neg_ttl=2",
            "ro,allow_other",
        ]
    )
    assert opts.endpoint_parts == (False, "127.0.0.1", 9000)
    assert opts.use_path_style and opts.signature == "v2" and opts.region == "eu-west-1"
    assert (opts.default_uid, opts.default_gid, opts.default_file_mode, opts.default_dir_mode) == (
        5,
        6,
        0o600,
        0o700,
    )
    assert opts.nometa and opts.ro and opts.allow_other
    assert (opts.stat_ttl, opts.dir_ttl, opts.neg_ttl) == (1.5, 0, 2)
    named = parse_options(["endpoint=https://s3.example.com,file_mode=640,dir_mode=750"])
    assert not named.use_path_style and named.endpoint_parts == (True, "s3.example.com", 443)
    assert (named.default_file_mode, named.default_dir_mode) == (0o640, 0o750)
    assert parse_options(["endpoint=https://s3.example.com,path_style"]).use_path_style
    assert not parse_options(["endpoint=http://localhost:1,virtual_host"]).use_path_style


@pytest.mark.parametrize(
    "bad",
    [
        "nosuch",
        "ro=1",
        "uid",
        "uid=-1",
        "umask=9",
        "stat_ttl=soon",
        "endpoint=ftp://x",
        "endpoint=http://h/path",
        "endpoint=http://h:99999",
    ],
)
def test_bad_options(bad: str) -> None:
    with pytest.raises(OptionError):
        parse_options([bad])


def test_every_option_has_help_and_parses() -> None:
    defaults = MountOptions()
    for name in OPTIONS:
        assert OPTIONS[name]
        value = {
            "endpoint": "http://h:1",
            "region": "r",
            "metacache_file": "/m",
            "default_acl": "private",
            "storage_class": "standard",
            "dbglevel": "info",
        }.get(OPTIONS[name].name, "1")  # by the option's name: aliases take the same values
        try:
            parse_options([name])
        except OptionError:
            parse_options([f"{name}={value}"])
    assert defaults.stat_ttl > 0 and defaults.dir_ttl > 0 and defaults.neg_ttl > 0


# -- read-ahead ---------------------------------------------------------------------------------


async def test_read_budget_wakes_the_gets_waiting_for_room() -> None:
    budget = ReadBudget(100)
    budget.take(100)
    assert budget.full
    woken: list[str] = []

    async def waiting(name: str, event: trio.Event) -> None:
        await budget.wait_for_room(event)
        woken.append(name)

    async with trio.open_nursery() as nursery:
        events = [trio.Event(), trio.Event()]
        for name, event in zip("ab", events, strict=True):
            nursery.start_soon(waiting, name, event)
        await trio.testing.wait_all_tasks_blocked()
        budget.give(0)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # still full
        events[1].set()  # a read waits for b's block: b goes on, room or not
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["b"]
        budget.give(1)  # room
    assert woken == ["b", "a"] and not budget.full and budget.peak == 100


def test_raise_read_ahead_is_best_effort(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "s3fmfs")
    raise_read_ahead(str(tmp_path / "not-a-mount"))  # no error, whoever runs it
    if os.geteuid() == 0:
        assert "read_ahead_kb" in caplog.text


def test_path_style_hosts() -> None:
    assert host_wants_path_style("127.0.0.1") and host_wants_path_style("::1")
    assert host_wants_path_style("localhost") and not host_wants_path_style("s3.amazonaws.com")


def test_parse_bucket() -> None:
    assert parse_bucket("b") == ("b", "")
    assert parse_bucket("b:/some/prefix") == ("b", "some/prefix/")
    assert parse_bucket("b:/") == ("b", "")
    for bad in ("", ":/x", "b/c", "b:/a/../c"):
        with pytest.raises(OptionError):
            parse_bucket(bad)


# -- the errno table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (s3.NoSuchKey(404, "NoSuchKey"), errno.ENOENT),
        (s3.NoSuchBucket(404, "NoSuchBucket"), errno.ENOENT),
        (s3.AccessDenied(403, "AccessDenied"), errno.EACCES),
        (s3.SignatureDoesNotMatch(403, "SignatureDoesNotMatch"), errno.EACCES),
        (s3.InvalidAccessKeyId(403, "InvalidAccessKeyId"), errno.EACCES),
        (s3.BucketNotEmpty(409, "BucketNotEmpty"), errno.ENOTEMPTY),
        (s3.S3TimeoutError("timed out"), errno.EIO),
        (s3.S3ConnectError("refused"), errno.EIO),
        (s3.S3ProtocolError("reset"), errno.EIO),
        (s3.InternalError(500, "InternalError"), errno.EIO),
        (s3.S3ServerError(502, "HTTP502"), errno.EIO),
        (s3.S3ClientError(400, "Weird"), errno.EIO),
        (s3.InvalidResponseError("bad xml"), errno.EIO),
        (FsError(errno.ENOTEMPTY), errno.ENOTEMPTY),
        (FsError(errno.EXDEV), errno.EXDEV),
        (OSError(errno.ENOSPC, "disk full"), errno.ENOSPC),
        (ExceptionGroup("nursery", [s3.AccessDenied(403, "AccessDenied")]), errno.EACCES),
    ],
)
def test_to_errno(exc: Exception, code: int) -> None:
    assert to_errno(exc) == code


def test_to_errno_logs_unknown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="s3fmfs.fs"):
        assert to_errno(RuntimeError("bug")) == errno.EIO
    assert caplog.records and caplog.records[0].exc_info is not None


# -- caches ------------------------------------------------------------------------------------


def test_caches_expire_with_the_timer() -> None:
    now = [0.0]
    cache = MetadataCache(stat_ttl=5, dir_ttl=10, neg_ttl=2, timer=lambda: now[0])
    attr = Attr(Kind.FILE, stat.S_IFREG | 0o644, 0, 0, 1, 0, etag="e")
    cache.store_attr("a", attr)
    cache.store_missing("d/b")
    cache.store_listing("", {"a": attr})
    now[0] = 1
    assert cache.is_missing("d/b")
    now[0] = 3
    assert cache.attr("a") == attr and cache.is_missing("d/b") is False  # neg expired...
    assert cache.is_missing("zzz")  # ...but the fresh root listing says no
    now[0] = 6
    assert cache.attr("a") is None and cache.listing("") is not None
    now[0] = 11
    assert cache.listing("") is None and not cache.is_missing("zzz")


def test_cache_tracks_own_changes() -> None:
    cache = MetadataCache(5, 5, 5)
    attr = Attr(Kind.FILE, stat.S_IFREG | 0o644, 0, 0, 1, 0)
    cache.store_listing("d", {})
    cache.store_missing("d/new")
    cache.note_exists("d/new", attr)
    assert cache.attr("d/new") == attr and "new" in (cache.listing("d") or {})
    assert not cache.is_missing("d/new")
    cache.note_removed("d/new")
    assert cache.is_missing("d/new") and "new" not in (cache.listing("d") or {})
    cache.store_attr("t/x/y", attr)
    cache.store_listing("t/x", {"y": attr})
    cache.forget_tree("t")
    assert cache.attr("t/x/y") is None and cache.listing("t/x") is None


def test_listing_keeps_headed_attrs_of_unchanged_entries() -> None:
    cache = MetadataCache(5, 5, 5)
    headed = Attr(Kind.FILE, stat.S_IFREG | 0o600, 7, 7, 1, 0, etag="same")
    listed = Attr(Kind.FILE, stat.S_IFREG | 0o644, 0, 0, 1, 0, etag="same", complete=False)
    cache.store_attr("f", headed)
    cache.store_listing("", {"f": listed})
    assert cache.attr("f") == headed
    cache.store_listing("", {"f": Attr(Kind.FILE, 0o100644, 0, 0, 2, 0, "new", False)})
    attr = cache.attr("f")
    assert attr is not None and attr.etag == "new"


def test_zero_ttl_stores_nothing() -> None:
    cache = MetadataCache(0, 0, 0)
    cache.store_attr("a", Attr(Kind.FILE, 0o100644, 0, 0, 0, 0))
    cache.store_missing("b")
    cache.store_listing("", {})
    assert cache.attr("a") is None and not cache.is_missing("b") and cache.listing("") is None


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["b"], ["b", "/tmp", "-o", "bogus"], ["b:/..", "/tmp"], ["b", "/nonexistent-dir"]],
)
def test_cli_usage_errors_are_one_line(args: list[str]) -> None:
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "s3fmfs.commands.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    if len(args) < 2:  # missing arguments: the usage line too (issue 13), then the error
        assert len(lines) == 2 and lines[0].startswith("usage: s3fmfs BUCKET"), proc.stderr
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("s3fmfs: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_needs_credentials(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "s3fmfs.commands.cli", "b", str(tmp_path)],  # an empty mountpoint
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert proc.returncode == 2 and "AWS_ACCESS_KEY_ID" in proc.stderr
