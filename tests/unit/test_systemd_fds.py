"""Socket activation with a LISTEN_FDS that names an fd which is not an open socket: a clear
one-line error naming the fd, not a traceback (issue 14, item 9)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unicornd.master import listeners
from unicornd.master.systemd import listen_fds

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "server" / "apps"


def _closed_fd() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


def test_listen_fds_does_not_fail_on_a_closed_fd_and_from_systemd_names_it():
    fd = _closed_fd()
    with pytest.raises(listeners.BindError, match=rf"LISTEN_FDS names fd {fd} \(x\), which is not open"):
        listeners.from_systemd([(fd, "x")], None)


def test_from_systemd_refuses_an_fd_that_is_not_a_socket(tmp_path):
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(listeners.BindError, match=rf"fd {f.fileno()} \(x\), which is not a socket"):
            listeners.from_systemd([(f.fileno(), "x")], None)


def test_server_started_with_a_closed_listen_fd_says_so_and_exits():
    # sh's pid is the one unicornd runs as (exec), so LISTEN_PID matches; fd 3 is not open.
    env = {k: v for k, v in os.environ.items() if k not in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)])
    proc = subprocess.run(
        ["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "{sys.executable}" -m unicornd testapp:app'],
        cwd=APPS, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "LISTEN_FDS names fd 3 (unknown), which is not open" in out, out
    assert "Traceback" not in out, out
