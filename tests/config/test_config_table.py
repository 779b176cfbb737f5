"""The table knows every gunicorn 27 setting, with gunicorn's names, flags and defaults."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn27_reference import GUNICORN27
from unicornd.config import SETTINGS, build_parser
from unicornd.config.docs import render
from unicornd.config.settings import BY_NAME, SECTIONS

REPO = Path(__file__).resolve().parents[2]

# Defaults that differ on purpose, or depend on the machine the reference was dumped on.
OWN_DEFAULTS = {"config", "default_proc_name", "chdir", "user", "group", "control_socket"}

# unicornd's own settings, which gunicorn does not have.
OWN_SETTINGS = {"metrics_bind", "max_worker_memory", "boot_timeout", "access_log_json",
                "limit_request_body", "header_timeout", "min_body_rate",
                "max_workers", "scale_up_period", "scale_down_period"}
OWN_SETTINGS |= {"drain_delay"}

SUPPORTED = {
    "config", "wsgi_app", "bind", "backlog", "workers", "worker_class", "threads",
    "worker_connections", "timeout", "graceful_timeout", "keepalive", "limit_request_line",
    "limit_request_fields", "limit_request_field_size", "permit_obsolete_folding",
    "permit_unconventional_http_method", "permit_unconventional_http_version",
    "casefold_http_method", "strip_header_spaces", "header_map", "proxy_protocol",
    "proxy_allow_ips", "forwarded_allow_ips", "secure_scheme_headers", "forwarder_headers",
    "sendfile", "reuse_port", "chdir", "pythonpath", "raw_env", "loglevel", "errorlog",
    "print_config", "check_config", "proc_name", "default_proc_name", "control_socket_disable",
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit",
    "max_requests", "max_requests_jitter", "preload_app", "daemon", "pidfile",
    "user", "group", "umask", "initgroups",
    "keyfile", "certfile", "ssl_version", "cert_reqs", "ca_certs", "suppress_ragged_eofs",
    "do_handshake_on_connect", "ciphers", "ssl_context",
    "statsd_host", "dogstatsd_tags", "statsd_prefix", "enable_backlog_metric", "metrics_bind",
    "accesslog", "disable_redirect_access_to_syslog", "access_log_format", "capture_output",
    "logger_class", "logconfig", "logconfig_dict", "logconfig_json", "syslog_addr", "syslog",
    "syslog_prefix", "syslog_facility", "enable_stdio_inheritance",
    "reload", "reload_engine", "reload_extra_files", "spew", "paste", "raw_paste_global_conf",
} | OWN_SETTINGS

# Accepted with a warning that they do nothing here (tests/config/test_config_unsupported.py).
IGNORED = {
    "asgi_loop", "asgi_lifespan", "asgi_disconnect_grace_period", "websocket_max_message_size",
    "root_path", "http_parser", "worker_tmp_dir", "tmp_upload_dir", "uwsgi_allow_ips",
    "http2_max_concurrent_streams", "http2_initial_window_size", "http2_max_frame_size",
    "http2_max_header_list_size", "control_socket", "control_socket_mode",
    "dirty_apps", "dirty_workers", "dirty_timeout", "dirty_threads", "dirty_graceful_timeout",
    "on_dirty_starting", "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit",
}

# Refused unless at their default: they would change what the server does.
REFUSED = {"protocol", "http_protocols", "http2_cleartext"}


def test_every_gunicorn_setting_is_known_and_nothing_else():
    assert [s.name for s in SETTINGS] != []
    assert set(BY_NAME) - OWN_SETTINGS == {row[0] for row in GUNICORN27}


@pytest.mark.parametrize("row", GUNICORN27, ids=lambda row: row[0])
def test_setting_matches_gunicorn(row):
    name, section, cli, meta, action, nargs, default = row
    s = BY_NAME[name]
    assert (s.section, s.cli, s.meta, s.action, s.nargs) == (section, cli, meta, action, nargs)
    if name not in OWN_DEFAULTS and default != "<not a literal>":
        assert s.default == default


def test_supported_set_is_the_agreed_one():
    assert {s.name for s in SETTINGS if s.supported} == SUPPORTED
    assert {s.name for s in SETTINGS if s.ignored} == IGNORED
    assert {s.name for s in SETTINGS if not s.supported and not s.ignored} == REFUSED
    assert not any(s.supported for s in SETTINGS if s.ignored)


def test_own_defaults():
    assert BY_NAME["config"].default == "./unicornd.conf.py"
    assert BY_NAME["default_proc_name"].default == "unicornd"


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(s):
    assert s.doc and s.doc[0].isupper() and s.doc.endswith((".", ")"))
    assert "\n" not in s.doc
    assert s.validate.kind


def test_flags_are_unique():
    flags = [f for s in SETTINGS for f in s.cli]
    assert len(flags) == len(set(flags))


def test_help_is_grouped_by_section(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["-h"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: unicornd [OPTIONS] [APP_MODULE]")
    # Sections with an option --help shows (hooks have no flags; HTTP/2 and dirty arbiters
    # hold only refused or ignored ones).
    shown = [section for section in SECTIONS if section not in
             ("Server Hooks", "Dirty Arbiter Hooks", "HTTP/2", "Dirty Arbiters")]
    positions = [out.index(f"\n{section}:\n") for section in shown]
    assert positions == sorted(positions)
    for section in ("HTTP/2", "Dirty Arbiters"):
        assert f"\n{section}:\n" not in out
    assert "--access-logfile FILE" in out
    assert "--limit-request-field_size INT" in out


def test_version(capsys):
    from unicornd import __version__

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"unicornd (version {__version__})"


def test_the_built_site_lists_every_setting(tmp_path):
    """docs/settings.md is not committed: the site build renders it from the table."""
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                           cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr
    assert not (REPO / "docs" / "settings.md").exists(), "generated at build time, never committed"
    page = (site / "settings" / "index.html").read_text()
    for s in SETTINGS:
        assert f'id="{s.name}"' in page, s.name
        assert f"<code>{s.name}</code>" in page, s.name
    assert "not supported yet" in page


def test_docs_module_prints_the_render():
    out = subprocess.run(
        [sys.executable, "-m", "unicornd.config.docs"], cwd=REPO, capture_output=True,
        text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    assert out == render()


def test_docs_list_every_setting_once():
    text = render()
    for s in SETTINGS:
        assert text.count(f"### `{s.name}`\n") == 1
    assert "**not supported yet**" in text
