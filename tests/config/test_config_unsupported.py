"""Settings unicornd does not support yet are refused, from every source, unless at default."""

import os

import pytest

from unicornd.config import SETTINGS, ConfigError
from unicornd.config.settings import BY_NAME

OTHER_UID = str(os.geteuid() + 1)
OTHER_GID = str(os.getegid() + 1)

# name -> (a non-default value as config-file source, the same on the command line)
NON_DEFAULT = {
    "asgi_loop": ("'uvloop'", ["--asgi-loop", "uvloop"]),
    "asgi_lifespan": ("'on'", ["--asgi-lifespan", "on"]),
    "asgi_disconnect_grace_period": ("10", ["--asgi-disconnect-grace-period", "10"]),
    "websocket_max_message_size": ("1024", ["--websocket-max-message-size", "1024"]),
    "http_parser": ("'python'", ["--http-parser", "python"]),
    "tmp_upload_dir": ("'/tmp'", None),
    "protocol": ("'uwsgi'", ["--protocol", "uwsgi"]),
    "uwsgi_allow_ips": ("'*'", ["--uwsgi-allow-from", "*"]),
    "root_path": ("'/api'", ["--root-path", "/api"]),
    "http_protocols": ("'h2,h1'", ["--http-protocols", "h2,h1"]),
    "http2_cleartext": ("'upgrade'", ["--http2-cleartext", "upgrade"]),
    "http2_max_concurrent_streams": ("10", ["--http2-max-concurrent-streams", "10"]),
    "http2_initial_window_size": ("1", ["--http2-initial-window-size", "1"]),
    "http2_max_frame_size": ("32768", ["--http2-max-frame-size", "32768"]),
    "http2_max_header_list_size": ("1", ["--http2-max-header-list-size", "1"]),
    "control_socket": ("'/tmp/x.ctl'", ["--control-socket", "/tmp/x.ctl"]),
    "control_socket_mode": ("0o666", ["--control-socket-mode", "0666"]),
    "dirty_apps": ("['a:b']", ["--dirty-app", "a:b"]),
    "dirty_workers": ("2", ["--dirty-workers", "2"]),
    "dirty_timeout": ("5", ["--dirty-timeout", "5"]),
    "dirty_threads": ("2", ["--dirty-threads", "2"]),
    "dirty_graceful_timeout": ("5", ["--dirty-graceful-timeout", "5"]),
    "on_dirty_starting": ("lambda arbiter: None", None),
    "dirty_post_fork": ("lambda arbiter, worker: None", None),
    "dirty_worker_init": ("lambda worker: None", None),
    "dirty_worker_exit": ("lambda arbiter, worker: None", None),
}

UNSUPPORTED = [s.name for s in SETTINGS if not s.supported]


def _message(name, source=None):
    s = BY_NAME[name]
    flags = "/".join(f for f in s.cli if f.startswith("--"))
    flags = f" ({flags})" if flags else ""
    where = f" (set in {source})" if source else ""
    return f"Setting {name!r}{flags} is not supported yet by unicornd{where}"


def test_every_unsupported_setting_is_covered():
    assert sorted(NON_DEFAULT) == sorted(UNSUPPORTED)


def test_the_message():
    assert _message("root_path") == (
        "Setting 'root_path' (--root-path) is not supported yet by unicornd")


@pytest.mark.parametrize("name", [n for n in UNSUPPORTED if NON_DEFAULT[n][1]])
def test_refused_on_the_command_line(load, name):
    with pytest.raises(ConfigError) as err:
        load(*NON_DEFAULT[name][1])
    assert str(err.value) == _message(name)
    assert err.value.setting == name


@pytest.mark.parametrize("name", [n for n in UNSUPPORTED if NON_DEFAULT[n][1]])
def test_refused_in_unicornd_cmd_args(load, name):
    import shlex

    with pytest.raises(ConfigError) as err:
        load(env={"UNICORND_CMD_ARGS": shlex.join(NON_DEFAULT[name][1])})
    assert str(err.value) == _message(name, "UNICORND_CMD_ARGS")


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_refused_in_a_config_file(load, write, name):
    write("gunicorn.conf.py", f"{name} = {NON_DEFAULT[name][0]}\n")
    with pytest.raises(ConfigError) as err:
        load()
    assert str(err.value) == _message(name, "./gunicorn.conf.py")


def test_refused_in_a_python_module_config(load, write):
    write("uconf.py", "root_path = '/api'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "python:uconf")
    assert str(err.value) == _message("root_path", "python:uconf")


def test_invalid_values_of_unsupported_settings_are_refused_too(load, write):
    write("conf.py", "http2_max_frame_size = 'large'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == _message("http2_max_frame_size", "conf.py")


@pytest.mark.parametrize("line", [
    "accesslog = None", "max_requests = 0", "max_requests = '0'", "daemon = False",
    "daemon = 'false'", "preload_app = False", "capture_output = False",
    "umask = 0", "user = None", "group = None", f"user = {os.geteuid()}",
    "suppress_ragged_eofs = True", "logconfig_dict = {}", "raw_paste_global_conf = []",
    "protocol = 'HTTP'", "http_protocols = 'h1'", "control_socket_mode = 0o600",
    "access_log_format = '%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"'",
    "logger_class = 'gunicorn.glogging.Logger'", "ssl_version = 2", "cert_reqs = 0",
    "http2_cleartext = False", "pidfile = None", "statsd_host = None",
])
def test_default_values_of_unsupported_settings_are_accepted(load, write, line):
    write("conf.py", line + "\n")
    load("-c", "conf.py")


def test_default_values_on_the_command_line_are_accepted(load):
    cfg = load("--max-requests", "0", "--suppress-ragged-eofs", "--control-socket-mode", "0600",
               "--cert-reqs", "0", "--protocol", "http", "--ssl-version", "TLS")
    assert (cfg.max_requests, cfg.suppress_ragged_eofs) == (0, True)


def test_unsupported_settings_appear_at_their_defaults(load):
    cfg = load()
    assert (cfg.accesslog, cfg.max_requests, cfg.daemon, cfg.user) == (None, 0, False,
                                                                       os.geteuid())
