"""Every validator's good and bad values; messages name the setting, the value, what is allowed."""

import os

import pytest

from unicornd.config import ConfigError, load_config

GOOD = [
    # (argv, setting, value)
    (["-w", "4"], "workers", 4),
    (["--workers", " 12 "], "workers", 12),
    (["-w", "0x10"], "workers", 16),
    (["--backlog", "0"], "backlog", 0),
    (["--backlog", "64"], "backlog", 64),
    (["-t", "0"], "timeout", 0),
    (["--timeout", "120"], "timeout", 120),
    (["--graceful-timeout", "5"], "graceful_timeout", 5),
    (["--keep-alive", "75"], "keepalive", 75),
    (["--threads", "1"], "threads", 1),
    (["--worker-connections", "10"], "worker_connections", 10),
    (["--limit-request-line", "0"], "limit_request_line", 0),
    (["--limit-request-fields", "50"], "limit_request_fields", 50),
    (["--limit-request-field_size", "1024"], "limit_request_field_size", 1024),
    (["-k", "sync"], "worker_class", "sync"),
    (["-k", "gunicorn.workers.sync.SyncWorker"], "worker_class", "sync"),
    (["-k", "egg:gunicorn#sync"], "worker_class", "sync"),
    (["-k", "unicornd.workers.sync:SyncWorker"], "worker_class", "sync"),
    (["-k", "gthread"], "worker_class", "gthread"),
    (["-k", "gunicorn.workers.gthread.ThreadWorker"], "worker_class", "gthread"),
    (["-k", "egg:gunicorn#gthread"], "worker_class", "gthread"),
    (["-k", "unicornd.workers.gthread:ThreadWorker"], "worker_class", "gthread"),
    (["--log-level", "DEBUG"], "loglevel", "debug"),
    (["--log-level", "warning"], "loglevel", "warning"),
    (["--error-logfile", "/tmp/err.log"], "errorlog", "/tmp/err.log"),
    (["--log-file", "-"], "errorlog", "-"),
    (["--header-map", "Refuse"], "header_map", "refuse"),
    (["--header-map", "dangerous"], "header_map", "dangerous"),
    (["--proxy-protocol"], "proxy_protocol", "auto"),
    (["--proxy-protocol", "v1"], "proxy_protocol", "v1"),
    (["--proxy-protocol", "v2"], "proxy_protocol", "v2"),
    (["--proxy-protocol", "true"], "proxy_protocol", "auto"),
    (["--proxy-protocol", "false"], "proxy_protocol", "off"),
    (["--proxy-allow-from", "*"], "proxy_allow_ips", ["*"]),
    (["--proxy-allow-from", "10.0.0.0/8, 192.168.1.1"], "proxy_allow_ips",
     ["10.0.0.0/8", "192.168.1.1"]),
    (["--forwarded-allow-ips", "::1,fd00::/8"], "forwarded_allow_ips", ["::1", "fd00::/8"]),
    (["--forwarded-allow-ips", ""], "forwarded_allow_ips", []),
    (["--forwarder-headers", "SCRIPT_NAME, REMOTE_USER"], "forwarder_headers",
     ["SCRIPT_NAME", "REMOTE_USER"]),
    (["--no-sendfile"], "sendfile", False),
    (["--reuse-port"], "reuse_port", True),
    (["--permit-obsolete-folding"], "permit_obsolete_folding", True),
    (["--strip-header-spaces"], "strip_header_spaces", True),
    (["--permit-unconventional-http-method"], "permit_unconventional_http_method", True),
    (["--permit-unconventional-http-version"], "permit_unconventional_http_version", True),
    (["--casefold-http-method"], "casefold_http_method", True),
    (["--check-config"], "check_config", True),
    (["--print-config"], "print_config", True),
    (["-e", "A=1", "--env", "B=x=y", "-e", "C="], "raw_env", ["A=1", "B=x=y", "C="]),
    (["--pythonpath", "/a,/b"], "pythonpath", "/a,/b"),
    (["-n", "web"], "proc_name", "web"),
    (["--name", " api "], "proc_name", "api"),
    (["-b", "0.0.0.0:80"], "bind", ["0.0.0.0:80"]),
    (["-b", "localhost", "--bind", "unix:/run/u.sock", "-b", "fd://3", "-b", "[::1]:9000"],
     "bind", ["localhost", "unix:/run/u.sock", "fd://3", "[::1]:9000"]),
    (["app:app"], "wsgi_app", "app:app"),
]


@pytest.mark.parametrize("argv,name,value", GOOD,
                         ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_good_command_line_values(load, argv, name, value):
    assert getattr(load(*argv), name) == value


def test_long_options_may_be_abbreviated_as_in_gunicorn(load):
    assert load("--limit-request-field_s", "10").limit_request_field_size == 10
    assert load("--graceful", "3").graceful_timeout == 3


def test_chdir_is_made_absolute(load, tmp_path):
    (tmp_path / "sub").mkdir()
    assert load("--chdir", "sub").chdir == str(tmp_path / "sub")
    assert load().chdir == os.getcwd()


BAD = [
    # (argv, exact message)
    (["-w", "abc"], "Invalid value for workers: 'abc': expected a positive integer"),
    (["-w", "0"], "Invalid value for workers: '0': expected a positive integer"),
    (["-w", "-2"], "Invalid value for workers: '-2': expected a positive integer"),
    (["-w", "1.5"], "Invalid value for workers: '1.5': expected a positive integer"),
    (["--backlog", "-1"], "Invalid value for backlog: '-1': expected a non-negative integer"),
    (["-t", "soon"], "Invalid value for timeout: 'soon': expected a non-negative integer"),
    (["--keep-alive", ""], "Invalid value for keepalive: '': expected a non-negative integer"),
    (["--threads", "x"], "Invalid value for threads: 'x': expected a non-negative integer"),
    (["--limit-request-line", "big"],
     "Invalid value for limit_request_line: 'big': expected a non-negative integer"),
    (["-b", "nonsense.invalid"], "Invalid value for bind: 'nonsense.invalid': host "
     "'nonsense.invalid' does not resolve to an address; expected HOST:PORT, [IPv6]:PORT, "
     "unix:PATH or fd://N"),
    (["-b", "127.0.0.1:http"], "Invalid value for bind: '127.0.0.1:http': port 'http' is not a "
     "number; expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
    (["-b", "127.0.0.1:65536"],
     "Invalid value for bind: '127.0.0.1:65536': port 65536 is out of range 0..65535"),
    (["-b", "localhost:80", "-b", "::1"], "Invalid value for bind: '::1': an IPv6 address must be in "
     "brackets, as in [::1]:8000; expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
    (["-e", "NOVALUE"], "Invalid value for raw_env: 'NOVALUE': expected KEY=VALUE"),
    (["-e", "=1"], "Invalid value for raw_env: '=1': expected KEY=VALUE"),
    (["--log-level", "WARN"], "Invalid value for loglevel: 'WARN': expected debug, info, "
     "warning, error or critical"),
    (["--header-map", "keep"],
     "Invalid value for header_map: 'keep': expected drop, refuse or dangerous"),
    (["--proxy-protocol", "v3"],
     "Invalid value for proxy_protocol: 'v3': expected off, v1, v2 or auto"),
    (["--forwarded-allow-ips", "10.0.0.0/8,proxy"],
     "Invalid value for forwarded_allow_ips: 'proxy': expected comma-separated IP addresses "
     "or networks (such as 10.0.0.0/8), or *"),
    (["--proxy-allow-from", "10.0.0.1/8"],
     "Invalid value for proxy_allow_ips: '10.0.0.1/8': 10.0.0.1/8 has host bits set; expected "
     "comma-separated IP addresses or networks (such as 10.0.0.0/8), or *"),
    (["--chdir", "missing"],
     "Invalid value for chdir: 'missing': expected the path of an existing directory"),
    (["-k", "tornado"], "Invalid value for worker_class: 'tornado': worker class 'tornado' is "
     "not supported yet; available: sync, gthread, gevent, eventlet"),
    (["-k", "bogus"], "Invalid value for worker_class: 'bogus': unknown worker class 'bogus'; "
     "built-in classes: sync, gthread, gevent, eventlet (or a dotted path such as mypkg.workers.MyWorker)"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=lambda x: " ".join(x) if isinstance(x, list)
                         else None)
def test_bad_command_line_values(load, argv, message):
    with pytest.raises(ConfigError) as err:
        load(*argv)
    assert str(err.value) == message


def test_worker_class_import_errors_list_the_builtin_classes(load):
    with pytest.raises(ConfigError, match=r"^Invalid value for worker_class: 'nosuchmod\.W': "
                       r"cannot import .*\(built-in classes: sync, gthread, gevent, eventlet\)$"):
        load("-k", "nosuchmod.W")
    with pytest.raises(ConfigError, match=r"'path' is not a class .*\(built-in classes: sync, gthread, gevent, eventlet\)"):
        load("-k", "os.path")


def test_threads_above_one_switch_the_sync_class_to_gthread(load, write):
    # As gunicorn: the default class (or an explicit sync) with threads > 1 is gthread.
    assert load("--threads", "4").worker_class == "gthread"
    assert load("-k", "sync", "--threads", "2").worker_class == "gthread"
    assert load("-k", "egg:gunicorn#sync", "--threads", "2").worker_class == "gthread"
    assert load("--threads", "1").worker_class == "sync"
    assert load("-k", "gthread", "--threads", "1").worker_class == "gthread"
    write("threads.conf.py", "threads = 3\n")
    assert load("-c", "threads.conf.py").worker_class == "gthread"


def test_custom_worker_class_found_through_chdir_and_pythonpath(load, write, tmp_path):
    write("site/mywork.py", "from unicornd.workers.sync import SyncWorker\nclass Worker(SyncWorker):\n    pass\n")
    write("lib/otherwork.py", "from unicornd.workers.sync import SyncWorker\nclass Worker(SyncWorker):\n    pass\n")
    cfg = load("-k", "mywork.Worker", "--chdir", "site")
    assert cfg.worker_class == "mywork.Worker"
    cfg = load("-k", "otherwork:Worker", "--pythonpath", str(tmp_path / "lib"), "--threads", "8")
    assert (cfg.worker_class, cfg.threads) == ("otherwork:Worker", 8)  # threads: its business
    assert str(tmp_path / "lib") not in __import__("sys").path  # sys.path is left as it was


def test_argparse_usage_errors_exit_2(load, capsys):
    for argv in (["--no-such-flag"], ["-w"], ["a:app", "b:app"]):
        with pytest.raises(SystemExit) as exit:
            load(*argv)
        assert exit.value.code == 2
    assert "usage: unicornd" in capsys.readouterr().err


# Config files give Python objects; gunicorn's validators accept strings for most of them.
FILE_GOOD = [
    ("workers = '3'", "workers", 3),
    ("workers = True", "workers", 1),  # gunicorn: booleans are ints
    ("timeout = ' 0x1e '", "timeout", 30),
    ("reuse_port = 'true'", "reuse_port", True),
    ("reuse_port = ' FALSE '", "reuse_port", False),
    ("reuse_port = None", "reuse_port", False),
    ("sendfile = 'false'", "sendfile", False),
    ("sendfile = True", "sendfile", True),
    ("bind = '127.0.0.1:9000'", "bind", ["127.0.0.1:9000"]),
    ("bind = ('127.0.0.1:1', 'unix:x.sock')", "bind", ["127.0.0.1:1", "unix:x.sock"]),
    ("raw_env = 'A=1'", "raw_env", ["A=1"]),
    ("raw_env = []", "raw_env", []),
    ("forwarded_allow_ips = ['10.1.0.0/16', '*']", "forwarded_allow_ips", ["10.1.0.0/16", "*"]),
    ("forwarder_headers = ['SCRIPT_NAME']", "forwarder_headers", ["SCRIPT_NAME"]),
    ("secure_scheme_headers = {'x-forwarded-proto': 'https'}", "secure_scheme_headers",
     {"X-FORWARDED-PROTO": "https"}),
    ("proxy_protocol = True", "proxy_protocol", "auto"),
    ("proxy_protocol = False", "proxy_protocol", "off"),
    ("header_map = None", "header_map", "drop"),
    ("loglevel = 'Error'", "loglevel", "error"),
    ("proc_name = None", "proc_name", None),
    ("wsgi_app = 'pkg.wsgi:application'", "wsgi_app", "pkg.wsgi:application"),
]


@pytest.mark.parametrize("line,name,value", FILE_GOOD, ids=lambda x: x if isinstance(x, str)
                         and "=" in x else None)
def test_good_config_file_values(load, write, line, name, value):
    write("conf.py", line + "\n")
    assert getattr(load("-c", "conf.py"), name) == value


FILE_BAD = [
    ("workers = 2.0", "Invalid value for workers: 2.0: expected a positive integer"),
    ("workers = [2]", "Invalid value for workers: [2]: expected a positive integer"),
    ("timeout = None", "Invalid value for timeout: None: expected a non-negative integer"),
    ("reuse_port = 1", "Invalid value for reuse_port: 1: expected true or false"),
    ("reuse_port = 'yes'", "Invalid value for reuse_port: 'yes': expected true or false"),
    ("bind = []", "Invalid value for bind: []: expected at least one address; expected "
     "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
    ("bind = 8000", "Invalid value for bind: 8000: expected a string or a list of strings; "
     "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
    ("bind = ['unix:']", "Invalid value for bind: 'unix:': unix: needs a socket path; expected "
     "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
    ("raw_env = {'A': '1'}",
     "Invalid value for raw_env: {'A': '1'}: expected a KEY=VALUE string or a list of them"),
    ("secure_scheme_headers = ['X-FORWARDED-PROTO']",
     "Invalid value for secure_scheme_headers: ['X-FORWARDED-PROTO']: expected a dict of header "
     "name to value, both strings"),
    ("secure_scheme_headers = {'X-A': 1}", "Invalid value for secure_scheme_headers: "
     "{'X-A': 1}: expected a dict of header name to value, both strings"),
    ("errorlog = 3", "Invalid value for errorlog: 3: expected a string"),
    ("loglevel = None", "Invalid value for loglevel: None: expected debug, info, warning, error "
     "or critical"),
    ("wsgi_app = ''", "Invalid value for wsgi_app: '': expected a non-empty string or None"),
    ("worker_class = 3", "Invalid value for worker_class: 3: expected a worker class name or a "
     "dotted path to a class"),
]


@pytest.mark.parametrize("line,message", FILE_BAD, ids=lambda x: x if "=" in x and
                         not x.startswith("Invalid") else None)
def test_bad_config_file_values(load, write, line, message):
    write("conf.py", line + "\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == message + " (set in conf.py)"


def test_worker_class_given_as_a_class_in_the_config_file(load, write):
    write("conf.py", """
        from unicornd.workers.sync import SyncWorker
        class MyWorker(SyncWorker):
            pass
        worker_class = MyWorker
    """)
    assert load("-c", "conf.py").worker_class == "__config__:MyWorker"


def test_worker_class_given_as_a_function_returning_a_class(load, write):
    write("workmod.py", "from unicornd.workers.sync import SyncWorker\nclass W(SyncWorker):\n    pass\n")
    write("conf.py", """
        def worker_class():
            import workmod
            return workmod.W
    """)
    assert load("-c", "conf.py").worker_class == "workmod:W"


def test_errors_from_a_config_file_value_name_it_even_if_overridden(load, write):
    # As gunicorn: each source is validated as it is read.
    write("conf.py", "workers = 'many'\n")
    with pytest.raises(ConfigError, match="Invalid value for workers: 'many'"):
        load("-c", "conf.py", "-w", "2")


def test_config_error_carries_setting_and_source(load, write):
    write("conf.py", "timeout = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert (err.value.setting, err.value.source) == ("timeout", "conf.py")
    with pytest.raises(ConfigError) as err:
        load_config(["-t", "x"], {})
    assert (err.value.setting, err.value.source) == ("timeout", "command line")
