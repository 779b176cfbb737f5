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
import sys
from pathlib import Path

import pytest

from deploy_support import (EXAMPLES, HostLoad, alive, example_listen, example_socket,
                            example_upstreams, free_port, http_get, unix_request)
from support import REPO, children, parse_response, raw_request, wait_for

pytestmark = pytest.mark.timeout(120)

NGINX_ADDRESS = example_listen("unicornd.conf")
HOST = f"example.com:{NGINX_ADDRESS[1]}"


def seen(reply):
    """What the echo app saw, from a (status, headers, body) reply."""
    assert reply is not None, "no response"
    status, _, body = reply
    assert status == 200, reply
    data = json.loads(body)
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
def behind_nginx(fixed_addresses, nginx_factory, unicornd_factory, tmp_path):
    """unicornd on the example's socket, nginx with the example (plus optional test-only servers).

    Returns start(*unicornd_args, http="") -> (server, nginx); the app records its calls in
    ``tmp_path / "calls"``.
    """
    def start(*args, http="", extra_addresses=()):
        srv = unicornd_factory("-w", "2", *args, unix=example_socket(),
                               env={"TESTAPP_CALLS": str(tmp_path / "calls")})
        nginx = nginx_factory(include=EXAMPLES / "unicornd.conf", http=http)
        nginx.start(NGINX_ADDRESS, *extra_addresses)
        return srv, nginx
    return start


def calls(tmp_path):
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


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
