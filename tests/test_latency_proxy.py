"""The bench's latency proxy (tests/support/latency_proxy.py): it adds its delay each way and to
a connect, streams 1 GiB through without holding it, forwards half-closes and closes cleanly.

Servers here are plain threads on loopback; the proxy is its own process, as in the bench.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.support.latency_proxy import RunningProxy, latency_proxy

GiB = 1 << 30
BLOCK = 1 << 20


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A thread per connection running ``handle``; yields the port; stopped after the block."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(60)
            t = threading.Thread(target=_serve_one, args=(handle, conn), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for t in threads:
            t.join(10)


def _serve_one(handle: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn:
        handle(conn)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def round_trip(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += sock.recv(4 - len(got))
    assert got == b"ping"
    return time.perf_counter() - start


def test_adds_its_delay_each_way_and_to_a_connect() -> None:
    delay = 0.1
    with tcp_server(echo) as port, latency_proxy("127.0.0.1", port, delay * 1000) as proxy:
        for _ in range(2):
            with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                first = round_trip(sock)  # handshake (2N) + request and answer (2N)
                again = [round_trip(sock) for _ in range(3)]
            assert first >= 4 * delay, first
            assert first < 4 * delay + 0.5, first
            for took in again:
                assert 2 * delay <= took < 2 * delay + 0.5, again
        # without the proxy the same round trip is far below the delay
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert round_trip(sock) < delay


def digest_sink(conn: socket.socket) -> None:
    """Reads to EOF, then answers ``<bytes> <sha256>`` and closes."""
    digest = hashlib.sha256()
    total = 0
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    while n := conn.recv_into(buf):
        digest.update(view[:n])
        total += n
    conn.sendall(f"{total} {digest.hexdigest()}".encode())


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def send_stream(proxy: RunningProxy, size: int) -> tuple[str, bytes]:
    """Send ``size`` bytes through the proxy, half-close, return (their sha256, the answer)."""
    digest = hashlib.sha256()
    with socket.create_connection((proxy.host, proxy.port), timeout=60) as sock:
        for i in range(size // BLOCK):
            block = hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32)
            digest.update(block)
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)  # the EOF must reach the server through the proxy
        answer = b""
        while data := sock.recv(4096):
            answer += data
    return digest.hexdigest(), answer


def test_streams_a_gibibyte_without_holding_it() -> None:
    with tcp_server(digest_sink) as port, latency_proxy("127.0.0.1", port, 5) as proxy:
        start = time.perf_counter()
        sent, answer = send_stream(proxy, GiB)
        took = time.perf_counter() - start
        assert answer.decode() == f"{GiB} {sent}"
        peak = vm_hwm(proxy.pid)
        assert peak < 100e6, f"proxy peak RSS {peak / 1e6:.0f} MB"
    # streaming, not store-and-forward at 5 ms a chunk (4096 chunks would take > 20 s)
    assert took < 60, took


def test_closes_cleanly_both_ways() -> None:
    seen_eof = threading.Event()

    def close_after_eof(conn: socket.socket) -> None:
        while conn.recv(65536):
            pass
        seen_eof.set()

    def close_at_once(conn: socket.socket) -> None:
        conn.sendall(b"bye")

    with tcp_server(close_after_eof) as port, latency_proxy("127.0.0.1", port, 20) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"hello")
        assert seen_eof.wait(5), "the client's close never reached the server"
        pid = proxy.pid
    with tcp_server(close_at_once) as port, latency_proxy("127.0.0.1", port, 20) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            got = b""
            while data := sock.recv(100):
                got += data
        assert got == b"bye"  # then EOF: the server's close was forwarded
    # the proxy process is gone after its block
    assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped
