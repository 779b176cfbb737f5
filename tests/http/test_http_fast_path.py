"""The head parser's fast path against its careful path (hypothesis).

The parser reads most heads the fast way: a request line the fast pattern takes, field lines the
strict grammar takes whole, both found by their text in a cache (parser._REQUEST_LINES,
parser._LINES) after the first time;
Host values and framing decisions are remembered too, and a connection's parser reads a field
block that repeats its previous head's, or one read before on another connection under the same
settings (ParserOptions.seen_blocks), the way it read it then. Anything else goes to the careful,
line by line pass. Both must give the same requests, or the same error, for any head and any settings:
here every head is parsed twice, once as it comes and once with every shortcut switched off.
"""
import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from unicornd.http import errors
from unicornd.http import parser as P
from unicornd.http.body import EndOfMessage
from unicornd.http.parser import CLOSED, NEED_DATA, ParserOptions, Request, RequestParser

from test_http_properties import OPTION_SETS, mutated

SETTINGS = settings(max_examples=int(os.environ.get("UNICORND_HYPOTHESIS_EXAMPLES", "500")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Forgetful(dict):
    """A cache that never finds anything and keeps nothing."""

    def get(self, key, default=None):
        return default

    def __contains__(self, key):
        return False

    def __setitem__(self, key, value):
        pass


class _NoMatch:
    def fullmatch(self, *args):
        return None


@contextlib.contextmanager
def careful_only(calls):
    """Switch off every shortcut of the head parser; count the careful field passes."""
    saved = {name: getattr(P, name) for name in (
        "_LINES", "_REQUEST_LINES", "_strict_line", "_HOSTS_OK", "_FRAMING_SEEN", "REQUEST_LINE_FAST",
        "REQUEST_LINE_FAST_ANY_METHOD")}
    split = RequestParser._split_fields
    remember = RequestParser._remember_block
    init = RequestParser.__init__

    def forgetful_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._seen_blocks = _Forgetful()
        self._seen_heads = _Forgetful()

    def counted(self, block):
        calls.append(block)
        return split(self, block)
    P._LINES = _Forgetful()
    P._REQUEST_LINES = _Forgetful()
    P._strict_line = lambda line: None
    P._HOSTS_OK = _Forgetful()
    P._FRAMING_SEEN = _Forgetful()
    P.REQUEST_LINE_FAST = P.REQUEST_LINE_FAST_ANY_METHOD = _NoMatch()
    RequestParser._split_fields = counted
    RequestParser._remember_block = lambda self, block, fields: None
    RequestParser.__init__ = forgetful_init
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(P, name, value)
        RequestParser._split_fields = split
        RequestParser._remember_block = remember
        RequestParser.__init__ = init


def events(wire, opts, forwarder_trusted=False):
    """Everything the parser says about ``wire`` then EOF, requests with all their fields."""
    parser = RequestParser(opts, forwarder_trusted=forwarder_trusted)
    out = []
    try:
        for piece in (wire, b""):
            parser.receive_data(piece)
            while True:
                ev = parser.next_event()
                if ev is NEED_DATA:
                    break
                if ev is CLOSED:
                    out.append("closed")
                    return out
                if isinstance(ev, Request):
                    out.append(tuple(getattr(ev, name) for name in Request.__slots__))
                elif isinstance(ev, EndOfMessage):
                    out.append(("end", ev.trailers))
                    parser.start_next_request()
                else:
                    out.append(bytes(ev))
    except errors.HTTPError as exc:
        out.append((type(exc).__name__, exc.status, str(exc)))
    return out


def both_ways(wire, opts):
    fast = events(wire, opts)
    again = events(wire, opts)  # what the first pass left in the caches is found now
    calls = []
    with careful_only(calls):
        careful = events(wire, opts)
    assert fast == again == careful
    return calls


# Field lines of every kind the two paths must agree on: plain ones, the framing fields, names
# with "_", OWS and HTAB, obs-text, a space before ":", folds, controls, bare CR and LF.
NAMES = ["Host", "host", "User-Agent", "Accept", "X-A", "X_A", "Content-Type", "Content-Length",
         "Transfer-Encoding", "Connection", "Expect", "Upgrade", "SCRIPT_NAME", "X-Forwarded-For"]
VALUES = ["a", "", "127.0.0.1:8080", "[::1]:80", "bad host", "5", "05", "-1", "1" * 30, "chunked",
          "gzip, chunked", "close", "keep-alive", "Upgrade", "100-continue", "a\tb", " pad ",
          "\t", "caf\xe9", "\xff", "a\x00b", "a\x7fb", "a\rb", "a\nb", "*/*", "x" * 50]
field_line = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}", st.sampled_from(NAMES), st.sampled_from(VALUES)),
    st.builds(lambda n, sep, v, tail: f"{n}:{sep}{v}{tail}", st.sampled_from(NAMES),
              st.sampled_from(["", " ", "\t", "  "]), st.sampled_from(VALUES),
              st.sampled_from(["", " ", "\t"])),
    st.sampled_from(["Host : a", " folded", "\tfolded", "NoColon", ": empty-name", "X A: b",
                     "X-A:b", "X-A: a\r", "\nX-A: b", "X-\x80: b", ""]),
)
request_line = st.sampled_from([
    "GET / HTTP/1.1", "GET / HTTP/1.0", "POST /a?b=c HTTP/1.1", "GET /a#frag HTTP/1.1",
    "get / HTTP/1.1", "CONNECT a:443 HTTP/1.1", "CONNECT / HTTP/1.1", "OPTIONS * HTTP/1.1",
    "GET http://a/b HTTP/1.1", "GET / HTTP/1.2", "GET / HTTP/2.0", "GET  / HTTP/1.1",
    "GET / http/1.1", "M#ETHOD / HTTP/1.1", "GET /\x7f HTTP/1.1", "GET /" + "a" * 40 + " HTTP/1.1",
])


@st.composite
def heads(draw):
    lines = [draw(request_line)] + draw(st.lists(field_line, max_size=8))
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return wire + draw(st.sampled_from([b"", b"hello", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                                        b"5\r\nhello\r\n0\r\n\r\n"]))


@SETTINGS
@given(heads(), st.sampled_from(OPTION_SETS))
def test_fast_and_careful_paths_agree_on_generated_heads(wire, option_set):
    both_ways(wire, ParserOptions(**option_set))


@SETTINGS
@given(mutated(), st.sampled_from(OPTION_SETS))
def test_fast_and_careful_paths_agree_on_mutated_corpus_requests(wire, option_set):
    both_ways(wire, ParserOptions(**option_set))


# mostly lines that a head may carry, so that the heads after the first are read at all
_good_field = st.builds(lambda n, v: f"{n}: {v}", st.sampled_from(NAMES), st.sampled_from(
    ["a", "5", "0", "close", "keep-alive", "Upgrade", "chunked", "100-continue", "x" * 50]))
likely_valid = st.one_of(_good_field, _good_field, _good_field, field_line)
likely_valid_request_line = st.one_of(
    st.sampled_from(["GET / HTTP/1.1", "GET / HTTP/1.0", "POST /a?b=c HTTP/1.1",
                     "OPTIONS * HTTP/1.1", "CONNECT a:443 HTTP/1.1"]), request_line)


@st.composite
def repeated_blocks(draw):
    """Heads on one connection that repeat the first one's field block (a kept-alive client),
    after other request lines, with heads of other blocks in between."""
    block = "".join(line + "\r\n" for line in draw(st.lists(likely_valid, max_size=6)))
    other = "".join(line + "\r\n" for line in draw(st.lists(likely_valid, max_size=3)))
    wire = ""
    for _ in range(draw(st.integers(2, 4))):
        fields = draw(st.sampled_from([block, block, other]))
        wire += draw(likely_valid_request_line) + "\r\n" + fields + "\r\n"
    return wire.encode("latin-1")


@SETTINGS
@given(repeated_blocks(), st.sampled_from(OPTION_SETS))
def test_a_repeated_field_block_reads_as_it_did(wire, option_set):
    both_ways(wire, ParserOptions(**option_set))


def test_a_repeated_field_block_is_taken_from_the_previous_head():
    # (else the agreement above would not test the shortcut)
    parser = RequestParser(ParserOptions())
    parser.receive_data(b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n"
                        b"POST /b HTTP/1.0\r\nHost: a\r\nX-A: b\r\n\r\n")
    first = parser.next_event()
    assert isinstance(parser.next_event(), EndOfMessage)
    parser.start_next_request()
    calls = []
    read = RequestParser._read_fields
    RequestParser._read_fields = lambda self, *a: calls.append(a) or read(self, *a)
    try:
        second = parser.next_event()
    finally:
        RequestParser._read_fields = read
    assert calls == []
    assert (second.method, second.path, second.version) == ("POST", "/b", (1, 0))
    assert second.headers == first.headers == [("HOST", "a"), ("X-A", "b")]
    assert second.headers is not first.headers
    assert (second.keep_alive, first.keep_alive) == (False, True)


@SETTINGS
@given(st.lists(repeated_blocks(), min_size=2, max_size=4), st.sampled_from(OPTION_SETS),
       st.lists(st.booleans(), min_size=4, max_size=4))
def test_a_field_block_seen_on_another_connection_reads_as_it_did(wires, option_set, trust):
    # one ParserOptions (one worker's settings) for every connection: what one parser kept in
    # seen_blocks, the next finds; trusted and untrusted peers (forwarder_headers) read apart
    opts = ParserOptions(**option_set)
    fresh = ParserOptions(**option_set)
    calls = []
    for wire, trusted in zip(wires, trust):
        got = events(wire, opts, forwarder_trusted=trusted)
        with careful_only(calls):
            assert got == events(wire, fresh, forwarder_trusted=trusted)


def test_a_field_block_is_taken_from_another_connection():
    # (else the agreement above would not test the shortcut)
    opts = ParserOptions(forwarder_headers="SCRIPT_NAME", header_map="drop")
    wire = b"GET /a HTTP/1.1\r\nHost: a\r\nSCRIPT_NAME: /s\r\n\r\n"
    other_line = wire.replace(b"/a", b"/b")  # (the same block after another request line)
    calls = []
    read = RequestParser._read_fields
    RequestParser._read_fields = lambda self, *a: calls.append(a) or read(self, *a)
    try:
        first = events(wire, opts)
        assert len(calls) == 1
        second = events(other_line, opts)
        assert len(calls) == 1  # another parser, the same settings: read once
        trusted = events(wire, opts, forwarder_trusted=True)
        assert len(calls) == 2  # a trusted peer's block reads differently: read again
        assert events(other_line, opts, forwarder_trusted=True)[0][2] == "/b" and len(calls) == 2
        assert events(wire, ParserOptions(), forwarder_trusted=True) and len(calls) == 3
    finally:
        RequestParser._read_fields = read
    headers = Request.__slots__.index("headers")
    assert first[0][headers] == second[0][headers] == [("HOST", "a")]
    assert second[0][2] == "/b"
    assert trusted[0][headers] == [("HOST", "a"), ("SCRIPT_NAME", "/s")]


def test_a_head_is_taken_from_another_connection():
    # (else the agreement above would not test this shortcut)
    opts = ParserOptions(forwarder_headers="SCRIPT_NAME", header_map="drop")
    wire = b"GET /a HTTP/1.1\r\nHost: a\r\nSCRIPT_NAME: /s\r\n\r\n"
    calls = []
    scan = RequestParser._scan_head
    RequestParser._scan_head = lambda self, *a: calls.append(a) or scan(self, *a)
    try:
        first = events(wire, opts)
        assert events(wire, opts) == first and len(calls) == 1
        trusted = events(wire, opts, forwarder_trusted=True)
        assert len(calls) == 2 and trusted != first  # trusted: SCRIPT_NAME kept
        assert events(wire, opts, forwarder_trusted=True) == trusted and len(calls) == 2
        # a head that came in pieces (a bytearray buffer) is scanned
        parser = RequestParser(opts)
        parser.receive_data(wire[:10])
        parser.receive_data(wire[10:])
        assert parser.next_event().headers == [("HOST", "a")] and len(calls) == 3
    finally:
        RequestParser._scan_head = scan
    # a kept-alive connection with a field block of its own looks in no shared cache
    kept = ParserOptions()
    heads = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3))
    assert [ev[2] for ev in events(heads, kept) if type(ev) is tuple and len(ev) > 2] == [
        "/0", "/1", "/2"]
    assert [len(d) for d in kept.seen_heads + kept.seen_blocks] == [1, 0, 1, 0]
    # each request gets its own list of headers
    one, two = RequestParser(opts), RequestParser(opts)
    one.receive_data(wire)
    two.receive_data(wire)
    a, b = one.next_event(), two.next_event()
    assert a.headers == b.headers and a.headers is not b.headers


def test_seen_blocks_and_heads_stay_bounded():
    opts = ParserOptions()
    for i in range(P._SEEN_BLOCKS_MAX + 10):
        events(b"GET / HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n" % i, opts)
    events(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * P._SEEN_BLOCK_MAX + b"\r\n\r\n", opts)
    untrusted, trusted = opts.seen_blocks
    assert 0 < len(untrusted) <= P._SEEN_BLOCKS_MAX and not trusted
    assert all(len(block) <= P._SEEN_BLOCK_MAX for block in untrusted)
    untrusted, trusted = opts.seen_heads
    assert 0 < len(untrusted) <= P._SEEN_BLOCKS_MAX and not trusted
    assert all(len(head) <= P._SEEN_HEAD_MAX + 4 for head in untrusted)


@pytest.mark.parametrize("wire", [
    b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
])
def test_the_careful_switch_really_runs_the_careful_pass(wire):
    # (else the agreement above would compare the fast path with itself)
    assert both_ways(wire, ParserOptions()) != []
