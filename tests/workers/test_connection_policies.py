"""Connection policies every worker class must share, end to end (issue 14): a body the app
left unread, a body that stalls, files sent with wsgi.file_wrapper, requests we refuse.

Each test runs once per class in conftest.WORKER_CLASSES: the policies live in the shared
request loop (unicornd/connection.py), so a class cannot quietly differ.
"""

import re
import socket
import subprocess
import time

import pytest
from workers_support import KEEPS_ALIVE, ResponseReader, request_bytes, server_args, wait_eof
from support import Server, wait_for

HEADER_TIMEOUT = 2


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    path = tmp_path_factory.mktemp("calls") / "calls"
    path.touch()
    return path


@pytest.fixture(scope="module")
def access_log(tmp_path_factory):
    return tmp_path_factory.mktemp("access") / "access.log"


@pytest.fixture(scope="module")
def server(worker_class, calls, access_log):
    args = server_args(worker_class, "-w", "1", "--header-timeout", str(HEADER_TIMEOUT),
                       "--metrics-bind", "127.0.0.1:0", "--access-logfile", str(access_log),
                       "--access-logformat", "%(r)s s=%(s)s b=%(b)s B=%(B)s")
    with Server(*args, "testapp:app", env={"TESTAPP_CALLS": str(calls)}) as srv:
        yield srv


def called(calls, line, before):
    """The app has been called for ``line`` more often than ``before`` times."""
    return calls.read_text().splitlines().count(line) > before


def assert_next_request_answered_or_closed(sock, reader, headers):
    """After a response: if it did not say Connection: close, the connection must serve the
    next request (RFC 9112 §9.6); if it did, the server must close it."""
    if headers.get("connection") == "close":
        assert wait_eof(sock, 10) == b""
        return False
    sock.sendall(request_bytes("GET", "/hello"))
    status, _, body = reader.read()
    assert (status, body) == (200, b"Hello, World!\n")
    return True


# -- 1. a body the app did not read ----------------------------------------------------------

def test_small_unread_body_arriving_after_the_answer_keeps_the_connection(server, worker_class, calls):
    # The app answers (without reading) before the body has arrived: the next request on the
    # connection must still be answered, as gunicorn does (requests' own test suite does this).
    line = "POST /ignore-body"
    with socket.create_connection(server.address, timeout=10) as s:
        reader = ResponseReader(s)
        for _ in range(3):
            before = calls.read_text().splitlines().count(line)
            s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
            wait_for(lambda: called(calls, line, before), 10, message="the app to be called")
            s.sendall(b"body")
            status, headers, body = reader.read()
            assert (status, body) == (200, b"ignored")
            kept = assert_next_request_answered_or_closed(s, reader, headers)
            assert kept is KEEPS_ALIVE[worker_class]
            if not kept:
                break


def test_large_unread_body_is_answered_with_connection_close(server):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000)
        status, headers, body = ResponseReader(s).read()
        assert (status, body) == (200, b"ignored")
        assert headers.get("connection") == "close"
        assert wait_eof(s, 10) == b""


def test_unread_body_that_stalls_is_answered_with_connection_close(server):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbo")
        status, headers, body = ResponseReader(s).read()
        assert (status, body) == (200, b"ignored")
        assert headers.get("connection") == "close"
        assert wait_eof(s, 10) == b""


def test_unread_body_behind_expect_100_continue_is_answered_with_connection_close(server):
    # The client waits for "100 Continue" before sending the body; the app answers without
    # asking for it: the body never comes, and the answer must say the connection ends.
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        status, headers, body = ResponseReader(s).read()
        assert (status, body) == (200, b"ignored")
        assert headers.get("connection") == "close"
        assert wait_eof(s, 10) == b""


# -- 3. a body that stalls mid-way ----------------------------------------------------------

def test_stalled_body_is_answered_408_at_header_timeout(server):
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        started = time.monotonic()
        status, headers, body = ResponseReader(s).read()
        waited = time.monotonic() - started
        assert status == 408
        assert headers.get("connection") == "close"
        assert b"stalled" in body
        # Not before header_timeout; and well before the greenlet classes' old 30 s.
        assert HEADER_TIMEOUT - 0.5 <= waited < HEADER_TIMEOUT + 10
        assert wait_eof(s, 10) == b""


def test_stalled_head_is_answered_408_at_header_timeout(server):
    # Nothing more arrives to wake the connection: its deadline alone must end the wait (the
    # eventlet worker's hub sweeps the deadlines of its waits with one timer).
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        started = time.monotonic()
        status, headers, _ = ResponseReader(s).read()
        waited = time.monotonic() - started
        assert status == 408
        assert headers.get("connection") == "close"
        assert HEADER_TIMEOUT - 0.5 <= waited < HEADER_TIMEOUT + 10
        assert wait_eof(s, 10) == b""


# -- 2. wsgi.file_wrapper ------------------------------------------------------------------------

@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_file_wrapper_sends_the_whole_file(server, tmp_path, with_length):
    data = bytes(range(256)) * (8 * 4096 + 3)  # 8 MiB and a bit: more than a socket buffer
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    headers = [f"X-File: {path}"] + ([] if with_length else ["X-No-Length: 1"])
    with socket.create_connection(server.address, timeout=10) as s:
        reader = ResponseReader(s)
        for _ in range(2):  # twice: the connection is fine afterwards
            s.sendall(request_bytes("GET", "/file", headers=headers))
            status, got_headers, body = reader.read()
            assert status == 200
            assert len(body) == len(data) and body == data
            if got_headers.get("connection") == "close":
                break


# -- 4. requests we refuse ------------------------------------------------------------------------

def _requests_4xx(server):
    url = re.search(r"Serving /metrics and /status at: (\S+)", server.wait_log(r"Serving /metrics").string).group(1)
    out = subprocess.run(["curl", "-sS", "--max-time", "10", url + "/metrics"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r'^unicornd_requests_total\{status="4xx"\} (\d+)$', out, re.M).group(1))


def test_refused_request_is_logged_counted_and_explained(server):
    before = _requests_4xx(server)
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
        status, headers, body = ResponseReader(s).read()
    assert status == 400 and headers.get("connection") == "close"
    assert b"InvalidHeaderName" in body  # the reason, as gunicorn puts it in the body
    assert headers.get("x-content-type-options") == "nosniff"
    server.wait_log(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: InvalidHeaderName")
    wait_for(lambda: _requests_4xx(server) == before + 1, 10, message="the 400 to be counted")


# -- 3b. a connection accepted while the worker boots ------------------------------------------

GATED_APP = '''
import os, time
GATE = os.environ["GATE"]
while not os.path.exists(GATE):  # the import lasts until the test opens the gate
    time.sleep(0.01)

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def test_body_sent_while_the_worker_boots_still_gets_its_408(worker_class, tmp_path):
    # The kernel completes a connection while the worker is still importing the app; its
    # body then stalls. It must get the same 408 at header_timeout as any other connection,
    # not hold the worker until the master kills it.
    (tmp_path / "gatedapp.py").write_text(GATED_APP)
    gate = tmp_path / "gate"
    args = server_args(worker_class, "-w", "1", "--header-timeout", str(HEADER_TIMEOUT), "--timeout", "120")
    with Server(*args, "gatedapp:app", cwd=tmp_path, env={"GATE": str(gate)}, expect_listen=False) as srv:
        srv.wait_log(r"Booting worker")
        host, port = re.search(r"Listening at: http://([\d.]+):(\d+)", srv.log).groups()
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            gate.touch()
            status, headers, _ = ResponseReader(s).read()
            assert status == 408 and headers.get("connection") == "close"


# -- 9. the access log of a server-generated error ---------------------------------------------

def test_access_log_b_of_a_server_generated_error_is_0_as_gunicorn_writes(server, access_log):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(request_bytes("GET", "/crash?b-atom"))
        assert ResponseReader(s).read()[0] == 500
    line = wait_for(lambda: next((l for l in access_log.read_text().splitlines() if "b-atom" in l), None),
                    10, message="the access log line")
    assert line.endswith(" s=500 b=0 B=0"), line


def test_an_idle_connection_is_closed_at_keepalive_not_before(worker_class):
    """keepalive 2 s: longer than a greenlet worker's first wait (1 s, its tick), so the idle
    time is counted across several waits; the close comes at keepalive, not at the first tick,
    and cleanly (EOF). The sync worker keeps no connection alive: it says so and closes."""
    with Server(*server_args(worker_class, "-w", "1", "--keep-alive", "2"), "testapp:app") as srv:
        with socket.create_connection(srv.address, timeout=10) as s:
            reader = ResponseReader(s)
            if not KEEPS_ALIVE[worker_class]:
                s.sendall(request_bytes("GET", "/hello"))
                status, headers, _ = reader.read()
                assert status == 200 and headers.get("connection") == "close"
                assert wait_eof(s, timeout=10) == b""
                return
            for _ in range(2):  # the second on the same connection: kept alive
                s.sendall(request_bytes("GET", "/hello"))
                status, headers, _ = reader.read()
                assert status == 200 and "connection" not in headers
            answered = time.monotonic()
            assert wait_eof(s, timeout=10) == b""  # then closed by the server, cleanly
            idle = time.monotonic() - answered
        # (the server's idle time began before ours: the margin is the response's way here)
        assert idle >= 1.6, f"closed after {idle:.2f}s of idleness, keepalive is 2 s"
