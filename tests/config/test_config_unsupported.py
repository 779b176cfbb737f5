"""gunicorn settings unicornd does not honour.

Refused, from every source, unless at their default: the ones that would change what the
server does (HTTP/2, the uWSGI protocol, dirty arbiters). Accepted with a warning saying they
do nothing: the ones that only tune something gunicorn uses in its ASGI worker or in a feature
refused here. Accepted with a warning saying how: the ones with another effect than gunicorn's.
"""

import os
import shlex

import pytest

from unicornd.config import SETTINGS, ConfigError
from unicornd.config.settings import BY_NAME

# name -> (a non-default value as config-file source, the same on the command line)
NON_DEFAULT = {
    "protocol": ("'uwsgi'", ["--protocol", "uwsgi"]),
    "http_protocols": ("'h2,h1'", ["--http-protocols", "h2,h1"]),
    "http2_cleartext": ("'upgrade'", ["--http2-cleartext", "upgrade"]),
}

# name -> (a non-default value as config-file source, the same on the command line or None)
IGNORED = {
    "asgi_loop": ("'uvloop'", ["--asgi-loop", "uvloop"]),
    "asgi_lifespan": ("'on'", ["--asgi-lifespan", "on"]),
    "asgi_disconnect_grace_period": ("10", ["--asgi-disconnect-grace-period", "10"]),
    "websocket_max_message_size": ("1024", ["--websocket-max-message-size", "1024"]),
    "http_parser": ("'python'", ["--http-parser", "python"]),
    "worker_tmp_dir": ("'/dev/shm'", ["--worker-tmp-dir", "/dev/shm"]),
    "tmp_upload_dir": ("'/var/tmp'", None),
    "uwsgi_allow_ips": ("'*'", ["--uwsgi-allow-from", "*"]),
    "root_path": ("'/api'", ["--root-path", "/api"]),
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

UNSUPPORTED = [s.name for s in SETTINGS if not s.supported and not s.ignored]


def _message(name, source=None):
    s = BY_NAME[name]
    flags = "/".join(f for f in s.cli if f.startswith("--"))
    flags = f" ({flags})" if flags else ""
    where = f" (set in {source})" if source else ""
    return f"Setting {name!r}{flags} is not supported yet by unicornd{where}"


def _no_effect(name, where):
    s = BY_NAME[name]
    flags = "/".join(f for f in s.cli if f.startswith("--"))
    flags = f" ({flags})" if flags else ""
    return f"Setting {name!r}{flags} ({where}) has no effect in unicornd: {s.ignored}"


def test_every_refused_and_ignored_setting_is_covered():
    assert sorted(NON_DEFAULT) == sorted(UNSUPPORTED)
    assert sorted(IGNORED) == sorted(s.name for s in SETTINGS if s.ignored)


def test_the_message():
    assert _message("protocol") == (
        "Setting 'protocol' (--protocol) is not supported yet by unicornd")


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_refused_on_the_command_line(load, name):
    with pytest.raises(ConfigError) as err:
        load(*NON_DEFAULT[name][1])
    assert str(err.value) == _message(name)
    assert err.value.setting == name


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_refused_in_unicornd_cmd_args(load, name):
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
    write("uconf.py", "protocol = 'uwsgi'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "python:uconf")
    assert str(err.value) == _message("protocol", "python:uconf")


def test_invalid_values_of_unsupported_settings_are_refused_too(load, write):
    write("conf.py", "http_protocols = 'h3'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == _message("http_protocols", "conf.py")


def test_invalid_values_of_ignored_settings_are_errors(load, write):
    write("conf.py", "http2_max_frame_size = 'large'\n")
    with pytest.raises(ConfigError, match=r"^Invalid value for http2_max_frame_size: 'large': "
                                          r"expected a non-negative integer \(set in conf.py\)$"):
        load("-c", "conf.py")


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_ignored_in_a_config_file_is_accepted_with_a_warning(load, write, name):
    write("gunicorn.conf.py", f"{name} = {IGNORED[name][0]}\n")
    cfg = load()
    assert cfg.warnings == (_no_effect(name, "set in ./gunicorn.conf.py"),)


@pytest.mark.parametrize("name", [n for n in sorted(IGNORED) if IGNORED[n][1]])
def test_ignored_on_the_command_line_is_accepted_with_a_warning(load, name):
    cfg = load(*IGNORED[name][1])
    assert cfg.warnings == (_no_effect(name, "set on the command line"),)


def test_gunicorn_config_with_tmp_upload_dir_and_control_socket_loads(load, write):
    """Issue 14: gunicorn starts with these; the warnings say gunicorn never reads
    tmp_upload_dir, and name what to use instead of the control socket."""
    write("gunicorn.conf.py", "tmp_upload_dir = '/var/tmp'\ncontrol_socket = '/tmp/g.ctl'\n")
    cfg = load()
    assert (cfg.tmp_upload_dir, cfg.control_socket) == ("/var/tmp", "/tmp/g.ctl")
    upload, control = sorted(cfg.warnings, reverse=True)
    assert "'tmp_upload_dir'" in upload and "gunicorn never reads it either" in upload
    assert "'control_socket'" in control and "`unicornd status`" in control


def test_dirty_apps_with_dirty_workers_is_refused(load, write):
    # Together they start gunicorn's dirty arbiter; either alone does nothing there either.
    write("conf.py", "dirty_apps = ['tasks:app']\ndirty_workers = 2\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == (
        "Setting 'dirty_apps' (--dirty-app) is not supported yet by unicornd (set in conf.py) "
        "with dirty_workers = 2: gunicorn's dirty arbiter is not implemented")
    assert err.value.setting == "dirty_apps"


def test_a_value_equal_to_the_default_gives_no_warning(load, write):
    write("conf.py", "asgi_loop = 'auto'\ndirty_workers = 0\nworker_tmp_dir = None\n")
    assert load("-c", "conf.py").warnings == ()


@pytest.mark.parametrize("line, warning", [
    ("ssl_version = 'TLSv1_2'", "Setting 'ssl_version' (--ssl-version) (set in conf.py) differs "
     "from gunicorn: gunicorn ignores it; unicornd refuses TLS versions older than it"),
    ("sendfile = True", "Setting 'sendfile' (--no-sendfile) (set in conf.py) differs from "
     "gunicorn: gunicorn turns sendfile off for any value in a config file; unicornd honours True"),
])
def test_settings_with_another_effect_than_gunicorns_warn(load, write, line, warning):
    write("conf.py", line + "\n")
    assert load("-c", "conf.py").warnings == (warning,)


def test_sendfile_off_behaves_as_in_gunicorn_and_gives_no_warning(load, write):
    write("conf.py", "sendfile = False\n")
    assert load("-c", "conf.py").warnings == ()
    assert load("--no-sendfile").warnings == ()


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
    assert load("-c", "conf.py").warnings == ()


def test_default_values_on_the_command_line_are_accepted(load):
    cfg = load("--max-requests", "0", "--suppress-ragged-eofs", "--control-socket-mode", "0600",
               "--cert-reqs", "0", "--protocol", "http", "--ssl-version", "TLS")
    assert (cfg.max_requests, cfg.suppress_ragged_eofs) == (0, True)
    assert cfg.warnings == ()


def test_unsupported_settings_appear_at_their_defaults(load):
    cfg = load()
    assert (cfg.accesslog, cfg.max_requests, cfg.daemon, cfg.user) == (None, 0, False,
                                                                       os.geteuid())
