"""The parser's side of a body read past it (issue 16): ``direct_body_size()`` says how many
bytes of a Content-Length body the connection may receive itself, ``body_read_directly(n)``
counts them. The parser stays sans-IO: it only counts, and the request after the body is still
its to parse."""

import pytest
from hypothesis import given, strategies as st

from unicornd.http.parser import NEED_DATA, EndOfMessage, ParserOptions, Request, RequestParser

HEAD = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def parser_after_head(data):
    p = RequestParser(ParserOptions())
    p.receive_data(data)
    assert type(p.next_event()) is Request
    return p


def test_nothing_buffered_the_whole_body_may_be_read_directly():
    p = parser_after_head(HEAD)
    assert p.direct_body_size() == 10
    assert p.body_read_directly(4) is False
    assert p.direct_body_size() == 6 and p.body_remaining == 6
    assert p.body_read_directly(6) is True  # the body is complete: as after its EndOfMessage
    assert p.direct_body_size() == 0 and p.body_remaining == 0
    p.start_next_request()
    p.receive_data(NEXT)
    assert p.next_event().target == "/next"


def test_bytes_that_came_with_the_head_come_first():
    p = parser_after_head(HEAD + b"abc")
    assert p.direct_body_size() == 0  # the buffered bytes are the parser's to hand out first
    assert p.next_event() == b"abc"
    assert p.direct_body_size() == 7
    p.body_read_directly(7)
    p.start_next_request()


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",  # its framing is ours
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",                                   # no body
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
], ids=["chunked", "no-body", "empty-body"])
def test_no_direct_read_without_a_content_length_body_to_come(data):
    assert parser_after_head(data).direct_body_size() == 0


def test_no_direct_read_after_eof():
    p = parser_after_head(HEAD)
    p.receive_data(b"")
    assert p.direct_body_size() == 0


@pytest.mark.parametrize("n", [0, -1, 11])
def test_counting_more_than_may_be_read_directly_is_a_bug_and_says_so(n):
    p = parser_after_head(HEAD)
    with pytest.raises(RuntimeError):
        p.body_read_directly(n)
    assert p.direct_body_size() == 10  # nothing counted


def test_counting_past_buffered_bytes_is_a_bug_and_says_so():
    p = parser_after_head(HEAD + b"abc")
    with pytest.raises(RuntimeError):
        p.body_read_directly(3)


@given(st.integers(1, 300), st.lists(st.tuples(st.booleans(), st.integers(1, 80)), max_size=40))
def test_direct_reads_mixed_with_fed_bytes_give_the_same_body_and_next_request(length, steps):
    """Whatever mix of bytes fed to the parser and bytes read past it, the body comes out whole
    and in order, and the request behind it is parsed."""
    body = bytes(i % 251 for i in range(length))
    wire = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length + body + NEXT
    p = RequestParser(ParserOptions())
    pos = got_head = 0
    out = b""
    done = False
    for direct, n in steps + [(False, len(wire))] * 3:
        if done:
            break
        readable = p.direct_body_size() if got_head else 0
        if direct and readable:
            k = min(n, readable)
            out += wire[pos:pos + k]
            pos += k
            done = p.body_read_directly(k)
            continue
        p.receive_data(wire[pos:pos + n])
        pos += len(wire[pos:pos + n])
        while not done:
            ev = p.next_event()
            if ev is NEED_DATA:
                break
            if type(ev) is Request:
                got_head = True
            elif type(ev) is EndOfMessage:
                done = True
            else:
                out += ev
    assert done and out == body
    p.start_next_request()
    p.receive_data(wire[pos:])
    assert p.next_event().target == "/next"
