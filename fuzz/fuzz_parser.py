"""Fuzz the sans-IO request parser and the chunked decoder.

Engines (see fuzz/README.md):

    python fuzz/fuzz_parser.py -max_total_time=3600 fuzz/corpus     # atheris (libFuzzer)
    UNICORND_FUZZ_EXAMPLES=2000000 python fuzz/fuzz_parser.py --hypothesis   # no atheris

and, bounded and seeded, as a normal test: tests/hardening/test_parser_fuzz.py.

Every input is a byte string plus the places it is cut and an option set. For each the harness
checks, whatever the bytes:

1. the parser raises nothing but ``errors.HTTPError`` (a RuntimeError or IndexError is a bug);
2. it never hangs: the number of ``next_event`` calls per input is bounded by its length;
3. it never accepts ambiguous framing: every head it accepts is re-read here by an independent,
   deliberately naive reader that checks for both Content-Length and Transfer-Encoding, several
   Content-Length fields, a Content-Length that is not digits, obs-fold (under strict options),
   bare CR or LF, whitespace before a colon, Transfer-Encoding on HTTP/1.0 and a chunked body
   that a strict reference decoder would not take byte for byte the same way;
4. split invariance: fed whole or cut anywhere, the same requests, bodies, trailers and the same
   outcome (the same error status, or the same clean end) come out.

A failure raises AssertionError (atheris and hypothesis both report the input).
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from unicornd.http import errors                                      # noqa: E402
from unicornd.http.body import ChunkedDecoder, EndOfMessage           # noqa: E402
from unicornd.http.parser import (CLOSED, NEED_DATA, ParserOptions,   # noqa: E402
                                  Request, RequestParser)

# --- option sets ----------------------------------------------------------------------------------
STRICT = ParserOptions()
LENIENT = ParserOptions(permit_obsolete_folding=True, permit_unconventional_http_method=True,
                        permit_unconventional_http_version=True, casefold_http_method=True,
                        strip_header_spaces=True, header_map="dangerous")
SMALL = ParserOptions(limit_request_line=64, limit_request_fields=4,
                      limit_request_field_size=64)
PROXY = ParserOptions(proxy_protocol="v1")
OPTION_SETS = (STRICT, LENIENT, SMALL, PROXY)


class Hang(AssertionError):
    pass


# --- an independent, naive reference for what "unambiguous" means -------------------------------
# Written from RFC 9112 directly, without looking at unicornd.http.grammar, so that one mistake
# is not made twice.
_REF_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REF_QS = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_REF_EXT = rb"(?:[ \t]*;[ \t]*" + _REF_TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _REF_TOKEN + rb"|" \
    + _REF_QS + rb"))?)*"
_REF_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)" + _REF_EXT + rb"\r\n")


def ref_chunked(data, start, opts=STRICT):
    """Strict chunked framing from data[start:]: (body, end offset) or None if not valid/complete.

    The trailer section follows the leniency options as field lines do (space before ":" with
    strip_header_spaces, folded lines with permit_obsolete_folding)."""
    pos = start
    body = bytearray()
    while True:
        m = _REF_CHUNK_LINE.match(data, pos)
        if m is None:
            return None
        size = int(m.group(1), 16)
        pos = m.end()
        if size == 0:
            break
        if pos + size + 2 > len(data) or data[pos + size:pos + size + 2] != b"\r\n":
            return None
        body += data[pos:pos + size]
        pos += size + 2
    # trailer section: field lines, then CRLF
    while True:
        if data[pos:pos + 2] == b"\r\n":
            return bytes(body), pos + 2
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return None
        line = data[pos:nl]
        if b"\r" in line or b"\n" in line:
            return None
        if line[:1] in (b" ", b"\t"):
            if not opts.permit_obsolete_folding:
                return None
        elif not re.fullmatch(_REF_TOKEN + (rb"[ \t]*" if opts.strip_header_spaces else b"")
                              + rb":.*", line, re.S):
            return None
        pos = nl + 2


def check_head(head, opts):
    """``head``: the bytes of an accepted head, request line to the blank line included."""
    assert head.endswith(b"\r\n\r\n"), head
    text = head[:-4]
    # bare CR or LF anywhere in the head: every line ends with CRLF (RFC 9112 §2.2)
    assert text.count(b"\n") == text.count(b"\r\n") == text.count(b"\r"), \
        f"bare CR or LF accepted in {head!r}"
    lines = text.split(b"\r\n")
    version = lines[0].rsplit(b" ", 1)[-1]
    cl, te = [], []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            assert opts.permit_obsolete_folding, f"obs-fold accepted under strict options: {head!r}"
            continue
        name, colon, value = line.partition(b":")
        assert colon, f"field line without a colon accepted: {line!r}"
        if not opts.strip_header_spaces:
            assert re.fullmatch(_REF_TOKEN, name), f"bad field name accepted: {name!r}"
        n = name.strip(b" \t").lower()
        if n == b"content-length":
            cl.append(value.strip(b" \t"))
        elif n == b"transfer-encoding":
            te.append(value.strip(b" \t"))
        for c in value:
            assert c == 9 or c >= 0x20 and c != 0x7f, f"control byte accepted in {line!r}"
    assert not (cl and te), f"both Content-Length and Transfer-Encoding accepted: {head!r}"
    assert len(cl) <= 1, f"several Content-Length fields accepted: {head!r}"
    for v in cl:
        assert re.fullmatch(rb"[0-9]+", v), f"Content-Length {v!r} accepted"
    if te:
        assert version != b"HTTP/1.0", f"Transfer-Encoding on HTTP/1.0 accepted: {head!r}"
    return cl, te


# --- driving the parser -----------------------------------------------------------------------
def run(data, cuts, opts):
    """Feed ``data`` cut at ``cuts`` (sorted offsets), then EOF. Returns the normalised trace.

    Checks framing on the way (only on the whole-input run, where offsets are known: ``cuts``
    empty). Raises AssertionError on anything but an HTTPError from the parser.
    """
    check = not cuts
    p = RequestParser(opts, proxy_allowed=True)
    trace = []
    budget = 64 + 8 * len(data)   # next_event calls: a few per byte is already generous
    pieces = []
    last = 0
    for c in cuts:
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    fed = 0
    body = bytearray()
    req = None
    head_start = 0
    body_start = 0

    def consumed():
        return fed - len(p.buffered)

    def pump():
        nonlocal budget, body, req, head_start, body_start
        while True:
            budget -= 1
            if budget < 0:
                raise Hang(f"more than {64 + 8 * len(data)} events for {len(data)} bytes")
            try:
                ev = p.next_event()
            except errors.HTTPError as exc:
                if body:
                    trace.append(("body", bytes(body)))
                    body = bytearray()
                trace.append(("error", exc.status))
                # the parser is spent: the same error again
                try:
                    p.next_event()
                except errors.HTTPError as again:
                    assert type(again) is type(exc), (again, exc)
                else:
                    raise AssertionError("an error did not stick")
                return False
            if ev is NEED_DATA:
                return True
            if ev is CLOSED:
                trace.append(("closed",))
                return False
            if type(ev) is Request:
                assert req is None
                req = ev
                trace.append(("req", ev.method, ev.target, ev.version, tuple(ev.headers),
                              ev.content_length, ev.chunked, ev.keep_alive))
                if check:
                    head = data[head_start:consumed()]
                    if p.proxy is not None and head_start == 0:
                        if head.startswith(b"PROXY "):
                            head = head[head.find(b"\r\n") + 2:]
                        else:   # v2: 16-byte header, then its length
                            head = head[16 + int.from_bytes(head[14:16], "big"):]
                    elif opts.proxy_protocol != "off" and head_start == 0 and \
                            head.startswith(b"\r\n\r\n\x00\r\nQUIT\n"):
                        head = head[16 + int.from_bytes(head[14:16], "big"):]
                    if head.startswith(b"\r\n"):
                        head = head[2:]   # one CRLF before the request line is ignored (§2.2)
                    assert head.find(b"\r\n\r\n") == len(head) - 4, f"head misread: {head!r}"
                    cl, te = check_head(head, opts)
                    if ev.chunked:
                        assert te, head
                    if ev.content_length is not None:
                        assert cl and int(cl[0]) == ev.content_length
                body_start = consumed()
            elif type(ev) is bytes:
                assert ev, "empty body piece"
                assert req is not None, "body without a request"
                body += ev
            elif type(ev) is EndOfMessage:
                assert req is not None
                trace.append(("body", bytes(body)))
                trace.append(("eom", tuple(ev.trailers)))
                if check:
                    end = consumed()
                    if req.chunked:
                        ref = ref_chunked(data, body_start, opts)
                        assert ref is not None, \
                            f"chunked body the reference refuses: {data[body_start:end]!r}"
                        assert ref == (bytes(body), end), \
                            f"chunked body read differently: ours {bytes(body)!r} to {end}, " \
                            f"reference {ref!r}: {data[body_start:end + 16]!r}"
                    elif req.content_length:
                        assert bytes(body) == data[body_start:body_start + req.content_length]
                        assert end == body_start + req.content_length
                    else:
                        assert not body and end == body_start
                body = bytearray()
                req = None
                head_start = consumed()
                p.start_next_request()
            else:
                raise AssertionError(f"unexpected event {ev!r}")

    for piece in pieces:
        if not piece:
            continue
        p.receive_data(piece)
        fed += len(piece)
        if not pump():
            return trace
    p.receive_data(b"")
    if pump():
        raise AssertionError("NEED_DATA after EOF")
    return trace


# A head that is both too large and malformed is refused as soon as either is seen, and which is
# seen first depends on where the bytes were cut (found by this fuzzer: a head over the size
# limit with a bare LF in it is a 431 whole and a 400 when cut just before the limit). Both are
# refusals that close the connection, so for split invariance these statuses count as one.
_REFUSED_HEAD = {400: "refused", 414: "refused", 431: "refused"}


def _same(trace):
    return [("error", _REFUSED_HEAD.get(e[1], e[1])) if e[0] == "error" else e for e in trace]


def check_input(data, cuts, opts=STRICT):
    """The whole property: run whole, run split, compare."""
    whole = run(data, [], opts)
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    if cuts:
        split = run(data, cuts, opts)
        assert _same(split) == _same(whole), f"split changes the result:\n whole {whole!r}\n split {split!r}"
    one = run(data, list(range(1, len(data))), opts) if len(data) <= 256 else None
    if one is not None:
        assert _same(one) == _same(whole), f"byte-by-byte changes the result:\n whole {whole!r}\n bytes {one!r}"
    return whole


def _trailers(text):
    return RequestParser(STRICT)._parse_trailers(text)


def check_chunked_decoder(data, cuts):
    """ChunkedDecoder alone: HTTPError only, bounded steps, split-invariant, strict framing."""
    def go(cuts):
        dec = ChunkedDecoder(64, 256, _trailers)
        buf = b""
        out = bytearray()
        pos_total = 0
        steps = 64 + 8 * len(data)
        last = 0
        bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
        for i, c in enumerate(bounds + [None]):
            eof = c is None
            if not eof:
                buf += data[last:c]
                last = c
            while True:
                steps -= 1
                if steps < 0:
                    raise Hang("chunked decoder does not stop")
                try:
                    ev, used = dec.step(buf, eof)
                except errors.HTTPError as exc:
                    return ("error", exc.status, bytes(out))
                assert 0 <= used <= len(buf)
                buf = buf[used:]
                pos_total += used
                if ev is None:
                    if eof:
                        raise AssertionError("decoder wants data after EOF")
                    break
                if type(ev) is EndOfMessage:
                    return ("eom", bytes(out), tuple(ev.trailers), pos_total)
                assert type(ev) is bytes and ev
                out += ev
        raise AssertionError("unreachable")

    whole = go([])
    if whole[0] == "eom":
        ref = ref_chunked(data, 0)
        assert ref is not None and ref == (whole[1], whole[3]), (data, whole, ref)
    split = go(cuts)
    assert split == whole, (data, cuts, whole, split)
    return whole


# --- input generation for the structure-blind engines -------------------------------------------
# Pieces a request is made of, right and wrong. A message is a request line, field lines, an empty
# line and a body, each drawn from these, then mutated a few bytes; that reaches the framing
# decisions far faster than bytes alone.
REQUEST_LINES = [
    b"GET / HTTP/1.1\r\n", b"POST /p?q=1 HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
    b"POST / HTTP/1.0\r\n", b"PUT * HTTP/1.1\r\n", b"OPTIONS * HTTP/1.1\r\n",
    b"CONNECT h:443 HTTP/1.1\r\n", b"GET http://h/x HTTP/1.1\r\n", b"get / HTTP/1.1\r\n",
    b"GET / HTTP/2.0\r\n", b"GET / HTTP/1.2\r\n", b"GET  / HTTP/1.1\r\n", b"GET / HTTP/1.1\n",
    b"GET /#f HTTP/1.1\r\n", b"\r\nGET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n",
    b"PROXY UNKNOWN\r\nPOST / HTTP/1.1\r\n",
]
FIELDS = [
    b"Host: a\r\n", b"Host: a:80\r\n", b"Host: [::1]\r\n", b"Host: a b\r\n",
    b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Content-Length: 3\r\n",
    b"Content-Length: 5, 5\r\n", b"Content-Length: +5\r\n", b"Content-Length: 0x5\r\n",
    b"Content-Length:  5 \r\n", b"Content-Length : 5\r\n", b"content-length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n", b"Content-Length: \r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: xchunked\r\n", b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding:\tchunked\r\n", b"Transfer-Encoding: chunked;q=1\r\n",
    b"Transfer-Encoding : chunked\r\n", b"Transfer-Encoding: ,chunked\r\n",
    b"Transfer-Encoding: chunked\r\n\tgzip\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Expect: 100-continue\r\n",
    b"Expect: x\r\n", b"Upgrade: websocket\r\n", b"Connection: Upgrade\r\n", b"X_Y: z\r\n",
    b"X-A: \x80\xff\r\n", b" folded\r\n", b"\tfolded\r\n", b"X: a\rb\r\n", b"X: a\nb\r\n",
    b"X: a\x00\r\n", b"X:\r\n", b"X: v\n", b"Content-Type: a\r\n", b"Trailer: X\r\n",
    b": v\r\n", b"X : v\r\n", b"X\t: v\r\n",
]
BODIES = [
    b"", b"hello", b"abc", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"0\r\nX: t\r\n\r\n",
    b"3;a=b\r\nabc\r\n0\r\n\r\n", b"3 ;a\r\nabc\r\n0\r\n\r\n", b"3;a=\"q\\\"\"\r\nabc\r\n0\r\n\r\n",
    b"-1\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffff\r\n", b"3\nabc\r\n0\r\n\r\n",
    b"3\r\nabc\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n", b"0\r\nContent-Length: 1\r\n\r\n",
    b"0\r\nX: t\n\r\n", b"0\n\n", b"3\r\nabc\r\n", b" 3\r\nabc\r\n0\r\n\r\n", b"0;\r\n\r\n",
]
GOOD_FIELDS = [b"Host: a\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n",
               b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"X: y\r\n",
               b"Connection: close\r\n"]
FRAGMENTS = REQUEST_LINES + FIELDS + BODIES


def compose_body(pick, blob):
    """A chunked body (for the decoder alone): chunk pieces glued and mutated."""
    out = bytearray()
    for _ in range(1 + pick(4)):
        out += BODIES[pick(len(BODIES))]
    for _ in range(pick(3)):
        at = pick(len(out) + 1)
        out[at:at + pick(2)] = blob()
    return bytes(out)


def compose(pick, blob):
    """A few messages from the pieces above; ``pick(n)`` draws an index below n, ``blob()`` bytes.

    Then a few byte mutations (insert, delete, replace) so that what lies between the pieces is
    covered too.
    """
    out = bytearray()
    for _ in range(1 + pick(3)):
        out += REQUEST_LINES[pick(len(REQUEST_LINES))]
        for _ in range(pick(6)):
            # half of the time one of the valid, framing-relevant ones
            out += FIELDS[pick(len(FIELDS))] if pick(2) else GOOD_FIELDS[pick(len(GOOD_FIELDS))]
        if pick(8):
            out += b"\r\n"
        out += BODIES[pick(len(BODIES))]
    for _ in range(pick(4)):
        if not out:
            break
        at = pick(len(out) + 1)
        kind = pick(3)
        if kind == 0:
            out[at:at] = blob()
        elif kind == 1:
            del out[at:at + 1 + pick(3)]
        else:
            out[at:at + 1] = blob()[:1] or b"\r"
    return bytes(out)


# --- engines ------------------------------------------------------------------------------------
def atheris_main(argv):
    import atheris

    def one(buf):
        fdp = atheris.FuzzedDataProvider(buf)
        mode = fdp.ConsumeIntInRange(0, 7)
        ncuts = fdp.ConsumeIntInRange(0, 6)
        cuts = [fdp.ConsumeIntInRange(0, 4096) for _ in range(ncuts)]
        if mode == 7:
            data = compose_body(lambda n: fdp.ConsumeIntInRange(0, n - 1) if n > 0 else 0,
                                lambda: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4)))
        elif mode & 4:
            data = compose(lambda n: fdp.ConsumeIntInRange(0, n - 1) if n > 0 else 0,
                           lambda: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4)))
        else:
            data = fdp.ConsumeBytes(fdp.remaining_bytes())
        cuts = [c % (len(data) + 1) for c in cuts]
        if mode == 7:
            check_chunked_decoder(data, cuts)
        else:
            check_input(data, cuts, OPTION_SETS[mode & 3])

    atheris.instrument_all()
    atheris.Setup(argv, one)
    atheris.Fuzz()


def hypothesis_strategy():
    from hypothesis import strategies as st

    @st.composite
    def structured(draw):
        return compose(lambda n: draw(st.integers(0, n - 1)) if n > 0 else 0,
                       lambda: draw(st.binary(max_size=4)))

    @st.composite
    def body(draw):
        return compose_body(lambda n: draw(st.integers(0, n - 1)) if n > 0 else 0,
                            lambda: draw(st.binary(max_size=4)))

    data = st.one_of(structured(), structured(), structured(), st.binary(max_size=300))
    cuts = st.lists(st.integers(0, 400), max_size=6)
    return st.one_of(st.tuples(data, cuts, st.integers(0, 3)), st.tuples(body(), cuts, st.just(4)))


def hypothesis_check(item):
    data, cuts, mode = item
    cuts = [c % (len(data) + 1) for c in cuts]
    if mode == 4:
        return check_chunked_decoder(data, cuts)
    return check_input(data, cuts, OPTION_SETS[mode])


def hypothesis_main(examples, seed=None):
    from hypothesis import HealthCheck, given, settings, seed as hseed

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(hypothesis_strategy())
    def fuzz(item):
        hypothesis_check(item)

    if seed is not None:
        fuzz = hseed(seed)(fuzz)
    fuzz()


if __name__ == "__main__":
    if "--hypothesis" in sys.argv:
        n = int(os.environ.get("UNICORND_FUZZ_EXAMPLES", "100000"))
        print(f"hypothesis: {n} examples", flush=True)
        hypothesis_main(n)
        print("no failure", flush=True)
    else:
        atheris_main(sys.argv)
