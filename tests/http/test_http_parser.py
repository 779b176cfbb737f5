"""Table-driven tests of the request parser: framing, keep-alive, expect, limits, pipelining."""
import pytest

from http_harness import feed
from unicornd.http import errors
from unicornd.http.parser import (CLOSED, NEED_DATA, EndOfMessage, ParserOptions, Request,
                                  RequestParser)


def one(data, **settings):
    """Parse ``data`` (one request, then EOF); return the Message or raise the HTTPError."""
    out = feed([data], ParserOptions(**settings))
    if out.error is not None:
        raise out.error
    assert len(out.messages) >= 1
    return out.messages[0]


def status_of(data, **settings):
    out = feed([data], ParserOptions(**settings))
    assert out.error is not None, f"accepted: {[m.as_dict() for m in out.messages]}"
    return out.error.status


def head(*lines, version="1.1", method="GET", target="/"):
    text = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{line}\r\n" for line in lines)
    return (text + "\r\n").encode("latin-1")


# --- keep-alive ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version, lines, keep_alive", [
    ("1.1", [], True),
    ("1.1", ["Connection: close"], False),
    ("1.1", ["Connection: Close"], False),
    ("1.1", ["Connection: keep-alive"], True),
    ("1.1", ["Connection: keep-alive, close"], False),
    ("1.1", ["Connection: foo", "Connection: close"], False),
    ("1.1", ["Connection: TE, Upgrade"], True),
    ("1.0", [], False),
    ("1.0", ["Connection: keep-alive"], True),
    ("1.0", ["Connection: Keep-Alive"], True),
    ("1.0", ["Connection: foo, keep-alive"], True),
    ("1.0", ["Connection: keep-alive, close"], False),
    ("1.0", ["Connection: close"], False),
])
def test_keep_alive(version, lines, keep_alive):
    assert one(head(*lines, version=version)).request.keep_alive is keep_alive


def test_connect_never_keeps_the_connection():
    req = one(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").request
    assert (req.method, req.target, req.keep_alive) == ("CONNECT", "example.com:443", False)


def test_passthrough_transfer_coding_closes_the_connection():
    m = one(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert m.request.chunked and not m.request.keep_alive and bytes(m.body) == b"abc"


# --- Expect -------------------------------------------------------------------------------------
@pytest.mark.parametrize("version, lines, expect", [
    ("1.1", ["Expect: 100-continue"], True),
    ("1.1", ["Expect: 100-Continue"], True),
    ("1.1", [], False),
    ("1.0", ["Expect: 100-continue"], False),     # RFC 9110 §10.1.1: HTTP/1.0 must ignore it
])
def test_expect_continue(version, lines, expect):
    assert one(head(*lines, version=version)).request.expect_continue is expect


@pytest.mark.parametrize("version, value", [
    ("1.1", "something-else"), ("1.1", ""), ("1.0", "foo"), ("1.1", "100-continue, foo"),
])
def test_other_expectations_fail(version, value):
    with pytest.raises(errors.ExpectationFailed) as info:
        one(head(f"Expect: {value}", version=version))
    assert info.value.status == 417


# --- Upgrade ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lines, upgrade", [
    (["Connection: Upgrade", "Upgrade: websocket"], True),
    (["Connection: keep-alive, upgrade", "Upgrade: h2c"], True),
    (["Upgrade: websocket"], False),
    (["Connection: upgrade"], False),
    ([], False),
])
def test_upgrade(lines, upgrade):
    assert one(head(*lines)).request.upgrade is upgrade


# --- pipelining -----------------------------------------------------------------------------------
def test_two_requests_in_one_feed_come_out_in_order():
    first = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"POST /second?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    p = RequestParser(ParserOptions())
    p.receive_data(first + second)
    req = p.next_event()
    assert isinstance(req, Request) and req.path == "/first"
    assert bytes(p.buffered) == second
    assert isinstance(p.next_event(), EndOfMessage)
    assert bytes(p.buffered) == second
    with pytest.raises(RuntimeError):
        p.next_event()
    p.start_next_request()
    req = p.next_event()
    assert (req.method, req.path, req.query, req.content_length) == ("POST", "/second", "x=1", 3)
    assert p.next_event() == b"abc"
    assert isinstance(p.next_event(), EndOfMessage)
    assert len(p.buffered) == 0
    p.start_next_request()
    assert p.next_event() is NEED_DATA
    p.receive_data(b"")
    assert p.next_event() is CLOSED
    assert p.next_event() is CLOSED


def test_body_bytes_and_next_request_stay_buffered_until_consumed():
    data = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /n HTTP/1.1\r\n\r\n"
    p = RequestParser(ParserOptions())
    p.receive_data(data)
    p.next_event()
    assert bytes(p.buffered) == b"helloGET /n HTTP/1.1\r\n\r\n"
    assert p.next_event() == b"hello"
    assert bytes(p.buffered) == b"GET /n HTTP/1.1\r\n\r\n"


def test_start_next_request_only_after_end_of_message():
    p = RequestParser(ParserOptions())
    p.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
    p.next_event()
    with pytest.raises(RuntimeError):
        p.start_next_request()


def test_pipelined_after_chunked_with_extra_crlf():
    data = (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
            b"\r\nGET /b HTTP/1.1\r\n\r\n")
    out = feed([data])
    assert [m.request.path for m in out.messages] == ["/a", "/b"]
    assert bytes(out.messages[0].body) == b"ab"


def test_no_body_request_ends_at_once():
    p = RequestParser(ParserOptions())
    p.receive_data(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(p.next_event(), Request)
    ev = p.next_event()
    assert isinstance(ev, EndOfMessage) and ev.trailers == []


# --- EOF ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, result", [
    (b"", CLOSED),
    (b"\r\n", CLOSED),
])
def test_clean_eof(data, result):
    p = RequestParser(ParserOptions())
    if data:
        p.receive_data(data)
    p.receive_data(b"")
    assert p.next_event() is result


@pytest.mark.parametrize("data", [
    b"\r", b"G", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5",
])
def test_eof_mid_request_is_no_more_data(data):
    out = feed([data])
    assert isinstance(out.error, errors.NoMoreData) and out.error.status is None


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
])
def test_eof_in_chunked_terminators(data):
    out = feed([data])
    assert isinstance(out.error, errors.ChunkMissingTerminator) and out.error.status == 400


def test_error_is_sticky():
    p = RequestParser(ParserOptions())
    p.receive_data(b"GET / HTTP/9.9\r\n\r\n")
    with pytest.raises(errors.UnsupportedHTTPVersion) as first:
        p.next_event()
    with pytest.raises(errors.UnsupportedHTTPVersion) as again:
        p.next_event()
    assert first.value is again.value


# --- request line -------------------------------------------------------------------------------
@pytest.mark.parametrize("line, want", [
    ("GET /a/b?c=d#e HTTP/1.1", ("GET", "/a/b?c=d#e", "/a/b", "c=d", "e", (1, 1))),
    ("GET /a#b?c HTTP/1.0", ("GET", "/a#b?c", "/a", "", "b?c", (1, 0))),
    ("GET //x//y HTTP/1.1", ("GET", "//x//y", "//x//y", "", "", (1, 1))),
    ("GET /%41?%42 HTTP/1.1", ("GET", "/%41?%42", "/%41", "%42", "", (1, 1))),
    ("GET http://h.example/p?q HTTP/1.1", ("GET", "http://h.example/p?q", "/p", "q", "", (1, 1))),
    ("GET http://h.example HTTP/1.1", ("GET", "http://h.example", "", "", "", (1, 1))),
    ("OPTIONS * HTTP/1.1", ("OPTIONS", "*", "*", "", "", (1, 1))),
    ("CONNECT h.example:8443 HTTP/1.1", ("CONNECT", "h.example:8443", "h.example:8443", "", "",
                                         (1, 1))),
    ("M-SEARCH / HTTP/1.1", ("M-SEARCH", "/", "/", "", "", (1, 1))),
])
def test_request_line_accepted(line, want):
    r = one(f"{line}\r\n\r\n".encode()).request
    assert (r.method, r.target, r.path, r.query, r.fragment, r.version) == want


@pytest.mark.parametrize("line, error", [
    ("GET / HTTP/2.0", errors.UnsupportedHTTPVersion),     # RFC 9110 §15.6.6
    ("GET / HTTP/3.0", errors.UnsupportedHTTPVersion),
    ("GET / HTTP/0.9", errors.UnsupportedHTTPVersion),
    ("GET / HTTP/1.2", errors.InvalidHTTPVersion),
    ("GET / HTTP/1.10", errors.InvalidHTTPVersion),
    ("GET / http/1.1", errors.InvalidHTTPVersion),
    ("GET / HTTP/1.1 ", errors.InvalidRequestLine),
    ("GET  / HTTP/1.1", errors.InvalidRequestLine),
    ("GET /\tx HTTP/1.1", errors.InvalidRequestLine),
    ("GET / x HTTP/1.1", errors.InvalidRequestLine),
    ("GET", errors.InvalidRequestLine),
    ("", errors.InvalidRequestLine),
    ("get / HTTP/1.1", errors.InvalidRequestMethod),
    ("GE / HTTP/1.1", errors.InvalidRequestMethod),
    ("ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1", errors.InvalidRequestMethod),
    ("G#T / HTTP/1.1", errors.InvalidRequestMethod),
    ("G(T / HTTP/1.1", errors.InvalidRequestMethod),
    ("CONNECT / HTTP/1.1", errors.InvalidRequestLine),
    ("CONNECT http://a/ HTTP/1.1", errors.InvalidRequestLine),
    ("CONNECT example.com HTTP/1.1", errors.InvalidRequestLine),
    ("GET example.com:80 HTTP/1.1", errors.InvalidRequestLine),
    ("POST * HTTP/1.1", errors.InvalidRequestLine),
    ("GET http:/x HTTP/1.1", errors.InvalidRequestLine),
    ("GET http://a b/ HTTP/1.1", errors.InvalidRequestLine),
    ("GET http://[::1/ HTTP/1.1", errors.InvalidRequestLine),
    ("GET /caf\xe9 HTTP/1.1", errors.InvalidRequestLine),
    ("GET /\x7f HTTP/1.1", errors.InvalidRequestLine),
])
def test_request_line_refused(line, error):
    out = feed([f"{line}\r\n\r\n".encode("latin-1")])
    assert type(out.error) is error, out.error


def test_version_505_status():
    assert status_of(b"GET / HTTP/2.0\r\n\r\n") == 505


def test_unconventional_version_permitted():
    r = one(b"GET / HTTP/1.2\r\n\r\n", permit_unconventional_http_version=True).request
    assert r.version == (1, 2) and r.keep_alive
    assert status_of(b"GET / HTTP/2.0\r\n\r\n", permit_unconventional_http_version=True) == 505


@pytest.mark.parametrize("line, settings, method", [
    ("get / HTTP/1.1", {"permit_unconventional_http_method": True}, "get"),
    ("get / HTTP/1.1", {"permit_unconventional_http_method": True, "casefold_http_method": True},
     "GET"),
    ("GE / HTTP/1.1", {"permit_unconventional_http_method": True}, "GE"),
    ("X#Y / HTTP/1.1", {"permit_unconventional_http_method": True}, "X#Y"),
])
def test_unconventional_methods_permitted(line, settings, method):
    assert one(f"{line}\r\n\r\n".encode(), **settings).request.method == method


def test_casefolded_connect_still_needs_authority_form():
    assert status_of(b"connect / HTTP/1.1\r\n\r\n", permit_unconventional_http_method=True,
                     casefold_http_method=True) == 400


def test_one_leading_crlf_is_ignored_not_two():
    assert one(b"\r\nGET / HTTP/1.1\r\n\r\n").request.path == "/"
    assert status_of(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == 400
    assert status_of(b"\nGET / HTTP/1.1\r\n\r\n") == 400


# --- limits -------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, line_len, status", [
    (4094, 4094, None), (4094, 4095, 414), (100, 100, None), (100, 101, 414),
    (9000, 8190, None), (9000, 8191, 414),          # capped at 8190 as gunicorn does
    (-1, 8190, None), (-1, 8191, 414),
    (0, 100_000, None),                              # 0: unlimited (1 MiB, gunicorn's C parser)
])
def test_limit_request_line(setting, line_len, status):
    target = "/" + "a" * (line_len - len("GET  HTTP/1.1") - 1)
    data = f"GET {target} HTTP/1.1\r\n\r\n".encode()
    assert data.index(b"\r\n") == line_len
    out = feed([data], ParserOptions(limit_request_line=setting))
    assert (out.error.status if out.error else None) == status
    # and the same answer when the line arrives in pieces, before its end is seen
    out = feed([data[i:i + 1000] for i in range(0, len(data), 1000)],
               ParserOptions(limit_request_line=setting))
    assert (out.error.status if out.error else None) == status


@pytest.mark.parametrize("setting, count, status", [
    (100, 100, None), (100, 101, 431), (2, 2, None), (2, 3, 431),
    (0, 300, None), (40000, 300, None),
])
def test_limit_request_fields(setting, count, status):
    data = head(*[f"X-H{i}: {i}" for i in range(count)])
    out = feed([data], ParserOptions(limit_request_fields=setting))
    assert (out.error.status if out.error else None) == status
    if status is None:
        assert len(out.messages[0].request.headers) == count


@pytest.mark.parametrize("setting, value_len, status", [
    (8190, 8190 - len("X: ") - 2, None), (8190, 8190 - len("X: ") - 1, 431),
    (20, 15, None), (20, 16, 431),
    (0, 8185, None), (0, 8186, 431),                 # 0 means the default, 8190
])
def test_limit_request_field_size(setting, value_len, status):
    data = head("Host: a", "X: " + "v" * value_len)
    out = feed([data], ParserOptions(limit_request_field_size=setting))
    assert (out.error.status if out.error else None) == status


def test_header_section_bound():
    opts = ParserOptions(limit_request_fields=2, limit_request_field_size=20)
    # the section may hold 2 * (20 + 2) + 4 = 48 bytes; more is refused before its end arrives
    data = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 20
    out = feed([data], opts)
    assert out.error is not None and out.error.status == 431


# --- header fields ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, pair", [
    ("X-A: b", ("X-A", "b")),
    ("x-a:b", ("X-A", "b")),
    ("X-A: \t b c \t ", ("X-A", "b c")),
    ("X-A:", ("X-A", "")),
    ("X-A:   ", ("X-A", "")),
    ("X-A: caf\xe9", ("X-A", "caf\xe9")),
    ("!#$%&'*+-.^`|~0aZ: v", ("!#$%&'*+-.^`|~0AZ", "v")),
    ("X-A: a:b:c", ("X-A", "a:b:c")),
])
def test_field_lines(line, pair):
    assert one(head(line)).request.headers == [pair]


@pytest.mark.parametrize("line, error", [
    ("X-A : b", errors.InvalidHeaderName),
    ("X A: b", errors.InvalidHeaderName),
    ("X\xe9: b", errors.InvalidHeaderName),
    ("(X): b", errors.InvalidHeaderName),
    (": b", errors.InvalidHeader),
    ("no colon", errors.InvalidHeader),
    ("X: a\x00b", errors.InvalidHeader),
    ("X: a\x1bb", errors.InvalidHeader),
    ("X: a\rb", errors.InvalidHeader),
    ("X: a\x7f", errors.InvalidHeader),
    (" X: a", errors.InvalidHeader),
])
def test_bad_field_lines(line, error):
    out = feed([head("Host: a", line) if not line.startswith(" ") else head(line)])
    assert type(out.error) is error, out.error


def test_obs_fold_refused_by_default_and_joined_when_permitted():
    data = head("X: one", " two", "\tthree  ", "Y: z")
    assert type(feed([data]).error) is errors.ObsoleteFolding
    r = one(data, permit_obsolete_folding=True).request
    assert r.headers == [("X", "one two three"), ("Y", "z")]


def test_strip_header_spaces():
    r = one(head("Content-Length \t: 0"), strip_header_spaces=True).request
    assert r.headers == [("CONTENT-LENGTH", "0")] and r.content_length == 0


@pytest.mark.parametrize("header_map, status, headers", [
    ("drop", None, [("HOST", "a")]),
    ("refuse", 400, None),
    ("dangerous", None, [("HOST", "a"), ("X_FORWARDED_FOR", "1.2.3.4")]),
])
def test_header_map(header_map, status, headers):
    out = feed([head("Host: a", "X_Forwarded_For: 1.2.3.4")], ParserOptions(header_map=header_map))
    assert (out.error.status if out.error else None) == status
    if headers is not None:
        assert out.messages[0].request.headers == headers


def test_forwarder_headers_kept_only_from_trusted_peers():
    opts = ParserOptions(header_map="drop", forwarder_headers="SCRIPT_NAME,PATH_INFO")
    data = head("Script_Name: /app", "X_Other: 1")
    trusted = feed([data], opts, forwarder_trusted=True).messages[0].request.headers
    untrusted = feed([data], opts).messages[0].request.headers
    assert trusted == [("SCRIPT_NAME", "/app")] and untrusted == []


@pytest.mark.parametrize("lines", [
    ["Host: a", "Host: a"],
    ["Host: a b"],
    ["Host: a/b"],
    ["Host: [::1"],
    ["Host: a:8x"],
    ["Content-Type: a", "Content-Type: a"],
    ["Content-Length: 1", "Content-Length: 1"],
    ["Content-Length: 1,1"],
    ["Content-Length: 0x1"],
    ["Content-Length: \xb2"],
    ["Content-Length: 1" + "0" * 5000],
])
def test_ambiguous_or_invalid_fields(lines):
    assert status_of(head(*lines)) == 400


@pytest.mark.parametrize("value", ["", "a", "a:80", "[::1]:80", "[v1.x]", "a%20b", "xn--p.example",
                                   "a:"])
def test_valid_hosts(value):
    assert one(head(f"Host: {value}")).request.headers == [("HOST", value)]


# --- framing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lines, version, status", [
    (["Transfer-Encoding: chunked"], "1.1", None),
    (["Transfer-Encoding: Chunked"], "1.1", None),
    (["Transfer-Encoding: identity, chunked"], "1.1", None),
    (["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], "1.1", None),
    (["Transfer-Encoding: chunked"], "1.0", 400),                 # RFC 9112 §6.1
    (["Transfer-Encoding: chunked", "Content-Length: 5"], "1.1", 400),     # RFC 9112 §6.3
    (["Transfer-Encoding: gzip"], "1.1", 400),                    # RFC 9112 §6.3
    (["Transfer-Encoding: chunked, gzip"], "1.1", 400),
    (["Transfer-Encoding: chunked, chunked"], "1.1", 400),
    (["Transfer-Encoding: chunked;x=1"], "1.1", 400),
    (["Transfer-Encoding:"], "1.1", 400),
    (["Transfer-Encoding: br, chunked"], "1.1", 501),             # RFC 9112 §6.1
    (["Transfer-Encoding: foo"], "1.1", 501),
])
def test_transfer_encoding(lines, version, status):
    data = head(*lines, version=version, method="POST") + b"0\r\n\r\n"
    out = feed([data])
    assert (out.error.status if out.error else None) == status
    if status is None:
        assert out.messages[0].request.chunked


def test_content_length_body():
    m = one(b"POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n1234567")
    assert m.request.content_length == 7 and bytes(m.body) == b"1234567"


def test_huge_content_length_is_a_number():
    p = RequestParser(ParserOptions())
    p.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nab")
    assert p.next_event().content_length == 99999999999999999999999
    assert p.next_event() == b"ab"
    assert p.next_event() is NEED_DATA


# --- chunked ------------------------------------------------------------------------------------
def chunked(body_wire, **settings):
    return one(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body_wire, **settings)


@pytest.mark.parametrize("wire, body, trailers", [
    (b"0\r\n\r\n", b"", []),
    (b"3\r\nabc\r\n0\r\n\r\n", b"abc", []),
    (b"3;a\r\nabc\r\n0;b=c\r\n\r\n", b"abc", []),
    (b"3 ; a = b ; c=\"d;e\\\"\"\r\nabc\r\n0\r\n\r\n", b"abc", []),
    (b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n", b"01234567890123456789", []),
    (b"3\r\nabc\r\n0\r\nX-T: 1\r\nx-u:  2 \r\n\r\n", b"abc", [("X-T", "1"), ("X-U", "2")]),
    (b"3\r\nabc\r\n0\r\nX_T: 1\r\n\r\n", b"abc", []),
])
def test_chunked_ok(wire, body, trailers):
    m = chunked(wire)
    assert bytes(m.body) == body and m.trailers == trailers


@pytest.mark.parametrize("wire, error", [
    (b"g\r\nabc\r\n0\r\n\r\n", errors.InvalidChunkSize),
    (b"3;\r\nabc\r\n0\r\n\r\n", errors.InvalidChunkExtension),
    (b"3;a=\"b\r\nabc\r\n0\r\n\r\n", errors.InvalidChunkExtension),
    (b"3;a b\r\nabc\r\n0\r\n\r\n", errors.InvalidChunkExtension),
    (b"3\r\nabcd\r\n0\r\n\r\n", errors.ChunkMissingTerminator),
    (b"3\r\nabc\n0\r\n\r\n", errors.ChunkMissingTerminator),
    (b"3\nabc\r\n0\r\n\r\n", errors.InvalidChunkSize),
    (b"1" * 9000 + b"\r\n", errors.InvalidChunkSize),
    (b"10000000000000000\r\n", errors.InvalidChunkSize),
    (b"0\r\nHost: x\r\n\r\n", errors.InvalidHeaderName),            # RFC 9110 §6.5.1
    (b"0\r\nAuthorization: x\r\n\r\n", errors.InvalidHeaderName),
    (b"0\r\nTrailer: x\r\n\r\n", errors.InvalidHeaderName),
    (b"0\r\nX: a\nY: b\r\n\r\n", errors.InvalidHeader),
    (b"0\r\nX: a\x00\r\n\r\n", errors.InvalidHeader),
    (b"0\r\nX : a\r\n\r\n", errors.InvalidHeaderName),
    (b"0\r\nX: a\r\n b\r\n\r\n", errors.ObsoleteFolding),
])
def test_chunked_refused(wire, error):
    out = feed([b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + wire])
    assert type(out.error) is error, out.error


def test_trailer_underscore_refused_with_header_map_refuse():
    out = feed([b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX_T: 1\r\n\r\n"],
               ParserOptions(header_map="refuse"))
    assert type(out.error) is errors.InvalidHeaderName


def test_trailer_section_bound():
    opts = ParserOptions(limit_request_fields=2, limit_request_field_size=20)
    out = feed([b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: 1\r\n" * 20],
               opts)
    assert out.error is not None and out.error.status == 431


def test_body_events_are_bytes():
    p = RequestParser(ParserOptions())
    p.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    p.next_event()
    p.receive_data(bytearray(b"3\r\nab"))
    ev = p.next_event()
    assert type(ev) is bytes and ev == b"ab"
    p.receive_data(memoryview(b"c\r\n0\r\n\r\n"))
    assert p.next_event() == b"c"
    assert isinstance(p.next_event(), EndOfMessage)


# --- options ------------------------------------------------------------------------------------
class Cfg:
    limit_request_line = 0
    limit_request_fields = -5
    limit_request_field_size = 0
    permit_obsolete_folding = True
    permit_unconventional_http_method = False
    permit_unconventional_http_version = False
    casefold_http_method = False
    strip_header_spaces = False
    header_map = "refuse"
    proxy_protocol = True


def test_from_config():
    o = ParserOptions.from_config(Cfg())
    assert o.permit_obsolete_folding and o.header_map == "refuse" and o.proxy_protocol == "auto"
    assert (o.max_request_line, o.max_fields, o.max_field_size) == (1 << 20, 32768, 8190)
    assert ParserOptions.from_config(object()) == ParserOptions()


@pytest.mark.parametrize("value, mode", [
    (True, "auto"), (False, "off"), (None, "off"), ("true", "auto"), ("AUTO", "auto"),
    ("v1", "v1"), ("v2", "v2"), ("off", "off"), ("false", "off"),
])
def test_proxy_protocol_values(value, mode):
    assert ParserOptions(proxy_protocol=value).proxy_protocol == mode


@pytest.mark.parametrize("kw", [{"proxy_protocol": "v3"}, {"header_map": "keep"}])
def test_bad_option_values(kw):
    with pytest.raises(ValueError):
        ParserOptions(**kw)


def test_options_are_frozen():
    with pytest.raises(Exception):
        ParserOptions().header_map = "dangerous"
