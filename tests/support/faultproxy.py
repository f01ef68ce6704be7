"""A fault-injecting HTTP proxy on loopback, between a mount and its S3 server (tests only).

The mount is given the proxy as its endpoint (``proxy.server`` is an ``S3Server`` for
:func:`tests.support.mount.mounted`); the proxy forwards each request to the real server (moto) and,
as it is told, answers or breaks some of them instead:

=============  =================================================================================
kind           what the client sees
=============  =================================================================================
``error500``   ``500 InternalError`` (S3 error XML); the request is not forwarded
``slowdown``   ``503 SlowDown`` (S3 error XML); the request is not forwarded
``reset``      the request IS forwarded (it takes effect), then the answer is cut: the headers
               and part of the body (a bodiless answer: part of the headers), then a TCP RST
``stall``      nothing for ``stall_seconds`` (None: until the client gives up), then the request
               is forwarded, unless the client has left
``refuse``     a TCP RST before the request reaches the server
=============  =================================================================================

Corruption (``corrupt={"GET": p, "PUT": q}``, or ``set_corruption``): independently of the
faults, with probability ``p`` an object GET's answer body (a 200 or 206 with an ``ETag``, so
never a listing's XML) has one byte flipped on its way to the client, and with probability
``q`` a PUT's non-empty request body (an object or a part) has one byte flipped on its way to
the server. Both draw from their own RNG (seeded by ``seed``), so turning corruption on does
not change which faults the requests get. ``corrupted`` counts them by method, and
``corruptions`` lists (method, target, offset) in order.

Invariants:
- With probability ``rate`` a request gets one fault, its kind drawn by ``weights``, from one
  RNG seeded by ``seed``; ``inject`` forces faults on the next matching requests first.
  ``injected`` counts faults by kind, ``forwarded`` the requests the server got (``methods``:
  by method; ``log``: each one, without its body), ``requests`` all requests read.
- A request is read whole (headers, then its ``Content-Length`` body) before anything is
  decided, and a fault either answers in full or ends the connection: a kept-alive connection
  never gets out of step. Chunked request bodies are refused (501): the client under test
  never sends them (``s3fmfs.client`` always sends ``Content-Length``).
- ``down()`` refuses everything: the listening socket is closed (connects get ECONNREFUSED)
  and every open connection is reset; ``down(hang=True)`` accepts connections but answers
  nothing until ``up()``. ``up()`` listens again on the same port. Both return once in effect.
- Everything runs in the proxy's own threads (an acceptor, one per connection), so it keeps
  serving while the test's thread is blocked in a system call on the mount. No socket wait
  lasts more than ``POLL`` seconds without the flags being looked at, so ``down``/``stop`` act
  at once. :func:`fault_proxy` stops it, whatever happens in its block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from tests.support.servers import LOOPBACK, S3Server

KINDS = ("error500", "slowdown", "reset", "stall", "refuse")
#: Seconds between looks at the flags while waiting on a socket.
POLL = 0.05
CHUNK = 64 << 10
MAX_HEAD = 64 << 10
UPSTREAM_TIMEOUT = 60.0
#: How long ``down``/``up``/``stop`` wait for the threads to act.
SETTLE_TIMEOUT = 10.0
#: Headers of one hop only: never forwarded either way.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
    | {"proxy-connection", "proxy-authenticate", "proxy-authorization"}
)
_ERRORS = {
    "error500": (500, "Internal Server Error", "InternalError", "We encountered an error."),
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


class _Reset(Exception):
    """End the client's connection with a TCP RST."""


class _Gone(Exception):
    """The client closed its connection (or it broke): end quietly."""


@dataclass
class Request:
    """One request as read from the client."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        """The first value of a header ('' when absent)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return ""


#: Chooses the requests an ``inject``ed fault applies to.
Match = Callable[[Request], bool]


def _rst(sock: socket.socket) -> None:
    """Close with RST rather than FIN (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _error_answer(kind: str, request: Request, number: int) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    request_id = f"fault{number:06d}"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.target.split('?', 1)[0]}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
    if request.method == "HEAD":  # a HEAD answer never has a body, whatever it says
        body = b""
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n\r\n"
    ).encode()
    return head + body


class FaultProxy:
    """The proxy; use :func:`fault_proxy` to run one."""

    def __init__(
        self,
        upstream: S3Server,
        *,
        seed: int = 0,
        rate: float = 0.0,
        weights: Mapping[str, float] | None = None,
        stall_seconds: float | None = 2.0,
        corrupt: Mapping[str, float] | None = None,
    ) -> None:
        self.upstream = upstream
        self.corrupt: dict[str, float] = dict(corrupt or {})
        #: bodies with one byte flipped, by method
        self.corrupted: Counter[str] = Counter()
        #: (method, target, offset in the body) of every byte flipped, in order
        self.corruptions: list[tuple[str, str, int]] = []
        self._corrupt_rng = random.Random(f"corrupt-{seed}")
        self.rate = rate
        self.weights: dict[str, float] = dict(weights or dict.fromkeys(KINDS, 1.0))
        self.stall_seconds = stall_seconds
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        #: forwarded requests by method
        self.methods: Counter[str] = Counter()
        #: every forwarded request in order, without its body
        self.log: list[Request] = []
        self.requests = 0
        self.connections = 0
        #: (kind, method, target) of every fault, in order
        self.events: list[tuple[str, str, str]] = []
        self.port = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._plan: list[tuple[str, Match | None]] = []
        self._mode = "up"  # "up", "refuse", "hang"
        self._stopping = False
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    # -- control (the test's thread) -------------------------------------------------------------

    @property
    def server(self) -> S3Server:
        """The upstream server as reached through the proxy (its keys, the proxy's port)."""
        return dataclasses.replace(self.upstream, host=LOOPBACK, port=self.port)

    def set_faults(
        self,
        rate: float,
        weights: Mapping[str, float] | None = None,
        stall_seconds: float | None = None,
    ) -> None:
        """Fault ``rate`` of the requests from now on (kinds by ``weights``)."""
        unknown = set(weights or ()) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        with self._lock:
            self.rate = rate
            if weights is not None:
                self.weights = dict(weights)
            if stall_seconds is not None:
                self.stall_seconds = stall_seconds

    def set_corruption(self, rates: Mapping[str, float]) -> None:
        """Flip one byte in ``rates[method]`` of the bodies ("GET": answers, "PUT": requests)
        from now on."""
        unknown = set(rates) - {"GET", "PUT"}
        if unknown:
            raise ValueError(f"only GET and PUT bodies are corrupted, not {sorted(unknown)}")
        with self._lock:
            self.corrupt = dict(rates)

    def _flip_at(self, method: str, target: str, length: int) -> int | None:
        """Where to flip a byte of a ``length``-byte body of ``method`` (None: nowhere)."""
        rate = self.corrupt.get(method, 0.0)
        if length <= 0 or rate <= 0:
            return None
        with self._lock:
            if self._corrupt_rng.random() >= rate:
                return None
            offset = self._corrupt_rng.randrange(length)
            self.corrupted[method] += 1
            self.corruptions.append((method, target, offset))
            return offset

    def inject(self, kind: str, count: int = 1, match: Match | None = None) -> None:
        """Give the next ``count`` requests that ``match`` (default: any) fault ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._plan.extend([(kind, match)] * count)

    def pending(self) -> int:
        """Injected faults not yet applied."""
        with self._lock:
            return len(self._plan)

    def down(self, *, hang: bool = False) -> None:
        """The server is gone: refuse every connection (reset the open ones), or with ``hang``
        accept them and answer nothing. Returns once in effect."""
        with self._changed:
            self._mode = "hang" if hang else "refuse"
            self._changed.notify_all()
            if not hang:
                settled = self._changed.wait_for(
                    lambda: self._listener is None and not self._open, SETTLE_TIMEOUT
                )
                if not settled:
                    raise RuntimeError("fault proxy: connections still open after down()")

    def up(self) -> None:
        """Serve again (on the same port). Returns once listening."""
        with self._changed:
            self._mode = "up"
            self._changed.notify_all()
            if not self._changed.wait_for(lambda: self._listener is not None, SETTLE_TIMEOUT):
                raise RuntimeError("fault proxy: not listening again after up()")

    def summary(self) -> str:
        """One line: requests, forwarded, faults by kind."""
        with self._lock:
            kinds = ", ".join(f"{k} {self.injected[k]}" for k in KINDS if self.injected[k])
            flipped = ", ".join(f"{m} {n}" for m, n in sorted(self.corrupted.items()))
            return (
                f"{self.requests} requests, {self.forwarded} forwarded, "
                f"{sum(self.injected.values())} faults ({kinds or 'none'})"
                + (
                    f", {sum(self.corrupted.values())} bodies corrupted ({flipped})"
                    if flipped
                    else ""
                )
            )

    def start(self) -> None:
        """Listen on a free port and serve in the background."""
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    def stop(self) -> None:
        """Stop serving, reset every connection, join the threads."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- the threads -----------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="faultproxy")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(128)
        listener.setblocking(False)
        return listener

    def _accept_loop(self) -> None:
        while not self._stopping:
            if self._mode == "refuse":
                with self._changed:
                    if self._listener is not None:
                        self._listener.close()  # connects now get ECONNREFUSED
                        self._listener = None
                        self._changed.notify_all()
                time.sleep(POLL)
                continue
            if self._listener is None:
                listener = self._listen(self.port)
                with self._changed:
                    self._listener = listener
                    self._changed.notify_all()
            ready, _, _ = select.select([self._listener], [], [], POLL)
            if not ready:
                continue
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._open.add(sock)
            self._spawn(self._serve, sock)
        with self._changed:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self._changed.notify_all()

    def _serve(self, sock: socket.socket) -> None:
        """One client connection, request after request, until it ends."""
        conn = _Connection(self, sock)
        upstream: http.client.HTTPConnection | None = None
        reset = False
        try:
            while True:
                request = conn.read_request()
                if request is None:
                    return
                kind = self._decide(request)
                if kind == "refuse":
                    raise _Reset
                if kind in _ERRORS:
                    conn.send(_error_answer(kind, request, self.requests))
                    continue
                if kind == "stall":
                    conn.hold(self.stall_seconds)
                while self._mode == "hang":
                    conn.hold(POLL)
                conn.check()
                if request.method == "PUT" and request.body:
                    flip = self._flip_at("PUT", request.target, len(request.body))
                    if flip is not None:
                        body = bytearray(request.body)
                        body[flip] ^= 0xFF
                        request.body = bytes(body)
                if upstream is None:
                    upstream = http.client.HTTPConnection(
                        self.upstream.host, self.upstream.port, timeout=UPSTREAM_TIMEOUT
                    )
                answer = _forward(upstream, request)
                with self._lock:
                    self.forwarded += 1
                    self.methods[request.method] += 1
                    self.log.append(dataclasses.replace(request, body=b""))
                try:
                    if kind == "reset":
                        conn.send_cut(request, answer, self._cut)
                        raise _Reset
                    flip = None
                    if (
                        request.method == "GET"
                        and answer.status in (200, 206)
                        and answer.getheader("etag")
                        and answer.length
                    ):
                        flip = self._flip_at("GET", request.target, answer.length)
                    conn.send_answer(request, answer, flip)
                finally:
                    if kind == "reset" or answer.will_close or not answer.isclosed():
                        upstream.close()  # unread bytes, or the server closes it
                        upstream = None
        except _Reset:
            reset = True
        except (_Gone, OSError, http.client.HTTPException, ValueError):
            pass  # the client left, or the request or the server's answer was broken
        finally:
            if upstream is not None:
                upstream.close()
            if reset:
                _rst(sock)
            else:
                sock.close()
            with self._changed:
                self._open.discard(sock)
                self._changed.notify_all()

    def _decide(self, request: Request) -> str | None:
        with self._lock:
            self.requests += 1
            kind: str | None = None
            for i, (planned, match) in enumerate(self._plan):
                if match is None or match(request):
                    del self._plan[i]
                    kind = planned
                    break
            if kind is None and self.rate > 0 and self._rng.random() < self.rate:
                names = [k for k in KINDS if self.weights.get(k, 0) > 0]
                kind = self._rng.choices(names, [self.weights[k] for k in names])[0]
            if kind is not None:
                self.injected[kind] += 1
                self.events.append((kind, request.method, request.target))
            return kind

    def _cut(self, length: int) -> int:
        """Where a reset cuts ``length`` bytes (0 <= cut < length)."""
        with self._lock:
            return self._rng.randrange(length) if length > 0 else 0


def _forward(upstream: http.client.HTTPConnection, request: Request) -> http.client.HTTPResponse:
    """Send ``request`` upstream; its answer (headers read, body not yet). A kept-alive upstream
    connection the server closed meanwhile is opened again once."""
    for attempt in (1, 2):
        try:
            upstream.putrequest(
                request.method, request.target, skip_host=True, skip_accept_encoding=True
            )
            for name, value in request.headers:
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders(request.body or None)
            return upstream.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            upstream.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _Connection:
    """A client connection's socket (non-blocking) and what was read ahead of a request."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.sock = sock
        self.buffer = bytearray()

    def check(self) -> None:
        """Reset when the proxy is down or stopping."""
        if self.proxy._stopping or self.proxy._mode == "refuse":
            raise _Reset

    def _fill(self) -> bool:
        """Read more into the buffer; False at a clean end of the connection."""
        while True:
            self.check()
            ready, _, _ = select.select([self.sock], [], [], POLL)
            if not ready:
                continue
            try:
                data = self.sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise _Gone from exc
            if not data:
                return False
            self.buffer += data
            return True

    def read_request(self) -> Request | None:
        """The next request, whole; None when the client closed the connection between two."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise ValueError("request head too long")
            if not self._fill():
                if self.buffer:
                    raise _Gone
                return None
        end = self.buffer.index(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        method, target, _version = lines[0].split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        request = Request(method, target, headers, b"")
        if "chunked" in request.header("transfer-encoding").lower():
            self.send(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
            raise _Gone
        length = int(request.header("content-length") or 0)
        if length and request.header("expect").lower() == "100-continue" and not self.buffer:
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(self.buffer) < length:
            if not self._fill():
                raise _Gone
        request.body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return request

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            self.check()
            _, ready, _ = select.select([], [self.sock], [], POLL)
            if not ready:
                continue
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise _Gone from exc
            view = view[sent:]

    def hold(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: until the proxy stops or goes down); _Gone if the client
        leaves meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            self.check()
            ready, _, _ = select.select([self.sock], [], [], POLL)
            if ready:
                try:
                    peeked = self.sock.recv(1, socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    raise _Gone from exc
                if not peeked:
                    raise _Gone
                time.sleep(POLL)  # the client sent more (it will not: no pipelining)

    @staticmethod
    def _head(answer: http.client.HTTPResponse, length: int | None) -> bytes:
        lines = [f"HTTP/1.1 {answer.status} {answer.reason}"]
        for name, value in answer.getheaders():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or (length is not None and lowered == "content-length"):
                continue
            lines.append(f"{name}: {value}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _bodiless(request: Request, answer: http.client.HTTPResponse) -> bool:
        return request.method == "HEAD" or answer.status in (204, 304) or answer.status < 200

    def send_answer(
        self, request: Request, answer: http.client.HTTPResponse, flip: int | None = None
    ) -> None:
        """Relay the server's answer, its body streamed when its length is known (with byte
        ``flip`` of it inverted, if given)."""
        if self._bodiless(request, answer):
            answer.read()
            self.send(self._head(answer, None))
            return
        if answer.length is None:  # chunked or to the end: send it with a length
            body = answer.read()
            self.send(self._head(answer, len(body)) + body)
            return
        self.send(self._head(answer, None))
        sent = 0
        while chunk := answer.read(CHUNK):
            if flip is not None and sent <= flip < sent + len(chunk):
                changed = bytearray(chunk)
                changed[flip - sent] ^= 0xFF
                chunk = bytes(changed)
            sent += len(chunk)
            self.send(chunk)

    def send_cut(
        self, request: Request, answer: http.client.HTTPResponse, cut: Callable[[int], int]
    ) -> None:
        """Relay the headers and part of the body (of a bodiless answer, part of the headers);
        the caller then resets the connection."""
        if self._bodiless(request, answer) or not answer.length:
            head = self._head(answer, None)
            self.send(head[: cut(len(head))])
            return
        self.send(self._head(answer, None))
        left = cut(answer.length)
        while left > 0:
            chunk = answer.read(min(CHUNK, left))
            if not chunk:
                break
            self.send(chunk)
            left -= len(chunk)


@contextlib.contextmanager
def fault_proxy(upstream: S3Server, **settings: object) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` in front of ``upstream`` for the block (stopped after it,
    whatever happens). ``settings``: ``seed``, ``rate``, ``weights``, ``stall_seconds``,
    ``corrupt``."""
    proxy = FaultProxy(upstream, **settings)  # type: ignore[arg-type]
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
