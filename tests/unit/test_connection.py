"""The shared connection loop with keep-alive on, as the keep-alive worker classes will run it.

The sync worker closes after one request, so these drive ``Connection`` directly over a real
socket pair: persistence rules, pipelining in order, and body left unread between requests.
"""

import logging
import os
import socket
import threading

import pytest

from unicornd.config import load_config
from unicornd.connection import CLOSE, IDLE, LINGER, Connection
from unicornd.context import ServerContext
from unicornd.http.parser import RequestParser


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/read":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        body = path.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve():
    """Run Connection.serve() in a thread on one end of a socket pair; yield the other end."""
    cfg = load_config(["x:app"], {})
    ctx = ServerContext(cfg, app, logging.getLogger("test"), keep_alive=True)
    threads = []

    def start():
        server_sock, client_sock = socket.socketpair()
        client_sock.settimeout(10)
        result = {}

        def run():
            result["linger"] = Connection(ctx, server_sock, ("127.0.0.1", 1), ("127.0.0.1", 80)).serve()
            server_sock.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return client_sock, t, result

    yield start
    for t in threads:
        t.join(10)


def read_all(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(serve):
    client, thread, _ = serve()
    client.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_all(client)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"/one") < data.index(b"/two") < data.index(b"/three")
    assert data.count(b"Connection: close") == 1  # only the last, which asked for it
    thread.join(10)
    assert not thread.is_alive()


def test_http10_closes_unless_keep_alive(serve):
    client, thread, _ = serve()
    client.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
    data = read_all(client)
    assert data.count(b"HTTP/1.0 200 OK") == 2
    assert b"Connection: keep-alive" in data and data.rstrip().endswith(b"/b")


def test_unread_body_is_skipped_before_the_next_request(serve):
    client, thread, _ = serve()
    client.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                   b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    data = read_all(client)
    assert data.count(b"200 OK") == 2 and data.endswith(b"abc")


def test_a_content_length_body_is_received_past_the_parser(serve, monkeypatch):
    """An upload's body goes from the socket straight into what wsgi.input returns: the parser
    gets the head and what came with it, not the rest of the body (each piece through it cost
    a copy and a round trip: issue 16); and the request behind the body is still its."""
    received = []
    receive_data = RequestParser.receive_data

    def counting(self, data):
        received.append(len(data))
        return receive_data(self, data)
    monkeypatch.setattr(RequestParser, "receive_data", counting)
    client, thread, _ = serve()
    body = os.urandom(4 << 20)
    client.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                   + body + b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_all(client)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert body in data and data.endswith(b"/after")
    thread.join(10)
    # what one recv took with the head (a RECV_SIZE of it at most), then the next request
    assert sum(received) <= 2 * 65536, received


def test_bad_second_request_gets_400_after_the_first_answer(serve):
    client, thread, result = serve()
    client.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\nBad Header\r\n\r\n")
    data = read_all(client)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 Bad Request" in data
    thread.join(10)
    assert result["linger"] == LINGER  # refused input may still be arriving: linger, not reset


def test_clean_eof_between_requests(serve):
    client, thread, result = serve()
    client.sendall(b"GET /only HTTP/1.1\r\nHost: x\r\n\r\n")
    client.shutdown(socket.SHUT_WR)
    data = read_all(client)
    assert data.count(b"200 OK") == 1
    thread.join(10)
    assert result["linger"] == CLOSE


def test_park_when_idle_returns_between_requests():
    cfg = load_config(["x:app"], {})
    ctx = ServerContext(cfg, app, logging.getLogger("test"), keep_alive=True)
    server_sock, client = socket.socketpair()
    client.settimeout(10)
    conn = Connection(ctx, server_sock, ("127.0.0.1", 1), ("127.0.0.1", 80))
    client.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.serve(park_when_idle=True) == IDLE  # both pipelined requests, then idle
    client.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert conn.serve(park_when_idle=True) == CLOSE
    server_sock.close()
    data = read_all(client)
    assert data.count(b"200 OK") == 3 and data.index(b"/a") < data.index(b"/b") < data.index(b"/c")


class _CooperativeSocket:
    """Stands for a gevent/eventlet socket: not a kernel socket itself, it holds one as _sock,
    whose fd is non-blocking (as the green libraries keep it)."""

    def __init__(self, sock):
        self._sock = sock
        sock.setblocking(False)
        self.timeout = 10.0

    def _wait(self, events):
        import select
        p = select.poll()
        p.register(self._sock.fileno(), events)
        if not p.poll(self.timeout * 1000):
            raise socket.timeout("timed out")

    def recv(self, n):
        while True:
            try:
                return self._sock.recv(n)
            except BlockingIOError:
                self._wait(1)  # POLLIN

    def sendall(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                self._wait(4)  # POLLOUT

    def sendfile(self, *args):
        raise ValueError("non-blocking sockets are not supported")  # what eventlet's does

    def gettimeout(self):
        return self.timeout

    def settimeout(self, value):
        self.timeout = value if value is not None else 1e9

    def setsockopt(self, *args):
        return self._sock.setsockopt(*args)

    def fileno(self):
        return self._sock.fileno()


def test_file_wrapper_on_a_cooperative_socket_goes_out_with_sendfile(tmp_path, monkeypatch):
    data = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffer, so it must wait
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    def file_app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    class Worker:
        alive = True

        def request_started(self, req, conn=None):
            pass

        def request_finished(self, req, conn=None, ex=None):
            pass

        @staticmethod
        def wait_write(fd, timeout):
            import select
            return bool(select.select([], [fd], [], timeout)[1])

    calls = []
    real_sendfile = os.sendfile
    monkeypatch.setattr(os, "sendfile", lambda *a: calls.append(a) or real_sendfile(*a))
    cfg = load_config(["x:app"], {})
    ctx = ServerContext(cfg, file_app, logging.getLogger("test"), worker=Worker(), keep_alive=True)
    server_sock, client = socket.socketpair()
    client.settimeout(10)
    conn = Connection(ctx, _CooperativeSocket(server_sock), ("127.0.0.1", 1), ("127.0.0.1", 80))
    out_fd = server_sock.fileno()

    def run():
        conn.serve()
        server_sock.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    client.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = read_all(client)
    t.join(10)
    assert got.split(b"\r\n\r\n", 1)[1] == data
    # The kernel copied the file: sendfile(2) on the socket's fd, as often as it had room.
    assert calls and all(c[0] == out_fd for c in calls)
    assert sum(c[3] for c in calls[:1]) == len(data)
