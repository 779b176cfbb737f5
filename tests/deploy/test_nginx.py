"""unicornd behind nginx: the examples in examples/nginx/ as written, forwarded headers and who is
trusted to send them, header_map, PROXY protocol v1/v2, and rolling upgrades of several instances
behind one nginx under load. Real nginx and real unicornd, started here; see conftest.py.
"""

import configparser
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_support import (EXAMPLES, HostLoad, alive, example_copy, example_listen, example_socket,
                            example_upstreams, free_port, http_get, unix_request)
from support import APPS, REPO, children, parse_response, raw_request, wait_for

pytestmark = pytest.mark.timeout(120)

NGINX_ADDRESS = example_listen("unicornd.conf")
HOST = f"example.com:{NGINX_ADDRESS[1]}"


def seen(reply):
    """What the echo app saw, from a (status, headers, body) reply."""
    assert reply is not None, "no response"
    status, _, body = reply
    assert status == 200, reply
    data = json.loads(body)
    if "headers" in data:
        data["headers"] = dict(data["headers"])
    return data


# -- the examples as nginx reads them ------------------------------------------------------------

@pytest.mark.parametrize("name", ["unicornd.conf", "upstream.conf"])
def test_example_passes_nginx_t_without_warnings(nginx_factory, name):
    nginx = nginx_factory(include=EXAMPLES / name)
    result = nginx.check()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "syntax is ok" in out and "test is successful" in out, out
    assert "[warn]" not in out and "[emerg]" not in out, out


def test_nginx_proxies_to_the_socket_of_the_systemd_example():
    units = REPO / "examples" / "systemd" / "unicornd.socket"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(units)
    assert Path(parser["Socket"]["ListenStream"]) == example_socket()


# -- through unicornd.conf, over the unix socket ---------------------------------------------------

@pytest.fixture
def behind_nginx(fixed_addresses, nginx_factory, unicornd_factory, tmp_path, example_sock):
    """unicornd on ``example_sock``, nginx with the example proxying to it (plus optional test-only
    servers).

    Returns start(*unicornd_args, http="", extra_addresses=(), unicornd=True) -> (server, nginx);
    the app records its calls in ``tmp_path / "calls"``.
    """
    def start(*args, http="", extra_addresses=(), unicornd=True):
        srv = unicornd_factory("-w", "2", *args, unix=example_sock,
                               env={"TESTAPP_CALLS": str(tmp_path / "calls")}) if unicornd else None
        nginx = nginx_factory(include=example_copy("unicornd.conf", example_sock.parent, example_sock),
                              http=http)
        nginx.start(NGINX_ADDRESS, *extra_addresses)
        return srv, nginx
    return start


def calls(tmp_path):
    path = tmp_path / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line != "GET /__ping"]  # the start-up probe


def test_the_app_sees_the_client_host_and_scheme_through_nginx(behind_nginx, tmp_path):
    srv, nginx = behind_nginx()
    data = seen(http_get(NGINX_ADDRESS, "/some/path?q=1", host=HOST))
    assert data["raw_uri"] == "/some/path?q=1" and data["path_info"] == "/some/path"
    assert data["url_scheme"] == "http"
    assert data["headers"]["HOST"] == HOST
    assert (data["server_name"], data["server_port"]) == ("example.com", str(NGINX_ADDRESS[1]))
    # The socket peer of a unix socket has no address: REMOTE_ADDR is empty, as in gunicorn;
    # the client's address is in X-Forwarded-For, which nginx sets.
    assert data["remote_addr"] == ""
    assert data["headers"]["X-FORWARDED-FOR"] == "127.0.0.1"
    assert data["headers"]["X-FORWARDED-PROTO"] == "http"
    # proxy_redirect off + Host: the app's own redirect names the URL the client used.
    status, headers, _ = http_get(NGINX_ADDRESS, "/redirect", host=HOST)
    assert (status, headers["location"]) == (302, f"http://{HOST}/target")


def test_a_client_cannot_forge_the_scheme_through_nginx(behind_nginx):
    srv, nginx = behind_nginx()
    data = seen(http_get(NGINX_ADDRESS, "/", host=HOST, headers=[
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on"), ("X-Forwarded-Protocol", "ssl"),
        ("X-Forwarded-For", "203.0.113.9")]))
    # nginx is trusted (unix socket) but it replaced or dropped every scheme header.
    assert data["url_scheme"] == "http"
    assert data["headers"]["X-FORWARDED-PROTO"] == "http"
    assert "X-FORWARDED-SSL" not in data["headers"] and "X-FORWARDED-PROTOCOL" not in data["headers"]
    # $proxy_add_x_forwarded_for appends: the last address is the one nginx saw.
    assert data["headers"]["X-FORWARDED-FOR"] == "203.0.113.9, 127.0.0.1"


def test_a_host_that_is_not_ours_never_reaches_the_app(behind_nginx, tmp_path):
    srv, nginx = behind_nginx()
    assert seen(http_get(NGINX_ADDRESS, "/mine", host=HOST))["path_info"] == "/mine"
    assert http_get(NGINX_ADDRESS, "/theirs", host="evil.test") is None  # 444: closed, no answer
    assert calls(tmp_path)[-1] == "GET /mine" and not any("/theirs" in c for c in calls(tmp_path))


def test_https_when_the_front_server_says_so(behind_nginx):
    # The TLS server block of a real deployment sends X-Forwarded-Proto $scheme = "https"; this
    # test-only server says it outright, to the example's upstream.
    port = free_port()
    srv, nginx = behind_nginx(http=f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://unicornd_app;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_redirect off;
        }}
    }}""", extra_addresses=[("127.0.0.1", port)])
    data = seen(http_get(("127.0.0.1", port), "/", host="example.com"))
    assert data["url_scheme"] == "https"
    assert (data["server_name"], data["server_port"]) == ("example.com", "443")
    status, headers, _ = http_get(("127.0.0.1", port), "/redirect", host="example.com")
    assert headers["location"] == "https://example.com/target"


def test_script_name_set_by_nginx_mounts_the_app_under_a_prefix(behind_nginx):
    port = free_port()
    mount = f"""
    server {{
        listen 127.0.0.1:{port};
        location /app/ {{
            proxy_pass http://unicornd_app;
            proxy_set_header Host $http_host;
            proxy_set_header SCRIPT_NAME /app;
            proxy_redirect off;
        }}
    }}"""
    srv, nginx = behind_nginx(http=mount, extra_addresses=[("127.0.0.1", port)])
    data = seen(http_get(("127.0.0.1", port), "/app/x", host="example.com"))
    assert (data["script_name"], data["path_info"]) == ("/app", "/x")
    status, headers, _ = http_get(("127.0.0.1", port), "/app/redirect", host="example.com")
    assert headers["location"] == "http://example.com/app/target"
    # A client cannot do the same through the example: nginx drops header names with "_".
    data = seen(http_get(NGINX_ADDRESS, "/app/x", host=HOST, headers=[("SCRIPT_NAME", "/app")]))
    assert (data["script_name"], data["path_info"]) == ("", "/app/x")


def test_forwarder_headers_decides_which_environ_keys_nginx_may_set(behind_nginx):
    port = free_port()
    srv, nginx = behind_nginx("--forwarder-headers", "PATH_INFO", http=f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://unicornd_app;
            proxy_set_header SCRIPT_NAME /app;
        }}
    }}""", extra_addresses=[("127.0.0.1", port)])
    data = seen(http_get(("127.0.0.1", port), "/app/x", host="example.com"))
    # SCRIPT_NAME is not in forwarder_headers any more: header_map (drop) applies to it.
    assert (data["script_name"], data["path_info"]) == ("", "/app/x")
    assert "SCRIPT-NAME" not in data["headers"]


# -- header_map through nginx --------------------------------------------------------------------

UNDERSCORES_ON = """
    server {{
        listen 127.0.0.1:{port};
        underscores_in_headers on;
        location / {{
            proxy_pass http://unicornd_app;
            proxy_set_header Host $http_host;
        }}
    }}"""


def test_nginx_drops_underscore_headers_before_unicornd_sees_them(behind_nginx):
    # Even with header_map = dangerous, which would pass them: they never arrive.
    srv, nginx = behind_nginx("--header-map", "dangerous")
    data = seen(http_get(NGINX_ADDRESS, "/", host=HOST, headers=[("X-Auth_User", "mallory"),
                                                                 ("X-Auth-User", "alice")]))
    assert data["headers"]["X-AUTH-USER"] == "alice"


@pytest.mark.parametrize("header_map, expect", [
    ("drop", "alice"),             # the default: the ambiguous field is dropped, the app sees one
    ("dangerous", "mallory,alice"),  # both become HTTP_X_AUTH_USER, joined: what drop prevents
    ("refuse", 400),
])
def test_header_map_when_nginx_passes_underscores(behind_nginx, header_map, expect):
    port = free_port()
    srv, nginx = behind_nginx("--header-map", header_map, http=UNDERSCORES_ON.format(port=port),
                              extra_addresses=[("127.0.0.1", port)])
    reply = http_get(("127.0.0.1", port), "/", host="example.com",
                     headers=[("X-Auth_User", "mallory"), ("X-Auth-User", "alice")])
    if expect == 400:
        assert reply[0] == 400  # unicornd's 400, passed on by nginx
    else:
        assert seen(reply)["headers"]["X-AUTH-USER"] == expect


def test_underscores_in_headers_on_lets_clients_set_forwarder_headers(behind_nginx):
    # Why the example keeps nginx's default: over the unix socket nginx is trusted, so a client's
    # SCRIPT_NAME that nginx passes on is believed.
    port = free_port()
    srv, nginx = behind_nginx(http=UNDERSCORES_ON.format(port=port), extra_addresses=[("127.0.0.1", port)])
    data = seen(http_get(("127.0.0.1", port), "/evil/x", host="example.com", headers=[("SCRIPT_NAME", "/evil")]))
    assert (data["script_name"], data["path_info"]) == ("/evil", "/x")


# -- forwarded_allow_ips over TCP ------------------------------------------------------------------

@pytest.mark.parametrize("allow, trusted", [
    ("127.0.0.1", True),
    ("::1,127.0.0.1", True),
    ("127.0.0.0/8", True),
    ("*", True),
    ("10.9.9.9", False),
    ("10.0.0.0/8,::1", False),
])
def test_forwarded_allow_ips_over_tcp(nginx_factory, unicornd_factory, allow, trusted):
    srv = unicornd_factory("-b", "127.0.0.1:0", "--forwarded-allow-ips", allow)
    port = free_port()
    nginx = nginx_factory(http=f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{srv.port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header SCRIPT_NAME /app;
        }}
    }}""").start(("127.0.0.1", port))
    data = seen(http_get(("127.0.0.1", port), "/app/x", host="example.com"))
    assert data["remote_addr"] == "127.0.0.1"  # nginx, the TCP peer
    assert data["url_scheme"] == ("https" if trusted else "http")
    assert data["script_name"] == ("/app" if trusted else "")
    assert data["path_info"] == ("/x" if trusted else "/app/x")
    # A client talking to unicornd directly is judged by the same list (it is 127.0.0.1 too).
    direct = seen(http_get(srv.address, "/", headers=[("X-Forwarded-Proto", "https")]))
    assert direct["url_scheme"] == ("https" if trusted else "http")


def test_secure_scheme_headers_from_a_config_file(nginx_factory, unicornd_factory, tmp_path):
    conf = tmp_path / "unicornd.conf.py"
    conf.write_text('secure_scheme_headers = {"X-Scheme": "https"}\n')
    srv = unicornd_factory("-c", str(conf), "-b", "127.0.0.1:0")
    port = free_port()
    nginx_factory(http=f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{srv.port};
            proxy_set_header X-Scheme https;
        }}
    }}""").start(("127.0.0.1", port))
    assert seen(http_get(("127.0.0.1", port), "/"))["url_scheme"] == "https"
    # X-Forwarded-Proto is no longer one of them: it says nothing now.
    direct = seen(http_get(srv.address, "/", headers=[("X-Forwarded-Proto", "https")]))
    assert direct["url_scheme"] == "http"


# -- PROXY protocol ------------------------------------------------------------------------------

def stream_proxy(nginx_factory, upstream_port):
    """nginx's stream proxy, sending a PROXY v1 header, in front of unicornd: its address."""
    port = free_port()
    nginx_factory(stream=f"""
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream_port};
        proxy_protocol on;
    }}""").start(("127.0.0.1", port))
    return "127.0.0.1", port


def get_from(address):
    """A GET on a socket of our own: (reply bytes, our socket's local port)."""
    with socket.create_connection(address, timeout=10) as s:
        local_port = s.getsockname()[1]
        s.sendall(b"GET /who HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), local_port


@pytest.mark.parametrize("mode", ["v1", "auto"])
def test_proxy_protocol_from_nginx_gives_the_client_address(nginx_factory, unicornd_factory, mode):
    srv = unicornd_factory("-b", "127.0.0.1:0", "--proxy-protocol", mode, "--proxy-allow-from", "127.0.0.1")
    front = stream_proxy(nginx_factory, srv.port)
    for _ in range(3):
        reply, client_port = get_from(front)
        data = seen(parse_response(reply))
        # nginx connects to unicornd from a port of its own; the app sees our socket's port.
        assert (data["remote_addr"], data["remote_port"]) == ("127.0.0.1", str(client_port))
    # Without a PROXY header (a direct client) the socket peer stands, as in gunicorn.
    reply, client_port = get_from(srv.address)
    assert seen(parse_response(reply))["remote_port"] == str(client_port)


def test_proxy_protocol_from_nginx_when_nginx_is_not_allowed_is_403(nginx_factory, unicornd_factory):
    srv = unicornd_factory("-b", "127.0.0.1:0", "--proxy-protocol", "v1", "--proxy-allow-from", "10.1.1.1")
    front = stream_proxy(nginx_factory, srv.port)
    reply, _ = get_from(front)
    assert parse_response(reply)[0] == 403


def test_proxy_v1_from_nginx_to_a_v2_only_server_is_400(nginx_factory, unicornd_factory):
    # nginx only ever sends v1: a server set to v2 reads "PROXY TCP4 ..." as a request line.
    srv = unicornd_factory("-b", "127.0.0.1:0", "--proxy-protocol", "v2")
    try:
        reply, _ = get_from(stream_proxy(nginx_factory, srv.port))
    except ConnectionResetError:
        # nginx may send its PROXY line before it has read our GET: unicornd answers 400 (and
        # half-closes) on that line alone, and nginx, seeing its upstream end, closes our
        # connection with our GET unread in it, which is a reset. The refusal is in the log.
        reply = None
    if reply is not None:
        assert parse_response(reply)[0] == 400
    srv.wait_log(r"Invalid request from ip=127\.0\.0\.1: .*PROXY")


REQUEST = b"GET /who HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(command=1, family=1, src="203.0.113.7", dst="127.0.0.1", sport=51234, dport=8000, tlvs=b""):
    af = socket.AF_INET if family == 1 else socket.AF_INET6
    addrs = b"" if command == 0 else (socket.inet_pton(af, src) + socket.inet_pton(af, dst)
                                      + struct.pack(">HH", sport, dport))
    block = addrs + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, (family << 4) | 1]) + struct.pack(">H", len(block)) + block


@pytest.fixture
def proxy_server(unicornd_factory, tmp_path):
    def start(mode="auto", allow="127.0.0.1"):
        return unicornd_factory("-b", "127.0.0.1:0", "--proxy-protocol", mode, "--proxy-allow-from", allow,
                                env={"TESTAPP_CALLS": str(tmp_path / "calls")})
    return start


@pytest.mark.parametrize("mode", ["v2", "auto"])
def test_proxy_v2_header_is_read(proxy_server, mode):
    srv = proxy_server(mode)
    data = seen(parse_response(raw_request(srv.address, v2_header() + REQUEST)))
    assert (data["remote_addr"], data["remote_port"]) == ("203.0.113.7", "51234")
    # IPv6 addresses, with a TLV after them (skipped).
    tlv = b"\x04" + struct.pack(">H", 3) + b"abc"  # PP2_TYPE_NOOP
    data = seen(parse_response(raw_request(srv.address, v2_header(family=2, src="2001:db8::7", dst="::1",
                                                                  sport=40000, dport=443, tlvs=tlv) + REQUEST)))
    assert (data["remote_addr"], data["remote_port"]) == ("2001:db8::7", "40000")
    # LOCAL (a health check by the proxy itself): the real peer stands.
    with socket.create_connection(srv.address, timeout=10) as s:
        s.sendall(v2_header(command=0) + REQUEST)
        reply = b"".join(iter(lambda: s.recv(65536), b""))
        assert seen(parse_response(reply))["remote_port"] == str(s.getsockname()[1])


def test_proxy_v1_header_sent_as_raw_bytes(proxy_server):
    srv = proxy_server("v1")
    reply = raw_request(srv.address, b"PROXY TCP4 198.51.100.4 127.0.0.1 4444 80\r\n" + REQUEST)
    assert (seen(parse_response(reply))["remote_addr"], seen(parse_response(reply))["remote_port"]) == \
        ("198.51.100.4", "4444")


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 198.51.100.4 127.0.0.1 99999 80\r\n",       # port out of range
    b"PROXY TCP4 198.51.100.400 127.0.0.1 4444 80\r\n",      # not an address
    b"PROXY TCP6 198.51.100.4 127.0.0.1 4444 80\r\n",        # family and address disagree
    b"PROXY TCP4 198.51.100.4 127.0.0.1 4444\r\n",           # a field missing
    b"PROXY TCP4 198.51.100.4 127.0.0.1 4444 80\n",          # bare LF
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",                   # longer than 107 bytes
    V2_SIGNATURE + b"\x21\x31\x00\x0c" + b"\x00" * 12,        # v2, unknown address family 3
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,        # v2, version 3
], ids=["port", "address", "family", "fields", "bare-lf", "long", "v2-family", "v2-version"])
def test_malformed_proxy_header_is_400_and_the_app_is_not_called(proxy_server, tmp_path, header):
    srv = proxy_server("auto")
    reply = raw_request(srv.address, header + REQUEST)
    status, headers, _ = parse_response(reply)
    assert status == 400 and headers.get("connection") == "close"
    assert calls(tmp_path) == []


@pytest.mark.parametrize("header", [b"PROXY TCP4 198.51.100.4 127.0.0.1 4444 80\r\n", v2_header()],
                         ids=["v1", "v2"])
def test_proxy_header_from_a_peer_not_allowed_is_403(proxy_server, tmp_path, header):
    srv = proxy_server("auto", allow="10.1.1.1")
    status, headers, _ = parse_response(raw_request(srv.address, header + REQUEST))
    assert status == 403 and headers.get("connection") == "close"
    assert calls(tmp_path) == []
    # The same peer without a PROXY header is served (the header is optional, as in gunicorn).
    assert seen(parse_response(raw_request(srv.address, REQUEST)))["remote_addr"] == "127.0.0.1"


# -- upgrades behind nginx, under load -------------------------------------------------------------

def workers_of(master, count, timeout=30):
    return wait_for(lambda: (lambda c: c if len(c) == count else None)(children(master)), timeout,
                    message=f"{count} workers of {master}")


def answered_by(ask, pids, timeout=30):
    """Ask until one of ``pids`` answers /pid: proof that they serve."""
    return wait_for(lambda: seen(ask())["pid"] in pids, timeout, message=f"an answer from one of {pids}")


def binary_upgrade(srv, pidfile, load, ask, nworkers=2):
    """USR2, new workers serve, WINCH, old workers gone, TERM, new master promoted; returns its pid.

    ``ask()`` makes a /pid request straight to this instance; ``load`` must keep succeeding.
    """
    old_master = srv.proc.pid
    old_workers = workers_of(old_master, nworkers)
    srv.signal(signal.SIGUSR2)
    new_master = next(iter(wait_for(lambda: (children(old_master) - old_workers) or None, 20,
                                    message=lambda: f"the new master\n{srv.log}")))
    new_workers = workers_of(new_master, nworkers)
    answered_by(ask, new_workers)
    load.wait_ok(20)
    srv.signal(signal.SIGWINCH)
    wait_for(lambda: not any(alive(p) for p in old_workers), 30, message=lambda: srv.log)
    load.wait_ok(20)
    srv.signal(signal.SIGTERM)
    assert srv.wait(30) == 0, srv.log
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_master), 20,
             message="the promoted master renames its pid file")
    assert children(new_master) == new_workers
    load.wait_ok(20)
    return new_master


def stop_masters(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        wait_for(lambda: not alive(pid), 30, message=f"master {pid} to exit")


def test_rolling_upgrade_of_two_instances_behind_nginx_fails_no_request(fixed_addresses, nginx_factory,
                                                                         unicornd_factory, tmp_path):
    hosts = example_upstreams()
    assert len(hosts) == 2, hosts
    servers, pidfiles = [], []
    for i, (host, port) in enumerate(hosts):
        pidfiles.append(tmp_path / f"unicornd-{i}.pid")
        # nginx, on this machine, connects to 127.0.0.11/12 from 127.0.0.1.
        servers.append(unicornd_factory("-w", "2", "-b", f"{host}:{port}", "-p", str(pidfiles[i]),
                                        "--forwarded-allow-ips", "127.0.0.1"))
    address = example_listen("upstream.conf")
    nginx = nginx_factory(include=EXAMPLES / "upstream.conf").start(address)

    def via_nginx(path="/pid"):
        return http_get(address, path, host="example.com")

    # Both instances serve through nginx, which is trusted by each.
    masters = [srv.proc.pid for srv in servers]
    for master in masters:
        answered_by(via_nginx, workers_of(master, 2))
    data = seen(via_nginx("/who"))
    assert data["remote_addr"] == "127.0.0.1" and data["headers"]["HOST"] == "example.com"

    promoted = []
    load = HostLoad(address, "/sleep?ms=10", host="example.com", clients=4, max_seconds=100)
    try:
        load.wait_ok(20)
        for srv, pidfile, (host, port) in zip(servers, pidfiles, hosts):
            promoted.append(binary_upgrade(srv, pidfile, load, lambda: http_get((host, port), "/pid")))
    finally:
        ok, failures = load.stop()
        try:
            assert failures == [], failures[:5]
            assert ok > 100, ok
            # Every request after the upgrades is served by the new workers, on both instances.
            new_workers = [children(m) for m in promoted]
            for workers in new_workers:
                answered_by(via_nginx, workers)
            # nginx never had to retry: no instance refused or dropped a connection.
            assert nginx.upstream_errors() == [], nginx.upstream_errors()[:5]
        finally:
            stop_masters(promoted)


def test_binary_upgrade_behind_nginx_over_the_unix_socket(behind_nginx, tmp_path, example_sock):
    pidfile = tmp_path / "unicornd.pid"
    srv, nginx = behind_nginx("-p", str(pidfile))
    sock = example_sock
    load = HostLoad(NGINX_ADDRESS, "/sleep?ms=10", host=HOST, clients=4, max_seconds=100)
    promoted = []
    try:
        load.wait_ok(20)
        ask = lambda: parse_response(unix_request(sock, b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"))  # noqa: E731
        promoted.append(binary_upgrade(srv, pidfile, load, ask))
        # The old master left the socket file alone: it belongs to the new master now.
        assert sock.is_socket()
    finally:
        ok, failures = load.stop()
        try:
            assert failures == [], failures[:5]
            assert ok > 50, ok
            assert nginx.upstream_errors() == [], nginx.upstream_errors()[:5]
        finally:
            stop_masters(promoted)
    # The promoted master, stopped, removes the socket file as a master on its own does.
    wait_for(lambda: not sock.exists(), 10, message="the socket file to go")


def test_a_host_that_dies_is_retried_on_the_other(fixed_addresses, nginx_factory, unicornd_factory):
    """What proxy_next_upstream in upstream.conf is for: a host lost under load fails no request."""
    hosts = example_upstreams()
    servers = [unicornd_factory("-w", "2", "-b", f"{host}:{port}") for host, port in hosts]
    address = example_listen("upstream.conf")
    nginx = nginx_factory(include=EXAMPLES / "upstream.conf").start(address)
    for srv in servers:
        answered_by(lambda: http_get(address, "/pid"), workers_of(srv.proc.pid, 2))
    load = HostLoad(address, "/sleep?ms=20", host="example.com", clients=4, max_seconds=60)
    try:
        load.wait_ok(40)
        dead = servers[0]
        os.killpg(dead.proc.pid, signal.SIGKILL)  # master and workers, mid-request: a host lost
        dead.proc.wait(10)
        load.wait_ok(100)
    finally:
        ok, failures = load.stop()
    assert failures == [], failures[:5]
    # nginx did see the host go (and sent those requests to the other one).
    assert nginx.upstream_errors(), nginx.log()


# -- containers: unicornd as PID 1, SIGTERM drains ----------------------------------------------

_UNSHARE = []


def unshare_pid_namespace() -> list:
    """The ``unshare`` command line that gives a PID namespace: as root, directly; as any other
    user, inside a user namespace of its own (as rootless containers do), where the kernel allows
    one. A machine that allows neither cannot run these tests, which skip saying why."""
    if not _UNSHARE:
        candidates = [["unshare", "--pid", "--fork", "--kill-child"]]
        if os.geteuid() != 0:
            candidates = [["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]]
        for cmd in candidates:
            probe = subprocess.run([*cmd, "true"], capture_output=True, text=True, timeout=30)
            if probe.returncode == 0:
                _UNSHARE.append(cmd)
                break
        else:
            _UNSHARE.append(None)
            _UNSHARE.append(probe.stderr.strip())
    if _UNSHARE[0] is None:
        pytest.skip(f"a PID namespace needs root, or unprivileged user namespaces for uid "
                    f"{os.geteuid()}: {_UNSHARE[1]}")
    return _UNSHARE[0]


class Pid1:
    """unicornd as PID 1 of a PID namespace of its own (unshare), as a container's entry point."""

    def __init__(self, tmp_path, sock, *args):
        unshare = unshare_pid_namespace()
        self.out = tmp_path / "unicornd.out"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]), PYTHONUNBUFFERED="1",
                   TESTAPP_CALLS=str(tmp_path / "calls"))
        for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
            env.pop(key, None)
        with open(self.out, "w") as log:
            self.proc = subprocess.Popen(
                [*unshare, sys.executable, "-m", "unicornd",
                 "-w", "2", "-b", f"unix:{sock}", *args, "testapp:app"],
                cwd=APPS, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self.master = next(iter(wait_for(lambda: children(self.proc.pid) or None, 10)))
            with open(f"/proc/{self.master}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()
            assert nspid[-1] == "1", nspid  # PID 1 in its namespace
            self.workers = workers_of(self.master, 2)
            wait_for(lambda: sock.exists() and unix_request(sock, b"GET /__ping HTTP/1.1\r\nHost: t\r\n\r\n")
                     .startswith(b"HTTP/1.1 200"), 20, message=self.log)
        except BaseException:
            self.stop()
            raise

    def log(self):
        return self.out.read_text()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def all_children(pid):
    """Child pids of ``pid``, zombies included (a zombie child is one not reaped yet)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_as_pid_1_sigterm_drains_the_request_in_flight_through_nginx(behind_nginx, tmp_path, example_sock):
    """A container's entry point: unicornd is PID 1 of its own PID namespace, and the SIGTERM
    that `docker stop` or the kubelet sends lets the request in hand finish."""
    import threading
    _, nginx = behind_nginx(unicornd=False)
    sock = example_sock
    pid1 = Pid1(tmp_path, sock, "--graceful-timeout", "20")
    try:
        assert http_get(NGINX_ADDRESS, "/hello", host=HOST)[0] == 200
        result = {}
        slow = threading.Thread(target=lambda: result.update(
            reply=http_get(NGINX_ADDRESS, "/sleep?ms=1500", host=HOST)))
        slow.start()
        wait_for(lambda: "GET /sleep?ms=1500" in calls(tmp_path), 10, message="the slow request to start")
        os.kill(pid1.master, signal.SIGTERM)  # what the container runtime sends to PID 1
        slow.join(30)
        assert result["reply"][0] == 200, result  # the request in hand finished, through nginx
        assert pid1.proc.wait(30) == 0, pid1.log()  # unshare returns PID 1's exit status
        # The socket is gone with the server: nginx now answers 502 at once, which is why a
        # Kubernetes pod stops getting traffic (preStop) before its SIGTERM (docs/deployment.md).
        assert not sock.exists()
        assert http_get(NGINX_ADDRESS, "/hello", host=HOST)[0] == 502
    finally:
        pid1.stop()


@pytest.mark.parametrize("code", [0, 1, 3, 4])
def test_as_pid_1_orphans_are_reaped_and_do_not_stop_the_server(tmp_path, code):
    """As PID 1, the master inherits every orphan in the container and must reap it; an orphan's
    exit status is not a worker's (3 and 4 mean "worker failed to boot" / "app failed to load")."""
    sock = tmp_path / "u.sock"
    pid1 = Pid1(tmp_path, sock)
    try:
        reply = parse_response(unix_request(sock, f"GET /orphan?code={code} HTTP/1.1\r\nHost: t\r\n\r\n".encode()))
        assert reply[0] == 200, reply
        # The orphan was handed to the master (PID 1) and is reaped: no child but the workers,
        # not even a zombie.
        wait_for(lambda: pid1.proc.poll() is not None or all_children(pid1.master) == pid1.workers, 10,
                 message=lambda: f"only the workers under the master\n{pid1.log()}")
        assert pid1.proc.poll() is None, pid1.log()
        # The master carries on: it still answers a signal (one worker more) and serves.
        os.kill(pid1.master, signal.SIGTTIN)
        wait_for(lambda: pid1.proc.poll() is not None or len(children(pid1.master)) == 3, 20,
                 message=lambda: pid1.log())
        assert pid1.proc.poll() is None, pid1.log()
        assert unix_request(sock, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        pid1.stop()
