"""Helpers for the worker-class suites, and the list of classes the shared suite covers
(add gevent/eventlet to WORKER_CLASSES when they exist)."""

import select
import socket

# name -> extra command-line arguments that class is run with in the shared suite
WORKER_CLASSES = {
    "sync": [],
    "gthread": ["--threads", "4"],
    "gevent": [],
    "eventlet": [],
}
# Whether a class keeps HTTP/1.1 connections open between requests.
KEEPS_ALIVE = {"sync": False, "gthread": True, "gevent": True, "eventlet": True}
MULTITHREAD = {"sync": False, "gthread": True, "gevent": False, "eventlet": False}


def server_args(worker_class, *extra):
    return ["-k", worker_class, *WORKER_CLASSES[worker_class], "-b", "127.0.0.1:0", *extra]


class ResponseReader:
    """Reads responses one at a time from a socket that stays open (keep-alive, pipelining)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; unparsed {self.buf!r}")
        self.buf += data

    def read(self, head_only=False):
        """(status, headers lower-cased, body) of the next response; chunked bodies decoded."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body


def connect(address, timeout=10.0):
    s = socket.create_connection(address, timeout=timeout)
    return s


def request_bytes(method, path, body=b"", headers=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def readable(sock, timeout=0.0) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def wait_eof(sock, timeout=10.0) -> bytes:
    """Read until the peer closes; returns what came before the EOF (fails on timeout)."""
    sock.settimeout(timeout)
    got = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            raise AssertionError(f"connection reset (not closed) after {got!r}")
        except socket.timeout:
            raise AssertionError(f"no EOF within {timeout}s; got {got!r}")
        if not data:
            return got
        got += data
