"""``s3fmfs.client.blocking``: python-s3 scripts, synchronous, against real servers.

The flow is the one of python-s3's own test (Amazon's ``s3-test.py``, ``run_tests``), written
as a python-s3 script is (``S3.S3fmAuthConnection(KEY, SECRET, is_secure=False, server=...,
port=..., calling_format=S3.CallingFormat.PATH)``, statuses read from ``.http_response``):
s3rver checks its Signature V2 headers and presigned URLs (fetched with curl), moto its V4.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import subprocess
import threading
from pathlib import Path

import pytest

from s3fmfs.client import NoSuchBucket, RetryPolicy, S3ConnectError
from s3fmfs.client import blocking as S3
from s3fmfs.client._endpoint import default_calling_format, parse_endpoint_url
from tests.support.servers import S3Server, free_port, unique_bucket

BACKENDS = ["trio", "asyncio"]


def curl(url: str) -> tuple[int, bytes]:
    """GET ``url`` with curl (another HTTP client than ours): (status, body)."""
    cmd = ["curl", "-s", "-g", "-o", "-", "-w", "\n%{http_code}", url]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=30).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


def python_s3_flow(conn: S3.S3fmAuthConnection, bucket_name: str) -> None:
    """python-s3's ``run_tests``: every status as python-s3 returned it."""
    assert conn.check_bucket_exists(bucket_name).status == 404  # returned, not raised

    response = conn.create_located_bucket(bucket_name, S3.Location.DEFAULT)
    assert response.http_response.status == 200, "create bucket"
    assert conn.check_bucket_exists(bucket_name).status == 200

    response = conn.list_bucket(bucket_name)
    assert response.http_response.status == 200, "list bucket"
    assert len(response.entries) == 0, "bucket is empty"

    text = "this is a test"
    key = "example.txt"
    response = conn.put(bucket_name, key, text)
    assert response.http_response.status == 200, "put with a string argument"

    response = conn.put(
        bucket_name, key, S3.S3Object(text, {"title": "title"}), {"Content-Type": "text/plain"}
    )
    assert response.http_response.status == 200, "put with complex argument and headers"

    response = conn.get(bucket_name, key)
    assert response.http_response.status == 200, "get object"
    assert response.object.data == text.encode(), "got right data"
    assert response.object.metadata == {"title": "title"}, "metadata is correct"
    assert int(response.http_response.getheader("Content-Length") or -1) == len(text)
    assert response.http_response.getheader("Content-Type") == "text/plain"

    title_with_spaces = " \t  title with leading and trailing spaces     "
    response = conn.put(
        bucket_name,
        key,
        S3.S3Object(text, {"title": title_with_spaces}),
        {"Content-Type": "text/plain"},
    )
    assert response.http_response.status == 200, "put with headers with spaces"
    response = conn.get(bucket_name, key)
    assert response.object.metadata == {"title": title_with_spaces.strip()}

    # delimited list tests
    inner_key = "test/inner.txt"
    last_key = "z-last-key.txt"
    assert conn.put(bucket_name, inner_key, text).http_response.status == 200
    assert conn.put(bucket_name, last_key, text).http_response.status == 200

    delimited_list(conn, bucket_name, False, {"delimiter": "/"}, 2, 1)
    # pages of max-keys 1, each from the last one's marker (S3 counts common prefixes against
    # max-keys; moto and s3rver count keys only: the number of pages may differ, not their sum)
    keys: list[str] = []
    prefixes: list[str] = []
    params: dict[str, object] = {"max-keys": 1, "delimiter": "/"}
    for _ in range(5):
        response = delimited_list(conn, bucket_name, None, params, None, None)
        assert len(response.entries) <= 1
        keys += [e.key for e in response.entries]
        prefixes += [p.prefix for p in response.common_prefixes]
        if not response.is_truncated:
            break
        marker = response.next_marker or max(keys[-1:] + prefixes[-1:])
        params = {"marker": marker, "max-keys": 1, "delimiter": "/"}
    assert (keys, sorted(set(prefixes))) == (["example.txt", last_key], ["test/"])
    response = delimited_list(conn, bucket_name, False, {"prefix": "test/", "delimiter": "/"}, 1, 0)
    assert [e.key for e in response.entries] == [inner_key]
    entry = response.entries[0]
    assert entry.size == len(text)
    assert isinstance(entry.last_modified, datetime.datetime)
    assert entry.last_modified.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert abs(now - entry.last_modified) < datetime.timedelta(minutes=5)

    assert conn.delete(bucket_name, inner_key).http_response.status == 204
    assert conn.delete(bucket_name, last_key).http_response.status == 204

    weird_key = "&=%# ++++"
    assert conn.put(bucket_name, weird_key, text).http_response.status == 200, "put weird key"
    response = conn.get(bucket_name, weird_key)
    assert response.http_response.status == 200 and response.object.data == text.encode()

    response = conn.list_bucket(bucket_name)
    assert response.http_response.status == 200, "list bucket"
    entries = response.entries
    assert [e.key for e in entries] == [weird_key, key], "depends on weird_key < key"

    response = conn.list_bucket(bucket_name, {"max-keys": 1})
    assert response.http_response.status == 200, "list bucket with args"
    assert len(response.entries) == 1

    for entry in entries:
        assert conn.delete(bucket_name, entry.key).http_response.status == 204

    response = conn.list_all_my_buckets()
    assert response.http_response.status == 200, "list all my buckets"
    buckets = response.entries
    assert bucket_name in [b.name for b in buckets]

    assert conn.delete_bucket(bucket_name).http_response.status == 204, "delete bucket"

    response = conn.list_all_my_buckets()
    assert len(response.entries) == len(buckets) - 1, "bucket count is correct"
    assert conn.check_bucket_exists(bucket_name).status == 404


def delimited_list(
    conn: S3.S3fmAuthConnection,
    bucket_name: str,
    is_truncated: bool | None,
    parameters: dict[str, object],
    regular_expected: int | None,
    common_expected: int | None,
) -> S3.ListBucketResponse:
    """python-s3's ``do_delimited_list`` and ``verify_list_bucket_response`` (None: a count
    the test servers get wrong, not checked)."""
    response = conn.list_bucket(bucket_name, parameters)
    assert response.http_response.status == 200
    if regular_expected is not None:
        assert len(response.entries) == regular_expected, parameters
    if common_expected is not None:
        assert len(response.common_prefixes) == common_expected, parameters
    assert response.name == bucket_name
    assert response.prefix == parameters.get("prefix", "")
    assert response.marker in ("", parameters.get("marker", ""))  # moto echoes no Marker
    if "max-keys" in parameters:
        assert response.max_keys == parameters["max-keys"]
    assert response.delimiter == parameters["delimiter"]
    if is_truncated is not None:
        assert response.is_truncated == is_truncated
    return response


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_s3_flow_s3rver_v2(s3rver_server: S3Server, backend: str) -> None:
    """s3rver verifies every V2 signature of the flow, and the presigned URLs curl fetches."""
    server = s3rver_server
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY = server.access_key_id, server.secret_access_key
    conn = S3.S3fmAuthConnection(
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        is_secure=False,
        server=server.host,
        port=server.port,
        calling_format=S3.CallingFormat.PATH,
        signature="v2",  # python-s3's; the default for S3for.me hosts only
        backend=backend,
    )
    generator = S3.QueryStringAuthGenerator(
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        is_secure=False,
        server=server.host,
        port=server.port,
        signature="v2",
    )
    with conn:
        python_s3_flow(conn, unique_bucket())

        bucket_name = unique_bucket()
        key = "test-key"
        assert conn.create_bucket(bucket_name).http_response.status == 200
        assert conn.put(bucket_name, key, S3.S3Object("this is a test")).status == 200
        generator.calling_format = S3.CallingFormat.PATH  # as the sample script does
        generator.set_expires_in(60)
        assert curl(generator.get(bucket_name, key)) == (200, b"this is a test")
        # s3rver lets anonymous requests through: the bare URL is only checked for its form
        assert generator.make_bare_url(bucket_name, key) == f"{server.endpoint}/{bucket_name}/{key}"
        wrong = S3.QueryStringAuthGenerator(
            AWS_ACCESS_KEY_ID, "wrong", False, server.host, server.port, signature="v2"
        )
        assert curl(wrong.get(bucket_name, key))[0] == 403
        assert conn.delete(bucket_name, key).status == 204
        assert curl(generator.get(bucket_name, key))[0] == 404
        assert conn.delete_bucket(bucket_name).status == 204


def test_python_s3_flow_moto_v4(moto_auth: S3Server) -> None:
    """moto verifies every V4 signature of the flow (V4: the default off S3for.me)."""
    conn = S3.S3fmAuthConnection(
        moto_auth.access_key_id,
        moto_auth.secret_access_key,
        False,
        moto_auth.host,
        moto_auth.port,
        S3.CallingFormat.PATH,
    )
    try:
        assert conn.aio.signature == "v4"
        python_s3_flow(conn, unique_bucket())
        wrong = S3.S3fmAuthConnection(
            moto_auth.access_key_id, "wrong-secret", endpoint_url=moto_auth.endpoint
        )
        with wrong:
            response = wrong.list_all_my_buckets()
        assert response.http_response.status == 403 and response.entries == []
        assert response.error is not None and response.error.code == "SignatureDoesNotMatch"
    finally:
        conn.close()


def test_error_answers_returned_or_raised(s3rver_server: S3Server) -> None:
    """python-s3 returned error answers (status, and the error document as ``.message``);
    ``raise_errors=True`` raises them."""
    server = s3rver_server
    with S3.S3fmAuthConnection(
        server.access_key_id, server.secret_access_key, endpoint_url=server.endpoint
    ) as conn:
        assert conn.calling_format == S3.CallingFormat.PATH  # an IP address: path style
        bucket_name = unique_bucket()
        response = conn.get(bucket_name, "missing")
        assert response.http_response.status == 404
        assert "<Code>NoSuchBucket</Code>" in response.message
        assert response.object.data.startswith(b"<?xml")
        assert isinstance(response.error, NoSuchBucket)
        listing = conn.list_bucket(bucket_name)
        assert (listing.status, listing.entries, listing.common_prefixes) == (404, [], [])
        assert conn.create_bucket(bucket_name).status == 200
        response = conn.get(bucket_name, "missing")
        assert response.status == 404 and "NoSuchKey" in response.message
        assert conn.head(bucket_name, "missing").message == "404 Not Found"  # no body
        assert conn.delete_bucket(bucket_name).status == 204
    with (
        S3.S3fmAuthConnection(
            server.access_key_id,
            server.secret_access_key,
            endpoint_url=server.endpoint,
            raise_errors=True,
        ) as strict,
        pytest.raises(NoSuchBucket) as caught,
    ):
        strict.list_bucket(unique_bucket())
    assert f"on {server.host}:{server.port}" in str(caught.value)


def test_endpoint_url_and_generator(s3rver_server: S3Server) -> None:
    """``endpoint_url`` next to python-s3's arguments, on the connection and the generator."""
    server = s3rver_server
    key_id, secret = server.access_key_id, server.secret_access_key
    bucket_name = unique_bucket()
    with S3.S3fmAuthConnection(
        key_id, secret, endpoint_url=server.endpoint, signature="v2"
    ) as conn:
        assert (conn.is_secure, conn.server, conn.port) == (False, server.host, server.port)
        assert conn.create_bucket(bucket_name).status == 200
        assert conn.put(bucket_name, "k", b"data").status == 200
        generator = S3.QueryStringAuthGenerator(key_id, secret, endpoint_url=server.endpoint)
        assert generator.server_name == f"{server.host}:{server.port}"
        url = generator.get(bucket_name, "k")
        assert url.startswith(f"{server.endpoint}/{bucket_name}/k?")
        assert curl(url) == (200, b"data")
        copied = conn.copy(bucket_name, "k", bucket_name, "k2")
        assert isinstance(copied.last_modified, datetime.datetime) and copied.etag
        pages = list(conn.list_pages(bucket_name))
        assert [e.key for page in pages for e in page.entries] == ["k", "k2"]
        conn.delete_objects(bucket_name, ["k", "k2"])
        assert conn.delete_bucket(bucket_name).status == 204


def test_connection_errors_name_the_host() -> None:
    """Nothing listening: S3ConnectError (raised, as python-s3's httplib did) names host:port."""
    port = free_port()
    with (
        S3.S3fmAuthConnection(
            "key", "secret", endpoint_url=f"http://127.0.0.1:{port}", retry=RetryPolicy.never()
        ) as conn,
        pytest.raises(S3ConnectError) as caught,
    ):
        conn.list_all_my_buckets()
    assert f"cannot connect to 127.0.0.1:{port}" in str(caught.value)


def test_from_threads_and_inside_asyncio(s3rver_server: S3Server) -> None:
    """Calls from several threads at once, and from inside a running asyncio program (which
    the call blocks, but does not deadlock: the connection's loop is its own thread)."""
    server = s3rver_server
    bucket_name = unique_bucket()
    before = set(threading.enumerate())
    conn = S3.S3fmAuthConnection(
        server.access_key_id, server.secret_access_key, endpoint_url=server.endpoint
    )
    loop_threads = [t for t in set(threading.enumerate()) - before if t.name == "s3fmfs-client"]
    assert len(loop_threads) == 1 and loop_threads[0].daemon
    assert conn.create_bucket(bucket_name).status == 200
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                assert conn.put(bucket_name, f"t{n}/{i}", f"{n} {i}").status == 200
        except BaseException as exc:  # reported to the test below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []

    async def inside_asyncio() -> list[str]:
        await asyncio.sleep(0)
        return [e.key for e in conn.list_bucket(bucket_name).entries]

    keys = asyncio.run(inside_asyncio())
    assert sorted(keys) == sorted(f"t{n}/{i}" for n in range(4) for i in range(5))
    conn.delete_objects(bucket_name, keys)
    assert conn.delete_bucket(bucket_name).status == 204
    conn.close()
    assert not loop_threads[0].is_alive()  # close() ends the loop's thread
    with pytest.raises(RuntimeError, match="closed"):
        conn.list_all_my_buckets()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", (False, "127.0.0.1", 9000)),
        ("https://rest.s3for.me", (True, "rest.s3for.me", 443)),
        ("http://localhost/", (False, "localhost", 80)),
        ("https://[::1]:8443", (True, "::1", 8443)),
    ],
)
def test_parse_endpoint_url(url: str, expected: tuple[bool, str, int]) -> None:
    assert parse_endpoint_url(url) == expected


@pytest.mark.parametrize(
    "url", ["127.0.0.1:9000", "ftp://host", "http://host/path", "http://h:99999", "http://"]
)
def test_parse_endpoint_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="endpoint_url"):
        parse_endpoint_url(url)


def test_default_calling_format() -> None:
    assert default_calling_format("127.0.0.1") == S3.CallingFormat.PATH
    assert default_calling_format("::1") == S3.CallingFormat.PATH
    assert default_calling_format("localhost") == S3.CallingFormat.PATH
    assert default_calling_format("rest.s3for.me") == S3.CallingFormat.SUBDOMAIN


def readme_client_examples() -> list[str]:
    """The Python blocks of README's "The signed client in Python"."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## The signed client in Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_examples_run_with_only_keys_and_endpoint_filled_in(
    moto_auth: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's client examples, with the key pair and ENDPOINT replaced and nothing else,
    against moto checking V4 signatures: blocking first (it creates the bucket), then async."""
    blocking_example, async_example = readme_client_examples()
    filled = re.sub(
        r"^ACCESS_KEY, SECRET = .*$",
        f"ACCESS_KEY, SECRET = {moto_auth.access_key_id!r}, {moto_auth.secret_access_key!r}",
        blocking_example,
        count=1,
        flags=re.M,
    )
    filled = re.sub(r"^ENDPOINT = .*$", f"ENDPOINT = {moto_auth.endpoint!r}", filled, flags=re.M)
    assert filled.count(moto_auth.endpoint) == 1 and moto_auth.secret_access_key in filled
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(filled, "README.md", "exec"), namespace)
    exec(compile(async_example, "README.md", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["200 OK", "200 OK"]  # created, put
    assert out[2] == out[-1] == "b'hello' {'title': 'greeting'}"  # blocking get, async get
    assert out[3].startswith("notes/a.txt 5 20")  # key, size, a datetime's str
    bucket = str(namespace["bucket"])
    with S3.S3fmAuthConnection(
        moto_auth.access_key_id, moto_auth.secret_access_key, endpoint_url=moto_auth.endpoint
    ) as conn:
        assert conn.delete(bucket, "notes/a.txt").status == 204
        assert conn.delete_bucket(bucket).status == 204


def test_calling_format_can_be_changed_after_connecting() -> None:
    """python-s3's tests set ``conn.calling_format`` after connecting: requests follow it."""
    conn = S3.S3fmAuthConnection("key", "secret", server="s3.example.com")
    try:
        assert conn.calling_format == S3.CallingFormat.SUBDOMAIN
        assert conn.aio._engine.route("b").endpoint.host_for("b") == "b.s3.example.com"
        conn.calling_format = S3.CallingFormat.PATH
        assert conn.calling_format == S3.CallingFormat.PATH
        assert conn.aio._engine.route("b").endpoint.path_for("b", "k") == "/b/k"
        assert conn.aio._engine.route("b").endpoint.host_for("b") == "s3.example.com"
    finally:
        conn.close()
