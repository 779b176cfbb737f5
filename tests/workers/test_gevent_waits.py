"""The gevent worker's wait for a connection's input (ggevent._Readable), which switches
directly on its own io watcher and timer instead of gevent's wait_on_watcher: it must keep that
one's answers. Run in a child process, so that no gevent hub lives in the test process."""

import os
import subprocess
import sys

import pytest
from support import REPO

pytest.importorskip("gevent")

CHECKS = r"""
import socket, time
import gevent
from unicornd.workers.ggevent import _Readable

hub = gevent.get_hub()
a, b = socket.socketpair()
readable = _Readable(hub.loop.io(a.fileno(), 1), hub)
results = {}

def waits():
    start = time.monotonic()
    results["nothing"] = readable.wait(0.2)
    results["waited"] = time.monotonic() - start
    results["nothing, 0"] = readable.wait(0)
    b.send(b"x")
    results["input"] = readable.wait(5)
    # Input and the timeout in the same turn of the loop: the input wins.
    results["input, 0"] = readable.wait(0)
    a.recv(1)
    try:
        readable.wait(30)
    except gevent.GreenletExit:
        results["killed"] = True
    results["watcher left started"] = readable.io.active
    b.send(b"y")
    results["input after the kill"] = readable.wait(5)

green = gevent.spawn(waits)
gevent.sleep(0.5)
green.kill(block=True)  # in the wait(30)
readable.close()
print(sorted(results.items()))
"""


def test_wait_answers_as_gevents_wait_on_watcher():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHECKS], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = dict(eval(proc.stdout))
    assert results.pop("waited") >= 0.2  # never before its time
    assert results == {
        "nothing": False, "nothing, 0": False, "input": True, "input, 0": True,
        "killed": True, "watcher left started": False, "input after the kill": True,
    }, proc.stdout
