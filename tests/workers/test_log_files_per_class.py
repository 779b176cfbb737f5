"""Log files in every worker class (issue 14): files the master creates for workers that run
as another user, and the logging a PasteDeploy ini file configures."""

import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from workers_support import server_args
from support import Server, request, wait_for


def lines_of(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def root_owned_dir():
    """A directory only root may create files in, which other users can traverse (pytest's
    tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="unicornd-logs-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: workers switch to the user nobody")
def test_workers_as_nobody_log_to_files_in_a_root_owned_directory(worker_class, root_owned_dir):
    # gunicorn creates the log files as root and gives them to the workers' user; the workers
    # open (and on USR1 reopen) them after dropping privileges.
    nobody = pwd.getpwnam("nobody")
    access, error = root_owned_dir / "access.log", root_owned_dir / "error.log"
    args = server_args(worker_class, "-w", "1", "-u", "nobody", "-g", str(nobody.pw_gid),
                       "--access-logfile", str(access), "--error-logfile", str(error))
    with Server(*args, "testapp:app", expect_listen=False) as srv:
        wait_for(lambda: "Listening at" in error.read_text() if error.exists() else False, 20,
                 message=lambda: f"the server to start\n{srv.log}")
        url = next(line.split("Listening at: ")[1].split(" ")[0] for line in lines_of(error)
                   if "Listening at: " in line)
        host, port = url.split("://")[1].rsplit(":", 1)
        address = (host, int(port))

        def answers(path):
            def attempt():
                try:
                    return request(address, path, timeout=5)[0] == 200
                except OSError:
                    return False
            return attempt
        wait_for(answers("/hello?before=1"), 20, interval=0.2,
                 message=lambda: f"a worker to answer\n{error.read_text()}")
        assert os.stat(access).st_uid == nobody.pw_uid and os.stat(error).st_uid == nobody.pw_uid
        wait_for(lambda: any("before=1" in line for line in lines_of(access)), 10)

        # A log rotation: the files move away, USR1; the new files are the workers' too.
        os.rename(access, root_owned_dir / "access.log.1")
        os.rename(error, root_owned_dir / "error.log.1")
        srv.signal(signal.SIGUSR1)
        wait_for(lambda: access.exists() and error.exists(), 10, message="the new log files")

        def new_file_gets_lines():
            request(address, "/hello?after=1", timeout=5)
            return any("after=1" in line for line in lines_of(access))
        wait_for(new_file_gets_lines, 15, interval=0.2,
                 message=lambda: f"the reopened access log\n{(root_owned_dir / 'error.log.1').read_text()}")
        assert os.stat(access).st_uid == nobody.pw_uid
        assert "Worker failed to boot" not in (root_owned_dir / "error.log.1").read_text()


PASTE_APP = '''
import logging

def make_app(global_conf, **local_conf):
    def app(environ, start_response):
        logging.getLogger("myapp").warning("handled %s", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    return app
'''

PASTE_INI = '''
[app:main]
use = call:pasteapp:make_app

[loggers]
keys = root, myapp

[handlers]
keys = applog

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers =

[logger_myapp]
level = INFO
handlers = applog
qualname = myapp

[handler_applog]
class = FileHandler
args = ('%(here)s/app.log', 'a')
formatter = plain

[formatter_plain]
format = FROM-INI %(name)s %(message)s
'''


def test_paste_ini_with_loggers_configures_logging(worker_class, tmp_path):
    # gunicorn: with --paste, an ini file that has a [loggers] section is the logconfig.
    (tmp_path / "pasteapp.py").write_text(PASTE_APP)
    (tmp_path / "app.ini").write_text(PASTE_INI)
    with Server(*server_args(worker_class, "-w", "1"), "--paste", "app.ini", cwd=tmp_path) as srv:
        assert request(srv.address, "/from-paste")[0] == 200
        wait_for(lambda: "FROM-INI myapp handled /from-paste" in "\n".join(lines_of(tmp_path / "app.log")),
                 10, message=lambda: f"the ini's handler to write\n{srv.log}")
