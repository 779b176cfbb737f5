"""parse_bind: the syntax of one bind entry, as the master reads cfg.bind."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unicornd.config import BindAddress, parse_bind
from unicornd.config.errors import Invalid

EXPECTED = "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"

GOOD = [
    ("127.0.0.1:8000", BindAddress("tcp", host="127.0.0.1", port=8000)),
    ("0.0.0.0:0", BindAddress("tcp", host="0.0.0.0", port=0)),
    ("localhost:65535", BindAddress("tcp", host="localhost", port=65535)),
    ("LocalHost", BindAddress("tcp", host="localhost", port=8000)),
    ("127.0.0.1", BindAddress("tcp", host="127.0.0.1", port=8000)),
    ("example.com:80", BindAddress("tcp", host="example.com", port=80)),
    ("my_container:5000", BindAddress("tcp", host="my_container", port=5000)),
    (":9000", BindAddress("tcp", host="0.0.0.0", port=9000)),
    ("  10.1.2.3:81  ", BindAddress("tcp", host="10.1.2.3", port=81)),
    ("tcp://127.0.0.1:5000", BindAddress("tcp", host="127.0.0.1", port=5000)),
    ("[::1]:8000", BindAddress("tcp", host="::1", port=8000)),
    ("[::]:80", BindAddress("tcp", host="::", port=80)),
    ("[::1]", BindAddress("tcp", host="::1", port=8000)),
    ("[FE80::1%eth0]:80", BindAddress("tcp", host="fe80::1%eth0", port=80)),
    ("[2001:db8::1]:443", BindAddress("tcp", host="2001:db8::1", port=443)),
    ("unix:/run/app.sock", BindAddress("unix", path="/run/app.sock")),
    ("unix:app.sock", BindAddress("unix", path="app.sock")),
    ("unix:///run/app.sock", BindAddress("unix", path="/run/app.sock")),
    ("fd://3", BindAddress("fd", fd=3)),
    ("fd://0", BindAddress("fd", fd=0)),
]


@pytest.mark.parametrize("text,expected", GOOD, ids=[g[0] for g in GOOD])
def test_good(text, expected):
    assert parse_bind(text) == expected


BAD = [
    ("", f"empty address; {EXPECTED}"),
    ("   ", f"empty address; {EXPECTED}"),
    ("127.0.0.1:", f"port '' is not a number; {EXPECTED}"),
    ("127.0.0.1:http", f"port 'http' is not a number; {EXPECTED}"),
    ("127.0.0.1:-1", f"port '-1' is not a number; {EXPECTED}"),
    ("127.0.0.1:65536", "port 65536 is out of range 0..65535"),
    ("127.0.0.1:٣", f"port '٣' is not a number; {EXPECTED}"),
    ("::1", f"an IPv6 address must be in brackets, as in [::1]:8000; {EXPECTED}"),
    ("::1:80", f"an IPv6 address must be in brackets, as in [::1]:8000; {EXPECTED}"),
    ("[::1:80", f"missing ']' after an IPv6 address; {EXPECTED}"),
    ("[nothex]:80", f"'nothex' is not an IPv6 address; {EXPECTED}"),
    ("[127.0.0.1]:80", f"'127.0.0.1' is not an IPv6 address; {EXPECTED}"),
    ("[::1]80", EXPECTED),
    ("[::1]:x", f"port 'x' is not a number; {EXPECTED}"),
    ("999.0.0.1:80", f"'999.0.0.1' is not an IPv4 address; {EXPECTED}"),
    ("bad host:80", f"'bad host' is not a host name or IP address; {EXPECTED}"),
    ("-bad:80", f"'-bad' is not a host name or IP address; {EXPECTED}"),
    ("*:80", f"'*' is not a host name or IP address; {EXPECTED}"),
    ("http://host:80", f"unknown address scheme 'http://'; {EXPECTED}"),
    ("unix:", f"unix: needs a socket path; {EXPECTED}"),
    ("unix://", f"unix: needs a socket path; {EXPECTED}"),
    ("fd://", f"'' is not a file descriptor number; {EXPECTED}"),
    ("fd://-1", f"'-1' is not a file descriptor number; {EXPECTED}"),
    ("fd://three", f"'three' is not a file descriptor number; {EXPECTED}"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[b[0] or "empty" for b in BAD])
def test_bad(text, message):
    with pytest.raises(Invalid) as err:
        parse_bind(text)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


def test_not_a_string():
    with pytest.raises(Invalid):
        parse_bind(8000)


@pytest.mark.parametrize("address,text", [
    (BindAddress("tcp", host="127.0.0.1", port=80), "127.0.0.1:80"),
    (BindAddress("tcp", host="::1", port=80), "[::1]:80"),
    (BindAddress("unix", path="/x.sock"), "unix:/x.sock"),
    (BindAddress("fd", fd=4), "fd://4"),
])
def test_str_is_the_canonical_form(address, text):
    assert str(address) == text


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(st.one_of(
    st.builds(lambda h, p: BindAddress("tcp", host=h, port=p), ipv4, ports),
    st.builds(lambda h, p: BindAddress("tcp", host=h, port=p), ipv6, ports),
    st.builds(lambda p: BindAddress("unix", path=p),
              st.text(min_size=1).filter(lambda p: p.strip() == p and not p.startswith("//"))),
    st.builds(lambda fd: BindAddress("fd", fd=fd), st.integers(0, 2**31)),
))
def test_round_trip(address):
    assert parse_bind(str(address)) == address


@given(st.text())
def test_never_raises_anything_but_invalid(text):
    try:
        parse_bind(text)
    except Invalid:
        pass
