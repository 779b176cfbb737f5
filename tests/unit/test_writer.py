"""The response writer (unicornd.http.writer), sans-IO: the bytes each framing puts on the wire."""

import pytest

from unicornd.http import response as r
from unicornd.http.writer import ResponseWriter


def writer(headers=(), status="200 OK", method="GET", version=(1, 1)):
    return ResponseWriter(r.ResponseHead(status, list(headers), method=method, version=version,
                                         keep_alive=True))


def test_length_body_is_sent_as_is_and_the_excess_cut():
    w = writer([("Content-Length", "5")])
    assert w.short and not w.ended
    assert w.body(b"hel") == b"hel" and w.short
    assert w.body(b"lo!!", last=True) == b"lo" and w.cut and not w.short and w.ended
    assert w.sent == 5 and w.end() == b""


def test_length_body_cut_short_is_short():
    w = writer([("Content-Length", "5")])
    w.body(b"hi", last=True)
    assert w.short and w.sent == 2 and w.end() == b""


def test_zero_length_is_never_short():
    w = writer([("Content-Length", "0")])
    assert not w.short
    assert w.body(b"x", last=True) == b"" and w.cut


def test_chunked_body_ends_with_the_last_chunk_once():
    w = writer()
    assert w.body(b"hello") == b"5\r\nhello\r\n"
    assert w.body(b"", last=True) == r.LAST_CHUNK and w.ended
    assert w.end() == b"" and not w.short and w.sent == 5


def test_chunked_end_after_the_last_piece():
    w = writer()
    w.body(b"ab")
    assert w.end() == r.LAST_CHUNK and w.end() == b""


@pytest.mark.parametrize("kwargs", [dict(method="HEAD"), dict(status="204 No Content"),
                                    dict(status="304 Not Modified")])
def test_no_body_sends_nothing(kwargs):
    w = writer([("Content-Length", "3")] if "method" in kwargs else [], **kwargs)
    assert w.body(b"abc", last=True) == b"" and w.end() == b"" and w.file_size(10) == 0


def test_until_close_sends_as_is():
    w = writer(version=(1, 0))
    assert w.body(b"abc", last=True) == b"abc" and w.end() == b"" and w.head.close


def test_head_bytes_carry_the_body_after_the_head():
    w = writer([("Content-Length", "2")])
    data = w.head_bytes(w.body(b"hi", last=True))
    assert w.head_sent and data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nhi")


def test_file_frames():
    w = writer([("Content-Length", "10")])
    assert w.file_size(100) == 10 and w.file_frame(10) == (b"", b"") and not w.short
    c = writer()
    assert c.file_frame(16) == (b"10\r\n", b"\r\n") and c.sent == 16
    s = writer([("Content-Length", "10")])
    s.file_frame(4)
    assert s.short
