"""The command line end to end: bad input fails before any fork; app loading; sockets."""

import http.client
import json
import os
import socket
import subprocess
import sys

import pytest

from support import APPS, Server, parse_response, raw_request, run_cli, unix_request, wait_for


@pytest.mark.parametrize("args, names", [
    (["--workers=abc", "testapp:app"], ["workers", "'abc'"]),
    (["-b", "nonsense:port", "testapp:app"], ["bind", "nonsense:port"]),
    (["-k", "nosuchworker", "testapp:app"], ["worker_class", "nosuchworker", "sync"]),
    (["--timeout", "-3", "testapp:app"], ["timeout", "-3"]),
])
def test_bad_values_exit_2_naming_setting_value_and_allowed(args, names):
    result = run_cli(*args)
    assert result.returncode == 2, result
    for name in names:
        assert name in result.stderr, result.stderr
    assert "Booting worker" not in result.stderr + result.stdout


def test_unsupported_setting_is_refused():
    result = run_cli("--http-protocols", "h2,h1", "testapp:app")
    assert result.returncode == 2
    assert "not supported yet" in result.stderr and "http_protocols" in result.stderr


def test_no_app_module_is_an_error():
    result = run_cli("-b", "127.0.0.1:0")
    assert result.returncode == 2 and "application" in result.stderr.lower()


def test_print_config_lists_settings():
    result = run_cli("--print-config", "-w", "3", "testapp:app")
    assert result.returncode == 0, result.stderr
    assert any(line.replace(" ", "") == "workers=3" for line in result.stdout.splitlines()), result.stdout


def test_check_config_loads_the_app():
    ok = run_cli("--check-config", "testapp:app")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("--check-config", "broken_import:app")
    assert bad.returncode == 1
    assert "ModuleNotFoundError" in bad.stderr + bad.stdout


def test_import_error_shows_traceback_and_exits_4():
    result = run_cli("-b", "127.0.0.1:0", "broken_import:app")
    out = result.stdout + result.stderr
    assert result.returncode == 4, out
    assert "Traceback" in out and "no_such_module_anywhere" in out and "App failed to load" in out


def test_missing_attribute_is_one_line_and_exits_4():
    result = run_cli("-b", "127.0.0.1:0", "testapp:nope")
    out = result.stdout + result.stderr
    assert result.returncode == 4
    assert "Failed to find attribute 'nope' in 'testapp'" in out and "Traceback" not in out


def test_not_callable_is_one_line_and_exits_4():
    result = run_cli("-b", "127.0.0.1:0", "testapp:CALLS_FILE")
    out = result.stdout + result.stderr
    assert result.returncode == 4 and "must be callable" in out


def test_worker_boot_error_exits_3():
    result = run_cli("-b", "127.0.0.1:0", "-c", str(APPS / "boot_error_conf.py"), "testapp:app")
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert "Worker failed to boot" in out


@pytest.mark.parametrize("spec", ["factories:make_app()", "factories:make_app('hi', loud=True)", "factories"])
def test_app_spec_forms(spec):
    with Server("-b", "127.0.0.1:0", spec) as srv:
        reply = raw_request(srv.address, b"GET / HTTP/1.0\r\n\r\n")
        status, _, body = parse_response(reply)
        assert status == 200
        expected = {"factories:make_app()": b"default", "factories:make_app('hi', loud=True)": b"HI",
                    "factories": b"application"}[spec]
        assert body == expected


def test_chdir_and_pythonpath(tmp_path):
    appdir = tmp_path / "elsewhere"
    appdir.mkdir()
    (appdir / "placed.py").write_text(
        "def app(e, s):\n    s('200 OK', [('Content-Length', '6')])\n    return [b'placed']\n")
    with Server("-b", "127.0.0.1:0", "--chdir", str(appdir), "placed:app") as srv:
        assert parse_response(raw_request(srv.address, b"GET / HTTP/1.0\r\n\r\n"))[2] == b"placed"
    with Server("-b", "127.0.0.1:0", "--pythonpath", str(appdir), "placed:app") as srv:
        assert parse_response(raw_request(srv.address, b"GET / HTTP/1.0\r\n\r\n"))[2] == b"placed"


def test_raw_env_reaches_the_app():
    with Server("-b", "127.0.0.1:0", "-e", "GREETING=hello there", "factories:env_app") as srv:
        assert parse_response(raw_request(srv.address, b"GET / HTTP/1.0\r\n\r\n"))[2] == b"hello there"


def test_unix_socket_served_and_removed(tmp_path):
    path = tmp_path / "u.sock"
    path.write_text("")  # a stale file where the socket goes is not a socket: refused
    result = run_cli("-b", f"unix:{path}", "testapp:app", timeout=30)
    assert result.returncode != 0
    path.unlink()
    # A stale socket file (left by a dead server) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    srv = Server("-b", f"unix:{path}", "testapp:app")
    try:
        wait_for(lambda: _unix_get(path), 10)
        status, _, body = parse_response(_unix_get(path))
        seen = json.loads(body)
        assert status == 200 and seen["server_name"] == "example.org" and seen["server_port"] == "8080"
    finally:
        srv.stop()
    assert not path.exists()


def _unix_get(path):
    return unix_request(path, b"GET /echo HTTP/1.1\r\nHost: example.org:8080\r\n\r\n")


def test_ipv6():
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback; the IPv6 test needs one")
    with Server("-b", "[::1]:0", "testapp:app") as srv:
        assert srv.urls[0].startswith("http://[::1]:")
        conn = http.client.HTTPConnection("::1", srv.port, timeout=10)
        conn.request("GET", "/echo")
        seen = json.loads(conn.getresponse().read())
        assert seen["remote_addr"] == "::1"


def test_two_binds_both_serve():
    with Server("-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "testapp:app") as srv:
        assert len(srv.urls) == 2
        for url in srv.urls:
            host, port = url[len("http://"):].rsplit(":", 1)
            assert parse_response(raw_request((host, int(port)), b"GET /hello HTTP/1.0\r\n\r\n"))[0] == 200


def test_fd_bind():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(APPS.parents[2])]))
    proc = subprocess.Popen([sys.executable, "-m", "unicornd", "-b", f"fd://{fd}", "testapp:app"],
                            cwd=APPS, env=env, pass_fds=[fd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    listener.close()
    try:
        reply = wait_for(lambda: _try_get(port), 20)
        assert parse_response(reply)[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def _try_get(port):
    try:
        return raw_request(("127.0.0.1", port), b"GET /hello HTTP/1.0\r\n\r\n", timeout=5)
    except OSError:
        return None


def test_address_in_use_is_a_clear_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = run_cli("-b", f"127.0.0.1:{port}", "testapp:app", timeout=60)
        out = result.stdout + result.stderr
        assert result.returncode != 0
        assert "in use" in out.lower()
    finally:
        holder.close()


def test_web_concurrency_sets_workers():
    with Server("-b", "127.0.0.1:0", "testapp:app", env={"WEB_CONCURRENCY": "3"}) as srv:
        wait_for(lambda: srv.log.count("Booting worker") == 3, 10)
