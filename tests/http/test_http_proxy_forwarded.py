"""PROXY protocol v1/v2 through the parser; allow lists and scheme headers (forwarded.py)."""
import socket
import struct

import pytest

from http_harness import feed
from unicornd.http import errors
from unicornd.http.forwarded import (DEFAULT_SECURE_SCHEME_HEADERS, AddressList,
                                     scheme_from_headers)
from unicornd.http.parser import ParserOptions, RequestParser
from unicornd.http.proxy import PROXY_V2_SIGNATURE, ProxyInfo

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def v2(command=1, family=1, proto=1, addrs=b"", tlvs=b"", version=2):
    block = addrs + tlvs
    return (PROXY_V2_SIGNATURE + bytes([(version << 4) | command, (family << 4) | proto])
            + struct.pack(">H", len(block)) + block)


def v4(src, dst, sport, dport):
    return socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst) + \
        struct.pack(">HH", sport, dport)


def v6(src, dst, sport, dport):
    return socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + \
        struct.pack(">HH", sport, dport)


def parse(data, mode="auto", allowed=True, pieces=None):
    out = feed(pieces or [data], ParserOptions(proxy_protocol=mode), proxy_allowed=allowed)
    return out


@pytest.mark.parametrize("header, info", [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
     ProxyInfo(1, "TCP4", "192.0.2.1", 56324, "198.51.100.2", 443)),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
     ProxyInfo(1, "TCP6", "2001:db8::1", 1, "2001:db8::2", 65535)),
    (b"PROXY UNKNOWN\r\n", ProxyInfo(1, "UNKNOWN")),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyInfo(1, "UNKNOWN")),
    (v2(addrs=v4("10.0.0.1", "10.0.0.2", 1000, 80)),
     ProxyInfo(2, "TCP4", "10.0.0.1", 1000, "10.0.0.2", 80)),
    (v2(family=2, addrs=v6("::1", "2001:db8::9", 5, 6), tlvs=b"\x04\x00\x01X"),
     ProxyInfo(2, "TCP6", "::1", 5, "2001:db8::9", 6, b"\x04\x00\x01X")),
    (v2(command=0, family=0, proto=0), ProxyInfo(2, "LOCAL")),
    (v2(command=0, family=1, addrs=v4("1.1.1.1", "2.2.2.2", 1, 2)), ProxyInfo(2, "LOCAL")),
    (v2(family=0, proto=0), ProxyInfo(2, "UNSPEC")),
])
def test_proxy_header_accepted(header, info):
    for pieces in ([header + GET + GET], [bytes([b]) for b in header + GET + GET]):
        out = parse(None, pieces=pieces)
        assert out.error is None, out.error
        assert len(out.messages) == 2
        # the connection's PROXY info is on every request of the connection
        assert all(m.request.proxy == info for m in out.messages)
        assert out.parser.proxy == info


@pytest.mark.parametrize("mode", ["auto", "v1", "v2"])
def test_proxy_header_is_optional(mode):
    out = parse(GET, mode)
    assert out.error is None and out.messages[0].request.proxy is None


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", v2(addrs=v4("1.1.1.1", "2.2.2.2", 1, 2)),
])
def test_proxy_header_from_a_peer_not_allowed(header):
    out = parse(header + GET, allowed=False)
    assert type(out.error) is errors.ForbiddenProxyRequest and out.error.status == 403


def test_mode_selects_the_version():
    # v1 mode does not know the v2 signature: those bytes are then a (bad) request
    out = parse(v2(addrs=v4("1.1.1.1", "2.2.2.2", 1, 2)) + GET, mode="v1")
    assert out.error is not None and out.error.status == 400
    out = parse(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n" + GET, mode="v2")
    assert out.error is not None and out.error.status == 400
    # off: no PROXY header is looked for, even from allowed peers
    out = parse(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n" + GET, mode="off")
    assert out.error is not None and out.error.status == 400


def test_proxy_header_only_first_on_the_connection():
    out = parse(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n" + GET + b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n")
    assert len(out.messages) == 1 and type(out.error) is errors.InvalidRequestLine


@pytest.mark.parametrize("header, error", [
    (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 65536\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP4 ::1 ::2 1 2\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP6 1.1.1.1 2.2.2.2 1 2\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP4 1.1.1.01 2.2.2.2 1 2\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP4  1.1.1.1 2.2.2.2 1 2\r\n", errors.InvalidProxyLine),
    (b"PROXY UDP4 1.1.1.1 2.2.2.2 1 2\r\n", errors.InvalidProxyLine),
    (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\n", errors.InvalidProxyLine),
    (b"PROXY " + b"x" * 120, errors.InvalidProxyLine),
    (v2(version=1), errors.InvalidProxyHeader),
    (v2(command=2), errors.InvalidProxyHeader),
    (v2(proto=2, addrs=v4("1.1.1.1", "2.2.2.2", 1, 2)), errors.InvalidProxyHeader),
    (v2(family=3, addrs=b"\x00" * 216), errors.InvalidProxyHeader),
    (v2(addrs=b"\x01\x02\x03"), errors.InvalidProxyHeader),
    (v2(family=2, addrs=v4("1.1.1.1", "2.2.2.2", 1, 2)), errors.InvalidProxyHeader),
])
def test_proxy_header_refused(header, error):
    out = parse(header + GET)
    assert type(out.error) is error and out.error.status == 400


@pytest.mark.parametrize("data", [b"PROX", b"\r\n\r\n\x00", b"PROXY TCP4 1.1", v2()[:14],
                                  v2(addrs=v4("1.1.1.1", "2.2.2.2", 1, 2))[:20]])
def test_eof_in_proxy_header(data):
    out = parse(data)
    assert type(out.error) is errors.NoMoreData


def test_empty_connection_with_proxy_protocol_is_closed_cleanly():
    p = RequestParser(ParserOptions(proxy_protocol="auto"))
    p.receive_data(b"")
    assert repr(p.next_event()) == "CLOSED"


# --- allow lists --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, peer, allowed", [
    ("127.0.0.1,::1", ("127.0.0.1", 5000), True),
    ("127.0.0.1,::1", ("::1", 5000, 0, 0), True),
    ("127.0.0.1,::1", ("10.1.2.3", 5000), False),
    ("127.0.0.1,::1", ("::ffff:127.0.0.1", 5000, 0, 0), True),
    ("127.0.0.1, 10.0.0.0/8", ("10.200.0.1", 1), True),
    ("10.0.0.0/8", ("11.0.0.1", 1), False),
    ("2001:db8::/32", ("2001:db8:1::5", 1, 0, 0), True),
    ("2001:db8::/32", ("10.0.0.1", 1), False),
    (["192.168.0.0/16", "172.16.0.0/12"], ("172.20.1.1", 1), True),
    ("*", ("203.0.113.9", 1), True),
    ("", ("127.0.0.1", 1), False),
    ("127.0.0.1", ("not-an-ip", 1), False),
    ("127.0.0.1", "", True),           # unix socket peers are trusted, as in gunicorn 27
    ("127.0.0.1", b"", True),
    ("127.0.0.1", "/run/app.sock", True),
    ("127.0.0.1", None, True),
])
def test_address_list(spec, peer, allowed):
    lst = AddressList(spec)
    assert lst.allows(peer) is allowed
    assert lst.allows(peer) is allowed      # cached answer is the same


@pytest.mark.parametrize("spec", ["192.168.1.1/24", "300.1.1.1", "localhost"])
def test_address_list_refuses_bad_entries(spec):
    with pytest.raises(ValueError):
        AddressList(spec)


# --- scheme headers -----------------------------------------------------------------------------
@pytest.mark.parametrize("headers, scheme", [
    ([], None),
    ([("HOST", "a")], None),
    ([("X-FORWARDED-PROTO", "https")], "https"),
    ([("X-FORWARDED-PROTO", "http")], "http"),
    ([("X-FORWARDED-PROTO", "HTTPS")], "http"),        # exact values, as gunicorn compares
    ([("X-FORWARDED-SSL", "on"), ("X-FORWARDED-PROTO", "https")], "https"),
    ([("X-FORWARDED-PROTOCOL", "ssl")], "https"),
    ([("X-FORWARDED-SSL", "off"), ("X-FORWARDED-PROTO", "http")], "http"),
])
def test_scheme_from_headers(headers, scheme):
    assert scheme_from_headers(headers, DEFAULT_SECURE_SCHEME_HEADERS) == scheme


@pytest.mark.parametrize("headers", [
    [("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "off")],
    [("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-PROTO", "http")],
])
def test_contradicting_scheme_headers(headers):
    with pytest.raises(errors.InvalidSchemeHeaders) as info:
        scheme_from_headers(headers, DEFAULT_SECURE_SCHEME_HEADERS)
    assert info.value.status == 400


def test_scheme_headers_mapping_names_any_case():
    assert scheme_from_headers([("X-SCHEME", "https")], {"x-scheme": "https"}) == "https"
    assert scheme_from_headers([("X-FORWARDED-PROTO", "https")], {}) is None
