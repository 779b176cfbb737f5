"""What the command line says about the settings before anything forks (issues 14 and 15):
the worker class is loaded by --check-config and at start, the config file read is named in
the log, debug logs every setting, a mistyped option is named as such."""

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import APPS, REPO, Server, request, run_cli  # noqa: E402

# A stand-in for gunicorn's package (the tests must not need gunicorn installed), with a
# worker class written for gunicorn's API, and a custom class derived from it.
FAKE_GUNICORN = {
    "gunicorn/__init__.py": "",
    "gunicorn/workers/__init__.py": "",
    "gunicorn/workers/base.py": """
        class Worker:
            def __init__(self, age, ppid, sockets, app, timeout, cfg, log):
                self.age = age

            def init_process(self):
                self.run()
    """,
    "gunicorn/workers/sync.py": """
        from gunicorn.workers.base import Worker

        class SyncWorker(Worker):
            def run(self):
                pass
    """,
    "myworkers.py": """
        from gunicorn.workers.sync import SyncWorker

        class MyWorker(SyncWorker):
            pass
    """,
}


@pytest.fixture
def gunicorn_style_worker(tmp_path):
    for name, source in FAKE_GUNICORN.items():
        path = tmp_path / "site" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return {"PYTHONPATH": f"{tmp_path / 'site'}:{APPS}:{REPO}"}


def one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("check", [True, False], ids=["check-config", "start"])
def test_a_worker_class_written_for_gunicorn_is_refused_in_one_line(gunicorn_style_worker, check):
    args = ["--check-config"] if check else ["-b", "127.0.0.1:0"]
    proc = run_cli(*args, "-k", "myworkers.MyWorker", "testapp:app", env=gunicorn_style_worker)
    line = one_line_error(proc)
    assert line.startswith("Error: Invalid value for worker_class: 'myworkers.MyWorker': "), line
    assert "lacks unicornd's worker interface" in line
    assert "gunicorn.workers.sync.SyncWorker" in line  # what it was written for
    assert "unicornd.workers.sync.SyncWorker" in line  # what to derive from instead
    assert "Booting worker" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("check", [True, False], ids=["check-config", "start"])
def test_a_class_that_is_not_a_worker_is_refused_from_a_config_file(tmp_path, check):
    (tmp_path / "conf.py").write_text("class Plain:\n    pass\n\nworker_class = Plain\n")
    args = ["--check-config"] if check else ["-b", "127.0.0.1:0"]
    line = one_line_error(run_cli("-c", str(tmp_path / "conf.py"), *args, "testapp:app"))
    assert line.startswith("Error: Invalid value for worker_class: <type Plain>: worker class "
                           "'__config__:Plain' lacks unicornd's worker interface: it does not "
                           "derive from unicornd.workers.base.Worker"), line


@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_check_config_loads_a_builtin_class_and_its_library(library, tmp_path):
    # A shadow module on PYTHONPATH makes the library look absent: --check-config used to say
    # "Configuration OK" and exit 0, and the start then exited 2.
    (tmp_path / f"{library}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{library}'\", name={library!r})\n")
    env = {"PYTHONPATH": f"{tmp_path}:{APPS}:{REPO}"}
    (tmp_path / "gunicorn.conf.py").write_text(f"worker_class = {library!r}\n")
    line = one_line_error(run_cli("--check-config", "testapp:app", cwd=tmp_path, env=env))
    assert line == (f"Error: Invalid value for worker_class: {library!r}: the {library} worker "
                    f"needs {library}, which is not installed: pip install 'unicornd[{library}]' "
                    f"(set in ./gunicorn.conf.py)")


@pytest.mark.parametrize("kind", ["sync", "gthread", "gevent", "eventlet"])
def test_check_config_passes_with_each_builtin_class(kind):
    proc = run_cli("--check-config", "-k", kind, "testapp:app")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Configuration OK: testapp:app loads."


def test_check_config_names_the_settings_that_do_nothing_here(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("control_socket = '/tmp/g.ctl'\n"
                                               "tmp_upload_dir = '/var/tmp'\n")
    proc = run_cli("--check-config", "testapp:app", cwd=tmp_path,
                   env={"PYTHONPATH": f"{APPS}:{REPO}"})
    assert proc.returncode == 0, proc.stderr
    assert "Loaded configuration from ./gunicorn.conf.py" in proc.stderr
    assert "[WARNING] Setting 'control_socket' (--control-socket) (set in ./gunicorn.conf.py) " \
           "has no effect in unicornd" in proc.stderr
    assert "[WARNING] Setting 'tmp_upload_dir' (set in ./gunicorn.conf.py) has no effect in " \
           "unicornd: gunicorn never reads it either" in proc.stderr


def test_the_config_file_read_is_named_in_the_log_and_by_print_config(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 1\nloglevel = 'debug'\n")
    env = {"PYTHONPATH": f"{APPS}:{REPO}"}
    printed = run_cli("--print-config", "testapp:app", cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr
    assert "\nconfig                             = ./gunicorn.conf.py\n" in printed.stdout
    with Server("-b", "127.0.0.1:0", "testapp:app", cwd=tmp_path, env=env) as srv:
        assert request(srv.address, "/hello")[0] == 200
        log = srv.log
    assert "[INFO] Loaded configuration from ./gunicorn.conf.py" in log
    # At debug, every setting as gunicorn logs them: "Current configuration:", "  name: value".
    assert "[DEBUG] Current configuration:\n  config: ./gunicorn.conf.py\n" in log
    assert "\n  loglevel: debug\n" in log and "\n  worker_class: sync\n" in log


def test_no_config_file_no_line_and_print_config_says_none(tmp_path):
    env = {"PYTHONPATH": f"{APPS}:{REPO}"}
    printed = run_cli("--print-config", "testapp:app", cwd=tmp_path, env=env)
    assert "\nconfig                             = None\n" in printed.stdout
    with Server("-b", "127.0.0.1:0", "testapp:app", cwd=tmp_path, env=env) as srv:
        assert request(srv.address, "/hello")[0] == 200
        log = srv.log
    assert "Loaded configuration" not in log and "Current configuration" not in log


def test_a_python_module_config_is_named_with_its_file(tmp_path):
    (tmp_path / "settings_mod.py").write_text("workers = 1\n")
    env = {"PYTHONPATH": f"{tmp_path}:{APPS}:{REPO}"}
    with Server("-c", "python:settings_mod", "-b", "127.0.0.1:0", "testapp:app", cwd=tmp_path,
                env=env) as srv:
        assert request(srv.address, "/hello")[0] == 200
        log = srv.log
    assert f"Loaded configuration from python:settings_mod ({tmp_path / 'settings_mod.py'})" in log


def test_a_mistyped_option_is_named_not_the_app():
    proc = run_cli("--wokers", "3", "testapp:app")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "unicornd: error: unrecognized option: --wokers (did you mean --workers?)"), proc.stderr
    assert "testapp:app" not in proc.stderr
