"""The WSGI environ (unicornd.wsgi.EnvironBuilder), without sockets.

build() takes a shortcut for the common head (every field name's key known, no two names on one
key, no SCRIPT_NAME field, no scheme header to read); these tests hold it to the environ PEP 3333
asks for, spelled out here field by field, for generated heads.
"""
import os
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from unicornd import wsgi
from unicornd.http import errors
from unicornd.http.forwarded import scheme_from_headers
from unicornd.http.parser import Request

SETTINGS = settings(max_examples=int(os.environ.get("UNICORND_HYPOTHESIS_EXAMPLES", "300")),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECURE = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}


def builder(listener=("127.0.0.1", 8000), secure=SECURE, one_request=False):
    cfg = SimpleNamespace(secure_scheme_headers=secure, workers=2)
    return wsgi.EnvironBuilder(cfg, None, listener, one_request=one_request)


def request(headers, path="/a%20b", query="x=1", version=(1, 1), proxy=None):
    return Request(("GET", path + ("?" + query if query else ""), path, query, "", version),
                   (None, False, True, False, False), list(headers), proxy)


def expected(b, req, peer, sock, trusted):
    """The environ field by field, as PEP 3333 and gunicorn spell it (the careful way)."""
    env = dict(b.base)
    env.update(REQUEST_METHOD=req.method, RAW_URI=req.target, QUERY_STRING=req.query,
               SERVER_PROTOCOL="HTTP/%d.%d" % req.version)
    env["wsgi.input"] = None
    env["unicornd.socket"] = env["gunicorn.socket"] = sock
    script_name = b.script_name
    host = None
    secure = b.secure_scheme_headers if trusted else {}
    for name, value in req.headers:
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT-LENGTH":
            env["CONTENT_LENGTH"] = value
            continue
        if name == "HOST":
            host = value
        elif name == "SCRIPT_NAME":
            script_name = env["SCRIPT_NAME"] = value
        key = "HTTP_" + name.replace("-", "_")
        env[key] = value if key not in env else env[key] + "," + value
    if secure and any(name in secure for name, _ in req.headers):
        scheme = scheme_from_headers(req.headers, secure)
        if scheme:
            env["wsgi.url_scheme"] = scheme
    if isinstance(peer, tuple):
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = peer[0], str(peer[1])
    else:
        env["REMOTE_ADDR"] = peer or ""
    if b.unix and host:
        name, _, port = host.partition(":")
        env["SERVER_NAME"] = name
        env["SERVER_PORT"] = port or ("443" if env["wsgi.url_scheme"] == "https" else "80")
    if req.proxy is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = req.proxy.src_addr, str(req.proxy.src_port)
    path = req.path
    if script_name and path.startswith(script_name):
        path = path[len(script_name):]
    env["PATH_INFO"] = wsgi._path_to_wsgi(path)
    return env


def outcome(make):
    try:
        return make()
    except errors.HTTPError as exc:
        return type(exc), str(exc)


NAMES = st.sampled_from(["HOST", "USER-AGENT", "ACCEPT", "X-A", "X_A", "CONTENT-TYPE",
                         "CONTENT-LENGTH", "CONTENT_TYPE", "SCRIPT_NAME", "SCRIPT-NAME", "COOKIE",
                         "X-FORWARDED-PROTO", "X_FORWARDED_PROTO", "X-FORWARDED-SSL"])
VALUES = st.sampled_from(["a", "https", "http", "on", "ssl", "example.org:81", "/app", "", "1"])
FIELDS = st.lists(st.tuples(st.one_of(NAMES, st.text("ABCXYZ-_", min_size=1, max_size=6)), VALUES),
                  max_size=6)


@SETTINGS
@given(headers=FIELDS, trusted=st.booleans(), unix=st.booleans(),
       version=st.sampled_from([(1, 0), (1, 1), (1, 2)]),
       proxy=st.sampled_from([None, SimpleNamespace(src_addr="10.0.0.9", src_port=4444)]))
def test_environ_is_the_one_pep_3333_spells(headers, trusted, unix, version, proxy):
    b = builder("/tmp/x.sock" if unix else ("127.0.0.1", 8000))
    peer = "" if unix else ("10.1.2.3", 5555)
    sock = object()
    req = request(headers, version=version, proxy=proxy)
    base = b.connection_base(peer, sock)
    for _ in range(2):  # names seen once are looked up, not made, the second time
        got = outcome(lambda: b.build(req, None, base, trusted))
        assert got == outcome(lambda: expected(b, req, peer, sock, trusted))
    # a request never changes its connection's dict
    assert base.environ == b.connection_base(peer, sock).environ


@SETTINGS
@given(headers=FIELDS, trusted=st.booleans(), unix=st.booleans(),
       proxy=st.sampled_from([None, SimpleNamespace(src_addr="10.0.0.9", src_port=4444)]),
       peer_kind=st.sampled_from(["tcp", "unix", "bytes"]))
def test_a_one_request_connection_gets_the_environ_pep_3333_spells(headers, trusted, unix, proxy,
                                                                   peer_kind):
    # (no keep-alive: the environ is made from the listener's base in one copy, the
    # connection's dict never made; a second request on it, if one came, is served alike)
    listener = "/tmp/x.sock" if unix else ("127.0.0.1", 8000)
    b = builder(listener, one_request=True)
    peer = {"tcp": ("10.1.2.3", 5555), "unix": "", "bytes": b"/tmp/peer"}[peer_kind]
    sock = object()
    req = request(headers, proxy=proxy)
    base = b.connection_base(peer, sock)
    want_peer = peer.decode() if isinstance(peer, bytes) else peer
    for _ in range(2):
        got = outcome(lambda: b.build(req, None, base, trusted))
        assert got == outcome(lambda: expected(b, req, want_peer, sock, trusted))
    assert base.environ == builder(listener).connection_base(peer, sock).environ


@SETTINGS
@given(first=FIELDS, second=FIELDS, trusted=st.sampled_from([(True, True), (True, False),
                                                             (False, True)]),
       unix=st.booleans(), again=st.booleans())
def test_a_connection_that_repeats_its_fields_gets_the_environ_it_got(first, second, trusted,
                                                                       unix, again):
    # The part of the environ the fields made is kept for the next request on the connection:
    # each request's environ is still the one PEP 3333 spells, whatever came before it.
    b = builder("/tmp/x.sock" if unix else ("127.0.0.1", 8000))
    peer = "" if unix else ("10.1.2.3", 5555)
    base = b.connection_base(peer, None)
    reqs = [request(first), request(first if again else second, path="/b", query="")]
    for req, trust in zip(reqs, trusted):
        got = outcome(lambda: b.build(req, None, base, trust))
        assert got == outcome(lambda: expected(b, req, peer, None, trust))


def test_the_kept_fields_are_not_the_request_s_list():
    b = builder()
    base = b.connection_base(("10.1.2.3", 5555), None)
    req = request([("HOST", "h"), ("X-A", "1")])
    assert b.build(req, None, base, True)["HTTP_X_A"] == "1"
    req.headers[1] = ("X-A", "2")  # (a hook may change the request's list)
    assert b.build(req, None, base, True)["HTTP_X_A"] == "2"
    env = b.build(request([("HOST", "h"), ("X-A", "2")]), None, base, True)
    env["HTTP_X_A"] = "changed by the app"
    assert b.build(request([("HOST", "h"), ("X-A", "2")]), None, base, True)["HTTP_X_A"] == "2"


def test_repeated_fields_combine_and_scheme_headers_are_read_only_when_trusted():
    b = builder()
    req = request([("HOST", "h"), ("X-A", "1"), ("X-A", "2"), ("X-FORWARDED-PROTO", "https")])
    base = b.connection_base(("10.1.2.3", 5555), None)
    trusted = b.build(req, None, base, True)
    assert trusted["HTTP_X_A"] == "1,2" and trusted["wsgi.url_scheme"] == "https"
    assert b.build(req, None, base, False)["wsgi.url_scheme"] == "http"


def test_plain_head_fills_the_environ():
    b = builder()
    req = request([("HOST", "h:1"), ("CONTENT-TYPE", "text/plain"), ("USER-AGENT", "t")])
    env = b.build(req, None, b.connection_base(("10.1.2.3", 5555), None), True)
    assert env["HTTP_HOST"] == "h:1" and env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_TYPE" not in env and env["PATH_INFO"] == "/a b"
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["REMOTE_PORT"] == "5555"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["QUERY_STRING"] == "x=1"


@pytest.mark.parametrize("name", ["SCRIPT_NAME", "SCRIPT-NAME"])
def test_only_a_script_name_field_with_underscore_sets_script_name(name):
    b = builder()
    req = request([(name, "/a")], path="/a/b")
    env = b.build(req, None, b.connection_base(("10.1.2.3", 5555), None), True)
    assert env["HTTP_SCRIPT_NAME"] == "/a"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (
        ("/a", "/b") if name == "SCRIPT_NAME" else (b.script_name, "/a/b"))
