"""Developer conveniences, end to end: reload, spew, PasteDeploy apps, --check-config."""

import re
import time

import pytest

from support import Server, parse_response, raw_request, run_cli, wait_for

APP = '''\
import os

VERSION = b"{version}"


def app(environ, start_response):
    body = VERSION + b" " + str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def get(server, path="/"):
    data = raw_request(server.address, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return parse_response(data)


def answers(server, wanted):
    """A predicate: the server answers 200 with a body starting with ``wanted``."""
    def check():
        try:
            status, _, body = get(server)
        except (OSError, AssertionError):
            return None
        return body if status == 200 and body.startswith(wanted) else None
    return check


@pytest.mark.parametrize("engine", ["poll", "inotify", "auto"])
def test_reload_picks_up_an_edited_module_within_2s(tmp_path, engine):
    module = tmp_path / "reloadapp.py"
    module.write_text(APP.format(version="v1"))
    with Server("-w", "1", "-b", "127.0.0.1:0", "--reload", "--reload-engine", engine,
                "reloadapp:app", cwd=tmp_path) as server:
        status, _, body = get(server)
        assert (status, body[:2]) == (200, b"v1")
        old_pid = body.split()[1]
        module.write_text(APP.format(version="v2"))  # same size, same second: the .pyc goes too
        edited = time.monotonic()
        body = wait_for(answers(server, b"v2"), timeout=2.0,
                        message=lambda: f"the edited code to answer\n{server.log}")
        assert time.monotonic() - edited < 2.0
        assert body.split()[1] != old_pid
        assert f"Worker reloading: {module} modified" in server.log
        assert "Traceback" not in server.log


def test_reload_watches_extra_files_given_as_globs(tmp_path):
    (tmp_path / "reloadapp.py").write_text(APP.format(version="v1"))
    templates = tmp_path / "templates"
    templates.mkdir()
    page = templates / "page.html"
    page.write_text("<p>one</p>")
    with Server("-b", "127.0.0.1:0", "--reload", "--reload-extra-file", "templates/*.html",
                "reloadapp:app", cwd=tmp_path) as server:
        old_pid = get(server)[2].split()[1]
        page.write_text("<p>two</p>")
        server.wait_log(re.escape(f"Worker reloading: {page} modified"), timeout=2.0)
        wait_for(lambda: get(server)[2].split()[1] != old_pid, timeout=2.0,
                 message=lambda: f"a new worker\n{server.log}")


def test_a_broken_edit_is_served_as_500_until_fixed(tmp_path):
    module = tmp_path / "reloadapp.py"
    module.write_text(APP.format(version="v1"))
    with Server("-b", "127.0.0.1:0", "--reload", "reloadapp:app", cwd=tmp_path) as server:
        module.write_text(APP.format(version="v2") + "\ndef broken(:\n")

        def error_page():
            try:
                status, _, body = get(server)
            except (OSError, AssertionError):
                return None
            return body if status == 500 else None

        body = wait_for(error_page, timeout=5.0, message=lambda: server.log)
        assert b"SyntaxError" in body and b"reloadapp.py" in body
        module.write_text(APP.format(version="v3"))
        wait_for(answers(server, b"v3"), timeout=5.0, message=lambda: server.log)
        assert server.proc.poll() is None


def test_without_reload_an_edit_changes_nothing(tmp_path):
    module = tmp_path / "reloadapp.py"
    module.write_text(APP.format(version="v1"))
    with Server("-b", "127.0.0.1:0", "reloadapp:app", cwd=tmp_path) as server:
        pid = get(server)[2].split()[1]
        module.write_text(APP.format(version="v2"))
        for _ in range(5):
            assert get(server)[2] == b"v1 " + pid
        assert "reloading" not in server.log


PASTE_APP = '''\
def make_app(global_conf, greeting="hello", **local):
    text = f"{greeting} from {global_conf.get('who', 'nobody')}".encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text]
    return app
'''

PASTE_INI = '''\
[app:main]
use = call:pasteapp:make_app
greeting = hello

[app:other]
use = call:pasteapp:make_app
greeting = bonjour
'''


@pytest.fixture
def paste_dir(tmp_path):
    (tmp_path / "pasteapp.py").write_text(PASTE_APP)
    (tmp_path / "app.ini").write_text(PASTE_INI)
    return tmp_path


def test_paste_app_is_served(paste_dir):
    with Server("-b", "127.0.0.1:0", "--paste", "app.ini", "--paste-global", "who=unicornd",
                cwd=paste_dir) as server:
        status, _, body = get(server)
        assert (status, body) == (200, b"hello from unicornd")


def test_paste_app_by_name_from_a_config_file(paste_dir):
    (paste_dir / "unicornd.conf.py").write_text(
        "paste = 'app.ini#other'\nraw_paste_global_conf = ['who=the config file']\nbind = ['127.0.0.1:0']\n")
    with Server(cwd=paste_dir) as server:
        assert get(server)[2] == b"bonjour from the config file"


def test_check_config_with_paste(paste_dir):
    ok = run_cli("--check-config", "--paste", "app.ini", cwd=paste_dir)
    assert ok.returncode == 0, ok.stderr
    assert "Configuration OK: paste app.ini loads." in ok.stdout
    missing = run_cli("--check-config", "--paste", "nope.ini", cwd=paste_dir)
    assert missing.returncode == 1
    assert "nope.ini" in missing.stderr and "does not exist" in missing.stderr


def test_spew_traces_executed_lines(tmp_path):
    (tmp_path / "reloadapp.py").write_text(APP.format(version="v1"))
    with Server("-b", "127.0.0.1:0", "--spew", "reloadapp:app", cwd=tmp_path) as server:
        status, _, body = get(server)
        assert status == 200
        pid = body.split()[1].decode()
        # The app's own lines, as the worker ran them, with the worker's pid.
        server.wait_log(re.escape(f"[{pid}] {tmp_path / 'reloadapp.py'}:7:") + r"\s+body = VERSION")
        server.wait_log(re.escape(f"[{pid}] ") + r"\S+unicornd/connection\.py:\d+: ")


def test_check_config_exits_0_when_the_app_loads(tmp_path):
    (tmp_path / "reloadapp.py").write_text(APP.format(version="v1"))
    result = run_cli("--check-config", "reloadapp:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Configuration OK: reloadapp:app loads."


def test_check_config_exits_1_when_the_app_does_not_load(tmp_path):
    (tmp_path / "reloadapp.py").write_text("raise RuntimeError('no database')\n")
    result = run_cli("--check-config", "reloadapp:app", cwd=tmp_path)
    assert result.returncode == 1
    assert "RuntimeError: no database" in result.stderr
    assert "Error: the application reloadapp:app failed to load" in result.stderr
    (tmp_path / "reloadapp.py").write_text(APP.format(version="v1"))
    missing = run_cli("--check-config", "reloadapp:nothing", cwd=tmp_path)
    assert missing.returncode == 1
    assert "Failed to find attribute 'nothing' in 'reloadapp'." in missing.stderr


def test_check_config_exits_2_on_a_bad_setting(tmp_path):
    (tmp_path / "reloadapp.py").write_text(APP.format(version="v1"))
    result = run_cli("--check-config", "--reload-engine", "magic", "reloadapp:app", cwd=tmp_path)
    assert result.returncode == 2
    assert "reload_engine" in result.stderr and "magic" in result.stderr
