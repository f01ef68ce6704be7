"""Signature V4: AWS's published S3 examples, edge rules, and a random comparison with botocore."""

from __future__ import annotations

import datetime
import hashlib
import random
import string
from types import SimpleNamespace
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SIGNED_HEADERS_BLACKLIST, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from s3fmfs.client._encoding import Query, encode_query, quote_key
from s3fmfs.client._signing_types import Credentials, SigningRequest
from s3fmfs.client._signing_v4 import (
    EMPTY_SHA256,
    MAX_PRESIGN_EXPIRES,
    SKIPPED_HEADERS,
    UNSIGNED_PAYLOAD,
    canonical_query_v4,
    canonical_request_v4,
    headers_to_sign_v4,
    presign_v4,
    sign_v4,
    signing_key_v4,
    string_to_sign_v4,
)

# --- AWS's published examples ----------------------------------------------------------------
# "Examples: Signature Calculations in AWS Signature Version 4" (S3 API reference), header and
# query-parameter forms.

AWS_CREDS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_NOW = datetime.datetime(2013, 5, 24, 0, 0, 0, tzinfo=datetime.UTC)
AWS_HOST = "examplebucket.s3.amazonaws.com"
AWS_SCOPE = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def aws_authorization(signed_headers: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={AWS_SCOPE}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def test_aws_example_get_object_canonical_request_and_string_to_sign() -> None:
    req = SigningRequest("GET", AWS_HOST, "/test.txt", headers={"range": "bytes=0-9"})
    added = {"x-amz-date": "20130524T000000Z", "x-amz-content-sha256": EMPTY_SHA256}
    canonical = canonical_request_v4(req, headers_to_sign_v4(req, added), EMPTY_SHA256)
    assert canonical == (
        "GET\n"
        "/test.txt\n"
        "\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "range:bytes=0-9\n"
        f"x-amz-content-sha256:{EMPTY_SHA256}\n"
        "x-amz-date:20130524T000000Z\n"
        "\n"
        "host;range;x-amz-content-sha256;x-amz-date\n"
        f"{EMPTY_SHA256}"
    )
    sts = string_to_sign_v4("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", canonical)
    assert sts == (
        "AWS4-HMAC-SHA256\n"
        "20130524T000000Z\n"
        "20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )


def test_aws_example_get_object() -> None:
    req = SigningRequest("GET", AWS_HOST, "/test.txt", headers={"range": "bytes=0-9"})
    assert sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256) == {
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY_SHA256,
        "authorization": aws_authorization(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    }


def test_aws_example_put_object() -> None:
    body = b"Welcome to Amazon S3."
    payload_hash = hashlib.sha256(body).hexdigest()
    assert payload_hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    req = SigningRequest(
        "PUT",
        AWS_HOST,
        quote_key("/test$file.text"),
        headers={
            "date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
        },
    )
    assert req.path == "/test%24file.text"
    headers = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, payload_hash)
    assert headers["x-amz-content-sha256"] == payload_hash
    assert headers["authorization"] == aws_authorization(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    )


def test_aws_example_get_bucket_lifecycle() -> None:
    req = SigningRequest("GET", AWS_HOST, "/", query=(("lifecycle", None),))
    headers = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert headers["authorization"] == aws_authorization(
        "host;x-amz-content-sha256;x-amz-date",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    )


def test_aws_example_list_objects() -> None:
    # Sent as ?prefix=J&max-keys=2: the canonical query sorts it.
    req = SigningRequest("GET", AWS_HOST, "/", query=(("prefix", "J"), ("max-keys", "2")))
    headers = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert headers["authorization"] == aws_authorization(
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    )


def test_aws_example_presigned_url() -> None:
    req = SigningRequest("GET", AWS_HOST, "/test.txt")
    params = presign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, 86400)
    assert encode_query(params) == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_signing_key_matches_aws_published_derivation() -> None:
    # AWS general reference, "Examples of how to derive a signing key for Signature Version 4".
    key = signing_key_v4("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signing_key_is_cached() -> None:
    signing_key_v4.cache_clear()
    first = signing_key_v4("secret", "20240101", "eu-west-1")
    second = signing_key_v4("secret", "20240101", "eu-west-1")
    assert first is second
    assert signing_key_v4.cache_info().hits == 1
    assert signing_key_v4("secret", "20240102", "eu-west-1") != first


# --- rules ------------------------------------------------------------------------------------


def test_canonical_query_sorts_by_encoded_name_then_value() -> None:
    query: Query = (
        ("b", "2"),
        ("aZ", "z"),
        ("aé", "1"),  # encodes to a%C3%A9, which sorts before aZ although é > Z
        ("b", "1"),
        ("flag", None),
        ("sp ace", "a/b+c~"),
    )
    assert canonical_query_v4(query) == "a%C3%A9=1&aZ=z&b=1&b=2&flag=&sp%20ace=a%2Fb%2Bc~"


def test_canonical_headers_trim_and_collapse_whitespace() -> None:
    req = SigningRequest("GET", "h", "/k", headers={"X-Amz-Meta-A": "  a   b\t c  "})
    canonical = canonical_request_v4(req, headers_to_sign_v4(req, {}), UNSIGNED_PAYLOAD)
    assert "\nx-amz-meta-a:a b c\n" in canonical


def test_path_is_signed_as_sent_without_normalization() -> None:
    req = SigningRequest("GET", "h", "/b/a//./../c%20d%2Be")
    canonical = canonical_request_v4(req, {"host": "h"}, UNSIGNED_PAYLOAD)
    assert canonical.split("\n")[1] == "/b/a//./../c%20d%2Be"


def test_skipped_headers_are_not_signed() -> None:
    headers = {
        "user-agent": "s3fmfs/1",
        "accept-encoding": "gzip",
        "expect": "100-continue",
        "x-amzn-trace-id": "Root=1",
        "connection": "keep-alive",
        "transfer-encoding": "chunked",
        "authorization": "AWS4-HMAC-SHA256 stale",
        "content-type": "text/plain",
        "x-amz-meta-a": "1",
        "host": "ignored.example",  # req.host is what is signed
    }
    req = SigningRequest("PUT", "bucket.example:9000", "/k", headers=headers)
    added = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert (
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-a,"
        in (added["authorization"])
    )
    canonical = canonical_request_v4(req, headers_to_sign_v4(req, added), EMPTY_SHA256)
    assert "\nhost:bucket.example:9000\n" in canonical
    params = dict(presign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, 60))
    assert params["X-Amz-SignedHeaders"] == "content-type;host;x-amz-meta-a"


def test_skip_list_covers_botocores() -> None:
    assert set(SIGNED_HEADERS_BLACKLIST) <= SKIPPED_HEADERS
    assert SKIPPED_HEADERS - set(SIGNED_HEADERS_BLACKLIST) == {"authorization", "accept-encoding"}


def test_stale_signer_headers_are_replaced() -> None:
    clean = SigningRequest("GET", AWS_HOST, "/test.txt", headers={"range": "bytes=0-9"})
    retried = SigningRequest(
        "GET",
        AWS_HOST,
        "/test.txt",
        headers={
            "range": "bytes=0-9",
            "x-amz-date": "20000101T000000Z",
            "x-amz-content-sha256": "stale",
            "authorization": "AWS4-HMAC-SHA256 stale",
        },
    )
    expected = sign_v4(clean, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert sign_v4(retried, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256) == expected
    assert expected["authorization"].endswith(
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_session_token_is_sent_and_signed() -> None:
    creds = Credentials(AWS_CREDS.access_key_id, AWS_CREDS.secret_access_key, "tok/en+=")
    req = SigningRequest("GET", AWS_HOST, "/test.txt")
    headers = sign_v4(req, creds, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert headers["x-amz-security-token"] == "tok/en+="
    assert (
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        in (headers["authorization"])
    )
    without = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    assert "x-amz-security-token" not in without
    params = presign_v4(req, creds, "us-east-1", AWS_NOW, 3600)
    assert [name for name, _ in params] == [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ]
    assert dict(params)["X-Amz-Security-Token"] == "tok/en+="
    plain = dict(presign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, 3600))
    assert plain["X-Amz-Signature"] != dict(params)["X-Amz-Signature"]


def test_time_is_converted_to_utc_and_naive_means_utc() -> None:
    req = SigningRequest("GET", AWS_HOST, "/test.txt", headers={"range": "bytes=0-9"})
    expected = sign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, EMPTY_SHA256)
    paris = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2013, 5, 24, 2, 0, 0, tzinfo=paris)
    naive = datetime.datetime(2013, 5, 24, 0, 0, 0, 999999)
    assert sign_v4(req, AWS_CREDS, "us-east-1", local, EMPTY_SHA256) == expected
    assert sign_v4(req, AWS_CREDS, "us-east-1", naive, EMPTY_SHA256) == expected


@pytest.mark.parametrize("expires_in", [0, -1, MAX_PRESIGN_EXPIRES + 1])
def test_presign_rejects_expiry_outside_sigv4_range(expires_in: int) -> None:
    req = SigningRequest("GET", AWS_HOST, "/test.txt")
    with pytest.raises(ValueError):
        presign_v4(req, AWS_CREDS, "us-east-1", AWS_NOW, expires_in)


def test_presign_signs_existing_query() -> None:
    base = SigningRequest("GET", AWS_HOST, "/test.txt")
    with_query = SigningRequest(
        "GET", AWS_HOST, "/test.txt", query=(("response-content-type", "text/plain"),)
    )
    a = dict(presign_v4(base, AWS_CREDS, "us-east-1", AWS_NOW, 60))
    b = dict(presign_v4(with_query, AWS_CREDS, "us-east-1", AWS_NOW, 60))
    assert a["X-Amz-Signature"] != b["X-Amz-Signature"]


# --- random comparison with botocore ----------------------------------------------------------

KEY_PIECES = [
    *string.ascii_letters,
    *string.digits,
    *"-_.~ +%&=#?!$'()*,;:@[]",
    "/",
    "//",
    "é",
    "ß",
    "日本",
    "😀",
    "a b",
    "..",
]
VALUE_PIECES = [*string.ascii_letters, *string.digits, *" +%&=#?/~*:,", "é", "日", "😀"]
QUERY_NAMES = [
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "list-type",
    "encoding-type",
    "versionId",
    "uploadId",
    "partNumber",
    "acl",
    "tagging",
    "uploads",
    "delete",
    "response-content-type",
    "response-content-disposition",
    "x-id",
    "weird name",
    "a+b",
    "a=b",
    "ünï",
    "~tilde",
]
HEADER_CHARS = string.ascii_letters + string.digits + " -_.,;=/+:\"'()"
REGIONS = ["us-east-1", "us-west-1", "eu-west-3", "ap-southeast-2", "garage"]
METHODS = ["GET", "PUT", "HEAD", "DELETE", "POST"]


def random_key(rng: random.Random) -> str:
    count = rng.randint(200, 600) if rng.random() < 0.1 else rng.randint(1, 15)  # some long
    key = "".join(rng.choice(KEY_PIECES) for _ in range(count))
    if rng.random() < 0.2:
        key += "/"
    return key


def random_value(rng: random.Random) -> str:
    return "".join(rng.choice(VALUE_PIECES) for _ in range(rng.randint(0, 12)))


def random_query(rng: random.Random, unique: bool) -> Query:
    names = rng.sample(QUERY_NAMES, rng.randint(0, 4))
    if not unique and names and rng.random() < 0.3:
        names.append(names[0])  # a repeated name: sorted by value
    pairs: list[tuple[str, str | None]] = []
    for name in names:
        pairs.append((name, None if rng.random() < 0.25 else random_value(rng)))
    return tuple(pairs)


def random_header_value(rng: random.Random) -> str:
    value = "".join(rng.choice(HEADER_CHARS) for _ in range(rng.randint(0, 20)))
    if rng.random() < 0.3:
        value = "  " + value.replace(" ", "   ") + "\t "  # Trimall must collapse these
    return value


def random_headers(rng: random.Random, body: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    if rng.random() < 0.5:
        headers["content-type"] = rng.choice(
            ["application/octet-stream", "text/plain; charset=utf-8", "image/jpeg"]
        )
    if rng.random() < 0.3:
        headers["range"] = f"bytes={rng.randint(0, 99)}-{rng.randint(100, 9999)}"
    if rng.random() < 0.3:
        headers["content-length"] = str(len(body))
    for i in range(rng.randint(0, 3)):
        headers[f"x-amz-meta-{rng.choice(['a', 'b-c', 'zz', 'Mixed'])}{i}".lower()] = (
            random_header_value(rng)
        )
    for name, value in [
        ("x-amz-acl", "public-read"),
        ("x-amz-storage-class", "STANDARD_IA"),
        ("x-amz-copy-source", "/src/" + quote_key("a b+c")),
        ("if-match", '"0123abcd"'),
        ("cache-control", "max-age=60"),
        ("content-disposition", 'attachment; filename="x y.txt"'),
        ("content-md5", "4gJE4saaMU4BqNR0kLY+lw=="),
        # skipped by both signers
        ("user-agent", "s3fmfs/0.1 python"),
        ("expect", "100-continue"),
        ("x-amzn-trace-id", "Root=1-abc"),
    ]:
        if rng.random() < 0.2:
            headers[name] = value
    if rng.random() < 0.3:
        headers[rng.choice(SIGNED_HEADERS_BLACKLIST)] = "skipped"
    return headers


def random_credentials(rng: random.Random) -> Credentials:
    alphabet = string.ascii_letters + string.digits + "+/"
    secret = "".join(rng.choice(alphabet) for _ in range(40))
    token = "".join(rng.choice(alphabet + "=") for _ in range(60)) if rng.random() < 0.3 else None
    return Credentials(f"AKIA{rng.randint(0, 10**12):016d}", secret, token)


def random_now(rng: random.Random) -> datetime.datetime:
    seconds = rng.randint(946684800, 2114380800)  # 2000..2037
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def random_request(rng: random.Random, unique_query: bool = False) -> tuple[SigningRequest, bytes]:
    body = rng.randbytes(rng.randint(0, 64)) if rng.random() < 0.5 else b""
    bucket = rng.choice(["bucket", "my.bucket", "b-1"])
    key = random_key(rng)
    port = rng.choice(["", ":9000", ":4569"])
    if rng.random() < 0.5:  # virtual-hosted style
        host = f"{bucket}.s3.example.com{port}"
        path = "/" + quote_key(key) if rng.random() < 0.9 else "/"
    else:
        host = f"s3.example.com{port}"
        path = f"/{bucket}/" + quote_key(key) if rng.random() < 0.9 else f"/{bucket}"
    req = SigningRequest(
        method=rng.choice(METHODS),
        host=host,
        path=path,
        query=random_query(rng, unique_query),
        headers=random_headers(rng, body),
    )
    return req, body


def url_of(req: SigningRequest) -> str:
    url = f"http://{req.host}{req.path}"
    return f"{url}?{encode_query(req.query)}" if req.query else url


def boto_credentials(creds: Credentials) -> BotoCredentials:
    return BotoCredentials(creds.access_key_id, creds.secret_access_key, creds.session_token)


def at(now: datetime.datetime) -> mock._patch[mock.MagicMock]:
    """Fix botocore's clock: add_auth reads botocore.auth.get_current_datetime()."""
    naive = now.astimezone(datetime.UTC).replace(tzinfo=None)
    return mock.patch("botocore.auth.get_current_datetime", return_value=naive)


def test_random_requests_cover_the_tricky_cases() -> None:
    """Guard against the generator silently losing the cases the comparisons are for."""
    requests = [random_request(random.Random(seed))[0] for seed in range(200)]
    paths = [req.path for req in requests]
    for needle in ("%20", "%2B", "%25", "%26", "%3D", "%23", "%3F", "~", "%C3%A9", "//"):
        assert any(needle in path for path in paths), needle
    assert any(path.endswith("/") and len(path) > 1 for path in paths)
    assert any(len(path) > 300 for path in paths)
    assert any(value is None for req in requests for _, value in req.query)
    assert any(len({n for n, _ in req.query}) < len(req.query) for req in requests)
    assert any("x-amz-meta-" in name for req in requests for name in req.headers)
    assert any("user-agent" in req.headers for req in requests)
    assert any("   " in value for req in requests for value in req.headers.values())


@pytest.mark.parametrize("seed", range(200))
def test_sign_v4_matches_botocore(seed: int) -> None:
    rng = random.Random(seed)
    req, body = random_request(rng)
    if rng.random() < 0.2:
        req = SigningRequest(  # a retry still carrying the previous signer headers
            req.method,
            req.host,
            req.path,
            req.query,
            {**req.headers, "x-amz-date": "19990101T000000Z", "x-amz-content-sha256": "x"},
        )
    creds = random_credentials(rng)
    region = rng.choice(REGIONS)
    now = random_now(rng)
    unsigned = rng.random() < 0.25
    payload_hash = UNSIGNED_PAYLOAD if unsigned else hashlib.sha256(body).hexdigest()

    ours = sign_v4(req, creds, region, now, payload_hash)

    # Without bare flags botocore can take the query as params and encode it itself.
    as_params = rng.random() < 0.5 and all(value is not None for _, value in req.query)
    botoreq = AWSRequest(
        method=req.method,
        url=url_of(req) if not as_params else f"http://{req.host}{req.path}",
        headers=dict(req.headers),
        data=body,
        params=list(req.query) if as_params else None,
    )
    if unsigned:
        botoreq.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": False})
    with at(now):
        S3SigV4Auth(boto_credentials(creds), "s3", region).add_auth(botoreq)

    assert ours["authorization"] == botoreq.headers["Authorization"], req
    assert ours["x-amz-date"] == botoreq.headers["X-Amz-Date"]
    assert ours["x-amz-content-sha256"] == botoreq.headers["X-Amz-Content-SHA256"]
    assert ours.get("x-amz-security-token") == botoreq.headers.get("X-Amz-Security-Token")


@pytest.mark.parametrize("seed", range(200))
def test_presign_v4_matches_botocore(seed: int) -> None:
    rng = random.Random(seed)
    # botocore re-parses the query into a dict: repeated names would be lost there.
    req, _ = random_request(rng, unique_query=True)
    creds = random_credentials(rng)
    region = rng.choice(REGIONS)
    now = random_now(rng)
    expires_in = rng.choice([1, 60, 3600, 86400, MAX_PRESIGN_EXPIRES])

    params = presign_v4(req, creds, region, now, expires_in)

    botoreq = AWSRequest(method=req.method, url=url_of(req), headers=dict(req.headers))
    with at(now):
        S3SigV4QueryAuth(boto_credentials(creds), "s3", region, expires=expires_in).add_auth(
            botoreq
        )
    # botocore writes bare flags as "name=", otherwise the whole query must be identical.
    flags_as_empty = [(name, value or "") for name, value in req.query]
    assert urlsplit(botoreq.url).query == encode_query([*flags_as_empty, *params]), req
