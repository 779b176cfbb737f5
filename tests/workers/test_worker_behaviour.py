"""The behaviour every worker class must share, end to end against a real unicornd.

Each test runs once per class in conftest.WORKER_CLASSES, so a class cannot quietly differ.
"""

import json
import signal
import socket
import threading

import pytest
from workers_support import KEEPS_ALIVE, MULTITHREAD, ResponseReader, request_bytes, server_args, wait_eof
from support import Server, parse_response, raw_request, request, wait_for


@pytest.fixture(scope="module")
def server(worker_class):
    with Server(*server_args(worker_class, "-w", "1"), "testapp:app") as srv:
        yield srv


def get(server, path, method="GET", body=None, headers=None):
    return request(server.address, path, method, body, headers, timeout=10)


def worker_pid(server):
    status, _, body = get(server, "/pid")
    assert status == 200
    return json.loads(body)["pid"]


def test_hello(server, worker_class):
    status, headers, body = get(server, "/hello")
    assert (status, body) == (200, b"Hello, World!\n")
    assert headers["content-length"] == "14"
    assert headers["server"].startswith("unicornd/")
    if KEEPS_ALIVE[worker_class]:
        assert "connection" not in headers  # HTTP/1.1: persistent unless it says close
    else:
        assert headers["connection"] == "close"


def test_environ_names_the_worker_model(server, worker_class):
    status, _, body = get(server, "/echo-environ?x=1", headers={"X-Thing": "a"})
    seen = json.loads(body)
    assert status == 200
    assert seen["multithread"] is MULTITHREAD[worker_class]
    assert seen["multiprocess"] is False  # -w 1
    assert seen["query"] == "x=1" and ["X-THING", "a"] in seen["headers"]
    assert seen["remote_addr"] == "127.0.0.1"


def test_post_body(server):
    payload = b"name=unicorn&" + b"x" * 100_000
    status, _, body = get(server, "/echo", method="POST", body=payload,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    seen = json.loads(body)
    assert status == 200
    assert seen["method"] == "POST"
    assert seen["body"].encode("latin-1") == payload
    assert seen["content_length"] == str(len(payload))


def test_chunked_request_body(server):
    data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
    status, _, body = parse_response(raw_request(server.address, data))
    seen = json.loads(body)
    assert status == 200
    assert seen["body"] == "hello world!"
    assert seen["content_length"] is None


def test_streaming_response_is_chunked(server):
    status, headers, body = get(server, "/generator")
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))


def test_head_has_headers_but_no_body(server):
    raw = raw_request(server.address, b"HEAD /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep and rest == b"", raw
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 14" in head


def test_bad_request_is_400_and_the_worker_lives_on(server, worker_class):
    before = worker_pid(server)
    raw = raw_request(server.address, b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
    status, headers, _ = parse_response(raw)
    assert status == 400
    assert headers["connection"] == "close"
    raw = raw_request(server.address, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert parse_response(raw)[0] == 400
    assert worker_pid(server) == before
    if KEEPS_ALIVE[worker_class]:
        # A good request, then a bad one on the same connection: answered, then 400 and closed.
        with socket.create_connection(server.address, timeout=10) as s:
            s.sendall(request_bytes("GET", "/hello"))
            reader = ResponseReader(s)
            assert reader.read()[0] == 200
            s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            assert reader.read()[0] == 400
            assert wait_eof(s) == b""


def test_app_exception_is_500_without_the_traceback(server):
    before = worker_pid(server)
    status, headers, body = get(server, "/crash")
    assert status == 500
    assert b"boom" not in body
    server.wait_log(r"boom: this must not reach the client")
    assert worker_pid(server) == before


def test_large_response_with_unread_body_arrives_whole(server):
    # Unread input at close() makes the kernel send a reset, which throws away response bytes
    # not yet delivered: an 8 MB answer to a request whose body was not read arrives whole.
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /big-ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                  + b"x" * 100_000)
        data = b""
        try:
            while chunk := s.recv(1 << 20):
                data += chunk
        except ConnectionResetError:
            raise AssertionError(f"reset after {len(data)} bytes")
    status, _, body = parse_response(data)
    assert status == 200 and len(body) == 8 * 1024 * 1024


def test_lingering_close_holds_no_worker_or_thread(worker_class):
    # One worker (one thread): client A's upload is ignored by the app, the response is sent
    # and the connection half-closed; while unicornd still drains A (A can keep sending
    # without being reset), client B is served: nothing waits for A to finish.
    with Server(*server_args(worker_class, "-w", "1", "--threads", "1"), "testapp:app") as srv:
        a = socket.create_connection(srv.address, timeout=10)
        a.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        reply = b""
        while chunk := a.recv(65536):  # the server half-closes after answering: EOF here
            reply += chunk
        assert reply.endswith(b"\r\n\r\nignored")
        assert get(srv, "/hello")[2] == b"Hello, World!\n"  # B, while A is still lingering
        # A may go on sending: the server still reads and drops it. Had it closed A, the
        # first of these would be answered with a reset (which arrives by the time B's
        # next round trip is done), and the next send would fail.
        for _ in range(3):
            try:
                a.sendall(b"y" * 10000)
            except (ConnectionResetError, BrokenPipeError):
                raise AssertionError("the server reset the connection instead of draining it")
            assert get(srv, "/hello")[2] == b"Hello, World!\n"
        a.close()


def test_graceful_term_lets_the_in_flight_request_finish(worker_class, tmp_path):
    calls = tmp_path / "calls"
    calls.touch()
    with Server(*server_args(worker_class, "-w", "1", "--graceful-timeout", "20"), "testapp:app",
                env={"TESTAPP_CALLS": str(calls)}) as srv:
        result = {}

        def slow():
            try:
                result["response"] = get(srv, "/sleep?ms=1500")
            except Exception as exc:  # reported by the assertions below
                result["error"] = exc

        client = threading.Thread(target=slow)
        client.start()
        wait_for(lambda: "GET /sleep?ms=1500" in calls.read_text(), 10, message="the slow request to start")
        srv.signal(signal.SIGTERM)
        client.join(20)
        assert "error" not in result, result
        status, _, body = result["response"]
        assert status == 200
        assert json.loads(body)["end"] - json.loads(body)["start"] >= 1.5
        assert srv.wait(20) == 0
        assert "Worker exiting" in srv.log or "Shutting down" in srv.log
