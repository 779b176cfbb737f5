"""A greenlet worker whose connections have bytes waiting that nobody reads yet does not spin.
(The keep-alive close, which the hub's deadlines make, is tested in test_greenlet_workers.py.)

The eventlet worker keeps a connection's fd in the hub's (level-triggered) epoll set for the
connection's life instead of adding and removing it around every wait (workers/eventlet_hub.py).
While the app runs, the client may already have sent its next request, or closed its side: the
fd is then readable on every poll with nobody to take it. The worker must stop polling it until
it waits again (a spinning hub would burn about one CPU second per second), and still serve
those bytes afterwards.
"""

import json
import os
import socket
import time

import pytest
from support import Server, children, wait_for
from workers_support import ResponseReader, request_bytes

WINDOW = 2.0  # seconds the worker is watched while the app sleeps
MAX_CPU = 0.6  # CPU seconds allowed in that window (spinning would be about WINDOW)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@pytest.mark.parametrize("kind", ["gevent", "eventlet"])
def test_unread_bytes_during_a_request_do_not_make_the_worker_spin(kind, tmp_path):
    calls = tmp_path / "calls"
    sleep_ms = int((WINDOW + 1.0) * 1000)
    with Server("-k", kind, "-w", "1", "-b", "127.0.0.1:0", "greenapp:app",
                env={"GREENAPP_CALLS": str(calls)}) as srv:
        worker = next(iter(wait_for(lambda: children(srv.proc.pid), message="a worker")))
        with socket.create_connection(srv.address, timeout=30) as pipelining, \
                socket.create_connection(srv.address, timeout=30) as half_closed:
            pipelining.sendall(request_bytes("GET", f"/sleep?ms={sleep_ms}"))
            half_closed.sendall(request_bytes("GET", f"/sleep?ms={sleep_ms}"))
            wait_for(lambda: calls.exists() and calls.read_text().count(f"sleep {sleep_ms}") == 2,
                     10, message="both requests in the app")
            # While the app sleeps: the next request on one connection, EOF on the other.
            pipelining.sendall(request_bytes("GET", "/sleep?ms=1"))
            half_closed.shutdown(socket.SHUT_WR)
            cpu0, t0 = cpu_seconds(worker), time.monotonic()
            wait_for(lambda: time.monotonic() - t0 >= WINDOW, timeout=WINDOW + 5, interval=0.1)
            used = cpu_seconds(worker) - cpu0
            assert used < MAX_CPU, f"worker used {used:.2f} CPU s in {WINDOW} s, the app asleep"
            # The bytes that waited are served; the half-closed client gets its answer.
            reader = ResponseReader(pipelining)
            status, _, body = reader.read()
            assert status == 200 and json.loads(body)["end"] - json.loads(body)["start"] >= WINDOW
            assert reader.read()[0] == 200
            status, _, _ = ResponseReader(half_closed).read()
            assert status == 200
