"""End-to-end integrity: what is checked against the MD5 of the bytes, and what a mismatch does.

The client only carries things (it sends a ``Content-MD5`` header it is given and returns the
ETag and headers the service answered); the policy lives here and is applied by the store
(``s3store.S3Store``) and, for sequential reads in ranged GETs, by ``handles``.

Invariants:
- Uploads: every PUT and part goes with ``Content-MD5`` (a service that checks it refuses a body
  changed on the way), and the ETag answered is compared with the local MD5 (a service that
  does not check, or a body changed after the check: the ETag of what was stored). A multipart
  upload's final ETag, when in S3's ``md5-N`` form, is compared with md5(part MD5s) + ``-N``
  (another form, e.g. s3rver's whole-object MD5, is not: the parts were checked). An answer
  whose headers say the ETag is not an MD5 (SSE-KMS, SSE-C) is not compared.
- Downloads read by one GET (whole objects: lookups' bodies, ``get_range(key, 0, None)``) are
  compared with the service's own checksum of the object when the answer has one
  (``x-amz-checksum-sha256``/``sha1``/``crc32``, asked for by ``x-amz-checksum-mode``), else
  with a single-part MD5 ETag (32 hex digits, no ``-``) unless their headers say SSE-KMS/SSE-C.
  A mismatch there fetches again.
- A mismatch is resent or fetched again up to ``Integrity.attempts`` times in all, then raises
  ``ChecksumMismatch`` (EIO, ``errno_map``): a write is never reported done with wrong bytes
  stored (a single PUT stored wrong is overwritten by its resend; a failing upload is an error,
  and the upload engine keeps the data in the recovery folder), a read never returns bytes
  known to be wrong.
- ``SequentialCheck``: the bytes a handle returned, accumulated in offset order (reads that
  come slightly out of order are held until the gap fills, up to ``HOLD_LIMIT`` bytes); at
  the end of the object its MD5 is compared with the ETag. A mismatch is an EIO of the read
  that reached the end and an error line in the log (the bytes before were already returned:
  the application learns it at its last read, never silently); every later read through the
  same check raises it again (the kernel retries a failed read-ahead page with a read of its
  own: it must not succeed).
- Hashing never holds the trio loop for long: bodies above ``INLINE_LIMIT`` are hashed in a
  worker thread (hashlib releases the GIL), one at a time per check (the MD5 is sequential).
- ``Integrity(enabled=False)`` (``-o no_checksum``) checks nothing and sends no Content-MD5.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import trio

log = logging.getLogger("s3fmfs.fs")

#: Bodies up to this are hashed on the trio thread (about 0.2 ms); bigger ones in a thread.
INLINE_LIMIT = 128 << 10
#: Bytes a ``SequentialCheck`` holds ahead of a gap (reads out of order) before giving up.
HOLD_LIMIT = 8 << 20
#: Sends (or fetches) in all of one body whose check fails: as many as the client's retry
#: policy makes of a temporary failure (``RetryPolicy.max_attempts``).
ATTEMPTS = 6
#: ETags remembered as not being an MD5 (seen with SSE headers on a GET).
OPAQUE_REMEMBERED = 4096
CHUNK = 1 << 20

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-([0-9]+)$")
#: Parts of this mount's uploads keep their size this many at a time (``upload.PARTS_PER_STEP``).
PARTS_PER_STEP = 625

T = TypeVar("T")


class ChecksumMismatch(Exception):
    """The bytes stored or received are not those sent or stored (EIO)."""


def plain_md5(etag: str) -> str | None:
    """The hex MD5 a single-part ETag is (quotes dropped), None when it is not one (multipart
    ``-N``, empty, anything else)."""
    tag = etag.strip().strip('"').lower()
    return tag if _MD5_ETAG.match(tag) else None


#: The service's own checksums of a whole object (``x-amz-checksum-mode: ENABLED`` asks for
#: them; some services send them anyway): header → hash of the bytes, base64 of the digest.
CHECKSUM_HEADERS = ("x-amz-checksum-sha256", "x-amz-checksum-sha1", "x-amz-checksum-crc32")
#: Asks for them on a GET from the start of an object (ignored by services without them).
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}


def service_checksum(headers: Mapping[str, str] | Any) -> tuple[str, str] | None:
    """(header, value) of a whole-object checksum the answer carries, None when none (a
    composite one, ``...-N`` of a multipart upload, covers parts: not taken)."""
    for name in CHECKSUM_HEADERS:
        value = str(headers.get(name, "") or "")
        if value and "-" not in value:
            return name, value
    return None


def _checksum_of(name: str, data: bytes | bytearray | memoryview) -> str:
    """Base64 of ``data``'s checksum named by header ``name`` (runs in a thread when big)."""
    if name.endswith("crc32"):
        digest = zlib.crc32(data).to_bytes(4, "big")
    else:
        digest = hashlib.new(name.rsplit("-", 1)[1], data).digest()
    return base64.b64encode(digest).decode()


async def checksum_matches(name: str, value: str, data: bytes) -> bool:
    """Whether ``data`` has the service's checksum ``value`` (header ``name``)."""
    if len(data) <= INLINE_LIMIT:
        return _checksum_of(name, data) == value
    return await trio.to_thread.run_sync(_checksum_of, name, data) == value


def parts_count(etag: str) -> int:
    """N of a multipart upload's ETag (``md5-N``), 0 for any other."""
    found = _MULTIPART_ETAG.match(etag.strip().strip('"').lower())
    return int(found.group(1)) if found else 0


def opaque(headers: Mapping[str, str] | Any) -> bool:
    """Whether an answer's headers say its ETag is not the MD5 of the bytes (SSE-KMS, SSE-C)."""
    sse = str(headers.get("x-amz-server-side-encryption", "") or "").lower()
    customer = headers.get("x-amz-server-side-encryption-customer-algorithm", "")
    return sse.startswith("aws:kms") or bool(customer)


def multipart_etag(part_md5s: list[str]) -> str:
    """The ETag S3 gives a multipart upload of parts with these hex MD5s."""
    joined = b"".join(binascii.unhexlify(m) for m in part_md5s)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_md5s)}"


def content_md5(hex_md5: str) -> str:
    """The ``Content-MD5`` header's value (base64 of the digest)."""
    return base64.b64encode(binascii.unhexlify(hex_md5)).decode()


async def md5_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex MD5 of ``data`` (in a thread when big)."""
    if len(data) <= INLINE_LIMIT:
        return hashlib.md5(data).hexdigest()
    return await trio.to_thread.run_sync(lambda: hashlib.md5(data).hexdigest())


def _md5_stream(body: Any, length: int | None) -> str:
    """Hex MD5 of a file-like body from its position (``length`` bytes, or to its end),
    leaving it where it was (runs in a worker thread)."""
    digest = hashlib.md5()
    start = body.tell()
    try:
        left = -1 if length is None else length
        while left != 0:
            chunk = body.read(CHUNK if left < 0 else min(CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            if left > 0:
                left -= len(chunk)
    finally:
        body.seek(start)
    return digest.hexdigest()


async def md5_body(body: Any, length: int | None = None) -> str:
    """Hex MD5 of what a PUT or a part sends: bytes, or a file-like body from its position."""
    if isinstance(body, bytes | bytearray | memoryview):
        return await md5_bytes(body if length is None else memoryview(body)[:length])
    return await trio.to_thread.run_sync(_md5_stream, body, length)


def rewind(body: Any) -> Callable[[], None]:
    """A function putting a file-like body back where it is now (nothing for bytes)."""
    if isinstance(body, bytes | bytearray | memoryview) or not hasattr(body, "seek"):
        return lambda: None
    start = body.tell()
    return lambda: body.seek(start)


@dataclass
class Integrity:
    """A mount's checks (``enabled``: not ``-o no_checksum``) and their counts."""

    enabled: bool = True
    attempts: int = ATTEMPTS
    #: the mount's own writes carry SSE-KMS/SSE-C: no ETag of its objects is an MD5
    opaque_writes: bool = False
    #: mismatches found, by where ("put", "part", "complete", "get", "sequential")
    mismatches: dict[str, int] = field(default_factory=dict)
    resent: int = 0  # requests sent again after a mismatch
    checked: int = 0  # bodies compared
    _opaque: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def note_opaque(self, etag: str) -> None:
        """Remember that ``etag`` (an object's version) is not an MD5 (its GET said SSE)."""
        if etag:
            self._opaque[etag] = None
            self._opaque.move_to_end(etag)
            while len(self._opaque) > OPAQUE_REMEMBERED:
                self._opaque.popitem(last=False)

    def expected_md5(self, etag: str) -> str | None:
        """The MD5 the bytes of version ``etag`` must have, None when it cannot be known."""
        if not self.enabled or self.opaque_writes or etag in self._opaque:
            return None
        return plain_md5(etag)

    def mismatch(self, where: str, what: str) -> None:
        """Count and log one mismatch."""
        self.mismatches[where] = self.mismatches.get(where, 0) + 1
        log.warning("checksum mismatch (%s): %s", where, what)

    async def retrying(self, where: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it does not raise ``ChecksumMismatch``, at most ``attempts``
        times; then the last mismatch is raised (logged as an error)."""
        for number in range(1, self.attempts + 1):
            try:
                return await attempt()
            except ChecksumMismatch as exc:
                self.mismatch(where, str(exc))
                if number == self.attempts:
                    log.error("checksum mismatch %d times in a row (%s): %s", number, where, exc)
                    raise
                self.resent += 1
        raise AssertionError("unreachable")

    def expected_etag(self, etag: str) -> str | None:
        """``etag`` normalised when the bytes can be checked against it (a single-part MD5 or
        a multipart ``md5-N``), else None."""
        if not self.enabled or self.opaque_writes or etag in self._opaque:
            return None
        tag = etag.strip().strip('"').lower()
        return tag if plain_md5(tag) or parts_count(tag) else None

    def sequential(
        self, etag: str, size: int, first_part: int | None = None
    ) -> SequentialCheck | None:
        """A check of a whole sequential read of version ``etag`` (None: nothing to check);
        a multipart object's needs the size of its first part (``first_part``)."""
        expected = self.expected_etag(etag)
        if expected is None:
            return None
        count = parts_count(expected)
        if not count:
            return SequentialCheck(self, etag, expected, size)
        ends = [size] if count == 1 else part_ends(first_part or 0, count, size)
        return None if ends is None else SequentialCheck(self, etag, expected, size, ends)


def of_store(store: object) -> Integrity | None:
    """The checks a store applies (``S3Store.integrity``), None for a store without them or
    with them off."""
    found = getattr(store, "integrity", None)
    return found if isinstance(found, Integrity) and found.enabled else None


def part_ends(first: int, count: int, size: int) -> list[int] | None:
    """Where the parts of a ``size``-byte object uploaded in ``count`` parts end, the first
    ``first`` bytes long: all of that size but the last (as S3 clients cut them), or doubling
    every ``PARTS_PER_STEP`` parts (this mount's rule, past 625 parts); None when neither fits."""
    if count < 1 or first < 1:
        return None
    if count == 1:
        return [size] if first == size else None
    last = size - (count - 1) * first
    if 0 < last <= first:
        return [first * n for n in range(1, count)] + [size]
    ends, pos = [], 0
    for number in range(1, count):
        pos += first << ((number - 1) // PARTS_PER_STEP)
        ends.append(pos)
    return [*ends, size] if 0 < size - pos <= first << ((count - 1) // PARTS_PER_STEP) else None


class SequentialCheck:
    """The MD5 of the bytes a handle returned, in offset order, compared at the object's end
    (of a multipart object: each part's MD5, then md5 of those + ``-N``)."""

    def __init__(
        self, owner: Integrity, etag: str, expected: str, size: int, ends: list[int] | None = None
    ) -> None:
        self.owner = owner
        self.etag = etag
        self.expected = expected
        self.size = size
        self.ends = ends or [size]  # where each part ends (one part: the object)
        self.multipart = ends is not None and "-" in expected
        self.pos = 0  # bytes hashed, from 0
        self.broken = False  # a gap never filled, or a read out of reach: no verdict
        self.done = False
        self.failed = ""  # the mismatch found: every later read raises it
        self._part = 0  # the part being hashed
        self._digest = hashlib.md5()
        self._digests: list[bytes] = []  # of the parts done
        self._held: dict[int, bytes] = {}
        self._lock = trio.Lock()

    async def feed(self, offset: int, data: bytes) -> None:
        """Bytes ``data`` at ``offset`` were returned; raises ``ChecksumMismatch`` when they
        complete the object and its MD5 is not the ETag's."""
        if self.failed:
            # every later read of the handle too: the kernel retries a failed read-ahead page
            # with a read of its own, which must not succeed
            raise ChecksumMismatch(self.failed)
        if self.broken or self.done or not data:
            return
        async with self._lock:
            if offset > self.pos:
                self._held[offset] = data
                if sum(len(d) for d in self._held.values()) > HOLD_LIMIT:
                    self._stop()
                return
            await self._take(offset, data)
            while self._held and not self.broken:
                nxt = min(self._held)
                if nxt > self.pos:
                    break
                await self._take(nxt, self._held.pop(nxt))
            if self.pos >= self.size and not self.broken:
                self._verdict()

    def _verdict(self) -> None:
        self.done = True
        self._held.clear()
        if self.multipart:
            joined = b"".join(self._digests)
            got = f"{hashlib.md5(joined).hexdigest()}-{len(self._digests)}"
        else:
            got = self._digest.hexdigest()
        if self.owner.expected_etag(self.etag) is None:
            return  # learnt meanwhile: an SSE object, its ETag is not an MD5
        self.owner.checked += 1
        if got != self.expected:
            self.owner.mismatch("sequential", f"md5 {got}, ETag {self.expected}")
            self.failed = f"the {self.size} bytes read have MD5 {got}, not {self.etag}"
            log.error("sequential read: %s: EIO", self.failed)
            raise ChecksumMismatch(self.failed)

    def _absorb(self, piece: bytes | memoryview) -> None:
        """Hash ``piece`` (the bytes at ``pos``), closing each part it reaches the end of."""
        view = memoryview(piece)
        while view and self._part < len(self.ends):
            end = self.ends[self._part]
            here = view[: end - self.pos]
            self._digest.update(here)
            self.pos += len(here)
            view = view[len(here) :]
            if self.pos >= end:
                if self.multipart:
                    self._digests.append(self._digest.digest())
                    self._digest = hashlib.md5()
                self._part += 1
        self.pos += len(view)  # past the object's end (reads stop there): nothing to hash

    async def _take(self, offset: int, data: bytes) -> None:
        skip = self.pos - offset
        if skip >= len(data):
            return
        piece = memoryview(data)[skip:] if skip else data
        if len(piece) <= INLINE_LIMIT:
            self._absorb(piece)
        else:
            await trio.to_thread.run_sync(self._absorb, piece)

    def _stop(self) -> None:
        self.broken = True
        self._held.clear()


@runtime_checkable
class PartSizes(Protocol):
    """A store that tells the size of a multipart object's part (``S3Store.part_size``)."""

    async def part_size(self, key: str, number: int, *, if_match: str = "") -> int | None: ...


async def sequential_check(
    store: object, key: str, etag: str, size: int, offset: int
) -> SequentialCheck | None:
    """The check of a handle's reads of version ``etag`` of ``key``, made at a read at
    ``offset``: None unless the store checks, the read is near the start (a whole sequential
    read may follow) and the ETag is an MD5 or, for a multipart object, its first part's size
    is known (one HEAD ?partNumber=1) and fits its layout."""
    integrity = of_store(store)
    if integrity is None or offset >= HOLD_LIMIT or size <= 0:
        return None
    expected = integrity.expected_etag(etag)
    if expected is None:
        return None
    first = None
    if parts_count(expected) > 1:
        if not isinstance(store, PartSizes):
            return None
        try:
            first = await store.part_size(key, 1, if_match=etag)
        except Exception as exc:  # no check rather than no read
            log.info("no integrity check of %r: its part size: %s", key, exc)
            return None
    return integrity.sequential(etag, size, first)
