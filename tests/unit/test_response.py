"""Response heads and framing decisions (unicornd.http.response), without sockets."""

import pytest

from unicornd.http import response as r


def head(status="200 OK", headers=(), method="GET", version=(1, 1), keep_alive=True):
    return r.ResponseHead(status, list(headers), method=method, version=version, keep_alive=keep_alive)


@pytest.mark.parametrize("kwargs, framing", [
    (dict(headers=[("Content-Length", "3")]), r.LENGTH),
    (dict(), r.CHUNKED),
    (dict(version=(1, 0)), r.UNTIL_CLOSE),
    (dict(method="HEAD"), r.NO_BODY),
    (dict(status="204 No Content"), r.NO_BODY),
    (dict(status="304 Not Modified"), r.NO_BODY),
    (dict(status="101 Switching Protocols"), r.NO_BODY),
])
def test_framing(kwargs, framing):
    assert head(**kwargs).framing == framing


def test_http10_without_length_closes():
    assert head(version=(1, 0)).close


def test_serialize_has_server_date_and_connection():
    data = head(headers=[("Content-Length", "3"), ("X-A", "b")], keep_alive=False).serialize()
    assert data.startswith(b"HTTP/1.1 200 OK\r\nServer: unicornd/")
    assert b"\r\nDate: " in data and b"\r\nX-A: b\r\n" in data
    assert b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\n")


def test_chunked_head_says_so():
    assert b"Transfer-Encoding: chunked\r\n" in head().serialize()


def test_app_hop_by_hop_headers_are_dropped():
    data = head(headers=[("Connection", "keep-alive"), ("Transfer-Encoding", "gzip"), ("Server", "x"),
                         ("Date", "y"), ("Content-Length", "0")]).serialize()
    assert b"gzip" not in data and b"Server: x" not in data and b"Date: y" not in data


def test_app_connection_close_is_honoured():
    assert head(headers=[("Connection", "close"), ("Content-Length", "0")]).close


@pytest.mark.parametrize("headers", [
    [("X-A", "a\r\nInjected: 1")],
    [("X-A", "a\nb")],
    [("X A", "b")],
    [("X-A:", "b")],
    [("X-A", 3)],
    [(b"X-A", "b")],
    [("Content-Length", "abc")],
    [("Content-Length", "1"), ("Content-Length", "2")],
])
def test_bad_headers_are_refused(headers):
    with pytest.raises(r.InvalidResponse):
        head(headers=headers)


@pytest.mark.parametrize("status", ["200OK", "20 OK", "OK", "600 Bad", b"200 OK", "200 OK\r\nX: y"])
def test_bad_status_is_refused(status):
    with pytest.raises(r.InvalidResponse):
        head(status=status)


def test_encode_chunk():
    assert r.encode_chunk(b"hello world") == b"b\r\nhello world\r\n"


def test_error_response_closes():
    data = r.error_response(431, "Request Header Fields Too Large")
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close\r\n" in data
    body = data.split(b"\r\n\r\n", 1)[1]
    assert b"Content-Length: %d\r\n" % len(body) in data


def test_status_without_reason_keeps_its_space():
    assert head(status="200", headers=[("Content-Length", "0")]).serialize().startswith(b"HTTP/1.1 200 \r\n")
