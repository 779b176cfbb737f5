"""/healthz, /readyz and drain_delay end to end: a real server, real signals, real clients.

The rule /readyz follows is tested clause by clause in-process in tests/master/test_readiness.py;
here: what a probe sees through startup, while ready, from TERM on (with and without a drain),
and after a failed reload, and that the app port serves on during the drain. The scale-out path
(three instances behind nginx, rolling restart) is in tests/deploy/test_rolling_restart.py.
"""

import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from support import Load, Server, alive, children, parse_response, raw_request, request, wait_for

pytestmark = pytest.mark.timeout(180)

_METRICS = r"Serving /metrics and /status at: http://(\S+):(\d+)"
_LISTEN = r"Listening at: http://(\S+):(\d+) "


def address_in_log(srv, pattern):
    m = srv.wait_log(pattern, 30)
    return m.group(1), int(m.group(2))


def probe(metrics, path="/readyz", method="GET"):
    """(status, body) of one probe; the endpoint closes after each answer."""
    reply = raw_request(metrics, f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    status, headers, body = parse_response(reply)
    return status, body.decode()


def answers(address):
    try:
        return request(address, "/", timeout=5)[0] == 200
    except OSError:
        return False


def life(tmp_path, *args, env=None, **kw):
    return Server("-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0", *args, "lifeapp:app",
                  env=env or {"LIFEAPP_DIR": str(tmp_path)}, **kw)


def booted(tmp_path, pids):
    return pids and all((tmp_path / f"booted-{pid}").exists() for pid in pids)


def test_startup_is_503_until_the_workers_have_booted_then_200(tmp_path):
    (tmp_path / "slow").touch()  # the app's import waits (a database that is not up yet)
    with life(tmp_path, "-w", "2", expect_listen=False) as srv:
        metrics = address_in_log(srv, _METRICS)
        app = address_in_log(srv, _LISTEN)
        wait_for(lambda: len(children(srv.proc.pid)) == 2, 30, message=lambda: srv.log)
        assert probe(metrics, "/healthz") == (200, "ok\n")
        assert probe(metrics) == (503, "not ready: starting: 0 of 2 worker(s) serving\n")
        status, body = probe(metrics, method="HEAD")
        assert (status, body) == (503, "")
        assert probe(metrics, "/readyz?verbose=1")[0] == 503  # a query string changes nothing
        (tmp_path / "slow").unlink()
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        assert probe(metrics) == (200, "ready: 2 worker(s) serving\n")
        assert probe(metrics, method="HEAD") == (200, "")
        assert answers(app)
        # /status says the same, for `unicornd status` and scripts.
        status = json.loads(probe(metrics, "/status")[1])
        assert status["ready"] == {"ready": True, "why": "2 worker(s) serving"}
        assert probe(metrics, "/nope")[0] == 404


def test_a_failed_reload_is_503_while_the_old_workers_serve_until_a_reload_succeeds(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("")
    with life(tmp_path, "-w", "2", "-c", str(conf)) as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        first = children(srv.proc.pid)
        (tmp_path / "broken").touch()
        srv.signal(signal.SIGHUP)
        srv.wait_log("Reload failed: the new workers cannot load the app", 30)
        status, body = probe(metrics)
        assert status == 503, body
        assert "the last reload failed (the new workers cannot load the app)" in body
        assert probe(metrics, "/healthz")[0] == 200
        # The old workers serve on, and keep doing so.
        wait_for(lambda: children(srv.proc.pid) == first, 30, message=lambda: srv.log)
        for _ in range(5):
            assert request(srv.address, "/")[0] == 200
        assert probe(metrics)[0] == 503
        # Settings that do not load are a failed reload too (the app is fine again now).
        (tmp_path / "broken").unlink()
        conf.write_text("workers = 'many'\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log("Reload failed, the current settings stay", 30)
        status, body = probe(metrics)
        assert status == 503 and "the new settings did not load" in body, body
        # A reload that completes makes the server ready again.
        conf.write_text("")
        srv.signal(signal.SIGHUP)
        srv.wait_log("Reload complete", 30)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)


def test_without_drain_delay_readyz_is_503_from_term_while_a_request_finishes(tmp_path):
    with life(tmp_path, "-w", "1", "--graceful-timeout", "120") as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        result = {}

        def in_flight():
            try:
                result["status"] = request(srv.address, "/sleep?120", timeout=200)[0]
            except OSError as exc:
                result["error"] = exc
        slow = threading.Thread(target=in_flight, daemon=True)
        slow.start()
        wait_for(lambda: (tmp_path / "inside").exists(), 30, message="the request to be in the app")
        srv.signal(signal.SIGTERM)
        srv.wait_log("Handling signal: term")
        # The graceful stop waits for the request; the master's loop answers probes meanwhile.
        assert probe(metrics) == (503, "not ready: stopping\n")
        assert probe(metrics, "/healthz") == (200, "ok\n")
        assert srv.proc.poll() is None
        # (A graceful stop handles no more signals: end the request by ending its worker.)
        (worker,) = children(srv.proc.pid)
        os.kill(worker, signal.SIGKILL)
        assert srv.wait(30) == 0
        slow.join(30)
        assert "error" in result, result  # the request died with its worker, as it was told


def test_term_with_drain_delay_serves_on_while_readyz_is_503(tmp_path):
    with life(tmp_path, "-w", "2", "--drain-delay", "120") as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        workers = children(srv.proc.pid)
        load = Load(srv.address, "/", clients=2, max_seconds=100)
        try:
            load.wait_ok(20)
            srv.signal(signal.SIGTERM)
            srv.wait_log(r"Draining for 120 s \(drain_delay\)")
            status, body = probe(metrics)
            assert status == 503 and body.startswith("not ready: draining: TERM received"), body
            assert probe(metrics, "/healthz")[0] == 200
            # The listener stays open and the same workers serve new connections.
            load.wait_ok(50)
            for _ in range(10):
                assert request(srv.address, "/")[0] == 200
            # Nothing changes the workers while draining.
            srv.signal(signal.SIGHUP)
            srv.wait_log("HUP ignored: the server is draining")
            load.wait_ok(20)
            assert children(srv.proc.pid) == workers
            assert srv.proc.poll() is None and probe(metrics)[0] == 503
        finally:
            ok, failures = load.stop()
        assert failures == [], failures[:5]
        # A worker lost while draining is replaced: the server serves at full strength to the end.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: (lambda now: len(now) == 2 and victim not in now)(children(srv.proc.pid)),
                 30, message=lambda: srv.log)
        wait_for(lambda: len(re.findall(r"Booting worker", srv.log)) == 3, 30,
                 message=lambda: srv.log)
        assert request(srv.address, "/")[0] == 200 and probe(metrics)[0] == 503
        # A second TERM ends the drain: the graceful stop follows at once.
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.log
        assert time.monotonic() - started < 60  # not the 120 s of drain_delay
        assert "TERM while draining: the drain ends now" in srv.log
        assert not answers(srv.address)


def test_the_drain_ends_by_itself_after_drain_delay(tmp_path):
    with life(tmp_path, "-w", "1", "--drain-delay", "2") as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        sent = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.log
        assert time.monotonic() - sent >= 2.0  # the drain ends no sooner than drain_delay
        log = srv.log
        assert log.index("Draining for 2 s") < log.index("Drain over: closing the listeners") \
            < log.index("Shutting down: Master")


def test_int_while_draining_stops_at_once(tmp_path):
    with life(tmp_path, "-w", "1", "--drain-delay", "120") as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        srv.signal(signal.SIGTERM)
        srv.wait_log("Draining for 120 s")
        started = time.monotonic()
        srv.signal(signal.SIGINT)
        assert srv.wait(60) == 0, srv.log
        assert time.monotonic() - started < 60
        assert "Drain over" not in srv.log


def test_no_drain_for_a_server_that_never_became_ready(tmp_path):
    (tmp_path / "slow").touch()
    with life(tmp_path, "-w", "1", "--drain-delay", "120", expect_listen=False) as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: children(srv.proc.pid), 30, message=lambda: srv.log)
        assert probe(metrics)[0] == 503
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.log
        assert time.monotonic() - started < 60
        assert "Draining" not in srv.log


def test_drain_delay_is_validated():
    from support import run_cli
    result = run_cli("--drain-delay", "-1", "--check-config", "lifeapp:app")
    assert result.returncode == 2, result
    assert "drain_delay" in result.stderr or "drain-delay" in result.stderr, result.stderr


def test_systemd_hears_stopping_when_term_arrives_not_when_the_drain_ends(tmp_path):
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.2)
    messages = []

    def said(text):
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except (socket.timeout, OSError):
                break
        return any(text in m for m in messages)

    try:
        with life(tmp_path, "-w", "1", "--drain-delay", "120",
                  env={"LIFEAPP_DIR": str(tmp_path), "NOTIFY_SOCKET": str(notify_path)}) as srv:
            metrics = address_in_log(srv, _METRICS)
            wait_for(lambda: said("READY=1"), 30, message=lambda: messages)
            srv.signal(signal.SIGTERM)
            wait_for(lambda: said("STOPPING=1"), 30, message=lambda: messages)
            assert srv.proc.poll() is None and probe(metrics)[0] == 503  # still draining
            assert answers(srv.address)
            srv.signal(signal.SIGTERM)
            assert srv.wait(60) == 0
    finally:
        listener.close()


def test_term_ending_a_binary_upgrade_does_not_drain_and_the_promoted_master_does(tmp_path):
    with life(tmp_path, "-w", "1", "--drain-delay", "120") as srv:
        metrics = address_in_log(srv, _METRICS)
        wait_for(lambda: probe(metrics)[0] == 200, 30, message=lambda: srv.log)
        old = srv.proc.pid
        (old_worker,) = children(old)
        srv.signal(signal.SIGUSR2)
        new = wait_for(lambda: next(iter(children(old) - {old_worker}), None), 30,
                       message=lambda: srv.log)
        wait_for(lambda: len(children(new)) == 1 and booted(tmp_path, children(new)), 30,
                 message=lambda: srv.log)
        srv.signal(signal.SIGWINCH)
        wait_for(lambda: old_worker not in children(old), 30, message=lambda: srv.log)
        started = time.monotonic()
        srv.signal(signal.SIGTERM)  # the old master leaves: the new one serves the sockets
        assert srv.wait(60) == 0, srv.log
        assert time.monotonic() - started < 60  # not the 120 s of drain_delay
        assert "Draining" not in srv.log
        # The promoted master takes the metrics endpoint and is ready; its own TERM drains.
        wait_for(lambda: "Master has been promoted" in srv.log, 30, message=lambda: srv.log)
        # (Its own endpoint: a port of its own here, since the test asked for port 0.)
        found = re.search(rf"\[{new}\] \[INFO\] " + _METRICS, srv.log)
        metrics = found.group(1), int(found.group(2))
        wait_for(lambda: probe_or_none(metrics) == 200, 30, message=lambda: srv.log)
        os.kill(new, signal.SIGTERM)
        wait_for(lambda: "Draining for 120 s" in srv.log, 30, message=lambda: srv.log)
        assert probe(metrics)[0] == 503 and answers(srv.address)
        os.kill(new, signal.SIGTERM)
        wait_for(lambda: not alive(new), 60, message=lambda: srv.log)


def probe_or_none(metrics):
    try:
        return probe(metrics)[0]
    except (OSError, AssertionError, IndexError, ValueError):
        return None
