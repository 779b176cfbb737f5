"""End to end: a real unicornd with sync workers, real clients (http.client, curl, raw sockets).

What every worker class must do alike (bad requests, app exceptions, unread bodies, lingering
close) is in tests/workers/test_worker_behaviour.py, run against sync too.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from support import Server, parse_response, raw_request, request, wait_for


@pytest.fixture(scope="module")
def server():
    with Server("-w", "2", "-b", "127.0.0.1:0", "testapp:app") as srv:
        yield srv


def get(server, path, method="GET", body=None, headers=None):
    return request(server.address, path, method, body, headers, timeout=10)


def test_hello_with_http_client(server):
    status, headers, body = get(server, "/hello")
    assert status == 200
    assert body == b"Hello, World!\n"
    assert headers["content-length"] == "14"
    assert headers["server"].startswith("unicornd/")
    assert headers["date"].endswith("GMT")
    assert headers["connection"] == "close"


def test_hello_with_curl(server):
    out = subprocess.run(["curl", "-sS", "-i", f"http://127.0.0.1:{server.port}/hello"],
                         capture_output=True, timeout=20, check=True)
    status, headers, body = parse_response(out.stdout)
    assert status == 200 and body == b"Hello, World!\n"


def test_status_head_and_body_leave_in_one_send(server):
    # One recv on loopback gets head and body together: they went out in one send.
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: _readable(s), 5)
        first = s.recv(65536)
    assert first.endswith(b"\r\n\r\nHello, World!\n"), first


def _readable(sock):
    import select
    return select.select([sock], [], [], 0.05)[0]


def test_environ(server):
    status, _, body = get(server, "/some%20path/%C3%A9?x=1&y=%20", headers={"X-Thing": "a", "Content-Type": "text/x"})
    seen = json.loads(body)
    assert status == 200
    assert seen["path_info"] == "/some path/\xc3\xa9"  # percent-decoded bytes as latin-1
    assert seen["raw_uri"] == "/some%20path/%C3%A9?x=1&y=%20"
    assert seen["query"] == "x=1&y=%20"
    assert seen["protocol"] == "HTTP/1.1"
    assert seen["remote_addr"] == "127.0.0.1"
    assert int(seen["remote_port"]) > 0
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == str(server.port)
    assert seen["url_scheme"] == "http"
    assert seen["multiprocess"] is True and seen["multithread"] is False
    assert seen["input_terminated"] is True and seen["has_socket"] is True
    assert ["X-THING", "a"] in seen["headers"]
    assert seen["content_type"] == "text/x"


def test_script_name_from_environment():
    with Server("-b", "127.0.0.1:0", "testapp:app", env={"SCRIPT_NAME": "/prefix"}) as srv:
        seen = json.loads(get(srv, "/prefix/thing")[2])
        assert seen["script_name"] == "/prefix" and seen["path_info"] == "/thing"


def test_repeated_headers_are_joined(server):
    reply = raw_request(server.address, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
    seen = json.loads(parse_response(reply)[2])
    assert ["X-A", "1,2"] in seen["headers"]


def test_post_body_content_length_and_chunked(server):
    status, _, body = get(server, "/echo", "POST", body=b"hello body")
    assert json.loads(body)["body"] == "hello body"
    reply = raw_request(server.address, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert json.loads(parse_response(reply)[2])["body"] == "hello world"


def test_wsgi_input_readline_and_sized_reads(server):
    reply = raw_request(server.address, b"POST /lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"4\r\na\nbc\r\n3\r\n\ndd\r\n0\r\n\r\n")
    assert json.loads(parse_response(reply)[2])["lines"] == ["a\n", "bc\n", "dd"]
    status, _, body = get(server, "/sized", "POST", body=b"abcdefgh")
    assert json.loads(body)["parts"] == ["abc", "def", "gh"]


def test_no_length_http11_is_chunked(server):
    reply = raw_request(server.address, b"GET /no-length HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse_response(reply)
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"part one, part two"
    assert reply.endswith(b"0\r\n\r\n")


def test_no_length_http10_is_close_delimited(server):
    reply = raw_request(server.address, b"GET /no-length HTTP/1.0\r\n\r\n")
    status, headers, body = parse_response(reply)
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert reply.startswith(b"HTTP/1.0 200 OK\r\n")
    assert body == b"part one, part two"


def test_generator_and_write_callable(server):
    assert get(server, "/generator")[2] == b"".join(b"chunk %d\n" % i for i in range(5))
    assert get(server, "/write")[2] == b"written, returned"


def test_head_204_304_have_no_body(server):
    reply = raw_request(server.address, b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n") and b"Hello" not in reply
    assert b"Content-Length: 14" in reply
    for path in ("/204", "/304"):
        reply = raw_request(server.address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reply.endswith(b"\r\n\r\n"), reply
        assert b"Transfer-Encoding" not in reply


def test_content_length_is_honoured_exactly(server):
    reply = raw_request(server.address, b"GET /too-long HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n12345"), reply
    server.wait_log("more than its Content-Length")
    reply = raw_request(server.address, b"GET /too-short HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n12345"), reply
    server.wait_log("sent 5 of its Content-Length of 10")


def test_exception_after_head_closes_connection(server):
    reply = raw_request(server.address, b"GET /crash-after-head HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b"first" in reply
    assert not reply.endswith(b"0\r\n\r\n")  # the chunked body was not completed
    server.wait_log("boom after head")


def test_header_injection_is_500(server):
    for path in ("/header-injection", "/bad-header-name"):
        reply = raw_request(server.address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert parse_response(reply)[0] == 500
        assert b"evil" not in reply


def test_exc_info_replaces_the_response(server):
    status, _, body = get(server, "/exc-info")
    assert status == 500 and body == b"replaced"


def test_iterable_close_is_called(server, tmp_path):
    marker = tmp_path / "closed"
    get(server, "/closing", headers={"X-Marker": str(marker)})
    wait_for(lambda: marker.exists() and marker.read_text() == "closed\n", 5)


def test_iterable_close_is_called_when_client_goes_away(server, tmp_path):
    marker = tmp_path / "closed"
    with socket.create_connection(server.address) as s:
        s.sendall(f"GET /closing-big HTTP/1.1\r\nHost: x\r\nX-Marker: {marker}\r\n\r\n".encode())
        s.recv(1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wait_for(lambda: marker.exists(), 10)
    assert get(server, "/hello")[0] == 200


@pytest.mark.parametrize("no_length", [False, True])
def test_file_wrapper_sends_the_file(server, tmp_path, no_length):
    data = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    headers = {"X-File": str(path)}
    if no_length:
        headers["X-No-Length"] = "1"
    status, _, body = get(server, "/file", headers=headers)
    assert status == 200 and body == data


def test_expect_100_continue_is_sent_when_the_app_reads(server):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert json.loads(parse_response(rest)[2])["body"] == "hello"


def test_expect_100_is_not_sent_when_the_app_does_not_read(server):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b"100 Continue" not in data


def test_unknown_expectation_is_417(server):
    reply = raw_request(server.address, b"GET /hello HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n")
    assert parse_response(reply)[0] == 417


def test_unread_body_is_not_reset(server):
    # The app ignores a 2 MB upload; the response must arrive intact, without a TCP reset.
    body = b"x" * (2 * 1024 * 1024)
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.endswith(b"\r\n\r\nignored"), data[:200]


# What a post_request hook or a logger class's access() records: how many bytes of the response
# still wait in the socket, unsent (Linux's SIOCOUTQNSD), as it runs.
_RECORD_UNSENT = """
import fcntl, struct
from custom_logger import FileLogger
def record_unsent(environ):
    if environ["PATH_INFO"] == "/hello":
        got = fcntl.ioctl(environ["gunicorn.socket"].fileno(), 0x894B, struct.pack("i", 0))
        with open(OUT, "a") as f:
            f.write("%d\\n" % struct.unpack("i", got)[0])
def post_request(worker, req, environ, resp):
    record_unsent(environ)
class Logger(FileLogger):
    def _write(self, level, msg, *args):  # (to the output the test reads, as the default's)
        print(level, msg % args if args else msg, flush=True)
    def access(self, resp, req, environ, request_time):
        record_unsent(environ)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="SIOCOUTQNSD (unsent bytes of a socket) is Linux's")
@pytest.mark.parametrize("hook", ["post_request", "logger_class"])
def test_the_response_has_left_when_post_request_or_a_logger_class_runs(tmp_path, hook):
    # The sync worker sends a response made in one piece with MSG_MORE, so that the close's
    # FIN leaves with it: the kernel holds the piece until the close (or for 200 ms). Not when
    # the user's code runs in between, which may take its time: a post_request hook, a logger
    # class's access(). Those run once the response has gone out, as with gunicorn.
    out = tmp_path / "unsent"
    (tmp_path / "record.py").write_text(f"OUT = {str(out)!r}\n" + _RECORD_UNSENT)
    args = (["-c", str(tmp_path / "record.py")] if hook == "post_request"
            else ["--logger-class", "record.Logger"])
    with Server("-w", "1", "-b", "127.0.0.1:0", "--pythonpath", str(tmp_path), *args, "testapp:app",
                env={"CUSTOM_LOG": str(tmp_path / "unused")}) as srv:
        status, _, body = get(srv, "/hello")
        assert (status, body) == (200, b"Hello, World!\n")
        recorded = wait_for(lambda: out.exists() and out.read_text(), 10, message="the hook's record")
    assert recorded == "0\n"


def test_wsgiref_validator_accepts_everything():
    with Server("-b", "127.0.0.1:0", "testapp:validated()") as srv:
        for path in ("/hello", "/no-length", "/generator", "/echo"):
            status, _, _ = get(srv, path)
            assert status == 200, srv.log
        assert get(srv, "/echo", "POST", body=b"data")[0] == 200
        assert "AssertionError" not in srv.log and "WSGIWarning" not in srv.log


def test_wsgi_errors_reach_the_error_log(server):
    get(server, "/stderr")
    server.wait_log("app wrote to wsgi.errors")


def test_dead_worker_is_replaced(server):
    pid = json.loads(get(server, "/pid")[2])["pid"]
    os.kill(pid, signal.SIGKILL)
    server.wait_log(f"Worker \\(pid:{pid}\\) was sent SIGKILL")
    wait_for(lambda: server.log.count("Booting worker") >= 3, 10)
    assert get(server, "/hello")[0] == 200


def test_term_stops_cleanly_and_int_too():
    for sig in (signal.SIGTERM, signal.SIGINT):
        srv = Server("-w", "2", "-b", "127.0.0.1:0", "testapp:app")
        srv.signal(sig)
        assert srv.wait(30) == 0, srv.log
        with pytest.raises(OSError):
            socket.create_connection(srv.address, timeout=2)
        srv.stop()


def test_curl_is_present():
    assert shutil.which("curl"), "curl must be installed (.ci/run installs it)"


def test_no_sendfile_still_sends_files(tmp_path):
    data = os.urandom(100_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with Server("-b", "127.0.0.1:0", "--no-sendfile", "testapp:app") as srv:
        assert get(srv, "/file", headers={"X-File": str(path)})[2] == data


def test_trusted_forwarder_sets_scheme_and_script_name(server):
    # 127.0.0.1 is in the default forwarded_allow_ips.
    reply = raw_request(server.address, b"GET /mount/x HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                        b"SCRIPT_NAME: /mount\r\n\r\n")
    seen = json.loads(parse_response(reply)[2])
    assert seen["url_scheme"] == "https"
    assert seen["script_name"] == "/mount" and seen["path_info"] == "/x"


def test_untrusted_forwarder_headers_are_ignored():
    with Server("-b", "127.0.0.1:0", "--forwarded-allow-ips", "10.1.2.3", "testapp:app") as srv:
        reply = raw_request(srv.address, b"GET /mount/x HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                            b"SCRIPT_NAME: /mount\r\n\r\n")
        seen = json.loads(parse_response(reply)[2])
        assert seen["url_scheme"] == "http"
        assert seen["script_name"] == "" and seen["path_info"] == "/mount/x"


def test_contradicting_scheme_headers_are_400(server):
    reply = raw_request(server.address, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                        b"X-Forwarded-Ssl: off\r\n\r\n")
    assert parse_response(reply)[0] == 400
