"""A small fake S3 server on loopback: cheap huge folders, and answers no real server gives.

What it serves (path style, one bucket, any signature accepted):
- ``objects``: key → :class:`FakeObject` (body and ``x-amz-meta-*``), put there by the test;
- ``folders``: prefix → count: that many synthetic keys ``prefix + "%06d" % i``, each of
  ``SYNTHETIC_SIZE`` bytes with ``folder_metadata``, never stored (a folder of 100,000 keys
  costs a sorted list of names);
- ListObjectsV2 (pages of at most ``max-keys`` up to 1,000, ``delimiter``, opaque continuation
  tokens, ``start-after``, ``encoding-type=url``), ListObjects V1 is not served; HEAD and GET
  (``Range: bytes=a-b``, 206 with ``Content-Range``); ListMultipartUploads (always empty);
  anything else is 501.
- ``faults``: a key (GET/HEAD) or a listing prefix → a :class:`Fault`, answered instead of the
  real thing: invalid, truncated or 100 MB XML; a body shorter than its ``Content-Length``
  (the connection then closed) or longer; a HEAD followed by junk bytes, cut in its headers,
  or with a Content-Length that is not a number.

Invariants:
- Binds 127.0.0.1 on a port the kernel picks (no race), serves from a daemon thread, one
  thread per connection, HTTP/1.1 keep-alive; each answer is written in one ``sendall`` (no
  Nagle stalls). Over TLS when given a server ``ssl.SSLContext`` (the handshake happens in the
  connection's thread; a refused handshake just ends that connection).
- :func:`fake_s3` stops it (listener closed, every connection shut) whatever happens; a client
  going away mid-answer is normal (the 100 MB answers count on it) and never printed.
- ``counts`` tallies requests by method (and ``GET object``, a GET of a key) and by fault,
  under a lock.
"""

from __future__ import annotations

import base64
import bisect
import datetime
import hashlib
import socket
import socketserver
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit
from xml.sax.saxutils import escape

LOOPBACK = "127.0.0.1"
SYNTHETIC_SIZE = 10
HUGE_XML = 100 * 10**6
MODIFIED = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
MAX_REQUEST_HEAD = 64 << 10


class Fault(Enum):
    """Wrong answers, chosen per key (GET/HEAD) or per listing prefix."""

    INVALID_XML = "invalid-xml"  # a listing that is not XML at all
    TRUNCATED_XML = "truncated-xml"  # the first half of a real listing, with a matching length
    HUGE_XML = "huge-xml"  # a 100 MB listing, Content-Length announced
    HUGE_XML_CHUNKED = "huge-xml-chunked"  # the same, chunked: its size known only by reading
    BODY_SHORTER = "body-shorter"  # GET: Content-Length says more than is sent; then closed
    BODY_LONGER = "body-longer"  # GET: 206 whose Content-Length is less than its Content-Range
    HEAD_JUNK = "head-junk"  # HEAD: fine, then bytes after it (a body where none may be)
    HEAD_CUT = "head-cut"  # HEAD: the connection closed in the middle of the headers
    HEAD_BAD_LENGTH = "head-bad-length"  # HEAD: Content-Length: abc


HEAD_FAULTS = frozenset({Fault.HEAD_JUNK, Fault.HEAD_CUT, Fault.HEAD_BAD_LENGTH})
GET_FAULTS = frozenset({Fault.BODY_SHORTER, Fault.BODY_LONGER})
NO_UPLOADS = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult>'
    b"<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"
)


@dataclass
class FakeObject:
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return f'"{hashlib.md5(self.body).hexdigest()}"'


def _http_date(when: datetime.datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _next_after_prefix(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class FakeS3:
    """The state and answers of the fake server (see the module docstring)."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, FakeObject] = {}
        self.folders: dict[str, int] = {}
        self.folder_metadata: dict[str, str] = {}  # of every synthetic key
        self.faults: dict[str, Fault] = {}
        self.counts: Counter[str] = Counter()
        self.port = 0
        self.scheme = "http"
        self._lock = threading.Lock()
        self._sorted: list[str] | None = None
        self._sorted_for: tuple[int, int] = (-1, -1)

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    # -- the key space ---------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every key, sorted; rebuilt only when objects or folders changed."""
        state = (len(self.objects), sum(self.folders.values()) + len(self.folders))
        with self._lock:
            if self._sorted is None or state != self._sorted_for:
                names = set(self.objects)
                for prefix, n in self.folders.items():
                    names.update(f"{prefix}{i:06d}" for i in range(n))
                self._sorted = sorted(names)
                self._sorted_for = state
            return self._sorted

    def lookup(self, key: str) -> FakeObject | None:
        if key in self.objects:
            return self.objects[key]
        for prefix, n in self.folders.items():
            rest = key[len(prefix) :]
            if key.startswith(prefix) and len(rest) == 6 and rest.isdigit() and int(rest) < n:
                return FakeObject(b"s" * SYNTHETIC_SIZE, self.folder_metadata)
        return None

    # -- answers ---------------------------------------------------------------------------------

    def listing(self, query: dict[str, str]) -> bytes:
        """A ListObjectsV2 page as XML."""
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_keys = max(1, min(1000, int(query.get("max-keys", "1000"))))
        url = query.get("encoding-type") == "url"
        keys = self.keys()
        index = bisect.bisect_left(keys, prefix)
        token = query.get("continuation-token")
        if token:
            index = max(index, bisect.bisect_left(keys, base64.urlsafe_b64decode(token).decode()))
        elif query.get("start-after"):
            index = max(index, bisect.bisect_right(keys, query["start-after"]))
        contents: list[str] = []
        prefixes: list[str] = []
        while index < len(keys) and len(contents) + len(prefixes) < max_keys:
            key = keys[index]
            if not key.startswith(prefix):
                index = len(keys)
                break
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(common)
                index = bisect.bisect_left(keys, _next_after_prefix(common))
                continue
            contents.append(key)
            index += 1
        truncated = index < len(keys) and keys[index].startswith(prefix)

        def name(text: str) -> str:
            return escape(quote_plus(text, safe="/") if url else text)

        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{escape(self.bucket)}</Name><Prefix>{name(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys><KeyCount>{len(contents) + len(prefixes)}</KeyCount>",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        ]
        if delimiter:
            parts.append(f"<Delimiter>{name(delimiter)}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        if truncated:
            next_token = base64.urlsafe_b64encode(keys[index].encode()).decode()
            parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        for key in contents:
            obj = self.lookup(key)
            assert obj is not None
            parts.append(
                f"<Contents><Key>{name(key)}</Key><LastModified>{_iso(MODIFIED)}</LastModified>"
                f"<ETag>{escape(obj.etag)}</ETag><Size>{len(obj.body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        for common in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{name(common)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        return "".join(parts).encode()

    def listing_fault(self, prefix: str) -> Fault | None:
        return self.faults.get(prefix)


def _error(status: int, code: str, message: str = "") -> tuple[int, dict[str, str], bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message><RequestId>fake</RequestId></Error>"
    ).encode()
    return status, {"content-type": "application/xml"}, body


REASONS = {
    200: "OK",
    206: "Partial Content",
    404: "Not Found",
    416: "Range Not Satisfiable",
    501: "Not Implemented",
}


def _head_bytes(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Closed(Exception):
    """The connection is over (client gone, or a fault closed it)."""


class _Handler(socketserver.BaseRequestHandler):
    """One connection: requests read and answered in turn until either side closes."""

    server: _Server

    def setup(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.tls is not None:
            sock = self.server.tls.wrap_socket(sock, server_side=True)
        self.sock = sock
        self.buffer = b""

    def handle(self) -> None:
        try:
            while True:
                self._one()
        except (_Closed, OSError, ssl.SSLError):
            pass

    def _recv(self) -> bytes:
        data = self.sock.recv(256 << 10)
        if not data:
            raise _Closed
        return data

    def _read_request(self) -> tuple[str, str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_REQUEST_HEAD:
                raise _Closed
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(self.buffer) < length:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return method, target, headers, body

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _answer(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        headers = {"x-amz-request-id": "fake", **headers}
        headers.setdefault("content-length", str(len(body)))
        self._send(_head_bytes(status, headers) + (b"" if head else body))

    def _one(self) -> None:
        fake = self.server.fake
        method, target, headers, _ = self._read_request()
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = unquote(parts.path)
        bucket, _, key = path.lstrip("/").partition("/")
        fake.count(method)
        if method == "GET" and key:
            fake.count("GET object")  # (the rest of the GETs are listings and checks)
        if bucket != fake.bucket:
            self._answer(*_error(404, "NoSuchBucket", bucket), head=method == "HEAD")
        elif method == "GET" and not key and query.get("list-type") == "2":
            self._list(query)
        elif method == "GET" and not key and "uploads" in query:
            self._answer(200, {"content-type": "application/xml"}, NO_UPLOADS, head=False)
        elif method == "GET" and key:
            self._get(key, headers.get("range", ""))
        elif method == "HEAD" and key:
            self._head(key)
        else:
            self._answer(*_error(501, "NotImplemented", f"{method} {path}"), head=method == "HEAD")

    # -- listing ---------------------------------------------------------------------------------

    def _list(self, query: dict[str, str]) -> None:
        fake = self.server.fake
        fault = fake.listing_fault(query.get("prefix", ""))
        xml = {"content-type": "application/xml"}
        if fault is None:
            self._answer(200, xml, fake.listing(query), head=False)
            return
        fake.count(fault.value)
        if fault is Fault.INVALID_XML:
            self._answer(200, xml, b"<ListBucketResult><Contents><Key>a</Key></Con<<tents>>", False)
        elif fault is Fault.TRUNCATED_XML:
            full = fake.listing(query)
            self._answer(200, xml, full[: len(full) // 2], head=False)
        elif fault in (Fault.HUGE_XML, Fault.HUGE_XML_CHUNKED):
            self._huge(fault is Fault.HUGE_XML_CHUNKED)
        else:
            raise AssertionError(f"{fault} is not a listing fault")

    def _huge(self, chunked: bool) -> None:
        """100 MB of a well-formed-looking listing, until sent or the client hangs up."""
        opening = b'<?xml version="1.0"?><ListBucketResult><IsTruncated>false</IsTruncated>'
        entry = b"<Contents><Key>" + b"k" * 200 + b"</Key><Size>1</Size></Contents>"
        filler = entry * ((1 << 20) // len(entry))
        closing = b"</ListBucketResult>"
        body_size = HUGE_XML
        headers = {"content-type": "application/xml"}
        if chunked:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["content-length"] = str(body_size)
        self._send(_head_bytes(200, headers))

        def piece(data: bytes) -> None:
            self._send(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)

        piece(opening)
        sent = len(opening)
        while sent + len(filler) + len(closing) <= body_size:
            piece(filler)
            sent += len(filler)
        tail = closing.rjust(body_size - sent)  # spaces before the closing tag fill it up
        piece(tail)
        if chunked:
            self._send(b"0\r\n\r\n")

    # -- objects ---------------------------------------------------------------------------------

    def _object_headers(self, obj: FakeObject) -> dict[str, str]:
        headers = {
            "etag": obj.etag,
            "last-modified": _http_date(MODIFIED),
            "content-type": "application/octet-stream",
            "accept-ranges": "bytes",
        }
        headers.update({f"x-amz-meta-{k}": v for k, v in obj.metadata.items()})
        return headers

    def _head(self, key: str) -> None:
        fake = self.server.fake
        obj = fake.lookup(key)
        if obj is None:
            self._answer(404, {}, b"", head=True)
            return
        headers = self._object_headers(obj)
        headers["content-length"] = str(len(obj.body))
        fault = fake.faults.get(key)
        if fault not in HEAD_FAULTS:
            self._answer(200, headers, b"", head=True)
            return
        fake.count(fault.value)
        if fault is Fault.HEAD_JUNK:
            self._send(_head_bytes(200, headers) + b"junk after a HEAD answer\r\n" * 4)
        elif fault is Fault.HEAD_CUT:
            self._send(_head_bytes(200, headers)[:40])
            raise _Closed
        elif fault is Fault.HEAD_BAD_LENGTH:
            headers["content-length"] = "abc"
            self._send(_head_bytes(200, headers))
        else:
            raise AssertionError(f"{fault} is not a HEAD fault")

    def _get(self, key: str, range_header: str) -> None:
        fake = self.server.fake
        obj = fake.lookup(key)
        if obj is None:
            self._answer(*_error(404, "NoSuchKey", key), head=False)
            return
        size = len(obj.body)
        headers = self._object_headers(obj)
        status, first, last = 200, 0, size - 1
        if range_header.startswith("bytes="):
            a, _, b = range_header[6:].partition("-")
            first = int(a)
            last = min(int(b), size - 1) if b else size - 1
            if first >= size:
                self._answer(*_error(416, "InvalidRange", range_header), head=False)
                return
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        body = obj.body[first : last + 1]
        fault = fake.faults.get(key)
        if fault not in GET_FAULTS:
            self._answer(status, headers, body, head=False)
            return
        fake.count(fault.value)
        if fault is Fault.BODY_SHORTER:  # announces it all, sends half, hangs up
            headers["content-length"] = str(len(body))
            self._send(_head_bytes(status, headers) + body[: len(body) // 2])
            raise _Closed
        if fault is Fault.BODY_LONGER:  # announces half, sends it all
            headers["content-length"] = str(len(body) // 2)
            self._send(_head_bytes(status, headers) + body)
            raise _Closed
        raise AssertionError(f"{fault} is not a GET fault")

    def finish(self) -> None:
        try:
            self.sock.close()
        finally:
            self.server.forget(self.request)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, fake: FakeS3, tls: ssl.SSLContext | None) -> None:
        self.fake = fake
        self.tls = tls
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def forget(self, request: socket.socket) -> None:
        with self.open_lock:
            self.open.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is routine here

    def close_all(self) -> None:
        with self.open_lock:
            sockets = list(self.open)
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def fake_s3(bucket: str = "fake", *, tls: ssl.SSLContext | None = None) -> Iterator[FakeS3]:
    """Serve a :class:`FakeS3` of ``bucket`` on loopback for the block (https with ``tls``)."""
    fake = FakeS3(bucket)
    server = _Server(fake, tls)
    fake.port = server.server_address[1]
    fake.scheme = "https" if tls is not None else "http"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        server.close_all()
        thread.join(10)


# -- certificates for the TLS tests ----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_pem, self.key_pem)
        return ctx


def make_pki(directory: Path) -> Pki:
    """Generate the CA and server certificate (``cryptography``) into ``directory``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3fmfs test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key_pem.chmod(0o600)
    return pki
