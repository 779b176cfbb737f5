"""The master end to end: every signal, reloads and upgrades under load, timeouts, recycling.

Asserted through what clients and the process table see; deadlines instead of sleeps.
"""

import fcntl
import os
import pty
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import termios
import threading

import pytest

from support import APPS, REPO, Load, Server, alive, children, raw_request, request, wait_for


def get(address, path="/"):
    status, _, body = request(address, path)
    return status, body


def workers_of(server):
    return children(server.proc.pid)


def wait_workers(server, count, timeout=20):
    return wait_for(lambda: (lambda w: w if len(w) == count else None)(workers_of(server)),
                    timeout, message=lambda: f"{count} workers\n{server.log}")


# -- TTIN / TTOU -----------------------------------------------------------------------------


def test_ttin_ttou_change_the_worker_count_and_fire_the_hook(tmp_path):
    record = tmp_path / "hooks.txt"
    conf = tmp_path / "conf.py"
    conf.write_text(f"""
def nworkers_changed(server, new_value, old_value):
    with open({str(record)!r}, "a") as f:
        f.write(f"{{old_value}}->{{new_value}}\\n")
""")
    with Server("-c", str(conf), "-w", "2", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        wait_workers(srv, 2)
        srv.signal(signal.SIGTTIN)
        wait_workers(srv, 3)
        srv.signal(signal.SIGTTOU)  # one at a time: pending signals of one kind coalesce
        wait_workers(srv, 2)
        srv.signal(signal.SIGTTOU)
        wait_workers(srv, 1)
        srv.signal(signal.SIGTTOU)  # never below one
        srv.wait_log(r"Handling signal: ttou(.|\n)*Handling signal: ttou(.|\n)*Handling signal: ttou")
        srv.signal(signal.SIGTTIN)
        wait_workers(srv, 2)
        assert get(srv.address)[0] == 200
        wait_for(lambda: record.exists() and record.read_text().splitlines() == ["2->3", "3->2", "2->1", "1->2"], 10)


# -- HUP ---------------------------------------------------------------------------------------


def test_hup_reloads_settings_and_app_with_zero_failed_requests(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\nraw_env = ['APP_VERSION=one']\n")
    with Server("-c", str(conf), "-b", "127.0.0.1:0", "masterapp:app") as srv:
        old = wait_workers(srv, 2)
        assert get(srv.address, "/version") == (200, b"one")
        load = Load(srv.address, "/sleep?ms=20", clients=4)
        try:
            load.wait_ok(20)
            conf.write_text("workers = 3\nraw_env = ['APP_VERSION=two']\n")
            srv.signal(signal.SIGHUP)
            new = wait_for(lambda: (lambda w: w if len(w) == 3 and not (w & old) else None)(workers_of(srv)),
                           30, message=f"3 new workers\n{srv.log}")
            load.wait_ok(20)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        assert ok > 40
        assert not any(alive(pid) for pid in old)
        assert get(srv.address, "/version") == (200, b"two")
        assert len(new) == 3


def test_hup_with_a_broken_app_keeps_the_old_workers(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("wsgi_app = 'masterapp:app'\n")
    with Server("-c", str(conf), "-w", "2", "-b", "127.0.0.1:0") as srv:
        old = wait_workers(srv, 2)
        conf.write_text("wsgi_app = 'broken_import:app'\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log("Reload failed: the new workers cannot load the app")
        assert workers_of(srv) >= old
        assert srv.proc.poll() is None
        assert get(srv.address)[0] == 200


def test_hup_with_a_bad_config_keeps_the_settings(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\n")
    with Server("-c", str(conf), "-b", "127.0.0.1:0", "masterapp:app") as srv:
        old = wait_workers(srv, 2)
        conf.write_text("workers = 'many'\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log("Reload failed, the current settings stay: Invalid value for workers")
        assert workers_of(srv) == old and get(srv.address)[0] == 200


# -- TERM, INT, QUIT -----------------------------------------------------------------------------


def test_term_lets_in_flight_requests_finish(tmp_path):
    sock_path = tmp_path / "s.sock"
    with Server("-w", "3", "-b", "127.0.0.1:0", "-b", f"unix:{sock_path}", "masterapp:app") as srv:
        wait_workers(srv, 3)
        results = []
        marks = tmp_path / "marks"
        marks.mkdir()

        def slow():
            try:
                results.append(get(srv.address, f"/sleep?ms=2000&mark={marks}"))
            except Exception as exc:
                results.append(exc)
        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(os.listdir(marks)) == 3, 10)  # all three are inside the app
        srv.signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert srv.wait(30) == 0, srv.log
        assert results == [(200, b"slept")] * 3
        assert not sock_path.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_at_once(sig):
    srv = Server("-w", "2", "-b", "127.0.0.1:0", "masterapp:app")
    try:
        workers = wait_workers(srv, 2)
        srv.signal(sig)
        assert srv.wait(15) == 0
        wait_for(lambda: not any(alive(pid) for pid in workers), 10)
    finally:
        srv.stop()


# -- USR1 ---------------------------------------------------------------------------------------


def test_usr1_reopens_log_files_in_master_and_workers(tmp_path):
    log = tmp_path / "error.log"
    with Server("-w", "1", "-b", "127.0.0.1:0", "--error-logfile", str(log), "--log-level", "debug",
                "testapp:app", expect_listen=False) as srv:
        wait_for(lambda: log.exists() and "Booting worker" in log.read_text(), 20)
        port = int(re.search(r"Listening at: http://127.0.0.1:(\d+)", log.read_text()).group(1))
        wait_for(lambda: _ok(("127.0.0.1", port)), 10)
        os.rename(log, tmp_path / "error.log.1")  # what logrotate does
        srv.signal(signal.SIGUSR1)
        wait_for(lambda: log.exists() and "Handling signal: usr1" in (tmp_path / "error.log.1").read_text(), 10)

        def worker_wrote_new_file():
            raw_request(("127.0.0.1", port), b"GET /stderr HTTP/1.0\r\n\r\n")
            return log.exists() and "app wrote to wsgi.errors" in log.read_text()
        wait_for(worker_wrote_new_file, 15, interval=0.2)


def _ok(address):
    try:
        return get(address, "/hello")[0] == 200
    except OSError:
        return False


# -- USR2 + WINCH + TERM: binary upgrade --------------------------------------------------------


def test_binary_upgrade_under_load_with_zero_failed_requests(tmp_path):
    pidfile = tmp_path / "u.pid"
    marker = tmp_path / "pre_exec"
    conf = tmp_path / "conf.py"
    conf.write_text(f"def pre_exec(server):\n    open({str(marker)!r}, 'w').write(str(server.pid))\n")
    with Server("-c", str(conf), "-w", "2", "-b", "127.0.0.1:0", "-p", str(pidfile), "masterapp:app") as srv:
        old_master = srv.proc.pid
        old_workers = wait_workers(srv, 2)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(old_master), 10)
        load = Load(srv.address, "/sleep?ms=10", clients=4)
        try:
            load.wait_ok(20)
            srv.signal(signal.SIGUSR2)
            new_master = wait_for(lambda: (children(old_master) - old_workers) or None, 20)
            new_master = next(iter(new_master))
            assert marker.read_text() == str(old_master)  # pre_exec ran before the exec
            second = tmp_path / "u.pid.2"
            wait_for(lambda: second.exists() and second.read_text().strip() == str(new_master), 20)
            wait_for(lambda: len(children(new_master)) == 2, 30, message=srv.log)
            load.wait_ok(20)
            srv.signal(signal.SIGWINCH)  # no controlling terminal here: honoured
            wait_for(lambda: not any(alive(p) for p in old_workers), 30, message=srv.log)
            load.wait_ok(20)
            srv.signal(signal.SIGTERM)
            assert srv.wait(30) == 0
            wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_master), 20,
                     message="the promoted master renames its pid file")
            assert not second.exists()
            load.wait_ok(20)
        finally:
            ok, failures = load.stop()
            try:
                os.kill(new_master, signal.SIGTERM)
            except (ProcessLookupError, UnboundLocalError, TypeError):
                pass
        assert failures == [], failures[:5]
        assert ok > 80
        wait_for(lambda: not alive(new_master), 30)
        assert not pidfile.exists()


def test_winch_is_ignored_in_an_interactive_terminal():
    primary, secondary = pty.openpty()

    def take_terminal():
        os.setsid()
        fcntl.ioctl(secondary, termios.TIOCSCTTY, 0)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]))
    for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "unicornd", "-w", "2", "-b", "127.0.0.1:0",
                             "--log-level", "debug", "masterapp:app"], cwd=APPS, env=env,
                            stdin=secondary, stdout=secondary, stderr=secondary, preexec_fn=take_terminal)
    os.close(secondary)
    out = bytearray()

    def read_until(pattern, timeout=20):
        rx = re.compile(pattern)

        def check():
            try:
                import select
                while select.select([primary], [], [], 0.05)[0]:
                    out.extend(os.read(primary, 65536))
            except OSError:
                pass
            return rx.search(out.decode(errors="replace"))
        return wait_for(check, timeout, message=pattern)

    try:
        read_until(r"Booting worker.*\n(.|\n)*Booting worker")
        workers = children(proc.pid)
        proc.send_signal(signal.SIGWINCH)
        read_until(r"SIGWINCH ignored")
        assert children(proc.pid) == workers and len(workers) == 2
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(primary)


# -- dead and hung workers ---------------------------------------------------------------------


def test_kill_9_of_a_worker_under_load_loses_only_its_requests():
    with Server("-w", "3", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        workers = wait_workers(srv, 3)
        load = Load(srv.address, "/sleep?ms=5", clients=3)
        try:
            load.wait_ok(30)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            srv.wait_log(rf"Worker \(pid:{victim}\) was sent SIGKILL")
            wait_for(lambda: len(workers_of(srv)) == 3 and victim not in workers_of(srv), 20)
            load.wait_ok(30)
        finally:
            ok, failures = load.stop()
        # A sync worker holds one request at a time: at most that one fails.
        assert len(failures) <= 1, failures


def test_hung_request_is_killed_with_its_request_line_and_stack():
    with Server("-w", "1", "-t", "2", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        (worker,) = wait_workers(srv, 1)
        with socket.create_connection(srv.address, timeout=30) as s:
            s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            srv.wait_log(rf"WORKER TIMEOUT \(pid {worker}\) GET /hang after \d+\.\d s", timeout=20)
            assert s.recv(100) == b""  # the client's connection is closed, no bogus answer
        srv.wait_log(r"in hang_here_forever")
        log = srv.log
        assert log.index("WORKER TIMEOUT") < log.index("hang_here_forever")  # line, then stack
        wait_for(lambda: len(workers_of(srv)) == 1 and worker not in workers_of(srv), 20)
        assert get(srv.address)[0] == 200


def test_a_worker_that_cannot_dump_its_stack_is_killed_after_a_grace():
    with Server("-w", "1", "-t", "1", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        (worker,) = wait_workers(srv, 1)
        with socket.create_connection(srv.address, timeout=30) as s:
            s.sendall(b"GET /hang-deaf HTTP/1.1\r\nHost: x\r\n\r\n")
            srv.wait_log(rf"WORKER TIMEOUT \(pid {worker}\) GET /hang-deaf", timeout=20)
            srv.wait_log(rf"Worker {worker} did not exit after its stack dump; killing it", timeout=20)
        wait_for(lambda: len(workers_of(srv)) == 1 and worker not in workers_of(srv), 20)
        assert get(srv.address)[0] == 200


def test_ttou_under_load_fails_no_request():
    with Server("-w", "3", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        wait_workers(srv, 3)
        load = Load(srv.address, "/sleep?ms=20", clients=4)
        try:
            load.wait_ok(20)
            srv.signal(signal.SIGTTOU)
            wait_workers(srv, 2)
            load.wait_ok(20)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]


def test_boot_is_judged_by_boot_timeout_not_timeout():
    env = {"MASTERAPP_IMPORT_SECONDS": "3"}
    with Server("-w", "1", "-t", "1", "--boot-timeout", "30", "-b", "127.0.0.1:0", "masterapp:app",
                env=env, timeout=40) as srv:
        assert get(srv.address)[0] == 200
        assert "WORKER TIMEOUT" not in srv.log


def test_boot_timeout_halts_instead_of_fork_looping():
    srv = Server("-w", "1", "--boot-timeout", "1", "-b", "127.0.0.1:0", "masterapp:app",
                 env={"MASTERAPP_IMPORT_SECONDS": "60"}, expect_listen=False)
    try:
        assert srv.wait(60) == 3, srv.log
        assert "WORKER BOOT TIMEOUT" in srv.log and "Worker failed to boot" in srv.log
        assert srv.log.count("Booting worker") <= 2  # halted, not a fork loop
    finally:
        srv.stop()


def test_worker_exits_when_the_master_dies():
    srv = Server("-w", "2", "-b", "127.0.0.1:0", "masterapp:app")
    try:
        workers = wait_workers(srv, 2)
        os.kill(srv.proc.pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in workers), 20)
    finally:
        srv.stop()


# -- recycling -----------------------------------------------------------------------------------


def test_max_requests_recycles_one_at_a_time_with_zero_failures():
    with Server("-w", "2", "--max-requests", "50", "--max-requests-jitter", "10", "-b", "127.0.0.1:0",
                "masterapp:app") as srv:
        first = wait_workers(srv, 2)
        load = Load(srv.address, "/sleep?ms=2", clients=4, max_requests=50_000, max_seconds=90)
        try:
            wait_for(lambda: not (workers_of(srv) & first) and srv.log.count("Recycling worker") >= 4, 60,
                     message=lambda: srv.log)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        assert "asks to be recycled: served" in srv.log


def test_max_worker_memory_recycles_a_growing_worker():
    with Server("-w", "1", "--max-worker-memory", "200M", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        (worker,) = wait_workers(srv, 1)
        assert get(srv.address, "/grow?mb=300") == (200, b"grown")
        srv.wait_log(rf"Recycling worker {worker}: its RSS of \d+ MiB is above max_worker_memory \(200 MiB\)",
                     timeout=20)
        wait_for(lambda: len(workers_of(srv)) == 1 and worker not in workers_of(srv), 20)
        assert get(srv.address)[0] == 200


# -- process settings --------------------------------------------------------------------------


def test_pidfile_is_written_and_removed(tmp_path):
    pidfile = tmp_path / "app.pid"
    srv = Server("-b", "127.0.0.1:0", "-p", str(pidfile), "masterapp:app")
    try:
        assert pidfile.read_text().strip() == str(srv.proc.pid)
    finally:
        srv.stop()
    assert not pidfile.exists()


def test_daemon_mode(tmp_path):
    pidfile, log = tmp_path / "d.pid", tmp_path / "d.log"
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]))
    started = subprocess.run([sys.executable, "-m", "unicornd", "-D", "-p", str(pidfile), "--error-logfile",
                              str(log), "-b", f"127.0.0.1:{port}", "masterapp:app"], cwd=APPS, env=env,
                             timeout=30, capture_output=True)
    assert started.returncode == 0  # the launching process returns at once
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20))
    try:
        wait_for(lambda: _ok_path(("127.0.0.1", port)), 20)
        assert os.getsid(pid) != os.getsid(0)  # a session of its own: detached from ours
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), 30)
    assert not pidfile.exists()


def _ok_path(address):
    try:
        return get(address)[0] == 200
    except OSError:
        return False


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching the workers' user and group needs root")
def test_workers_run_as_user_and_group(tmp_path):
    nobody = pwd.getpwnam("nobody")
    sock_path = tmp_path / "s.sock"
    tmp_path.chmod(0o755)
    with Server("-u", "nobody", "-g", str(nobody.pw_gid), "-b", "127.0.0.1:0", "-b", f"unix:{sock_path}",
                "--umask", "0o007", "masterapp:app") as srv:
        status, body = get(srv.address, "/who")
        pid, imported_by, uid = map(int, body.split())
        assert uid == nobody.pw_uid
        assert os.stat(f"/proc/{srv.proc.pid}").st_uid == os.getuid()  # the master keeps its user
        st = os.stat(sock_path)
        assert stat.S_IMODE(st.st_mode) == 0o770 and st.st_uid == nobody.pw_uid


def test_preload_imports_the_app_once_in_a_fork_server_not_in_the_master():
    # (tests/server/test_forkserver.py has the rest: HUP with new code, memory, failures.)
    with Server("-w", "2", "--preload", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        pid, imported_by, _ = map(int, get(srv.address, "/who")[1].split())
        assert imported_by not in (srv.proc.pid, pid)
        assert imported_by in children(srv.proc.pid)  # the fork server, the master's child
        assert {int(get(srv.address, "/who")[1].split()[1]) for _ in range(6)} == {imported_by}
    with Server("-w", "1", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        pid, imported_by, _ = map(int, get(srv.address, "/who")[1].split())
        assert imported_by == pid


def test_process_titles_name_master_and_workers():
    with Server("-w", "1", "-n", "titled", "-b", "127.0.0.1:0", "masterapp:app") as srv:
        (worker,) = wait_workers(srv, 1)

        def title(pid):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").strip().decode()
        wait_for(lambda: title(srv.proc.pid) == "unicornd: master [titled]", 10)
        wait_for(lambda: title(worker) == "unicornd: worker [titled]", 10)


# -- hooks -------------------------------------------------------------------------------------------


HOOKS_CONF = """
import os
RECORD = {record!r}

def _w(name):
    with open(RECORD, "a") as f:
        f.write(name + "\\n")

def on_starting(server): _w("on_starting")
def on_reload(server): _w("on_reload")
def when_ready(server): _w("when_ready")
def pre_fork(server, worker): _w("pre_fork")
def post_fork(server, worker): _w("post_fork")
def post_worker_init(worker): _w("post_worker_init")
def worker_int(worker): _w("worker_int")
def worker_abort(worker): _w("worker_abort")
def pre_exec(server): _w("pre_exec")
def pre_request(worker, req): _w("pre_request " + req.method + " " + req.path)
def post_request(worker, req, environ, resp): _w("post_request " + resp.status)
def child_exit(server, worker): _w("child_exit")
def worker_exit(server, worker): _w("worker_exit")
def nworkers_changed(server, new_value, old_value): _w("nworkers_changed")
def on_exit(server): _w("on_exit")
"""


def test_hooks_fire_in_the_documented_order(tmp_path):
    record = tmp_path / "hooks.txt"
    conf = tmp_path / "conf.py"
    conf.write_text(HOOKS_CONF.format(record=str(record)))
    lines = lambda: record.read_text().splitlines() if record.exists() else []  # noqa: E731
    srv = Server("-c", str(conf), "-w", "1", "-t", "2", "-b", "127.0.0.1:0", "masterapp:app")
    try:
        assert get(srv.address, "/x")[0] == 200
        # post_request runs after the response went out: wait for the one after /x.
        wait_for(lambda: "pre_request GET /x" in lines()
                 and "post_request 200 OK" in lines()[lines().index("pre_request GET /x"):], 10)
        start = lines()
        assert start[:5] == ["on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init"], start
        assert "post_request 200 OK" in start[start.index("pre_request GET /x") + 1:]

        srv.signal(signal.SIGTTIN)
        wait_for(lambda: lines().count("post_worker_init") == 2, 10)
        assert "nworkers_changed" in lines()

        srv.signal(signal.SIGHUP)
        wait_for(lambda: "on_reload" in lines() and lines().count("worker_exit") >= 2, 20)

        with socket.create_connection(srv.address, timeout=30) as s:  # a timeout: worker_abort
            s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: "worker_abort" in lines(), 20)
        # The replacement exists (it may still be booting: signals wait for its handlers).
        wait_for(lambda: lines().count("pre_fork") == 4, 10)

        srv.signal(signal.SIGINT)
        assert srv.wait(20) == 0
        final = lines()
        assert final[-1] == "on_exit"
        assert "child_exit" in final and "worker_int" in final, "\n".join(final)
    finally:
        srv.stop()


def _pending_signals(pid) -> int:
    """The signals pending for a process (its own and its thread group's), as a bit mask."""
    mask = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    return mask


def test_a_worker_told_to_quit_while_booting_still_runs_its_hooks(tmp_path):
    record, gate = tmp_path / "hooks.txt", tmp_path / "gate"
    conf = tmp_path / "conf.py"
    conf.write_text(f"""
import os, time
def _w(name):
    with open({str(record)!r}, "a") as f:
        f.write(name + "\\n")
def post_fork(server, worker):
    _w("post_fork")
    while not os.path.exists({str(gate)!r}):  # the worker is still booting
        time.sleep(0.01)
def worker_int(worker): _w("worker_int")
def worker_exit(server, worker): _w("worker_exit")
""")
    lines = lambda: record.read_text().splitlines() if record.exists() else []  # noqa: E731
    # (Not waiting for an answer: the worker will not answer before the gate opens.)
    srv = Server("-c", str(conf), "-w", "1", "-b", "127.0.0.1:0", "masterapp:app",
                 expect_listen=False)
    try:
        wait_for(lambda: "post_fork" in lines(), 20)
        (worker,) = workers_of(srv)
        srv.signal(signal.SIGINT)  # quick stop: the master sends SIGQUIT to the worker
        # The worker has no handlers yet: the signal waits for them instead of killing it.
        def quit_pending():
            assert alive(worker), "the booting worker was killed by the signal"
            return _pending_signals(worker) & (1 << (signal.SIGQUIT - 1))
        wait_for(quit_pending, 10, message="SIGQUIT pending in the booting worker")
        gate.write_text("go")
        assert srv.wait(20) == 0
        assert lines() == ["post_fork", "worker_int", "worker_exit"], lines()
    finally:
        srv.stop()
