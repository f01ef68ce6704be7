"""URL encoding of keys and query strings, shared by requests and both signers.

Invariants:
- Keys are encoded with RFC 3986 (everything but ``A-Za-z0-9-._~`` and ``/`` is percent-encoded,
  UTF-8 first), never with ``quote_plus``: ``+`` and spaces round-trip exactly.
- Query names and values encode ``/`` too (AWS's rule for the V4 canonical query).
- A query parameter whose value is ``None`` is a bare flag (``?acl``, ``?uploads``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote

Query = tuple[tuple[str, str | None], ...]


def quote_key(key: str) -> str:
    """Encode an object key for a URL path: RFC 3986, keeping ``/``."""
    return quote(key, safe="/~")


def quote_param(value: str) -> str:
    """Encode a query name or value: RFC 3986, ``/`` included."""
    return quote(value, safe="~")


def encode_query(query: Iterable[tuple[str, str | None]]) -> str:
    """Render query pairs in order, bare flags without ``=``."""
    parts = []
    for name, value in query:
        if value is None:
            parts.append(quote_param(name))
        else:
            parts.append(f"{quote_param(name)}={quote_param(value)}")
    return "&".join(parts)


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of request headers with lower-case names and ``str`` values."""
    return {k.lower(): str(v) for k, v in (headers or {}).items()}


def range_header(byte_range: tuple[int, int | None]) -> str:
    """``bytes=start-end`` (end inclusive; None = to the end)."""
    start, end = byte_range
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"
