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


# --- response_head(): the shared heads must be the heads the careful path makes ---------------

def _fields(h):
    return (h.status, h.status_code, list(h.headers), h.content_length, h.framing, h.close,
            h.upgrade, h.version)


def _without_date(data):
    head, _, rest = data.partition(b"\r\nDate: ")
    return head, rest.partition(b"\r\n")[2]


def test_response_head_is_shared_for_equal_arguments_and_equals_the_careful_one():
    headers = [("Content-Type", "text/plain"), ("Content-Length", "14")]
    first = r.response_head("200 OK", headers, "GET", (1, 1), True)
    again = r.response_head("200 OK", list(headers), "GET", (1, 1), True)
    assert again is first  # looked up by value: the second response costs no checks
    careful = head(headers=headers)
    assert _fields(first) == _fields(careful)
    assert _without_date(first.serialize()) == _without_date(careful.serialize())


def test_closing_copies_a_shared_head_and_leaves_it_alone():
    shared = r.response_head("200 OK", [("Content-Length", "0")], "GET", (1, 1), True)
    closed = shared.closing()
    assert closed is not shared and closed.close and not shared.close
    assert b"Connection: close\r\n" in closed.serialize()
    assert b"Connection: close" not in shared.serialize()
    assert r.response_head("200 OK", [("Content-Length", "0")], "GET", (1, 1), True) is shared


def test_response_head_refuses_what_the_careful_one_refuses_and_keeps_nothing():
    before = len(r._heads)
    for bad in ([("X-A", "a\r\nInjected: 1")], [["X-A", "b"], ("X B", "c")], [("X-A", 3)]):
        with pytest.raises(r.InvalidResponse):
            r.response_head("200 OK", bad, "GET", (1, 1), True)
    with pytest.raises(r.InvalidResponse):
        r.response_head("200 OK\r\nX: y", [], "GET", (1, 1), True)
    assert len(r._heads) <= before


def test_response_head_with_list_pairs_is_checked_every_time():
    # a pair given as a list cannot be a key: the careful path runs, and the head is right
    h = r.response_head("200 OK", [["Content-Length", "2"]], "GET", (1, 1), True)
    assert h.content_length == 2 and h.framing == r.LENGTH


from hypothesis import given, settings, strategies as st  # noqa: E402

_names = st.sampled_from(["Content-Type", "Content-Length", "content-length", "Connection",
                          "Upgrade", "Server", "Date", "Transfer-Encoding", "X-A", "X B", "Set-Cookie"])
_values = st.sampled_from(["0", "14", " 14 ", "abc", "close", "keep-alive", "upgrade", "Upgrade, close",
                           "text/plain", "", "a\r\nb", "\x80\xff", "gzip", "x" * 40])


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from(["200 OK", "101 Switching Protocols", "204 No Content", "304 x",
                               "200", "404 Not Found", "600 Bad", "20 OK"]),
       headers=st.lists(st.tuples(_names, _values), max_size=5),
       method=st.sampled_from(["GET", "HEAD", "POST"]),
       version=st.sampled_from([(1, 0), (1, 1), (1, 2)]),
       keep_alive=st.booleans())
def test_response_head_agrees_with_the_careful_path(status, headers, method, version, keep_alive):
    def outcome(make):
        try:
            h = make()
        except r.InvalidResponse as exc:
            return "refused", str(exc)
        return _fields(h), _without_date(h.serialize(b"body")), _without_date(h.closing().serialize())
    careful = outcome(lambda: r.ResponseHead(status, list(headers), method=method, version=version,
                                             keep_alive=keep_alive))
    for _ in range(2):  # made, then (if it was kept) found
        assert outcome(lambda: r.response_head(status, list(headers), method, version,
                                               keep_alive)) == careful
