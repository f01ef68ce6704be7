"""S3 XML documents: parsing answers and building request bodies.

Invariants:
- Parsers ignore namespaces (services differ in whether they send one) and unknown elements.
- Any document we cannot parse raises ``InvalidResponseError``; no ``ParseError`` escapes.
- A 200 answer that holds an ``<Error>`` (CopyObject, CompleteMultipartUpload can do that) is
  reported by ``embedded_error`` so the caller raises it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .errors import InvalidResponseError
from .models import (
    Bucket,
    CommonPrefixEntry,
    DeleteError,
    ListEntry,
    ListPage,
    MultipartUploadInfo,
    Owner,
    Part,
    PartsPage,
    parse_time,
)

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, what: str) -> ElementTree.Element:
    """Parse a document, turning every parse failure into InvalidResponseError.

    Leading whitespace is dropped: S3 may send some before the document (keep-alive of a long
    CopyObject / CompleteMultipartUpload), and XML forbids it before the declaration.
    """
    try:
        return ElementTree.fromstring(body.lstrip())
    except (ElementTree.ParseError, LookupError, ValueError) as exc:
        # LookupError: an unknown encoding named in the XML declaration
        raise InvalidResponseError(f"invalid XML in {what} answer: {exc}") from None


def _children(elem: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {_local(c.tag): c for c in elem}


def _text(elem: ElementTree.Element | None, name: str, default: str = "") -> str:
    if elem is None:
        return default
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return default


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidResponseError(f"not a number in {what}: {value[:40]!r}") from None


def _all(elem: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in elem if _local(c.tag) == name]


def embedded_error(root: ElementTree.Element) -> bool:
    """True when a 200 answer is really an ``<Error>``."""
    return _local(root.tag) == "Error"


def parse_list_objects(body: bytes) -> ListPage:
    """ListObjects (V1) or ListObjectsV2 answer."""
    root = parse(body, "ListBucket")
    if _local(root.tag) != "ListBucketResult":
        raise InvalidResponseError(f"expected ListBucketResult, got {_local(root.tag)}")
    page = ListPage()
    for child in root:
        tag = _local(child.tag)
        text = child.text or ""
        if tag == "Contents":
            page.entries.append(_list_entry(child))
        elif tag == "CommonPrefixes":
            page.common_prefixes.append(CommonPrefixEntry(_text(child, "Prefix")))
        elif tag == "Name":
            page.name = text
        elif tag == "Prefix":
            page.prefix = text
        elif tag == "Delimiter":
            page.delimiter = text
        elif tag == "MaxKeys":
            page.max_keys = _int(text, "MaxKeys")
        elif tag == "IsTruncated":
            page.is_truncated = text.strip().lower() == "true"
        elif tag == "Marker":
            page.marker = text
        elif tag == "NextMarker":
            page.next_marker = text
        elif tag == "ContinuationToken":
            page.continuation_token = text
        elif tag == "NextContinuationToken":
            page.next_continuation_token = text
        elif tag == "StartAfter":
            page.start_after = text
        elif tag == "KeyCount":
            page.key_count = _int(text, "KeyCount")
        elif tag == "EncodingType":
            page.encoding_type = text.strip().lower()
    if page.encoding_type == "url":
        _decode_names(page)
    return page


def _decode_names(page: ListPage) -> None:
    """Undo ``encoding-type=url``: S3 writes a space as ``+`` and ``+`` as ``%2B`` (botocore
    decodes with unquote_plus too). Only names the service says it encoded are decoded."""
    for entry in page.entries:
        entry.key = unquote_plus(entry.key)
    for common in page.common_prefixes:
        common.prefix = unquote_plus(common.prefix)
    page.prefix = unquote_plus(page.prefix)
    page.delimiter = unquote_plus(page.delimiter)
    page.marker = unquote_plus(page.marker)
    page.next_marker = unquote_plus(page.next_marker)
    page.start_after = unquote_plus(page.start_after)


def _list_entry(elem: ElementTree.Element) -> ListEntry:
    entry = ListEntry()
    for child in elem:
        tag = _local(child.tag)
        text = child.text or ""
        if tag == "Key":
            entry.key = text
        elif tag == "LastModified":
            entry.last_modified = parse_time(text)
        elif tag == "ETag":
            entry.etag = text
        elif tag == "Size":
            entry.size = _int(text, "Size")
        elif tag == "StorageClass":
            entry.storage_class = text
        elif tag == "Owner":
            entry.owner = Owner(_text(child, "ID"), _text(child, "DisplayName"))
    return entry


def parse_list_buckets(body: bytes) -> tuple[list[Bucket], Owner]:
    """ListAllMyBuckets answer."""
    root = parse(body, "ListAllMyBuckets")
    parts = _children(root)
    owner = Owner(_text(parts.get("Owner"), "ID"), _text(parts.get("Owner"), "DisplayName"))
    buckets = [
        Bucket(_text(b, "Name"), _text(b, "CreationDate"))
        for b in (_all(parts["Buckets"], "Bucket") if "Buckets" in parts else [])
    ]
    return buckets, owner


def parse_location(body: bytes) -> str | None:
    """GetBucketLocation: the constraint, None for the default (empty) one."""
    root = parse(body, "GetBucketLocation")
    return (root.text or "").strip() or None


def parse_initiate_multipart(body: bytes) -> str:
    """CreateMultipartUpload: the upload id."""
    root = parse(body, "CreateMultipartUpload")
    upload_id = _text(root, "UploadId")
    if not upload_id:
        raise InvalidResponseError("CreateMultipartUpload answer without UploadId")
    return upload_id


def parse_copy_result(body: bytes, what: str) -> tuple[str, str]:
    """CopyObject / UploadPartCopy / CompleteMultipartUpload: (ETag, LastModified)."""
    root = parse(body, what)
    return _text(root, "ETag"), _text(root, "LastModified")


def parse_list_parts(body: bytes) -> PartsPage:
    """ListParts answer."""
    root = parse(body, "ListParts")
    page = PartsPage(
        is_truncated=_text(root, "IsTruncated").strip().lower() == "true",
        next_part_number_marker=_int(_text(root, "NextPartNumberMarker", "0") or "0", "marker"),
    )
    for part in _all(root, "Part"):
        page.parts.append(
            Part(
                part_number=_int(_text(part, "PartNumber"), "PartNumber"),
                etag=_text(part, "ETag"),
                size=_int(_text(part, "Size", "0") or "0", "Size"),
                last_modified=parse_time(_text(part, "LastModified")),
            )
        )
    return page


def parse_list_uploads(body: bytes) -> tuple[list[MultipartUploadInfo], bool, str, str]:
    """ListMultipartUploads: (uploads, truncated, next key marker, next upload id marker)."""
    root = parse(body, "ListMultipartUploads")
    uploads = [
        MultipartUploadInfo(_text(u, "Key"), _text(u, "UploadId"), _text(u, "Initiated"))
        for u in _all(root, "Upload")
    ]
    truncated = _text(root, "IsTruncated").strip().lower() == "true"
    return uploads, truncated, _text(root, "NextKeyMarker"), _text(root, "NextUploadIdMarker")


def parse_delete_result(body: bytes) -> tuple[list[str], list[DeleteError]]:
    """DeleteObjects answer: keys deleted, and per-key errors."""
    root = parse(body, "DeleteObjects")
    deleted = [_text(d, "Key") for d in _all(root, "Deleted")]
    errors = [
        DeleteError(_text(e, "Key"), _text(e, "Code"), _text(e, "Message"))
        for e in _all(root, "Error")
    ]
    return deleted, errors


def build_create_bucket(location: str | None) -> bytes:
    """CreateBucketConfiguration body; empty for the default location."""
    if not location:
        return b""
    return (
        f'<CreateBucketConfiguration xmlns="{S3_NS}">'
        f"<LocationConstraint>{escape(location)}</LocationConstraint>"
        "</CreateBucketConfiguration>"
    ).encode()


def build_delete(keys: Iterable[str], quiet: bool = True) -> bytes:
    """DeleteObjects body (at most 1000 keys; the caller splits)."""
    items = "".join(f"<Object><Key>{_escape_key(k)}</Key></Object>" for k in keys)
    flag = "<Quiet>true</Quiet>" if quiet else ""
    return f'<Delete xmlns="{S3_NS}">{flag}{items}</Delete>'.encode()


def build_complete_multipart(parts: Iterable[Part]) -> bytes:
    """CompleteMultipartUpload body, parts in ascending order."""
    items = "".join(
        f"<Part><PartNumber>{p.part_number}</PartNumber><ETag>{escape(p.etag)}</ETag></Part>"
        for p in sorted(parts, key=lambda p: p.part_number)
    )
    return f'<CompleteMultipartUpload xmlns="{S3_NS}">{items}</CompleteMultipartUpload>'.encode()


def _escape_key(key: str) -> str:
    """Escape a key for an XML body; characters XML 1.0 cannot carry become references."""
    text = escape(key, {'"': "&quot;"})
    return "".join(c if c >= " " or c in "\t" else f"&#{ord(c)};" for c in text)
