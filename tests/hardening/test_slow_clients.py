"""Slow and oversized clients against a real server: slowloris, idle preconnects, stalled and
trickling bodies, bodies over limit_request_body."""

import http.client
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import Server, parse_response, raw_request, wait_for  # noqa: E402


def timed_get(address, path="/hello"):
    start = time.monotonic()
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"Hello, World!\n"
    finally:
        conn.close()
    return time.monotonic() - start


class Slowloris:
    """Connections that send their request head one byte per second, and never finish it."""

    def __init__(self, address, count):
        self.socks = []
        for _ in range(count):
            s = socket.create_connection(address, timeout=30)
            s.sendall(b"G")
            self.socks.append(s)
        self.head = b"ET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        self.sent = 1
        self.replies = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self):
        i = 0
        while not self._stop.wait(1.0) and i < len(self.head):
            for s in self.socks:
                try:
                    s.sendall(self.head[i:i + 1])
                except OSError:
                    pass  # closed by the server (the deadline): collected below
            i += 1

    def collect(self):
        """Read what the server said to each connection that it has closed."""
        import select
        for s in self.socks:
            if s in self.replies:
                continue
            if select.select([s], [], [], 0)[0]:
                data = b""
                try:
                    while chunk := s.recv(65536):
                        data += chunk
                except OSError:
                    pass
                self.replies[s] = data
        return self.replies

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent", "eventlet"])
def test_slowloris_does_not_hold_workers(worker):
    with Server("-w", "3", "-k", worker, "--threads", "2", "--header-timeout", "4", "-b", "127.0.0.1:0",
                "testapp:app") as srv:
        loris = Slowloris(srv.address, 100)
        try:
            latencies = [timed_get(srv.address) for _ in range(300)]
            assert len(loris.collect()) == 0  # all 100 still open and unfinished meanwhile
            latencies.sort()
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            assert p99 < 1.0, f"p99 {p99:.3f} s with 100 slowloris connections open"
            # At the deadline each slow connection gets 408 and is closed.
            wait_for(lambda: len(loris.collect()) == 100, 30, interval=0.2,
                     message=lambda: f"{len(loris.replies)} of 100 closed")
            for reply in loris.replies.values():
                assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply[:80]
        finally:
            loris.close()
        assert timed_get(srv.address) < 10


def test_idle_preconnects_do_not_hold_the_only_worker():
    with Server("-w", "1", "--header-timeout", "30", "-b", "127.0.0.1:0", "testapp:app") as srv:
        idle = [socket.create_connection(srv.address) for _ in range(5)]
        try:
            for _ in range(20):
                timed_get(srv.address)
        finally:
            for s in idle:
                s.close()


def test_a_stalled_body_is_cut_off_and_the_worker_serves_on():
    with Server("-w", "1", "--header-timeout", "2", "-b", "127.0.0.1:0", "testapp:app") as srv:
        with socket.create_connection(srv.address, timeout=30) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            data = b""
            while chunk := s.recv(65536):  # the server gives up on it: EOF, no hang
                data += chunk
        assert b"200 OK" not in data
        timed_get(srv.address)


def test_a_trickling_body_below_min_body_rate_gets_408():
    with Server("-w", "1", "--min-body-rate", "1000", "-b", "127.0.0.1:0", "testapp:app") as srv:
        with socket.create_connection(srv.address, timeout=30) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            reply = b""
            s.settimeout(1.0)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    s.sendall(b"x" * 10)  # 10 bytes a second, far below 1000
                except OSError:
                    break
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout"), reply[:80]
        timed_get(srv.address)


def test_limit_request_body(tmp_path):
    calls = tmp_path / "calls"
    calls.write_text("")
    with Server("-b", "127.0.0.1:0", "--limit-request-body", "1K", "testapp:app",
                env={"TESTAPP_CALLS": str(calls)}) as srv:
        ok = raw_request(srv.address, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
        assert json.loads(parse_response(ok)[2])["body"] == "a" * 1024
        before = calls.read_text()
        # Refused from the Content-Length alone: the client has not sent the body yet.
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\nExpect: 100-continue\r\n\r\n")
            reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in reply
        assert calls.read_text() == before  # the app was not called
        # A chunked body that grows past the limit is cut off with 413.
        chunk = b"200\r\n" + b"b" * 0x200 + b"\r\n"
        reply = raw_request(srv.address, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + chunk * 3 + b"0\r\n\r\n")
        assert parse_response(reply)[0] == 413
