"""The master's lifecycle end to end: reloads, recycling and upgrades that must not take the
server down (issue "The master's lifecycle as one explicit state machine", cases 1-8).

The same decisions are checked in-process, interleaved by hypothesis, in
tests/master/test_lifecycle_model.py.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from support import APPS, REPO, Load, Server, alive, children, request, unix_request, wait_for


def who(address, path="/"):
    status, _, body = request(address, path)
    assert status == 200, body
    pid, served = body.decode().split()
    return int(pid), int(served)


def serves(address):
    try:
        return request(address, "/", timeout=5)[0] == 200
    except OSError:
        return False


def booted(tmp_path, pids):
    """Every one of ``pids`` has imported the app (lifeapp marks it)."""
    return pids and all((tmp_path / f"booted-{pid}").exists() for pid in pids)


def life_server(tmp_path, *args, env=None):
    full_env = {"LIFEAPP_DIR": str(tmp_path)}
    full_env.update(env or {})
    return Server(*args, "-b", "127.0.0.1:0", "lifeapp:app", env=full_env)


# -- case 1: HUP with an app that fails to import, gevent (a patched master) ----------------------


def test_hup_with_a_broken_app_under_gevent_keeps_serving(tmp_path):
    with life_server(tmp_path, "-k", "gevent", "-w", "3") as srv:
        wait_for(lambda: len(children(srv.proc.pid)) == 3, 30, message=lambda: srv.log)
        first = children(srv.proc.pid)
        wait_for(lambda: booted(tmp_path, first), 30, message=lambda: srv.log)
        load = Load(srv.address, "/", clients=3, max_seconds=120)
        try:
            (tmp_path / "broken").touch()
            for attempt in range(1, 4):  # the old master died in 3 of 8 runs
                srv.signal(signal.SIGHUP)
                wait_for(lambda: srv.log.count("Reload failed") >= attempt, 30,
                         message=lambda: srv.log)
                load.wait_ok(20)
            assert srv.proc.poll() is None, srv.log
            assert "dictionary changed size" not in srv.log
            wait_for(lambda: children(srv.proc.pid) == first, 30,
                     message=lambda: f"only the first workers\n{srv.log}")
            (tmp_path / "broken").unlink()
            srv.signal(signal.SIGHUP)  # fixed: the next HUP goes through
            wait_for(lambda: "Reload complete" in srv.log, 30, message=lambda: srv.log)
            wait_for(lambda: not (children(srv.proc.pid) & first), 30)
            load.wait_ok(20)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        assert srv.log.count("Reload failed") == 3


# -- case 2: HUP whose new workers exceed boot_timeout ----------------------------------------------


def test_hup_whose_workers_exceed_boot_timeout_keeps_the_old_workers(tmp_path):
    with life_server(tmp_path, "-w", "1", "--boot-timeout", "2") as srv:
        wait_for(lambda: serves(srv.address), 20)
        old_pid, _ = who(srv.address)
        (tmp_path / "slow").touch()
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"WORKER BOOT TIMEOUT", 30)
        srv.wait_log(r"Reload failed: the new workers exceeded boot_timeout; the old workers stay", 30)
        # Long after the failed one would have been replaced and timed out again: still up,
        # the same healthy worker serving, no halt.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert who(srv.address)[0] == old_pid
            assert srv.proc.poll() is None, srv.log
            time.sleep(0.2)  # pacing the probes, not synchronisation
        assert "Worker failed to boot" not in srv.log
        assert srv.log.count("Reload failed") == 1


# -- case 3: recycling whose replacement cannot boot (database down), then recovery ----------------


def test_recycling_with_a_replacement_that_cannot_boot_recovers(tmp_path):
    with life_server(tmp_path, "-w", "2", "--max-requests", "8", "--boot-timeout", "2") as srv:
        wait_for(lambda: len(children(srv.proc.pid)) == 2, 20)
        wait_for(lambda: booted(tmp_path, children(srv.proc.pid)), 30, message=lambda: srv.log)
        (tmp_path / "slow").touch()  # the database goes down
        load = Load(srv.address, "/", clients=2, max_seconds=120)
        try:
            srv.wait_log(r"WORKER BOOT TIMEOUT", 30)
            srv.wait_log(r"retrying with back-off", 30)
            assert srv.proc.poll() is None, srv.log
            (tmp_path / "slow").unlink()  # the database is back
            wait_for(lambda: load.ok >= 40, 60, message=lambda: srv.log)
            assert srv.proc.poll() is None, srv.log
        finally:
            ok, failures = load.stop()
        assert "Shutting down" not in srv.log
        # New workers serve again, each at most its max_requests.
        wait_for(lambda: serves(srv.address), 30, message=lambda: srv.log)


# -- case 4: max_requests is a hard limit under load -----------------------------------------------


CLIENTS = 8


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_max_requests_is_a_hard_limit_under_load(tmp_path, worker_class):
    with life_server(tmp_path, "-k", worker_class, "-w", "4", "--max-requests", "20") as srv:
        wait_for(lambda: len(children(srv.proc.pid)) == 4, 20)
        counts = Counter()
        failures = []
        lock = threading.Lock()

        def client():
            for _ in range(100):
                try:
                    pid, served = who(srv.address)
                except Exception as exc:  # every failure counts
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    counts[pid] = max(counts[pid], served)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert failures == [], failures[:5]
        # At most the limit plus what was in flight when it was reached (sync: nothing else).
        in_flight = 0 if worker_class == "sync" else CLIENTS  # (one may be mid-accept)
        assert max(counts.values()) <= 20 + in_flight, counts.most_common(3)
        assert len(counts) >= 100 * CLIENTS // (20 + in_flight)  # so many workers took turns


# -- case 5: USR2 with --daemon ---------------------------------------------------------------------


def test_binary_upgrade_of_a_daemon_keeps_its_unix_socket(tmp_path):
    pidfile, log, sock = tmp_path / "d.pid", tmp_path / "d.log", tmp_path / "d.sock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]),
               LIFEAPP_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-m", "unicornd", "-D", "-p", str(pidfile), "--error-logfile",
                    str(log), "-b", f"unix:{sock}", "lifeapp:app"], cwd=APPS, env=env, timeout=30,
                   check=True)
    old = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20))
    new = None
    try:
        wait_for(lambda: unix_serves(sock), 20)
        os.kill(old, signal.SIGUSR2)
        second = tmp_path / "d.pid.2"
        new = int(wait_for(lambda: second.exists() and second.read_text().strip(), 20,
                           message=lambda: log.read_text()))
        wait_for(lambda: len(children(new)) == 1, 30, message=lambda: log.read_text())
        assert alive(new) and alive(old)
        assert "this master carries on" not in log.read_text()
        os.kill(old, signal.SIGWINCH)
        os.kill(old, signal.SIGTERM)
        wait_for(lambda: not alive(old), 30, message=lambda: log.read_text())
        wait_for(lambda: "Master has been promoted" in log.read_text(), 20)
        assert sock.exists(), "the old master unlinked the new master's socket"
        assert unix_serves(sock)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new), 20)
    finally:
        for pid in (old, new):
            if pid and alive(pid):
                os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(new), 30)
    assert not sock.exists()  # the last master that held it unlinked it


def unix_serves(path):
    answer = unix_request(path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return answer is not None and answer.startswith(b"HTTP/1.1 200")


# -- case 6: USR2 under systemd: the old master sends no STOPPING -----------------------------------


def test_binary_upgrade_under_systemd_notify_sends_no_stopping_from_the_old_master(tmp_path):
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    listener.settimeout(0.2)
    messages = []  # (pid, text)

    def drain():
        while True:
            try:
                data, anc, _, _ = listener.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, OSError):
                return
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(payload[:4], sys.byteorder)
            messages.append((pid, data.decode()))

    def said(pid, text):
        drain()
        return any(p == pid and text in m for p, m in messages)

    try:
        with life_server(tmp_path, "-w", "1", env={"NOTIFY_SOCKET": str(notify_path)}) as srv:
            old = srv.proc.pid
            wait_for(lambda: said(old, "READY=1"), 20)
            srv.signal(signal.SIGUSR2)
            new = wait_for(lambda: next((p for p, m in messages if p != old and "MAINPID=" in m),
                                        None) or (drain() and None), 30, message=lambda: messages)
            wait_for(lambda: said(new, "READY=1"), 30)
            srv.signal(signal.SIGWINCH)
            srv.signal(signal.SIGTERM)
            assert srv.wait(30) == 0
            drain()
            assert not said(old, "STOPPING=1"), messages
            wait_for(lambda: srv.log.count("Master has been promoted") == 1, 20,
                     message=lambda: srv.log)
            assert serves(srv.address)
            os.kill(new, signal.SIGTERM)
            wait_for(lambda: said(new, "STOPPING=1"), 30, message=lambda: messages)
            wait_for(lambda: not alive(new), 30)
    finally:
        listener.close()


# -- case 8: the master's own SIGKILL; max_worker_memory below a fresh worker --------------------


def test_the_masters_own_sigkill_is_not_blamed_on_memory(tmp_path):
    with life_server(tmp_path, "-w", "1", "--graceful-timeout", "1") as srv:
        wait_for(lambda: serves(srv.address), 20)
        # A request that outlives graceful_timeout: the stop has to SIGKILL its worker.
        slow = threading.Thread(target=_quietly, args=(srv.address, "/sleep?20"), daemon=True)
        slow.start()
        wait_for(lambda: (tmp_path / "inside").exists(), 10)
        srv.signal(signal.SIGTERM)
        assert srv.wait(30) == 0
        assert "Perhaps out of memory" not in srv.log
        assert "was killed by the master (graceful_timeout)" in srv.log


def _quietly(address, path):
    try:
        request(address, path, timeout=30)
    except OSError:
        pass  # the worker is killed under it: expected


def test_max_worker_memory_below_a_fresh_worker_warns_once_and_does_not_loop(tmp_path):
    with life_server(tmp_path, "-w", "1", "--max-worker-memory", "1M") as srv:
        srv.wait_log(r"max_worker_memory \(1 MiB\) is below the RSS of a freshly booted worker", 20)
        first = children(srv.proc.pid)
        deadline = time.monotonic() + 4  # four master ticks
        while time.monotonic() < deadline:
            assert serves(srv.address)
            time.sleep(0.2)  # pacing the probes
        assert children(srv.proc.pid) == first
        assert srv.log.count("below the RSS of a freshly booted worker") == 1
        assert "Recycling worker" not in srv.log
