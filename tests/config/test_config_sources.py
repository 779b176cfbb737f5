"""Where settings come from: defaults < config file < UNICORND_CMD_ARGS < command line."""

import dataclasses

import pytest

from unicornd.config import Config, ConfigError, load_config


def test_precedence_across_the_four_sources(load, write):
    conf = write("conf.py", "workers = 2\ntimeout = 20\nkeepalive = 7\n")
    env = {"UNICORND_CMD_ARGS": "-c conf.py -w 3 -t 25"}
    cfg = load("-w", "4", env=env)
    assert cfg.workers == 4  # command line beats all
    assert cfg.timeout == 25  # UNICORND_CMD_ARGS beats the file
    assert cfg.keepalive == 7  # the file beats defaults
    assert cfg.graceful_timeout == 30  # default
    assert cfg.config_path == str(conf)


def test_unset_flags_do_not_clobber_lower_sources(load, write):
    write("conf.py", "reuse_port = True\nbind = ['127.0.0.1:1']\nproxy_protocol = 'v2'\n"
                     "sendfile = False\nraw_env = ['A=1']\n")
    cfg = load("-c", "conf.py", "-w", "2")
    assert (cfg.reuse_port, cfg.bind, cfg.proxy_protocol, cfg.sendfile, cfg.raw_env) == (
        True, ["127.0.0.1:1"], "v2", False, ["A=1"])


def test_list_options_replace_the_config_file_list(load, write):
    write("conf.py", "bind = ['127.0.0.1:1', '127.0.0.1:2']\nraw_env = ['A=1']\n")
    cfg = load("-c", "conf.py", "-b", "127.0.0.1:3", "-e", "B=2")
    assert cfg.bind == ["127.0.0.1:3"] and cfg.raw_env == ["B=2"]


def test_app_module_argument_beats_wsgi_app_and_names_the_processes(load, write):
    write("conf.py", "wsgi_app = 'file:app'\n")
    cfg = load("-c", "conf.py")
    assert (cfg.wsgi_app, cfg.default_proc_name) == ("file:app", "unicornd")
    cfg = load("-c", "conf.py", "cli:app")
    assert (cfg.wsgi_app, cfg.default_proc_name) == ("cli:app", "cli:app")


def test_app_module_from_the_environment_variable(load):
    cfg = load(env={"UNICORND_CMD_ARGS": "env:app -w 2"})
    assert (cfg.wsgi_app, cfg.workers) == ("env:app", 2)
    assert load("cli:app", env={"UNICORND_CMD_ARGS": "env:app"}).wsgi_app == "cli:app"


def test_config_file_named_in_the_environment_variable(load, write):
    write("a.py", "workers = 5\n")
    write("b.py", "workers = 6\n")
    assert load(env={"UNICORND_CMD_ARGS": "-c a.py"}).workers == 5
    assert load("-c", "b.py", env={"UNICORND_CMD_ARGS": "-c a.py"}).workers == 6


def test_default_config_file_prefers_unicornd_then_gunicorn(load, write, tmp_path):
    assert load().config_path is None
    write("gunicorn.conf.py", "workers = 2\n")
    cfg = load()
    assert (cfg.workers, cfg.config_path) == (2, str(tmp_path / "gunicorn.conf.py"))
    write("unicornd.conf.py", "workers = 3\n")
    cfg = load()
    assert (cfg.workers, cfg.config_path) == (3, str(tmp_path / "unicornd.conf.py"))
    write("other.py", "workers = 4\n")
    assert load("-c", "other.py").workers == 4  # -c: no default file read


def test_gunicorn_cmd_args_only_when_unicornd_cmd_args_is_unset(load):
    assert load(env={"GUNICORN_CMD_ARGS": "-w 7 --log-level debug"}).workers == 7
    both = {"GUNICORN_CMD_ARGS": "-w 7", "UNICORND_CMD_ARGS": "-t 9"}
    cfg = load(env=both)
    assert (cfg.workers, cfg.timeout) == (1, 9)
    assert load(env={"GUNICORN_CMD_ARGS": "-w 7", "UNICORND_CMD_ARGS": ""}).workers == 1


def test_cmd_args_are_split_as_a_shell_would(load):
    cfg = load(env={"UNICORND_CMD_ARGS": "-n 'my app' -e 'A=b c'"})
    assert (cfg.proc_name, cfg.raw_env) == ("my app", ["A=b c"])


@pytest.mark.parametrize("variable", ["UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS"])
def test_errors_in_cmd_args_name_the_variable(load, variable):
    with pytest.raises(ConfigError) as err:
        load(env={variable: "-w none"})
    assert str(err.value) == (
        f"Invalid value for workers: 'none': expected a positive integer (set in {variable})")
    with pytest.raises(ConfigError) as err:
        load(env={variable: "--bogus"})
    assert str(err.value) == f"Invalid value for {variable}: unrecognized option: --bogus"
    with pytest.raises(ConfigError) as err:
        load(env={variable: "-n 'unclosed"})
    assert str(err.value) == (
        f"Invalid value for {variable}: \"-n 'unclosed\": No closing quotation")


def test_web_concurrency_sets_the_default_workers(load, write):
    assert load(env={"WEB_CONCURRENCY": "5"}).workers == 5
    assert load("-w", "2", env={"WEB_CONCURRENCY": "5"}).workers == 2
    write("conf.py", "workers = 3\n")
    assert load("-c", "conf.py", env={"WEB_CONCURRENCY": "5"}).workers == 3


@pytest.mark.parametrize("value", ["lots", "0", "", "-1"])
def test_bad_web_concurrency_is_an_error_naming_it(load, value):
    with pytest.raises(ConfigError) as err:
        load(env={"WEB_CONCURRENCY": value})
    assert str(err.value) == (f"Invalid value for WEB_CONCURRENCY: {value!r}: expected a "
                              "positive integer (WEB_CONCURRENCY sets the default for workers)")


def test_port_sets_the_default_bind(load):
    assert load(env={"PORT": "5000"}).bind == ["0.0.0.0:5000"]
    assert load("-b", "127.0.0.1:1", env={"PORT": "5000"}).bind == ["127.0.0.1:1"]
    with pytest.raises(ConfigError, match=r"^Invalid value for PORT: 'x': port 'x' is not a "
                       r"number.* \(PORT sets the default for bind\)$"):
        load(env={"PORT": "x"})
    assert load("-b", "127.0.0.1:1", env={"PORT": "x"}).bind == ["127.0.0.1:1"]  # unused


def test_forwarded_allow_ips_environment_default(load):
    assert load(env={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}).forwarded_allow_ips == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match="^Invalid value for FORWARDED_ALLOW_IPS: 'nope'"):
        load(env={"FORWARDED_ALLOW_IPS": "nope"})


@pytest.mark.parametrize("flag,env,expected", [
    ([], {}, True),
    ([], {"SENDFILE": "yes"}, True),
    ([], {"SENDFILE": "Y"}, True),
    ([], {"SENDFILE": "0"}, False),
    ([], {"SENDFILE": "off"}, False),
    (["--no-sendfile"], {"SENDFILE": "1"}, False),
])
def test_sendfile_resolution(load, flag, env, expected):
    assert load(*flag, env=env).sendfile is expected


def test_load_config_is_pure_and_repeatable(load, write, tmp_path):
    import os
    import sys

    path = list(sys.path)
    (tmp_path / "sub").mkdir()
    write("conf.py", "workers = 2\nraw_env = ['UNICORND_TEST_X=1']\nchdir = 'sub'\n")
    first = load("-c", "conf.py")
    assert os.getcwd() == str(tmp_path) and "UNICORND_TEST_X" not in os.environ
    assert sys.path == path
    write("conf.py", "workers = 3\n")  # SIGHUP re-reads the file
    assert load("-c", "conf.py").workers == 3 and first.workers == 2


def test_config_is_frozen_with_plain_attributes(load):
    cfg = load()
    assert isinstance(cfg, Config) and dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 3
    assert not hasattr(cfg, "__dict__")  # slots: no stray attributes
    assert (cfg.warnings, cfg.config_path) == ((), None)
    assert dataclasses.replace(cfg, workers=3).workers == 3


def test_environ_is_the_one_given(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "9")
    monkeypatch.setenv("UNICORND_CMD_ARGS", "-t 5")
    cfg = load_config([], {})
    assert (cfg.workers, cfg.timeout) == (1, 30)
