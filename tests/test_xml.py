"""The XML parsers and builders of ``s3fmfs.client._xml`` on documents shaped like real answers.

The documents follow AWS's (2006-03-01 namespace, XML declaration, ``&quot;`` in ETags); each
parser is also fed the namespace-less form that several S3-compatible services send.
"""

from __future__ import annotations

import datetime
from xml.etree import ElementTree

import pytest

from s3fmfs.client._xml import (
    S3_NS,
    build_complete_multipart,
    build_create_bucket,
    build_delete,
    embedded_error,
    parse,
    parse_copy_result,
    parse_delete_result,
    parse_initiate_multipart,
    parse_list_buckets,
    parse_list_objects,
    parse_list_parts,
    parse_list_uploads,
    parse_location,
)
from s3fmfs.client.errors import InvalidResponseError
from s3fmfs.client.models import (
    Bucket,
    CommonPrefixEntry,
    DeleteError,
    ListEntry,
    MultipartUploadInfo,
    Owner,
    Part,
)

DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime.datetime:
    """An aware UTC datetime: what the parsers make of S3's ``LastModified``."""
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)


def doc(body: str, root: str, namespace: bool) -> bytes:
    """Wrap ``body`` in ``<root>``, with or without the S3 namespace."""
    xmlns = f' xmlns="{S3_NS}"' if namespace else ""
    return f"{DECL}<{root}{xmlns}>{body}</{root}>".encode()


NAMESPACES = pytest.mark.parametrize("namespace", [True, False], ids=["ns", "no-ns"])

# -- ListObjects V1 --------------------------------------------------------------------------------

LIST_V1 = """
  <Name>my-bucket</Name>
  <Prefix>photos/</Prefix>
  <Marker>photos/2005</Marker>
  <NextMarker>photos/2006/b&amp;w.jpg</NextMarker>
  <MaxKeys>3</MaxKeys>
  <Delimiter>/</Delimiter>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>photos/2006/b&amp;w.jpg</Key>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>
    <Size>434234</Size>
    <StorageClass>STANDARD</StorageClass>
    <Owner>
      <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
      <DisplayName>mtd@amazon.com</DisplayName>
    </Owner>
  </Contents>
  <Contents>
    <Key>photos/caf\u00e9 \u65e5\u672c/ a  b .txt </Key>
    <LastModified>2009-10-12T17:50:31.000Z</LastModified>
    <ETag>"599bab3ed2c697f1d26842727561fd94-3"</ETag>
    <Size>0</Size>
    <StorageClass>STANDARD_IA</StorageClass>
  </Contents>
  <CommonPrefixes><Prefix>photos/2006/</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>photos/&lt;odd&gt; &amp; "quoted"/</Prefix></CommonPrefixes>
  <UnknownFutureElement><Nested>ignored</Nested></UnknownFutureElement>
"""


@NAMESPACES
def test_list_v1(namespace: bool) -> None:
    page = parse_list_objects(doc(LIST_V1, "ListBucketResult", namespace))
    assert page.name == "my-bucket"
    assert page.prefix == "photos/"
    assert page.marker == "photos/2005"
    assert page.next_marker == "photos/2006/b&w.jpg"
    assert page.max_keys == 3
    assert page.delimiter == "/"
    assert page.is_truncated is True
    assert page.key_count is None  # V1 has none: list_pages uses this to detect V1 answers
    assert page.next_continuation_token == ""
    assert page.entries == [
        ListEntry(
            key="photos/2006/b&w.jpg",
            last_modified=utc(2009, 10, 12, 17, 50, 30),
            etag='"fba9dede5f27731c9771645a39863328"',
            size=434234,
            storage_class="STANDARD",
            owner=Owner(
                "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a",
                "mtd@amazon.com",
            ),
        ),
        ListEntry(
            key="photos/caf\u00e9 \u65e5\u672c/ a  b .txt ",  # spaces kept exactly
            last_modified=utc(2009, 10, 12, 17, 50, 31),
            etag='"599bab3ed2c697f1d26842727561fd94-3"',
            size=0,
            storage_class="STANDARD_IA",
            owner=None,
        ),
    ]
    assert page.common_prefixes == [
        CommonPrefixEntry("photos/2006/"),
        CommonPrefixEntry('photos/<odd> & "quoted"/'),
    ]


def test_list_v1_not_truncated_minimal() -> None:
    body = doc(
        "<Name>b</Name><Prefix></Prefix><Marker></Marker><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>false</IsTruncated>",
        "ListBucketResult",
        True,
    )
    page = parse_list_objects(body)
    assert (page.name, page.prefix, page.marker, page.max_keys) == ("b", "", "", 1000)
    assert page.is_truncated is False
    assert page.entries == [] and page.common_prefixes == []


# -- ListObjects V2 --------------------------------------------------------------------------------

LIST_V2 = """
  <Name>bucket</Name>
  <Prefix>dir/</Prefix>
  <KeyCount>4</KeyCount>
  <MaxKeys>4</MaxKeys>
  <Delimiter>/</Delimiter>
  <IsTruncated>true</IsTruncated>
  <ContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</ContinuationToken>
  <NextContinuationToken>1w41l63U0xa8q7smH50vCxyTQqdxo69O3EmK28Bi5PcROI4wI/EyIJg==</NextContinuationToken>
  <StartAfter>dir/a</StartAfter>
  <Contents>
    <Key>dir/a+b=c&amp;d.txt</Key>
    <LastModified>2024-01-02T03:04:05.000Z</LastModified>
    <ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag>
    <Size>5368709120</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>dir/\U0001f600 emoji</Key>
    <LastModified>2024-01-02T03:04:06.000Z</LastModified>
    <ETag>"e"</ETag>
    <Size>1</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <CommonPrefixes><Prefix>dir/sub one/</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>dir/\u00fcber/</Prefix></CommonPrefixes>
"""


@NAMESPACES
def test_list_v2(namespace: bool) -> None:
    page = parse_list_objects(doc(LIST_V2, "ListBucketResult", namespace))
    assert page.name == "bucket"
    assert page.prefix == "dir/"
    assert page.key_count == 4
    assert page.max_keys == 4
    assert page.is_truncated is True
    assert page.continuation_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
    assert (
        page.next_continuation_token == "1w41l63U0xa8q7smH50vCxyTQqdxo69O3EmK28Bi5PcROI4wI/EyIJg=="
    )
    assert page.start_after == "dir/a"
    assert page.next_marker == ""
    assert [e.key for e in page.entries] == ["dir/a+b=c&d.txt", "dir/\U0001f600 emoji"]
    assert [e.size for e in page.entries] == [5368709120, 1]  # > 4 GiB stays exact
    assert page.entries[0].etag == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert page.entries[0].owner is None
    assert [p.prefix for p in page.common_prefixes] == ["dir/sub one/", "dir/\u00fcber/"]


def test_list_v2_empty_result() -> None:
    body = doc(
        "<Name>b</Name><Prefix>nothing/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>false</IsTruncated>",
        "ListBucketResult",
        True,
    )
    page = parse_list_objects(body)
    assert page.key_count == 0
    assert page.entries == []
    assert page.is_truncated is False


def test_list_keys_with_whitespace_and_entities() -> None:
    """Keys are taken verbatim: spaces, tabs, character references, CDATA."""
    body = doc(
        "<Contents><Key>  two leading</Key><Size>1</Size></Contents>"
        "<Contents><Key>tab\there</Key><Size>1</Size></Contents>"
        "<Contents><Key>line&#10;feed&#13;cr</Key><Size>1</Size></Contents>"
        "<Contents><Key><![CDATA[cdata <&> key]]></Key><Size>1</Size></Contents>"
        "<Contents><Key>&#x263A; &#169;</Key><Size>1</Size></Contents>",
        "ListBucketResult",
        False,
    )
    keys = [e.key for e in parse_list_objects(body).entries]
    assert keys == ["  two leading", "tab\there", "line\nfeed\rcr", "cdata <&> key", "\u263a \xa9"]


def test_list_wrong_root_rejected() -> None:
    with pytest.raises(InvalidResponseError, match="ListBucketResult"):
        parse_list_objects(doc("<Code>NoSuchBucket</Code>", "Error", False))


@pytest.mark.parametrize(
    "bad",
    [
        "<Contents><Key>k</Key><Size>big</Size></Contents>",
        "<Contents><Key>k</Key><Size></Size></Contents>",
        "<MaxKeys>1e3</MaxKeys>",
        "<KeyCount>-</KeyCount>",
    ],
)
def test_list_bad_numbers(bad: str) -> None:
    with pytest.raises(InvalidResponseError):
        parse_list_objects(doc(bad, "ListBucketResult", True))


# -- ListAllMyBuckets ------------------------------------------------------------------------------

LIST_BUCKETS = """
  <Owner>
    <ID>bcaf1ffd86f461ca5fb16fd081034f</ID>
    <DisplayName>webfile</DisplayName>
  </Owner>
  <Buckets>
    <Bucket>
      <Name>quotes</Name>
      <CreationDate>2006-02-03T16:45:09.000Z</CreationDate>
    </Bucket>
    <Bucket>
      <Name>samples.with.dots</Name>
      <CreationDate>2006-02-03T16:41:58.000Z</CreationDate>
    </Bucket>
  </Buckets>
"""


@NAMESPACES
def test_list_buckets(namespace: bool) -> None:
    buckets, owner = parse_list_buckets(doc(LIST_BUCKETS, "ListAllMyBucketsResult", namespace))
    assert owner == Owner("bcaf1ffd86f461ca5fb16fd081034f", "webfile")
    assert buckets == [
        Bucket("quotes", "2006-02-03T16:45:09.000Z"),
        Bucket("samples.with.dots", "2006-02-03T16:41:58.000Z"),
    ]


def test_list_buckets_none_and_no_owner() -> None:
    buckets, owner = parse_list_buckets(doc("<Buckets/>", "ListAllMyBucketsResult", True))
    assert buckets == []
    assert owner == Owner("", "")
    buckets, _ = parse_list_buckets(doc("", "ListAllMyBucketsResult", False))
    assert buckets == []


# -- GetBucketLocation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f'{DECL}<LocationConstraint xmlns="{S3_NS}"/>', None),
        (f'{DECL}<LocationConstraint xmlns="{S3_NS}"></LocationConstraint>', None),
        ("<LocationConstraint>  \n</LocationConstraint>", None),
        (f'{DECL}<LocationConstraint xmlns="{S3_NS}">EU</LocationConstraint>', "EU"),
        ("<LocationConstraint>eu-west-1</LocationConstraint>", "eu-west-1"),
        ("<LocationConstraint>\n  us-west-2\n</LocationConstraint>", "us-west-2"),
    ],
)
def test_location(body: str, expected: str | None) -> None:
    assert parse_location(body.encode()) == expected


# -- multipart -------------------------------------------------------------------------------------


@NAMESPACES
def test_initiate_multipart(namespace: bool) -> None:
    body = doc(
        "<Bucket>example-bucket</Bucket><Key>dir/my &amp; movie.m2ts</Key>"
        "<UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>",
        "InitiateMultipartUploadResult",
        namespace,
    )
    assert parse_initiate_multipart(body) == (
        "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
    )


def test_initiate_multipart_without_upload_id() -> None:
    body = doc("<Bucket>b</Bucket><Key>k</Key>", "InitiateMultipartUploadResult", True)
    with pytest.raises(InvalidResponseError, match="UploadId"):
        parse_initiate_multipart(body)


@NAMESPACES
def test_copy_result(namespace: bool) -> None:
    body = doc(
        "<LastModified>2009-10-28T22:32:00.000Z</LastModified>"
        "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>",
        "CopyObjectResult",
        namespace,
    )
    assert parse_copy_result(body, "CopyObject") == (
        '"9b2cf535f27731c974343645a3985328"',
        "2009-10-28T22:32:00.000Z",
    )


def test_copy_result_after_keepalive_whitespace() -> None:
    """AWS sends whitespace while a long copy runs; the document comes after it."""
    body = (
        b"\n \n  \n" + DECL.encode() + b"\n    \n"
        b"<CopyObjectResult><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        b'<ETag>"abc"</ETag></CopyObjectResult>'
    )
    root = parse(body, "CopyObject")
    assert not embedded_error(root)
    assert parse_copy_result(body, "CopyObject") == ('"abc"', "2024-01-01T00:00:00.000Z")


def test_complete_multipart_result() -> None:
    body = doc(
        "<Location>http://Example-Bucket.s3.amazonaws.com/Example-Object</Location>"
        "<Bucket>Example-Bucket</Bucket><Key>Example-Object</Key>"
        "<ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag>",
        "CompleteMultipartUploadResult",
        True,
    )
    etag, modified = parse_copy_result(body, "CompleteMultipartUpload")
    assert etag == '"3858f62230ac3c915f300c664312c11f-9"'
    assert modified == ""


@pytest.mark.parametrize("namespace", [True, False])
def test_embedded_error(namespace: bool) -> None:
    body = doc(
        "<Code>InternalError</Code><Message>We encountered an internal error.</Message>"
        "<RequestId>656c76696e6727732072657175657374</RequestId>",
        "Error",
        namespace,
    )
    assert embedded_error(parse(body, "copy")) is True
    assert embedded_error(parse(doc("", "CopyObjectResult", namespace), "copy")) is False


@NAMESPACES
def test_list_parts(namespace: bool) -> None:
    body = doc(
        """
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>
  <Initiator><ID>arn:aws:iam::111122223333:user/some-user-11116a31-17b5</ID></Initiator>
  <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID></Owner>
  <StorageClass>STANDARD</StorageClass>
  <PartNumberMarker>1</PartNumberMarker>
  <NextPartNumberMarker>3</NextPartNumberMarker>
  <MaxParts>2</MaxParts>
  <IsTruncated>true</IsTruncated>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2010-11-10T20:48:34.000Z</LastModified>
    <ETag>&quot;7778aef83f66abc1fa1e8477f296d394&quot;</ETag>
    <Size>10485760</Size>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <LastModified>2010-11-10T20:48:33.000Z</LastModified>
    <ETag>"aaaa18db4cc2f85cedef654fccc4a4x8"</ETag>
    <Size>10485760</Size>
  </Part>
""",
        "ListPartsResult",
        namespace,
    )
    page = parse_list_parts(body)
    assert page.is_truncated is True
    assert page.next_part_number_marker == 3
    assert page.parts == [
        Part(2, '"7778aef83f66abc1fa1e8477f296d394"', 10485760, utc(2010, 11, 10, 20, 48, 34)),
        Part(3, '"aaaa18db4cc2f85cedef654fccc4a4x8"', 10485760, utc(2010, 11, 10, 20, 48, 33)),
    ]


def test_list_parts_last_page() -> None:
    body = doc(
        "<UploadId>u</UploadId><IsTruncated>false</IsTruncated>"
        '<Part><PartNumber>1</PartNumber><ETag>"e"</ETag></Part>',
        "ListPartsResult",
        False,
    )
    page = parse_list_parts(body)
    assert page.is_truncated is False
    assert page.next_part_number_marker == 0
    assert page.parts == [Part(1, '"e"', 0, None)]


def test_list_parts_bad_part_number() -> None:
    body = doc("<Part><PartNumber>one</PartNumber></Part>", "ListPartsResult", True)
    with pytest.raises(InvalidResponseError):
        parse_list_parts(body)


@NAMESPACES
def test_list_uploads(namespace: bool) -> None:
    body = doc(
        """
  <Bucket>bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator><ID>arn:aws:iam::111122223333:user/user1</ID><DisplayName>user1</DisplayName></Initiator>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>my movie &amp; more.m2ts</Key>
    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
    <Initiated>2010-11-10T20:48:34.000Z</Initiated>
  </Upload>
  <CommonPrefixes><Prefix>photos/</Prefix></CommonPrefixes>
""",
        "ListMultipartUploadsResult",
        namespace,
    )
    uploads, truncated, key_marker, upload_marker = parse_list_uploads(body)
    assert uploads == [
        MultipartUploadInfo(
            "my-divisor",
            "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw",
            "2010-11-10T20:48:33.000Z",
        ),
        MultipartUploadInfo(
            "my movie & more.m2ts",
            "VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA",
            "2010-11-10T20:48:34.000Z",
        ),
    ]
    assert truncated is True
    assert key_marker == "my-movie.m2ts"
    assert upload_marker == "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ"


def test_list_uploads_empty() -> None:
    body = doc(
        "<Bucket>b</Bucket><IsTruncated>false</IsTruncated>", "ListMultipartUploadsResult", True
    )
    assert parse_list_uploads(body) == ([], False, "", "")


# -- DeleteObjects ---------------------------------------------------------------------------------


@NAMESPACES
def test_delete_result(namespace: bool) -> None:
    body = doc(
        """
  <Deleted><Key>sample1.txt</Key></Deleted>
  <Deleted>
    <Key>dir/a &amp; b &lt;c&gt;.txt</Key>
    <DeleteMarker>true</DeleteMarker>
    <DeleteMarkerVersionId>NeQt5xeFTfgPJD8B4CGWnkSLtluMr11s</DeleteMarkerVersionId>
  </Deleted>
  <Error>
    <Key>sample2.txt</Key>
    <Code>AccessDenied</Code>
    <Message>Access Denied</Message>
  </Error>
  <Error>
    <Key>\u00fcnicode key</Key>
    <Code>InternalError</Code>
    <Message>We encountered an internal error. Please try again.</Message>
  </Error>
""",
        "DeleteResult",
        namespace,
    )
    deleted, errors = parse_delete_result(body)
    assert deleted == ["sample1.txt", "dir/a & b <c>.txt"]
    assert errors == [
        DeleteError("sample2.txt", "AccessDenied", "Access Denied"),
        DeleteError(
            "\u00fcnicode key",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    ]


def test_delete_result_quiet_is_empty() -> None:
    assert parse_delete_result(doc("", "DeleteResult", True)) == ([], [])


# -- invalid documents -----------------------------------------------------------------------------

INVALID = {
    "empty": b"",
    "whitespace": b"   \n ",
    "truncated": DECL.encode() + b"<ListBucketResult><Name>b</Name><Contents><Key>k",
    "unclosed": b"<ListBucketResult><Name>b</Name>",
    "mismatched": b"<ListBucketResult></ListAllMyBucketsResult>",
    "html": b"<html><body>Bad&nbsp;Gateway</body></html>",
    "text": b"Service Unavailable",
    "json": b'{"Contents": []}',
    "binary": b"\x00\x01\x02\xff\xfe",
    "bad-encoding": b'<?xml version="1.0" encoding="no-such-codec"?><ListBucketResult/>',
    "bad-utf8": b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>\xff</Name>'
    b"</ListBucketResult>",
    "two-roots": b"<ListBucketResult/><ListBucketResult/>",
    "bad-char-ref": b"<ListBucketResult><Name>&#1;</Name></ListBucketResult>",
}

PARSERS = {
    "list_objects": parse_list_objects,
    "list_buckets": parse_list_buckets,
    "location": parse_location,
    "initiate": parse_initiate_multipart,
    "copy": lambda body: parse_copy_result(body, "CopyObject"),
    "list_parts": parse_list_parts,
    "list_uploads": parse_list_uploads,
    "delete": parse_delete_result,
    "parse": lambda body: parse(body, "Test"),
}


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_xml_raises_invalid_response(name: str, parser: str) -> None:
    with pytest.raises(InvalidResponseError) as info:
        PARSERS[parser](INVALID[name])
    assert not isinstance(info.value, ElementTree.ParseError)
    assert info.value.__cause__ is None or not isinstance(
        info.value.__cause__, ElementTree.ParseError
    )
    assert "\n" not in str(info.value)


def test_invalid_xml_names_the_operation() -> None:
    with pytest.raises(InvalidResponseError, match="ListParts"):
        parse_list_parts(b"<ListPartsResult>")


# -- builders --------------------------------------------------------------------------------------


def _keys_of(body: bytes) -> list[str]:
    root = ElementTree.fromstring(body)
    return [obj.findtext(f"{{{S3_NS}}}Key") or "" for obj in root.iter(f"{{{S3_NS}}}Object")]


def test_build_delete_shape() -> None:
    body = build_delete(["a.txt", "dir/b.txt"])
    assert (
        body
        == (
            f'<Delete xmlns="{S3_NS}"><Quiet>true</Quiet>'
            "<Object><Key>a.txt</Key></Object><Object><Key>dir/b.txt</Key></Object></Delete>"
        ).encode()
    )
    loud = build_delete(["a"], quiet=False)
    assert b"<Quiet>" not in loud
    assert _keys_of(loud) == ["a"]


def test_build_delete_escapes_markup() -> None:
    key = "a&b<c>d\"e'f"
    body = build_delete([key])
    assert b"<Key>a&amp;b&lt;c&gt;d&quot;e'f</Key>" in body
    assert _keys_of(body) == [key]


@pytest.mark.parametrize(
    "key",
    [
        "plain",
        "with space",
        "  leading and trailing  ",
        "caf\u00e9/\u65e5\u672c\u8a9e/\U0001f600",
        "line\nfeed",
        "carriage\rreturn",
        "crlf\r\nkept",
        "tab\tkept",
        "%2F not decoded+plus",
        "]]>cdata end",
    ],
)
def test_build_delete_round_trips(key: str) -> None:
    body = build_delete([key, "other"])
    assert _keys_of(body) == [key, "other"]
    # CR and LF are carried as references (XML would normalise raw ones away)
    assert b"\r" not in body and b"\n" not in body


def test_build_delete_control_characters_are_references() -> None:
    body = build_delete(["a\x01b\x1fc\x00d"])
    assert b"<Key>a&#1;b&#31;c&#0;d</Key>" in body
    assert not any(byte < 0x20 for byte in body)


def test_build_delete_empty() -> None:
    body = build_delete([])
    root = ElementTree.fromstring(body)
    assert root.tag == f"{{{S3_NS}}}Delete"
    assert _keys_of(body) == []


def test_build_complete_multipart_sorts_parts() -> None:
    parts = [
        Part(3, '"c3"'),
        Part(1, '"a1"'),
        Part(10, '"j10"'),
        Part(2, '"b2"'),
    ]
    body = build_complete_multipart(parts)
    assert (
        body
        == (
            f'<CompleteMultipartUpload xmlns="{S3_NS}">'
            '<Part><PartNumber>1</PartNumber><ETag>"a1"</ETag></Part>'
            '<Part><PartNumber>2</PartNumber><ETag>"b2"</ETag></Part>'
            '<Part><PartNumber>3</PartNumber><ETag>"c3"</ETag></Part>'
            '<Part><PartNumber>10</PartNumber><ETag>"j10"</ETag></Part>'
            "</CompleteMultipartUpload>"
        ).encode()
    )
    assert [p.part_number for p in parts] == [3, 1, 10, 2]  # the caller's list is untouched


def test_build_complete_multipart_escapes_and_accepts_iterators() -> None:
    body = build_complete_multipart(iter([Part(1, '"a&b<c>"')]))
    root = ElementTree.fromstring(body)
    assert root.findtext(f"{{{S3_NS}}}Part/{{{S3_NS}}}ETag") == '"a&b<c>"'
    assert root.findtext(f"{{{S3_NS}}}Part/{{{S3_NS}}}PartNumber") == "1"


@pytest.mark.parametrize("location", [None, ""])
def test_build_create_bucket_default(location: str | None) -> None:
    assert build_create_bucket(location) == b""


@pytest.mark.parametrize("location", ["EU", "eu-west-1", "a&b<c>"])
def test_build_create_bucket_located(location: str) -> None:
    body = build_create_bucket(location)
    root = ElementTree.fromstring(body)
    assert root.tag == f"{{{S3_NS}}}CreateBucketConfiguration"
    assert root.findtext(f"{{{S3_NS}}}LocationConstraint") == location
    if location == "EU":
        assert (
            body
            == (
                f'<CreateBucketConfiguration xmlns="{S3_NS}">'
                "<LocationConstraint>EU</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        )


def test_builders_parse_back_with_the_parsers() -> None:
    """A built Delete document is well-formed for our own parse()."""
    root = parse(build_delete(["x&y"]), "Delete")
    assert root.tag.endswith("Delete")
