"""Resource exhaustion, end to end: a worker out of file descriptors backs off, logs once, serves on.

unicornd runs under a low RLIMIT_NOFILE (set in the child before exec, so master and workers
inherit it); idle client connections use up the worker's descriptors, so accept() fails with
EMFILE. The worker must log that once (not a line per attempt), not spin (its CPU time over the
saturated window is bounded: a spinning loop would burn about one CPU second per second), and
serve again once the clients close.

A full disk under the access log is covered in tests/server/test_logging.py.
"""
import functools
import resource
import socket
import subprocess
import time

import pytest

import support
from support import Server, children, wait_for

NOFILE = 64                   # the worker's descriptor limit
CLIENTS = 3 * NOFILE          # enough idle connections to exhaust it
WINDOW = 3.0                  # seconds the worker is watched while saturated
MAX_CPU = 0.6                 # CPU seconds allowed in that window (spinning would be ~WINDOW)
TICKS = __import__("os").sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS     # utime + stime


def _limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def start_limited(*args):
    """Server(...) whose process starts under RLIMIT_NOFILE = NOFILE (preexec_fn)."""
    real = subprocess.Popen
    support.subprocess.Popen = functools.partial(real, preexec_fn=_limit)
    try:
        return Server(*args)
    finally:
        support.subprocess.Popen = real


@pytest.mark.parametrize("worker_class", [
    "sync",
    "gthread",
])
def test_emfile_on_accept_backs_off_logs_once_and_recovers(worker_class):
    server = start_limited("-w", "1", "-k", worker_class, "-b", "127.0.0.1:0",
                           "--header-timeout", "60", "testapp:app")
    clients = []
    try:
        worker = wait_for(lambda: children(server.proc.pid), message="a worker")
        worker = next(iter(worker))
        with open(f"/proc/{worker}/limits") as f:
            assert any(line.startswith("Max open files") and f" {NOFILE} " in line for line in f)
        # slow clients (the start of a request line, then nothing; an idle connection would not
        # even be accepted under TCP_DEFER_ACCEPT) until the worker's accept() fails
        for _ in range(CLIENTS):
            s = socket.create_connection(server.address, timeout=5)
            s.sendall(b"GET /")
            clients.append(s)
        server.wait_log(r"accept\(\) failed: .*(Too many open files|EMFILE)", timeout=15)
        assert support.alive(worker)

        # saturated: the backlog still holds connections the worker cannot accept
        cpu0, t0 = cpu_seconds(worker), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= WINDOW, timeout=WINDOW + 5, interval=0.1)
        used = cpu_seconds(worker) - cpu0
        assert used < MAX_CPU, f"worker used {used:.2f} CPU s in {WINDOW} s while out of fds"
        failures = [ln for ln in server.lines if "accept() failed" in ln]
        assert len(failures) == 1, "\n".join(failures[:20])
        assert support.alive(worker) and server.proc.poll() is None

        # the clients go away: the worker serves again
        for s in clients:
            s.close()
        clients.clear()
        wait_for(server._answers, timeout=20, interval=0.1,
                 message=lambda: f"a worker to answer again\n{server.log[-3000:]}")
        status, _, _ = support.parse_response(support.raw_request(
            server.address, b"GET /__ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        assert status == 200
        failures = [ln for ln in server.lines if "accept() failed" in ln]
        assert len(failures) == 1, "\n".join(failures[:20])
    finally:
        for s in clients:
            s.close()
        server.stop()
