"""s3fs-fuse's mount options: an s3fs fstab line with only the type changed must mount and mean
the same (docs/MIGRATING-FROM-S3FS.md).

In-process: every s3fs option parses; each mapped one sets the field it should; the others are
noted once; bad ones are one line. Requests over ``httpx.MockTransport``: the object headers
(``default_acl``, ``storage_class``, ``use_sse``) on writes, the SSE-C key on reads,
``requester_pays`` signed into every request, ``public_bucket`` unsigned. One mounted test over
moto: ``allow_other,uid=1000,gid=1000,umask=0022`` shows a 0600 root object as 1000:1000
``-rwxr-xr-x``, and user 1000 reads it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3fmfs.client import CallingFormat, S3fmAuthConnection
from s3fmfs.commands import mount_helper
from s3fmfs.commands.common import credentials_for, log_level
from s3fmfs.config.options import MountOptions, OptionError, parse_options
from s3fmfs.config.s3fs_compat import S3FS_ONLY
from s3fmfs.fs.attrs import Attr, Forced, Kind
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.store import UploadedPart
from s3fmfs.service.connection import connection_for, mount_retry
from s3fmfs.service.mount import fuse_options
from tests.support.mount import log_tail, mounted
from tests.support.servers import S3Server, unique_bucket

#: Every s3fs option of issue 13, with a value as an s3fs user writes it ("" = a flag).
S3FS_LINE = {
    "url": "https://s3.amazonaws.com",
    "use_path_request_style": "",
    "mp_umask": "022",
    "use_cache": "/tmp/s3fs-cache",
    "ensure_diskfree": "1024",
    "multipart_size": "64",
    "parallel_count": "10",
    "max_stat_cache_size": "100000",
    "stat_cache_expire": "900",
    "enable_noobj_cache": "",
    "complement_stat": "",
    "default_acl": "private",
    "iam_role": "auto",
    "dbglevel": "info",
    "curldbg": "",
    "nocopyapi": "",
    "norenameapi": "",
    "ssl_verify_hostname": "2",
    "notsup_compat_dir": "",
    "compat_dir": "",
    "retries": "5",
    "readwrite_timeout": "120",
    "list_object_max_keys": "1000",
    "max_dirty_data": "5120",
    "storage_class": "standard_ia",
    "use_sse": "",
    "del_cache": "",
    "kernel_cache": "",
    "big_writes": "",
    "max_write": "131072",
    "allow_root": "",
    "default_permissions": "",
    "instance_name": "backup",
    "host": "https://s3.amazonaws.com",
    "servicepath": "/",
    "public_bucket": "1",
    "use_xattr": "",
    "ahbe_conf": "/etc/ahbe.conf",
    "noxmlns": "",
    "cipher_suites": "AESGCM",
    "requester_pays": "",
    "uid": "1000",
    "gid": "1000",
    "umask": "0022",
    "endpoint": "eu-west-1",
    "passwd_file": "/etc/passwd-s3fs",
}


def item(name: str, value: str) -> str:
    return f"{name}={value}" if value else name


@pytest.mark.parametrize(("name", "value"), sorted(S3FS_LINE.items()))
def test_every_s3fs_option_parses(name: str, value: str) -> None:
    parse_options([item(name, value)])
    assert mount_helper.known_to_s3fmfs(item(name, value))  # sloppy mounts keep it
    assert item(name, value) in mount_helper.filesystem_options([item(name, value)], sloppy=True)


def test_a_whole_s3fs_line_parses() -> None:
    line = ",".join(item(n, v) for n, v in S3FS_LINE.items() if n not in ("allow_root",))
    opts = parse_options(["allow_other,_netdev," + line])
    assert opts.allow_other and opts.public_bucket


@pytest.mark.parametrize(
    ("given", "field", "value"),
    [
        ("url=http://127.0.0.1:9000", "endpoint", "http://127.0.0.1:9000"),
        ("url=https://s3.amazonaws.com/", "endpoint", "https://s3.amazonaws.com/"),
        ("host=http://h:1", "endpoint", "http://h:1"),
        ("endpoint=eu-central-1", "region", "eu-central-1"),
        ("endpoint=http://minio:9000", "endpoint", "http://minio:9000"),
        ("use_path_request_style", "path_style", True),
        ("multipart_size=64", "part_size_mb", 64),
        ("parallel_count=10", "upload_concurrency", 10),
        ("stat_cache_expire=900", "stat_ttl", 900.0),
        ("readwrite_timeout=30", "read_timeout", 30.0),
        ("retries=3", "retries", 3),
        ("list_object_max_keys=100", "list_object_max_keys", 100),
        ("use_cache=/var/cache/s3", "cache_dir", "/var/cache/s3"),
        ("curldbg", "debug", True),
        ("curldbg=body", "debug", True),
        ("dbglevel=warn", "dbglevel", logging.WARNING),
        ("dbglevel=debug", "dbglevel", logging.DEBUG),
        ("ssl_verify_hostname=0", "no_check_certificate", True),
        ("storage_class=standard_ia", "storage_class", "STANDARD_IA"),
        ("default_acl=public-read", "default_acl", "public-read"),
        ("use_sse", "use_sse", "1"),
        ("use_sse=kmsid:abc", "use_sse", "kmsid:abc"),
        ("public_bucket=1", "public_bucket", True),
        ("public_bucket", "public_bucket", True),
        ("requester_pays", "requester_pays", True),
        ("allow_root", "allow_root", True),
        ("uid=1000", "uid", 1000),
        ("umask=0022", "umask", 0o022),
        ("mp_umask=027", "mp_umask", 0o027),
        ("default_uid=7", "default_uid", 7),
        ("default_umask=077", "default_umask", 0o077),
    ],
)
def test_mapped_options_set_their_field(given: str, field: str, value: object) -> None:
    opts = parse_options([given])
    assert getattr(opts, field) == value
    assert getattr(MountOptions(), field) != value  # not the default by chance


def test_what_the_fs_and_the_client_get() -> None:
    opts = parse_options(["uid=1000,gid=1001,umask=0022,mp_umask=077,default_uid=5"])
    settings = opts.fs_settings()
    assert settings.forced == Forced(1000, 1001, 0o022, 0o077)
    assert settings.uid == 5  # objects without metadata, before forcing
    assert MountOptions().fs_settings().forced == Forced()  # nothing forced by default
    assert not MountOptions().fs_settings().forced
    cached = parse_options(["stat_cache_expire=60,enable_noobj_cache"]).fs_settings()
    assert (cached.stat_ttl, cached.neg_ttl) == (60.0, 60.0)
    assert parse_options(["stat_cache_expire=60"]).fs_settings().neg_ttl == 5.0
    assert mount_retry(parse_options(["retries=3"])).max_attempts == 3
    assert mount_retry(MountOptions()).max_attempts > 1000
    assert "allow_root" in fuse_options(parse_options(["allow_root"]))
    assert "allow_root" not in fuse_options(MountOptions())


def test_dbglevel_sets_the_log_level() -> None:
    class Args:
        log_level = None

    assert log_level(Args(), parse_options(["dbglevel=crit"])) == logging.CRITICAL  # type: ignore[arg-type]
    assert log_level(Args(), parse_options(["dbglevel=dbg"])) == logging.DEBUG  # type: ignore[arg-type]
    assert log_level(Args(), MountOptions()) == logging.INFO  # type: ignore[arg-type]


def test_forced_owner_and_mode_are_what_is_shown() -> None:
    secret = Attr(Kind.FILE, stat.S_IFREG | 0o600, 0, 0, 5, 0)
    folder = Attr(Kind.DIR, stat.S_IFDIR | 0o700, 0, 0, 0, 0)
    forced = Forced(uid=1000, gid=1000, umask=0o022)
    assert forced.shown(secret) == (stat.S_IFREG | 0o755, 1000, 1000)
    assert forced.shown(folder) == (stat.S_IFDIR | 0o755, 1000, 1000)
    assert Forced().shown(secret) == (secret.mode, 0, 0)
    assert Forced(uid=7).shown(secret) == (secret.mode, 7, 0)
    mount_point = Forced(root_umask=0o077)
    assert mount_point.shown(folder, root=True) == (stat.S_IFDIR | 0o700, 0, 0)
    assert mount_point.shown(secret) == (secret.mode, 0, 0)  # only the mount point
    assert Forced(umask=0, root_umask=0o077).shown(folder, root=True)[0] == stat.S_IFDIR | 0o777


def test_s3fs_only_options_are_noted_once_each() -> None:
    opts = parse_options(["big_writes,kernel_cache", "big_writes,nocopyapi,endpoint=eu-west-1"])
    assert opts.s3fs_notes == [
        f"s3fs option big_writes: {S3FS_ONLY['big_writes'].note}",
        f"s3fs option kernel_cache: {S3FS_ONLY['kernel_cache'].note}",
        f"s3fs option nocopyapi: {S3FS_ONLY['nocopyapi'].note}",
        "s3fs option endpoint=eu-west-1: the region (region=)",
    ]
    base = MountOptions()
    parse_options(["big_writes"], base)
    assert base.s3fs_notes == []  # the base is never changed
    assert parse_options(["uid=1"]).s3fs_notes == []


def test_s3fs_spellings_are_answered_with_ours_once() -> None:
    """An alias works, and the mount says once what s3fmfs calls it: "url is endpoint here"."""
    opts = parse_options(["url=http://a:1,use_path_request_style", "url=http://b:2"])
    assert (opts.endpoint, opts.path_style) == ("http://b:2", True)
    assert opts.s3fs_notes == [
        "s3fs option url: endpoint here",
        "s3fs option use_path_request_style: path_style here",
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("endpont=http://x", "unknown option 'endpont' (did you mean endpoint?)"),
        ("multipart_sise=5", "unknown option 'multipart_sise' (did you mean multipart_size?)"),
        ("bigwrites", "unknown option 'bigwrites' (did you mean big_writes?)"),
        ("frobnicate", "unknown option 'frobnicate'"),
        ("big_writes=1", "option 'big_writes' takes no value"),
        ("ensure_diskfree", "option 'ensure_diskfree' needs a value (ensure_diskfree=...)"),
        (
            "servicepath=/s3/",
            "servicepath='/s3/' is not supported: the endpoint (url=) must serve S3 at /",
        ),
        ("use_sse=maybe", "use_sse must be 1, kmsid:KEY_ID or custom:FILE, not 'maybe'"),
        ("use_sse=c:keys", "use_sse: the key file must be an absolute path, not 'keys'"),
        (
            "endpoint=not a region",
            "endpoint must be a region (like eu-west-1) or http(s)://host, not 'not a region'",
        ),
        ("url=eu-west-1", "endpoint must be http(s)://host[:port], not 'eu-west-1'"),
        ("dbglevel=loud", "dbglevel must be crit or err or warn or info or dbg, not 'loud'"),
        (
            "allow_root,allow_other",
            "allow_root and allow_other exclude each other (allow_other includes root)",
        ),
        ("parallel_count=0", "parallel_count must be between 1 and 64, not '0'"),
    ],
)
def test_bad_s3fs_options_are_one_line(given: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options([given])
    assert str(caught.value) == message


def test_public_bucket_needs_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3FMFS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", "/nonexistent")
    creds = credentials_for("b", parse_options(["public_bucket=1"]))
    assert (creds.access_key_id, creds.secret_access_key) == ("", "")


# ----------------------------------------------------------------- headers on the wire


class Recorder:
    """A minimal S3 answering every request, remembering each (method, url, headers)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        query = request.url.params
        if request.method == "POST" and "uploads" in query:
            body = (
                b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                b"<UploadId>U1</UploadId></InitiateMultipartUploadResult>"
            )
            return httpx.Response(200, content=body)
        if request.method == "POST" and "uploadId" in query:
            body = (
                b"<CompleteMultipartUploadResult><Key>k</Key>"
                b"<ETag>&quot;abc-1&quot;</ETag></CompleteMultipartUploadResult>"
            )
            return httpx.Response(200, content=body)
        if request.method == "PUT" and "x-amz-copy-source" in request.headers:
            body = (
                b"<CopyObjectResult><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                b"<ETag>&quot;abc&quot;</ETag></CopyObjectResult>"
            )
            return httpx.Response(200, content=body)
        if request.method == "GET" and "list-type" in query:
            body = (
                b"<ListBucketResult><Name>b</Name><Prefix></Prefix><KeyCount>0</KeyCount>"
                b"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"
            )
            return httpx.Response(200, content=body)
        headers = {
            "etag": '"e"',
            "last-modified": "Mon, 01 Jan 2024 00:00:00 GMT",
            "content-length": "4",
        }
        if request.method == "GET":
            return httpx.Response(200, headers=headers, content=b"data")
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, headers={"etag": '"e"'})

    def sent(self, method: str, *, query: str = "", copy: bool = False) -> httpx.Request:
        for req in self.requests:
            if req.method != method or (query and query not in req.url.params):
                continue
            if ("x-amz-copy-source" in req.headers) == copy:
                return req
        raise AssertionError(f"no {method} {query} request")


def store_for(opts: MountOptions, recorder: Recorder, key_id: str = "AKID") -> S3Store:
    conn = S3fmAuthConnection(
        key_id,
        "SECRET" if key_id else "",
        False,
        "s3.test",
        9000,
        CallingFormat.PATH,
        signature="v4",
        transport=httpx.MockTransport(recorder),
        headers=opts.request_headers(),
    )
    return S3Store(conn, "b", page_size=opts.list_object_max_keys, headers=opts.object_headers())


async def exercise(store: S3Store) -> None:
    await store.put("k", b"data", {"mode": "33188"})
    upload = await store.create_multipart("big", {})
    part = await store.upload_part("big", upload, 1, b"part", 4)
    await store.complete_multipart("big", upload, [UploadedPart(part.number, part.etag, 4)])
    await store.copy("k", "k2")
    await store.copy("k", "k3", {"mode": "33188"})
    assert await store.head("k") is not None
    assert await store.get_range("k", 0, 3) == b"data"
    await store.list_page("", "/")
    await store.delete("k")


WRITES = [("PUT", "", False), ("POST", "uploads", False), ("PUT", "", True)]


async def test_acl_storage_class_and_sse_s3_go_on_every_write() -> None:
    recorder = Recorder()
    opts = parse_options(["default_acl=bucket-owner-full-control,storage_class=glacier_ir,use_sse"])
    await exercise(store_for(opts, recorder))
    wanted = {
        "x-amz-acl": "bucket-owner-full-control",
        "x-amz-storage-class": "GLACIER_IR",
        "x-amz-server-side-encryption": "AES256",
    }
    for method, query, copy in WRITES:
        req = recorder.sent(method, query=query, copy=copy)
        for name, value in wanted.items():
            assert req.headers.get(name) == value, (method, query, copy, name)
            assert name in req.headers["authorization"]  # signed
    for req in recorder.requests:
        if req.method in ("GET", "HEAD", "DELETE") or "partNumber" in req.url.params:
            assert not any(n in req.headers for n in wanted), req


async def test_sse_kms_names_its_key() -> None:
    recorder = Recorder()
    await exercise(store_for(parse_options(["use_sse=k:arn:aws:kms:key/1"]), recorder))
    for method, query, copy in WRITES:
        req = recorder.sent(method, query=query, copy=copy)
        assert req.headers["x-amz-server-side-encryption"] == "aws:kms"
        assert req.headers["x-amz-server-side-encryption-aws-kms-key-id"] == "arn:aws:kms:key/1"
    with pytest.raises(OptionError, match="needs a key id"):
        parse_options(["use_sse=kmsid"]).object_headers(environ={})
    env_key = parse_options(["use_sse=kmsid"]).object_headers(environ={"AWSSSEKMSID": "K"})
    assert env_key.write["x-amz-server-side-encryption-aws-kms-key-id"] == "K"


async def test_sse_c_key_goes_on_writes_reads_parts_and_copy_sources(tmp_path: Path) -> None:
    raw = bytes(range(32))
    keys = tmp_path / "sse.keys"
    keys.write_text(base64.b64encode(raw).decode() + "\n" + "x" * 32 + "\n")
    keys.chmod(0o600)
    recorder = Recorder()
    await exercise(store_for(parse_options([f"use_sse=custom:{keys}"]), recorder))
    prefix = "x-amz-server-side-encryption-customer-"
    wanted = {
        "algorithm": "AES256",
        "key": base64.b64encode(raw).decode(),
        "key-md5": base64.b64encode(hashlib.md5(raw).digest()).decode(),
    }
    carrying = [
        recorder.sent("PUT"),
        recorder.sent("POST", query="uploads"),
        recorder.sent("PUT", query="partNumber"),
        recorder.sent("PUT", copy=True),
        recorder.sent("HEAD"),
        next(r for r in recorder.requests if r.method == "GET" and "max-keys" not in str(r.url)),
    ]
    for req in carrying:
        for name, value in wanted.items():
            assert req.headers.get(prefix + name) == value, (req, name)
    copy = recorder.sent("PUT", copy=True)
    for name, value in wanted.items():
        assert (
            copy.headers.get("x-amz-copy-source-server-side-encryption-customer-" + name) == value
        )
    listing = recorder.sent("GET", query="list-type")
    assert prefix + "key" not in listing.headers
    # a raw 32-byte key is taken as it is; a readable key file is refused, as s3fs does
    keys.write_text("k" * 32 + "\n")
    got = parse_options([f"use_sse=c:{keys}"]).object_headers()
    assert got.key[prefix + "key"] == base64.b64encode(b"k" * 32).decode()
    keys.chmod(0o644)
    with pytest.raises(OptionError, match="must not be readable by others"):
        parse_options([f"use_sse=c:{keys}"]).object_headers()
    keys.chmod(0o600)
    keys.write_text("short\n")
    with pytest.raises(OptionError, match="32 bytes"):
        parse_options([f"use_sse=c:{keys}"]).object_headers()


async def test_requester_pays_is_signed_into_every_request() -> None:
    recorder = Recorder()
    await exercise(store_for(parse_options(["requester_pays"]), recorder))
    assert len(recorder.requests) >= 9
    for req in recorder.requests:
        assert req.headers.get("x-amz-request-payer") == "requester", req
        assert "x-amz-request-payer" in req.headers["authorization"]
    quiet = Recorder()
    await exercise(store_for(MountOptions(), quiet))
    assert not any("x-amz-request-payer" in r.headers for r in quiet.requests)


async def test_list_object_max_keys_is_the_page_size() -> None:
    recorder = Recorder()
    store = store_for(parse_options(["list_object_max_keys=50"]), recorder)
    async for _ in store.iter_pages("", "/"):
        pass
    assert recorder.sent("GET", query="list-type").url.params["max-keys"] == "50"


async def test_public_bucket_sends_no_authorization() -> None:
    recorder = Recorder()
    await exercise(store_for(parse_options(["public_bucket=1"]), recorder, key_id=""))
    assert recorder.requests
    for req in recorder.requests:
        assert "authorization" not in req.headers, req
        assert not any(name.startswith("x-amz-date") for name in req.headers)
    signed = Recorder()
    await exercise(store_for(MountOptions(), signed))
    assert all("authorization" in r.headers for r in signed.requests)
    conn = connection_for(parse_options(["public_bucket=1"]), "", "")
    assert conn._engine.credentials.anonymous


# --------------------------------------------------------------------------- mounted


def test_s3fs_owner_and_umask_on_a_mount(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    """s3fs's ``allow_other,uid=1000,gid=1000,umask=0022``: every entry is 1000:1000 and
    rwxr-xr-x, whatever its metadata says, and user 1000 reads a root-owned 0600 object."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (allow_other, another user) and setpriv")
    bucket = unique_bucket("s3fs")
    s3.create_bucket(Bucket=bucket)
    secret = {"mode": str(stat.S_IFREG | 0o600), "uid": "0", "gid": "0"}
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"for 1000", Metadata=secret)
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"", Metadata={"mode": str(stat.S_IFDIR | 0o700)})
    options = ("allow_other", "uid=1000", "gid=1000", "umask=0022", "big_writes", "big_writes")
    reachable = Path(tempfile.mkdtemp(prefix="s3fs-compat-"))  # user 1000 must reach it
    reachable.chmod(0o755)
    try:
        check_mount(moto, s3, bucket, reachable, options)
    finally:
        shutil.rmtree(reachable, ignore_errors=True)
    meta = s3.head_object(Bucket=bucket, Key="secret.txt")["Metadata"]
    assert meta["mode"] == str(stat.S_IFREG | 0o600)  # shown, never stored


def check_mount(moto: S3Server, s3: Any, bucket: str, base: Path, options: tuple[str, ...]) -> None:
    with mounted(moto, bucket, tmp_path=base, options=options) as mnt:
        for path in (mnt / "secret.txt", mnt / "dir"):
            st = os.stat(path)
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o755), path
        assert stat.S_ISREG(os.stat(mnt / "secret.txt").st_mode)
        assert stat.S_ISDIR(os.stat(mnt / "dir").st_mode)
        listing = subprocess.run(
            ["ls", "-ln", str(mnt)], capture_output=True, text=True, check=True
        ).stdout
        assert "-rwxr-xr-x 1 1000 1000" in listing
        as_1000 = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
        done = subprocess.run(
            [*as_1000, "cat", str(mnt / "secret.txt")], capture_output=True, check=False
        )
        assert (done.returncode, done.stdout) == (0, b"for 1000"), done.stderr
        notes = log_tail(mnt, 100_000)
        assert notes.count("s3fs option big_writes: always on here") == 1


def test_allow_root_and_mp_umask_on_a_mount(moto: S3Server, s3: Any, tmp_path: Path) -> None:
    """``allow_root`` reaches libfuse (the kernel mount gets allow_other, libfuse lets only the
    owner and root in); ``mp_umask`` sets the mount point's mode alone."""
    bucket = unique_bucket("s3fs")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    with mounted(moto, bucket, tmp_path=tmp_path, options=("allow_root", "mp_umask=077")) as mnt:
        entries = Path("/proc/self/mounts").read_text().splitlines()
        (line,) = [entry for entry in entries if f" {mnt} " in entry]
        assert "allow_other" in line.split()[3].split(",")
        assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == 0o644  # the default, not forced
