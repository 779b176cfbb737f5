"""Differential check: our accept/reject decision on a request head against h11's and llhttp's.

For generated near-valid HTTP/1.1 heads, each parser says "accept" or "reject". Every
disagreement must be explained by a rule in DELIBERATE (a documented choice, with its RFC
section; the same list is in docs/http.md, "Where we differ from h11 and llhttp") or it fails
the test as an unclassified disagreement (a bug, or a choice to document).

CI runs a seeded, bounded number of examples; UNICORND_DIFF_EXAMPLES raises it for a hunt.
"""
import os
import re

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from unicornd.http import errors
from unicornd.http.parser import NEED_DATA, ParserOptions, Request, RequestParser

EXAMPLES = int(os.environ.get("UNICORND_DIFF_EXAMPLES", "1500"))
OPTS = ParserOptions()


# --- the three deciders -------------------------------------------------------------------------
def decide_ours(head):
    p = RequestParser(OPTS)
    p.receive_data(head)
    try:
        ev = p.next_event()
        if ev is NEED_DATA:
            p.receive_data(b"")
            ev = p.next_event()
    except errors.HTTPError:
        return "reject"
    return "accept" if type(ev) is Request else "reject"


def decide_h11(head):
    c = h11.Connection(h11.SERVER)
    try:
        c.receive_data(head)
        ev = c.next_event()
        if ev is h11.NEED_DATA:
            c.receive_data(b"")
            ev = c.next_event()
    except h11.RemoteProtocolError:
        return "reject"
    return "accept" if isinstance(ev, h11.Request) else "reject"


class _Proto:
    def __init__(self):
        self.complete = False

    def on_headers_complete(self):
        self.complete = True


def decide_llhttp(head):
    proto = _Proto()
    p = httptools.HttpRequestParser(proto)
    try:
        p.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass    # CONNECT or Upgrade: the head was taken, what follows is another protocol
    except httptools.HttpParserError:
        return "reject"
    return "accept" if proto.complete else "reject"   # not complete: a truncated request


# --- near-valid heads ---------------------------------------------------------------------------
METHODS = ["GET", "GET", "POST", "PUT", "OPTIONS", "CONNECT", "DELETE", "PATCH", "M-SEARCH",
           "get", "Get", "FOO", "G_T", "GE T", "GET1", "QUERY", "PROPFIND", "X", "ABCDEFGHIJKLMNOPQRSTU",
           ""]
TARGETS = ["/", "/", "/a?b=c", "*", "http://h/x", "http://h", "h:443", "/a b", "/\x7f", "/\xe9",
           "/a#f", "//x", "/%zz", "/a?b#c", "", "a", "/\x00", "/[x]", "/\"", "/a|b", "/\\"]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9",
            "http/1.1", "HTTP/1.10", "HTTP/1", "HTTP/11", "HTTP/1.1 ", "HTTP/3.0"]
NAMES = ["Host", "Host", "Content-Length", "Transfer-Encoding", "X", "X-Y", "X_Y", "X Y", "",
         "Connection", "Expect", "Upgrade", "Content-Type", "X\x7f", "X\xe9", "X:Y", "Cookie",
         "x-long-name-" + "a" * 20, "\"X\"", "X@"]
VALUES = {
    "Host": ["a", "a:80", "[::1]:80", "a b", "", "a@b", "a,b", "h/x", "\xe9"],
    "Content-Length": ["0", "5", "5, 5", "+5", "-1", "0x5", "", "5 5", "05", "1" * 25, " 5"],
    "Transfer-Encoding": ["chunked", "gzip, chunked", "chunked, gzip", "identity", "xchunked",
                          "chunked;q=1", ",chunked", "CHUNKED", "gzip", "chunked, chunked", ""],
    "Connection": ["close", "keep-alive", "upgrade", "close, x", ""],
    "Expect": ["100-continue", "x", "100-Continue", ""],
    "Upgrade": ["websocket", "h2c"],
}
EDGE_VALUES = ["v", "", "a b", "a\tb", " v ", "\tv", "v\t", "\x80\xff", "a\x7fb", "a\x01b",
               "a\x00b", "a\rb", "a\nb", "\"q\"", "a,b", "x" * 40]
SEPS = [":", ": ", ": ", ":\t", ": \t ", " :", "\t:", "::"]
EOLS = ["\r\n"] * 12 + ["\n", "\r", "\r\r\n"]


@st.composite
def heads(draw):
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(VERSIONS))
    sp1, sp2 = draw(st.sampled_from([" "] * 10 + ["  ", "\t"])), \
        draw(st.sampled_from([" "] * 10 + ["  ", "\t"]))
    eol = draw(st.sampled_from(EOLS))
    lines = [f"{method}{sp1}{target}{sp2}{version}"]
    if draw(st.integers(0, 4)):
        lines.append("Host: h")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        values = VALUES.get(name, EDGE_VALUES)
        value = draw(st.sampled_from(values + EDGE_VALUES[:3]))
        sep = draw(st.sampled_from(SEPS))
        lines.append(f"{name}{sep}{value}")
        if draw(st.integers(0, 15)) == 0:
            lines.append(draw(st.sampled_from([" folded", "\tfolded"])))
    if draw(st.integers(0, 20)) == 0:
        lines.insert(1, draw(st.sampled_from([" X: y", "\tX: y"])))
    text = "".join(line + draw(st.sampled_from(EOLS)) if i else line + eol
                   for i, line in enumerate(lines)) + draw(st.sampled_from(EOLS))
    if draw(st.integers(0, 20)) == 0:
        text = "\r\n" + text
    return text.encode("latin-1")


# --- the deliberate differences ----------------------------------------------------------------
# Each rule: (id, what, RFC section, applies(head) -> bool, our decision, parsers allowed to
# differ). When a rule applies, our decision must be the one stated (this is also a test of us),
# and the listed parsers may decide otherwise. A disagreement no applicable rule explains fails.
def _rl(head):
    """(method, sp1, target, sp2, version) of the first line, or None when it does not split."""
    text = head.decode("latin-1")
    if text.startswith("\r\n"):
        text = text[2:]
    line = re.split(r"\r\n|\n|\r", text, maxsplit=1)[0]
    m = re.fullmatch(r"([^ \t]*)([ \t]+)([^ \t]*)([ \t]+)(.*)", line)
    return m.groups() if m else None


def _lines(head):
    text = head.decode("latin-1")
    if text.startswith("\r\n"):
        text = text[2:]
    return text.split("\r\n")


def _fields(head):
    return [ln for ln in _lines(head)[1:] if ln]


def _field(head, name):
    out = []
    for ln in _fields(head):
        n, colon, v = ln.partition(":")
        if colon and n.strip(" \t").lower() == name.lower():
            out.append(v.strip(" \t"))
    return out


TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
LLHTTP_METHODS = {"DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY",
                  "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND",
                  "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE",
                  "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH", "PURGE",
                  "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY"}


def _version(head):
    rl = _rl(head)
    return rl[4] if rl else ""


def _method(head):
    rl = _rl(head)
    return rl[0] if rl else ""


def _target(head):
    rl = _rl(head)
    return rl[2] if rl else ""


DELIBERATE = [
    # our own choices -----------------------------------------------------------------------------
    ("bare-lf-cr", "every line of the head must end with CRLF; bare LF or CR is refused",
     "RFC 9112 §2.2 (a recipient MAY accept a bare LF; we do not)",
     lambda h: b"\n" in h.replace(b"\r\n", b"") or b"\r" in h.replace(b"\r\n", b""),
     "reject", {"h11", "llhttp"}),
    ("major-version", "a major version other than 1 is a 505",
     "RFC 9110 §15.6.6, RFC 9112 §2.3",
     lambda h: bool(re.fullmatch(r"HTTP/[02-9]\.[0-9]", _version(h))), "reject", {"h11", "llhttp"}),
    ("minor-version", "HTTP/1.2 and up are refused unless permit_unconventional_http_version",
     "RFC 9112 §2.3 (as gunicorn 27)",
     lambda h: bool(re.fullmatch(r"HTTP/1\.[2-9]", _version(h))), "reject", {"h11", "llhttp"}),
    ("method-conventional", "a method must be 3-20 upper-case token characters unless "
     "permit_unconventional_http_method", "RFC 9110 §9.1 (as gunicorn 27)",
     lambda h: bool(re.fullmatch(TCHAR + "+", _method(h)))
     and not re.fullmatch(r"[!$%&'*+\-.^_`|~0-9A-Z]{3,20}", _method(h)), "reject", {"h11"}),
    ("asterisk-form", "'*' is a target for OPTIONS only", "RFC 9112 §3.2.4",
     lambda h: _target(h) == "*" and _method(h) != "OPTIONS", "reject", {"h11", "llhttp"}),
    ("authority-form", "an authority-form target (host:port) is for CONNECT only, and CONNECT "
     "takes nothing else", "RFC 9112 §3.2.3",
     lambda h: (_method(h) == "CONNECT") != bool(re.fullmatch(r"[^/*]*:[0-9]+", _target(h)))
     and bool(_target(h)), "reject", {"h11", "llhttp"}),
    ("target-form", "a target that is none of the four forms (no leading '/', not absolute)",
     "RFC 9112 §3.2", lambda h: not _target(h) or _target(h)[0] not in "/*"
     and "://" not in _target(h) and _method(h) != "CONNECT", "reject", {"h11", "llhttp"}),
    ("obs-fold", "obsolete line folding is refused unless permit_obsolete_folding (h11 unfolds)",
     "RFC 9112 §5.2", lambda h: any(ln[:1] in (" ", "\t") for ln in _lines(h)[1:] if ln),
     "reject", {"h11", "llhttp"}),
    ("several-content-length", "several Content-Length fields or a list, even equal, are refused",
     "RFC 9110 §8.6, RFC 9112 §6.3 (4)",
     lambda h: len(_field(h, "content-length")) > 1
     or any("," in v for v in _field(h, "content-length")), "reject", {"h11", "llhttp"}),
    ("host-invalid", "a Host that is not uri-host [:port], or several, is a 400",
     "RFC 9112 §3.2, RFC 9110 §7.2",
     lambda h: len(_field(h, "host")) > 1 or any(
         not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?", v)
         for v in _field(h, "host")), "reject", {"h11", "llhttp"}),
    ("content-type-repeat", "a second Content-Type is refused (a singleton field)",
     "RFC 9110 §5.3, §8.3", lambda h: len(_field(h, "content-type")) > 1, "reject",
     {"h11", "llhttp"}),
    ("te-codings", "Transfer-Encoding must end in chunked (else 400), unknown codings are 501",
     "RFC 9112 §6.1, §6.3", lambda h: bool(_field(h, "transfer-encoding")) and not re.fullmatch(
         r"((gzip|deflate|compress|identity|x-gzip|x-compress)[ \t]*,[ \t]*)*chunked",
         ",".join(_field(h, "transfer-encoding")).strip(", \t").lower()), "reject",
     {"h11", "llhttp"}),
    ("cl-and-te", "Content-Length and Transfer-Encoding together are refused (h11 lets "
     "Transfer-Encoding win)", "RFC 9112 §6.3 (3), §11.2 (request smuggling)",
     lambda h: bool(_field(h, "content-length")) and bool(_field(h, "transfer-encoding")),
     "reject", {"h11"}),
    ("te-empty-element", "empty elements of the Transfer-Encoding list (an empty field line, "
     "',chunked') are ignored", "RFC 9110 §5.6.1 (MUST parse and ignore empty list elements)",
     lambda h: any(not v.strip(" \t") or re.search(r"(^|,)[ \t]*(,|$)", v)
                   for v in _field(h, "transfer-encoding")), None, {"h11", "llhttp"}),
    ("te-http10", "Transfer-Encoding in an HTTP/1.0 request is refused", "RFC 9112 §6.1",
     lambda h: bool(_field(h, "transfer-encoding")) and _version(h) == "HTTP/1.0", "reject",
     {"h11", "llhttp"}),
    ("expect", "an Expect other than 100-continue is a 417", "RFC 9110 §10.1.1",
     lambda h: any(v.lower() != "100-continue" for v in _field(h, "expect")), "reject",
     {"h11", "llhttp"}),
    ("ctl-in-value", "DEL and control characters other than HTAB in a field value are refused",
     "RFC 9110 §5.5", lambda h: any(re.search(r"[\x00-\x08\x0a-\x1f\x7f]", ln.partition(":")[2])
                                    for ln in _fields(h)), "reject", {"h11", "llhttp"}),
    ("request-line-sp", "the request line has exactly one SP between its three parts",
     "RFC 9112 §3 (a recipient MAY split on other whitespace; we do not)",
     lambda h: _rl(h) is None or _rl(h)[1] != " " or _rl(h)[3] != " ", "reject",
     {"h11", "llhttp"}),
    # theirs --------------------------------------------------------------------------------------
    ("huge-content-length", "a Content-Length of 20 digits or more is taken as the number it is "
     "(Python ints do not overflow; limit_request_body bounds it); h11 and llhttp refuse past "
     "their integer width", "RFC 9110 §8.6 (guard against overflow)",
     lambda h: any(re.fullmatch(r"[0-9]{20,}", v) for v in _field(h, "content-length")),
     None, {"h11", "llhttp"}),
    ("no-host", "an HTTP/1.1 request without Host is accepted (as gunicorn, and the shared corpus "
     "has such valid requests); h11 refuses it", "RFC 9112 §3.2 (MUST 400; deliberately not)",
     lambda h: _version(h) == "HTTP/1.1" and not _field(h, "host"), None, {"h11"}),
    ("llhttp-methods", "llhttp knows a fixed list of methods and refuses any other token",
     "RFC 9110 §9.1 (method = token)", lambda h: _method(h) not in LLHTTP_METHODS, None,
     {"llhttp"}),
]
DELIBERATE.append(
    ("leading-crlf", "one empty line before the request line is ignored; h11 refuses it",
     "RFC 9112 §2.2 (SHOULD ignore at least one)", lambda h: h.startswith(b"\r\n"), None,
     {"h11"}))
DELIBERATE.append(
    ("h11-te", "h11 takes no transfer coding but chunked alone; we pass gzip/deflate/compress "
     "through before chunked (as gunicorn)", "RFC 9112 §6.1",
     lambda h: any(v.lower() != "chunked" for v in _field(h, "transfer-encoding")), None,
     {"h11"}))
RULES = {r[0]: r for r in DELIBERATE}


def explain(head, ours, others):
    """(unexplained disagreements, rule violations of ours) for one head."""
    applicable = [r for r in DELIBERATE if r[3](head)]
    wrong = [r[0] for r in applicable if r[4] is not None and r[4] != ours]
    unexplained = []
    for name, decision in others.items():
        if decision == ours:
            continue
        if not any(name in r[5] for r in applicable):
            unexplained.append(name)
    return unexplained, wrong


def decide_all(head):
    return decide_ours(head), {"h11": decide_h11(head), "llhttp": decide_llhttp(head)}


# --- the tests ----------------------------------------------------------------------------------
@seed(20261127)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(heads())
def test_no_unclassified_disagreement(head):
    ours, others = decide_all(head)
    unexplained, wrong = explain(head, ours, others)
    assert not wrong, f"{head!r}: we {ours}, but rules {wrong} say otherwise"
    assert not unexplained, (f"{head!r}: we {ours}, {others}: disagreement with {unexplained} "
                             "that no rule in DELIBERATE explains")


# One head per rule, so every rule is exercised and still describes a real difference.
EXAMPLES_BY_RULE = {
    "bare-lf-cr": b"GET / HTTP/1.1\nHost: h\n\n",
    "major-version": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "minor-version": b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    "method-conventional": b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    "asterisk-form": b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    "authority-form": b"GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
    "target-form": b"GET a HTTP/1.1\r\nHost: h\r\n\r\n",
    "several-content-length": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 0\r\n\r\n",
    "host-invalid": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "content-type-repeat": b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
    "te-codings": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x, chunked\r\n\r\n",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-empty-element": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "expect": b"GET / HTTP/1.1\r\nHost: h\r\nExpect: x\r\n\r\n",
    "ctl-in-value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
    "request-line-sp": b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    "huge-content-length": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1111111111111111111111111\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "llhttp-methods": b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n",
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "h11-te": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
}


def test_every_rule_has_an_example():
    assert set(EXAMPLES_BY_RULE) == set(RULES)


@pytest.mark.parametrize("rule", sorted(EXAMPLES_BY_RULE))
def test_rule_example(rule):
    head = EXAMPLES_BY_RULE[rule]
    name, what, rfc, applies, decision, parsers = RULES[rule]
    assert applies(head)
    ours, others = decide_all(head)
    if decision is not None:
        assert ours == decision, (head, ours)
    assert not explain(head, ours, others)[1]
    # the rule is there because at least one of the parsers it names decides differently
    assert any(others[p] != ours for p in parsers), (rule, head, ours, others)


def test_agreement_on_plain_requests():
    for head in (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                 b"POST /a?b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
                 b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"):
        ours, others = decide_all(head)
        assert not explain(head, ours, others)[0], (head, ours, others)
