"""max_workers end to end: the worker count follows a load that steps up and down, and no
request fails (issue 17, part 2). The decisions themselves (one change per period, the floor
and the ceiling, hysteresis) are checked in-process in tests/master/.

Short periods (1 s up, 2 s down) keep the test short; every wait is a poll with a deadline.
The deadlines are generous (a worker must boot, on a shared machine); what is asserted
exactly is what the master says it waited for, and the order of the changes.
"""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from support import APPS, REPO, Load, Server, children, request, wait_for

UP, DOWN = 1.0, 2.0
FLOOR, CEILING = 1, 3
HOOK = """
import time

def nworkers_changed(server, new_value, old_value):
    with open({path!r}, "a") as f:
        f.write(f"{{time.monotonic()}} {{new_value}} {{old_value}}\\n")
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port):
    status, _, body = request(("127.0.0.1", port), "/status", timeout=10)
    assert status == 200, body
    return json.loads(body)


def _serving(port):
    """Workers serving, not retiring (booted: idle or busy)."""
    return sum(1 for w in _status(port)["workers"]
               if w["state"] in ("idle", "busy") and not w["retiring"])


class Trickle:
    """One client, one short request now and then: a load the floor carries easily."""

    def __init__(self, address):
        self.address, self.ok, self.failures = address, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                status, _, body = request(self.address, "/sleep?ms=20", timeout=30)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}")
            except Exception as exc:
                self.failures.append(repr(exc))
            self._stop.wait(0.2)  # pacing the load, not waiting for anything

    def stop(self):
        self._stop.set()
        self._thread.join(60)
        return self.ok, self.failures


@pytest.mark.parametrize("worker_class,threads", [("sync", 1), ("gthread", 2)])
def test_the_worker_count_follows_a_load_that_steps_up_and_down(tmp_path, worker_class, threads):
    changes = tmp_path / "changes"
    conf = tmp_path / "conf.py"
    conf.write_text(HOOK.format(path=str(changes)))
    port = _free_port()
    srv = Server("-c", str(conf), "-k", worker_class, "--threads", str(threads),
                 "-w", str(FLOOR), "--max-workers", str(CEILING),
                 "--scale-up-period", str(UP), "--scale-down-period", str(DOWN),
                 "--metrics-bind", f"127.0.0.1:{port}", "-b", "127.0.0.1:0", "testapp:app")
    trickle = load = None
    try:
        wait_for(lambda: _serving(port) == FLOOR, 20, message="the floor serving")
        scaling = _status(port)["scaling"]
        assert (scaling["enabled"], scaling["floor"], scaling["ceiling"]) == (True, FLOOR, CEILING)

        # Up: twice as many slow requests at once as the ceiling can run, so every worker
        # stays at its capacity whatever the count.
        started = time.monotonic()
        load = Load(srv.address, "/sleep?ms=200", clients=2 * CEILING * threads,
                    max_seconds=120)
        wait_for(lambda: _serving(port) == CEILING, 40, 0.1,
                 message=lambda: f"{CEILING} workers serving\n{srv.log}")
        ok, failures = load.stop()
        load = None
        assert failures == [] and ok > 0

        # Down: a trickle the floor carries; the extra workers retire one at a time.
        stopped = time.monotonic()
        trickle = Trickle(srv.address)
        wait_for(lambda: _serving(port) == FLOOR and len(children(srv.proc.pid)) == FLOOR,
                 40, 0.1, message=lambda: f"back to {FLOOR} worker\n{srv.log}")
        ok, failures = trickle.stop()
        trickle = None
        assert failures == [] and ok > 0

        # What the master said, in order, and that it waited the periods it states.
        lines = re.findall(r"Scaling (up|down) to (\d+) workers: (.*)", srv.log)
        assert [(d, int(n)) for d, n, _ in lines] == [("up", 2), ("up", 3), ("down", 2),
                                                      ("down", 1)], srv.log
        for direction, _, why in lines:
            waited = float(re.search(r"for (\d+\.\d) s", why).group(1))
            assert waited >= (UP if direction == "up" else DOWN), why
        assert "all 1 busy" in lines[0][2] and "all 2 busy" in lines[1][2]
        # The hook fired for each change, none before the load came nor scaled down before
        # it went (a run of samples may begin at most one sample before the step).
        hooked = [line.split() for line in changes.read_text().splitlines()]
        assert [(int(new), int(old)) for _, new, old in hooked] == [(2, 1), (3, 2), (2, 3),
                                                                     (1, 2)]
        times = [float(t) for t, _, _ in hooked]
        assert times[0] > started + UP / 2 and times[2] > stopped + DOWN / 2

        # Metrics and `unicornd status` say so.
        status, _, body = request(("127.0.0.1", port), "/metrics")
        text = body.decode()
        assert 'unicornd_worker_scaling_total{direction="up",reason="busy"} 2' in text
        assert 'unicornd_worker_scaling_total{direction="down",reason="spare"} 2' in text
        assert f"unicornd_workers_floor {FLOOR}" in text
        assert f"unicornd_workers_ceiling {CEILING}" in text
        shown = subprocess.run([sys.executable, "-m", "unicornd", "status", "--metrics",
                                f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                               timeout=30, env={"PYTHONPATH": str(REPO)}, cwd=APPS)
        assert shown.returncode == 0, shown.stderr
        assert f"scaling between {FLOOR} and {CEILING} workers" in shown.stdout
        assert "last: down to 1" in shown.stdout and "capacity in use for" in shown.stdout
    finally:
        for running in (load, trickle):
            if running is not None:
                running.stop()
        srv.stop()


def test_ttin_moves_the_floor(tmp_path):
    port = _free_port()
    with Server("-w", "1", "--max-workers", "3", "--scale-down-period", "1",
                "--metrics-bind", f"127.0.0.1:{port}", "-b", "127.0.0.1:0", "testapp:app") as srv:
        wait_for(lambda: _serving(port) == 1, 20)
        srv.signal(__import__("signal").SIGTTIN)
        wait_for(lambda: _serving(port) == 2, 20)
        scaling = _status(port)["scaling"]
        assert (scaling["floor"], scaling["ceiling"]) == (2, 3)
        assert scaling["last"]["reason"] == "TTIN: floor 2, ceiling 3"
        # Idle, with a 1 s scale-down period: the new floor holds (checked over several
        # periods, by the master's own count of its changes).
        wait_for(lambda: _status(port)["scaling"]["last"]["seconds_ago"] >= 5, 20, 0.2)
        assert _serving(port) == 2 and "Scaling down" not in srv.log


def test_max_workers_below_workers_is_refused_before_any_fork():
    from support import run_cli
    result = run_cli("-w", "4", "--max-workers", "2", "-b", "127.0.0.1:0", "testapp:app")
    assert result.returncode == 2
    assert "max_workers: 2" in result.stderr and "below workers (4)" in result.stderr
    assert "Booting worker" not in result.stderr + result.stdout


def test_a_gthread_worker_whose_threads_are_all_busy_leaves_new_connections_to_the_others():
    """With max_workers, a gthread worker accepts only while a thread is free: a request that
    comes while its one thread is busy goes to the other worker at once, instead of waiting
    behind the slow one (and the master sees the load where it really is)."""
    port = _free_port()
    with Server("-k", "gthread", "--threads", "1", "-w", "2", "--max-workers", "2",
                "--metrics-bind", f"127.0.0.1:{port}", "-b", "127.0.0.1:0",
                "testapp:app") as srv:
        wait_for(lambda: _serving(port) == 2, 20)
        for _ in range(3):
            slow = {}
            thread = threading.Thread(target=lambda: slow.update(
                json.loads(request(srv.address, "/sleep?ms=2000", timeout=30)[2])))
            thread.start()
            wait_for(lambda: any(w["state"] == "busy" for w in _status(port)["workers"]), 10)
            status, _, body = request(srv.address, "/sleep?ms=1", timeout=30)
            fast = json.loads(body)
            thread.join(30)
            assert status == 200 and slow
            assert fast["pid"] != slow["pid"] and fast["end"] < slow["end"], (fast, slow)
