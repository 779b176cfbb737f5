"""preload_app with code reload: the fork server (unicornd/master/forkserver.py), end to end.

The app is written into a temporary directory as real source (no bytecode is cached), so a
HUP really loads new code: its VERSION, or an import that raises.
"""

import os
import signal

import pytest

from support import Load, Server, alive, children, request, unix_request, wait_for

APP = """\
import os
VERSION = {version!r}
{extra}
IMPORTED_BY = os.getpid()
open(os.path.join(os.environ["HOTAPP_DIR"], f"imported-{{IMPORTED_BY}}"), "w").close()


def app(environ, start_response):
    body = f"{{VERSION}} {{IMPORTED_BY}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

# 100 MiB at import, every page written (b"\x01" * n is a memset): resident, not a promise.
BIG = "BLOB = b'\\x01' * (100 << 20)"
BROKEN = "raise RuntimeError('version 2 is broken')"
# An import that waits while the file "slow" exists (a database that is down).
SLOW = ("import time\n"
        "while os.path.exists(os.path.join(os.environ['HOTAPP_DIR'], 'slow')):\n"
        "    time.sleep(0.05)")
# An app that sets its own SIGTERM handler at import (the fork server must still go away).
IGNORES_TERM = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)"
MIB = 1 << 20


def write_app(directory, version, extra=""):
    (directory / "hotapp.py").write_text(APP.format(version=version, extra=extra))


def hot_server(directory, *args):
    return Server("--preload", "--chdir", str(directory), *args, "hotapp:app",
                  env={"HOTAPP_DIR": str(directory), "PYTHONDONTWRITEBYTECODE": "1"})


def answer(address):
    """(version, pid that imported the app, pid that served)."""
    status, _, body = request(address, "/", timeout=10)
    assert status == 200, body
    version, imported_by, served_by = body.decode().split()
    return version, int(imported_by), int(served_by)


def importers(directory):
    return {int(p.name.split("-")[1]) for p in directory.glob("imported-*")}


def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def workers_of(srv, template):
    return children(srv.proc.pid) - {template}


def wait_workers(srv, template, count, timeout=30):
    """The master's ``count`` worker pids (its children but the fork server ``template``)."""
    return wait_for(lambda: (lambda w: w if len(w) == count else None)(workers_of(srv, template)),
                    timeout, message=lambda: f"{count} workers\n{srv.log}")


def test_the_master_never_imports_the_app_and_workers_are_its_children(tmp_path):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-w", "2", "-b", "127.0.0.1:0") as srv:
        version, template, served_by = answer(srv.address)
        assert version == "1"
        # Imported once, by a child of the master that is not a worker: the fork server.
        assert importers(tmp_path) == {template}
        assert template != srv.proc.pid and ppid(template) == srv.proc.pid
        workers = wait_workers(srv, template, 2, 20)
        assert served_by in workers and template not in workers
        # The master reaps and signals its workers: TTOU stops one, it is waited for.
        srv.signal(signal.SIGTTOU)
        srv.wait_log(r"Worker exiting \(pid: \d+\)", 20)
        wait_for(lambda: len(workers_of(srv, template)) == 1, 20, message=lambda: srv.log)
        assert importers(tmp_path) == {template}


@pytest.mark.parametrize("kind", ["sync", "gthread", "gevent", "eventlet"])
def test_hup_with_preload_serves_the_new_code_with_zero_failed_requests(tmp_path, kind):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-k", kind, "-w", "2", "-b", "127.0.0.1:0") as srv:
        version, old_template, _ = answer(srv.address)
        assert version == "1"
        load = Load(srv.address, "/", clients=3, max_seconds=90)
        try:
            load.wait_ok(30)
            write_app(tmp_path, "2")
            srv.signal(signal.SIGHUP)
            srv.wait_log(r"Reload complete", 60)
            wait_for(lambda: answer(srv.address)[0] == "2", 20, message=lambda: srv.log)
            load.wait_ok(30)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        assert ok >= 60
        version, new_template, _ = answer(srv.address)
        assert version == "2" and new_template != old_template
        # Every answer is the new code now; the old fork server has been retired.
        assert {answer(srv.address)[0] for _ in range(10)} == {"2"}
        wait_for(lambda: not alive(old_template), 20, message=lambda: srv.log)
        assert importers(tmp_path) == {old_template, new_template}
        assert srv.proc.pid not in importers(tmp_path)


def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(tmp_path):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-w", "2", "-b", "127.0.0.1:0") as srv:
        _, template, _ = answer(srv.address)
        workers = wait_workers(srv, template, 2, 20)
        load = Load(srv.address, "/", clients=2, max_seconds=90)
        try:
            write_app(tmp_path, "2", BROKEN)
            srv.signal(signal.SIGHUP)
            srv.wait_log(r"Reload failed: the new fork server cannot load the app; "
                         r"the old workers stay", 30)
            load.wait_ok(20)
            assert "RuntimeError: version 2 is broken" in srv.log  # the why, with its traceback
            assert {answer(srv.address)[0] for _ in range(10)} == {"1"}
            assert workers_of(srv, template) == workers and alive(template)
            write_app(tmp_path, "3")  # fixed: the next HUP goes through
            srv.signal(signal.SIGHUP)
            srv.wait_log(r"Reload complete", 60)
            wait_for(lambda: answer(srv.address)[0] == "3", 20, message=lambda: srv.log)
            load.wait_ok(20)
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        assert srv.proc.poll() is None


def test_a_new_fork_server_past_boot_timeout_fails_the_reload(tmp_path):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-w", "1", "--boot-timeout", "2", "-b", "127.0.0.1:0") as srv:
        _, template, worker = answer(srv.address)
        (tmp_path / "slow").touch()
        write_app(tmp_path, "2", SLOW)
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"FORK SERVER BOOT TIMEOUT \(pid \d+\)", 30)
        srv.wait_log(r"Reload failed: the new fork server exceeded boot_timeout; "
                     r"the old workers stay", 10)
        assert answer(srv.address) == ("1", template, worker)
        assert srv.proc.poll() is None and "Shutting down" not in srv.log


def test_a_hup_while_the_new_fork_server_loads_supersedes_it(tmp_path):
    write_app(tmp_path, "1", IGNORES_TERM)
    with hot_server(tmp_path, "-w", "2", "-b", "127.0.0.1:0") as srv:
        _, template, _ = answer(srv.address)
        (tmp_path / "slow").touch()
        write_app(tmp_path, "2", IGNORES_TERM + "\n" + SLOW)
        srv.signal(signal.SIGHUP)
        started = srv.wait_log(r"Started fork server \(pid (\d+)\) to load the app for "
                               r"generation 2", 20)
        stuck = int(started.group(1))
        write_app(tmp_path, "3")
        srv.signal(signal.SIGHUP)
        srv.wait_log(rf"Retiring fork server \(pid {stuck}\) of generation 2", 20)
        srv.wait_log(r"Reload complete", 60)
        wait_for(lambda: answer(srv.address)[0] == "3", 20, message=lambda: srv.log)
        wait_for(lambda: not alive(stuck) and not alive(template), 20, message=lambda: srv.log)
        assert "Reload failed" not in srv.log


def test_a_fork_server_that_dies_is_replaced_and_the_workers_serve_on(tmp_path):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-w", "2", "-b", "127.0.0.1:0") as srv:
        _, template, _ = answer(srv.address)
        workers = wait_workers(srv, template, 2, 20)
        os.kill(template, signal.SIGKILL)
        srv.wait_log(rf"Fork server \(pid {template}\) of generation 1 exited killed by "
                     r"SIGKILL", 20)
        # Its workers are the master's children: they serve on.
        assert children(srv.proc.pid) == workers
        assert answer(srv.address)[0] == "1"
        # A worker needed now comes from a new fork server.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(importers(tmp_path)) == 2, 30, message=lambda: srv.log)
        (new_template,) = importers(tmp_path) - {template}
        wait_for(lambda: len(workers_of(srv, new_template)) == 2, 30, message=lambda: srv.log)
        assert victim not in workers_of(srv, new_template)
        assert srv.proc.poll() is None and answer(srv.address)[0] == "1"


def test_a_bind_added_on_hup_reaches_the_workers_of_the_new_fork_server(tmp_path):
    write_app(tmp_path, "1")
    sock_path = tmp_path / "added.sock"
    conf = tmp_path / "conf.py"
    conf.write_text("bind = ['127.0.0.1:0']\nworkers = 1\n")
    with hot_server(tmp_path, "-c", str(conf)) as srv:
        assert answer(srv.address)[0] == "1"
        conf.write_text(f"bind = ['127.0.0.1:0', 'unix:{sock_path}']\nworkers = 1\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"Reload complete", 60)
        reply = wait_for(lambda: unix_request(sock_path, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                                         b"Connection: close\r\n\r\n"),
                         20, message=lambda: srv.log)
        assert reply.startswith(b"HTTP/1.1 200")
        assert reply.split(b"\r\n\r\n", 1)[1].startswith(b"1 ")
        assert answer(srv.address)[0] == "1"  # the first listener still served too


def test_a_first_boot_whose_app_cannot_load_exits_4(tmp_path):
    write_app(tmp_path, "1", BROKEN)
    srv = Server("--preload", "--chdir", str(tmp_path), "-b", "127.0.0.1:0", "hotapp:app",
                 env={"HOTAPP_DIR": str(tmp_path)}, expect_listen=False)
    try:
        assert srv.wait(30) == 4, srv.log
    finally:
        srv.stop()
    assert "RuntimeError: version 2 is broken" in srv.log
    assert "App failed to load" in srv.log


def pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux 4.14+")
def test_four_workers_share_the_100_mib_the_app_allocates_at_import(tmp_path):
    write_app(tmp_path, "1", BIG)
    with hot_server(tmp_path, "-w", "4", "-b", "127.0.0.1:0") as srv:
        _, template, _ = answer(srv.address)
        workers = wait_workers(srv, template, 4, 30)
        for _ in range(20):  # every worker serves a few requests first
            answer(srv.address)
        # Each worker has the 100 MiB resident (its RSS counts them)...
        assert all(rss(pid) > 100 * MIB for pid in workers), [rss(p) >> 20 for p in workers]
        # ...but shares them: the proportional share of the five processes is about 100 MiB
        # plus each one's own pages, not five times 100 MiB.
        total = sum(pss(pid) for pid in workers)
        print(f"\nsummed PSS of 4 workers: {total / MIB:.1f} MiB; with the fork server: "
              f"{(total + pss(template)) / MIB:.1f} MiB; RSS of one worker "
              f"{rss(min(workers)) / MIB:.1f} MiB")
        assert total < 250 * MIB, total >> 20


def test_a_binary_upgrade_with_preload_gives_the_new_master_its_own_fork_server(tmp_path):
    write_app(tmp_path, "1")
    with hot_server(tmp_path, "-w", "2", "-b", "127.0.0.1:0") as srv:
        old_master = srv.proc.pid
        _, old_template, _ = answer(srv.address)
        old_workers = wait_workers(srv, old_template, 2)
        load = Load(srv.address, "/", clients=2, max_seconds=90)
        new_master = None
        try:
            write_app(tmp_path, "2")
            srv.signal(signal.SIGUSR2)
            (new_master,) = wait_for(lambda: children(old_master) - old_workers - {old_template},
                                     20, message=lambda: srv.log)
            # The new master's workers are its own children, forked by its own fork server.
            wait_for(lambda: len(children(new_master)) == 3, 30, message=lambda: srv.log)
            (new_template,) = importers(tmp_path) - {old_template}
            assert ppid(new_template) == new_master
            srv.signal(signal.SIGWINCH)
            wait_for(lambda: not any(alive(p) for p in old_workers), 30, message=lambda: srv.log)
            wait_for(lambda: answer(srv.address)[0] == "2", 20)
            srv.signal(signal.SIGTERM)
            assert srv.wait(30) == 0
            load.wait_ok(20)
            assert answer(srv.address)[0] == "2" and not alive(old_template)
        finally:
            ok, failures = load.stop()
            if new_master is not None:
                os.kill(new_master, signal.SIGTERM)
        assert failures == [], failures[:5]
        wait_for(lambda: not alive(new_master), 30)
        assert old_master not in importers(tmp_path) and new_master not in importers(tmp_path)


def test_hup_turns_preload_on_and_off(tmp_path):
    write_app(tmp_path, "1")
    conf = tmp_path / "conf.py"
    conf.write_text("preload_app = False\nworkers = 2\nbind = ['127.0.0.1:0']\n")
    with Server("-c", str(conf), "--chdir", str(tmp_path), "hotapp:app",
                env={"HOTAPP_DIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}) as srv:
        _, imported_by, served_by = answer(srv.address)
        assert imported_by == served_by  # each worker imports the app itself
        conf.write_text("preload_app = True\nworkers = 2\nbind = ['127.0.0.1:0']\n")
        write_app(tmp_path, "2")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"Reload complete", 60)
        wait_for(lambda: answer(srv.address)[0] == "2", 20, message=lambda: srv.log)
        _, template, served_by = answer(srv.address)
        assert template != served_by and ppid(template) == srv.proc.pid
        wait_workers(srv, template, 2)
        conf.write_text("preload_app = False\nworkers = 2\nbind = ['127.0.0.1:0']\n")
        write_app(tmp_path, "3")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: srv.log.count("Reload complete") == 2, 60, message=lambda: srv.log)
        wait_for(lambda: answer(srv.address)[0] == "3", 20, message=lambda: srv.log)
        wait_for(lambda: not alive(template), 20, message=lambda: srv.log)
        _, imported_by, served_by = answer(srv.address)
        assert imported_by == served_by
        assert srv.proc.pid not in importers(tmp_path)


HOOKS = """
import os
RECORD = {record!r}

def _w(*words):
    with open(RECORD, "a") as f:
        f.write(" ".join(map(str, words)) + "\\n")

def pre_fork(server, worker): _w("pre_fork", os.getpid(), worker.age)
def post_fork(server, worker): _w("post_fork", os.getpid(), worker.age, server.pid)
def post_worker_init(worker): _w("post_worker_init", os.getpid(), worker.age)
def child_exit(server, worker): _w("child_exit", os.getpid(), worker.age, worker.pid)
"""


def test_the_hooks_run_where_and_with_what_they_always_did(tmp_path):
    write_app(tmp_path, "1")
    record = tmp_path / "hooks"
    conf = tmp_path / "conf.py"
    conf.write_text(HOOKS.format(record=str(record)))
    with hot_server(tmp_path, "-c", str(conf), "-w", "1", "-b", "127.0.0.1:0") as srv:
        master = srv.proc.pid
        _, template, worker = answer(srv.address)
        os.kill(worker, signal.SIGTERM)
        wait_for(lambda: record.exists() and "child_exit" in record.read_text(), 20,
                 message=lambda: srv.log)
        wait_for(lambda: record.read_text().count("post_worker_init") == 2, 30,
                 message=lambda: srv.log)
    lines = [line.split() for line in record.read_text().splitlines()]
    first = [words for words in lines if words[2] == "1"]
    assert first[:3] == [["pre_fork", str(master), "1"],
                         ["post_fork", str(worker), "1", str(master)],
                         ["post_worker_init", str(worker), "1"]]
    assert ["child_exit", str(master), "1", str(worker)] in first
    assert ["pre_fork", str(master), "2"] in lines  # the replacement
