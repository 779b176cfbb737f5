"""Config files: gunicorn's load unchanged; python: modules; misspellings; errors."""

import pytest

from unicornd.config import ConfigError, format_config

GUNICORN_CONF = '''
import multiprocessing
import os

# Helper names a gunicorn config typically has: ignored.
cores = multiprocessing.cpu_count()
workers_per_core = 2
host = os.environ.get("HOST", "127.0.0.1")
_private = "x"

wsgi_app = "myproject.wsgi:application"
bind = [f"{host}:8001", "unix:/tmp/myproject.sock"]
backlog = "512"
workers = "3"
worker_class = "gunicorn.workers.sync.SyncWorker"
threads = 1
worker_connections = 500
timeout = "60"
graceful_timeout = 20
keepalive = "5"
limit_request_line = 8190
limit_request_fields = "200"
limit_request_field_size = 0
permit_obsolete_folding = "false"
permit_unconventional_http_method = False
permit_unconventional_http_version = "False"
casefold_http_method = False
strip_header_spaces = "false"
header_map = "refuse"
proxy_protocol = "v2"
proxy_allow_ips = "10.0.0.0/8,127.0.0.1"
forwarded_allow_ips = "*"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
forwarder_headers = "SCRIPT_NAME,PATH_INFO,REMOTE_USER"
sendfile = False
reuse_port = "true"
chdir = os.path.dirname(os.path.abspath(__file__))
pythonpath = "lib,vendor"
raw_env = ["DJANGO_SETTINGS_MODULE=myproject.settings", "EMPTY="]
loglevel = "warning"
errorlog = "-"
proc_name = "myproject"
# gunicorn's defaults for settings unicornd does not support are fine
accesslog = None
daemon = False
max_requests = 0

calls = []

def on_starting(server):
    calls.append("on_starting")

def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)

def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")

def pre_request(worker, req):
    pass

def post_request(worker, req, environ):
    calls.append(environ)

def nworkers_changed(server, new_value, old_value):
    pass

when_ready = "hookmod.ready"
'''


def test_a_gunicorn_config_file_loads_unchanged(load, write, tmp_path):
    write("hookmod.py", "def ready(server):\n    return 'ready'\n")
    conf = write("gunicorn.conf.py", GUNICORN_CONF)
    cfg = load()
    assert cfg.config_path == str(conf)
    assert cfg.warnings == ()
    assert cfg.wsgi_app == "myproject.wsgi:application"
    assert cfg.bind == ["127.0.0.1:8001", "unix:/tmp/myproject.sock"]
    assert (cfg.backlog, cfg.workers, cfg.worker_class, cfg.threads) == (512, 3, "sync", 1)
    assert (cfg.worker_connections, cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (
        500, 60, 20, 5)
    assert (cfg.limit_request_line, cfg.limit_request_fields,
            cfg.limit_request_field_size) == (8190, 200, 0)
    assert not any([cfg.permit_obsolete_folding, cfg.permit_unconventional_http_method,
                    cfg.permit_unconventional_http_version, cfg.casefold_http_method,
                    cfg.strip_header_spaces])
    assert (cfg.header_map, cfg.proxy_protocol) == ("refuse", "v2")
    assert cfg.proxy_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert cfg.forwarded_allow_ips == ["*"]
    assert cfg.secure_scheme_headers == {"X-FORWARDED-PROTO": "https"}
    assert cfg.forwarder_headers == ["SCRIPT_NAME", "PATH_INFO", "REMOTE_USER"]
    assert (cfg.sendfile, cfg.reuse_port) == (False, True)
    assert cfg.chdir == str(tmp_path)
    assert cfg.pythonpath == "lib,vendor"
    assert cfg.raw_env == ["DJANGO_SETTINGS_MODULE=myproject.settings", "EMPTY="]
    assert (cfg.loglevel, cfg.errorlog, cfg.proc_name) == ("warning", "-", "myproject")
    # hooks: callables from the file, a dotted path resolved, post_request widened to 4
    cfg.on_starting(None)
    cfg.post_request("worker", "req", {"PATH_INFO": "/"}, "resp")
    assert cfg.on_starting.__globals__["calls"] == ["on_starting", {"PATH_INFO": "/"}]
    assert cfg.when_ready(None) == "ready"
    assert cfg.post_fork.__name__ == "post_fork"
    assert "post_request                       = <post_request()>" in format_config(cfg)


def test_file_prefix_and_dunder_file(load, write, tmp_path):
    write("conf/app.conf.py", "import os\nproc_name = os.path.basename(__file__)\n")
    assert load("-c", "file:conf/app.conf.py").proc_name == "app.conf.py"


def test_config_file_may_import_modules_next_to_it_in_the_current_directory(load, write):
    write("settings_helper.py", "WORKERS = 6\n")
    write("conf.py", "from settings_helper import WORKERS as workers\n")
    assert load("-c", "conf.py").workers == 6


def test_config_file_is_not_compiled_with_the_loaders_future_flags(load, write):
    write("conf.py", "def post_fork(server, worker: int): pass\n"
                     "proc_name = str(post_fork.__annotations__)\n")
    assert load("-c", "conf.py").proc_name == "{'worker': <class 'int'>}"


def test_python_module_config(load, write, tmp_path):
    write("deploy/__init__.py", "")
    mod = write("deploy/unicorn_settings.py", """
        workers = 4
        bind = "127.0.0.1:7000"
        def on_exit(server):
            pass
        wokers = 5
    """)
    cfg = load("-c", "python:deploy.unicorn_settings")
    assert (cfg.workers, cfg.bind, cfg.on_exit.__module__) == (
        4, ["127.0.0.1:7000"], "deploy.unicorn_settings")
    assert cfg.config_path == str(mod)
    assert cfg.warnings == (
        "Unknown setting 'wokers' in python:deploy.unicorn_settings (did you mean 'workers'?)",)


def test_python_module_that_cannot_be_imported(load):
    with pytest.raises(ConfigError) as err:
        load("-c", "python:no_such_settings_module")
    assert str(err.value).splitlines()[0] == (
        "Failed to read config file python:no_such_settings_module: ModuleNotFoundError: "
        "No module named 'no_such_settings_module'")


def test_misspelt_names_warn_with_the_nearest_setting(load, write):
    write("conf.py", """
        import os
        from os import path as osp
        worker = 2
        log_level = "debug"
        BIND = "127.0.0.1:1"
        keep_alive = 3
        max_request = 10
        port = 8000
        cores = 4
        workers_per_core = 2
        keepalive_str = "5"
        timeout_str = "30"
        use_loglevel = "info"
        _worker = 1
        def post_forks(server, worker):
            pass
    """)
    cfg = load("-c", "conf.py")
    assert cfg.warnings == (
        "Unknown setting 'worker' in conf.py (did you mean 'workers'?)",
        "Unknown setting 'log_level' in conf.py (did you mean 'loglevel'?)",
        "Unknown setting 'BIND' in conf.py (did you mean 'bind'?)",
        "Unknown setting 'keep_alive' in conf.py (did you mean 'keepalive'?)",
        "Unknown setting 'max_request' in conf.py (did you mean 'max_requests'?)",
        "Unknown setting 'post_forks' in conf.py (did you mean 'post_fork'?)",
    )
    assert (cfg.workers, cfg.loglevel, cfg.bind) == (1, "info", ["127.0.0.1:8000"])


def test_config_file_that_raises_shows_its_traceback(load, write):
    write("conf.py", """
        workers = 2

        def compute():
            return 1 / 0

        timeout = compute()
    """)
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    lines = str(err.value).splitlines()
    assert lines[0] == "Failed to read config file conf.py, line 5: ZeroDivisionError: division by zero"
    assert lines[1] == "Traceback (most recent call last):"
    text = str(err.value)
    assert 'conf.py", line 7, in <module>' in text and 'line 5, in compute' in text
    assert "loader.py" not in text  # our frames are left out
    assert err.value.setting == "config"


def test_config_file_with_a_syntax_error(load, write):
    write("conf.py", "workers = 2\nbind = [\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    first, *rest = str(err.value).splitlines()
    assert first.startswith("Failed to read config file conf.py, line 2: SyntaxError:")
    assert any("conf.py" in line and "line 2" in line for line in rest)


def test_config_file_calling_sys_exit(load, write):
    write("conf.py", "import sys\nsys.exit('no config for you')\n")
    with pytest.raises(ConfigError, match="^Failed to read config file conf.py, line 2: SystemExit: "
                       "no config for you"):
        load("-c", "conf.py")


def test_missing_config_file(load):
    with pytest.raises(ConfigError) as err:
        load("-c", "nowhere.py")
    assert str(err.value) == "Invalid value for config: 'nowhere.py': no such file"
    with pytest.raises(ConfigError) as err:
        load(env={"UNICORND_CMD_ARGS": "-c nowhere.py"})
    assert str(err.value) == (
        "Invalid value for config: 'nowhere.py': no such file (set in UNICORND_CMD_ARGS)")


def test_config_file_without_py_extension_is_read_with_a_warning(load, write):
    write("unicornd.cfg", "workers = 2\n")
    cfg = load("-c", "unicornd.cfg")
    assert cfg.workers == 2
    assert cfg.warnings == ("Config file unicornd.cfg has no .py extension; read as Python "
                            "anyway",)


def test_config_setting_records_the_file_given(load, write):
    write("c.py", "")
    assert load("-c", "c.py").config == "c.py"
    assert load().config is None  # no file read: --print-config says so
