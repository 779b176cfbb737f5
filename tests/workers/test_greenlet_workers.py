"""The gevent and eventlet workers (issue 5): many connections per worker, monkey-patching
before the app is imported, streaming, websockets, timeouts, recycling, a missing library."""

import http.client
import json
import os
import signal
import socket
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import websocket
from workers_support import ResponseReader, request_bytes
from support import APPS, REPO, Server, request, run_cli, wait_for

CLASSES = ["gevent", "eventlet"]


@pytest.fixture(params=CLASSES)
def kind(request):
    return request.param


def get(address, path, timeout=30):
    status, _, body = request(address, path, timeout=timeout)
    return status, body


def get_json(address, path, timeout=30):
    status, body = get(address, path, timeout)
    assert status == 200, body
    return json.loads(body)


def concurrently(n, fn):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def assert_all_overlap(results):
    # Every call had started before any of them ended: they all ran at once.
    last_start = max(r["start"] for r in results)
    first_end = min(r["end"] for r in results)
    assert last_start < first_end, (last_start, first_end)


def test_200_concurrent_sleeps_overlap_on_one_worker(kind):
    # Each request waits inside the app until all 200 are there at once: only a worker that
    # runs them concurrently can answer "met" (a serial one would keep the first waiting 20 s).
    with Server("-k", kind, "-w", "1", "-b", "127.0.0.1:0", "greenapp:app") as srv:
        results = concurrently(200, lambda: get_json(srv.address, "/gather?n=200", timeout=60))
    assert len({r["pid"] for r in results}) == 1
    assert all(r["met"] for r in results), sum(r["met"] for r in results)


class _UpstreamServer(ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True


CALLS = 200


@pytest.fixture
def all_at_once_upstream():
    """An upstream that answers no call until all CALLS are in progress at once (then 200 to
    each), or 504 to every call once one has waited 20 s without that happening. Overlap is
    proven by the upstream itself, not by timing, so a slow machine only makes it take longer."""
    barrier = threading.Barrier(CALLS, timeout=20)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                barrier.wait()
                status = 200
            except threading.BrokenBarrierError:
                status = 504
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = _UpstreamServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    barrier.abort()
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_requests_calls_overlap_because_patching_came_first(kind, preload, all_at_once_upstream):
    # requests/urllib3 are imported by the app (in the master with --preload): patched first,
    # 200 calls run at once in one worker. The upstream answers 200 only once all of them are
    # waiting on it together; an unpatched (serial) worker gets 504s.
    args = ["-k", kind, "-w", "1", "-b", "127.0.0.1:0"] + (["--preload"] if preload else [])
    with Server(*args, "greenapp:app") as srv:
        assert get_json(srv.address, "/patched")["patched_at_import"] is True
        results = concurrently(CALLS, lambda: get_json(srv.address, f"/fetch?url={all_at_once_upstream}"))
        assert "warning" not in srv.log.lower(), srv.log
    assert [r["status"] for r in results] == [200] * CALLS
    assert_all_overlap(results)


def test_worker_class_from_the_config_file_and_env_patches_early(kind, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text(f"import socket\npatched = socket.socket.__module__ != 'socket'\n"
                    f"worker_class = {kind!r}\nraw_env = ['CONF_PATCHED=%s' % patched]\n")
    with Server("-c", str(conf), "-w", "1", "-b", "127.0.0.1:0", "--preload", "greenapp:app") as srv:
        assert get_json(srv.address, "/patched")["patched_at_import"] is True
        assert f"Using worker: {kind}" in srv.log
    with Server("-w", "1", "-b", "127.0.0.1:0", "greenapp:app",
                env={"UNICORND_CMD_ARGS": f"--worker-class={kind} --preload"}) as srv:
        assert get_json(srv.address, "/patched")["patched_at_import"] is True


def test_warns_about_modules_imported_before_patching(kind):
    code = ("import ssl, sys, runpy; sys.argv = ['unicornd', '-k', %r, '--check-config', 'greenapp:app'];"
            " runpy.run_module('unicornd', run_name='__main__')" % kind)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]))
    import subprocess
    proc = subprocess.run([sys.executable, "-c", code], cwd=APPS, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "unicornd: warning" in line)
    assert "ssl" in line and kind in line


def test_1000_keep_alive_connections_on_one_worker(kind):
    with Server("-k", kind, "-w", "1", "--keep-alive", "60", "--worker-connections", "1100",
                "-b", "127.0.0.1:0", "testapp:app") as srv:
        socks = []
        try:
            for _ in range(1000):
                socks.append(socket.create_connection(srv.address, timeout=20))
            readers = []
            for s in socks:
                s.sendall(request_bytes("GET", "/hello"))
            for s in socks:
                reader = ResponseReader(s)
                readers.append(reader)
                status, headers, body = reader.read()
                assert (status, body) == (200, b"Hello, World!\n")
                assert "connection" not in headers
            # All 1,000 are still open: a second request on each, same connection.
            for s in socks:
                s.sendall(request_bytes("GET", "/hello"))
            for reader in readers:
                assert reader.read()[0] == 200
        finally:
            for s in socks:
                s.close()
        assert "Error" not in srv.log, srv.log


def test_worker_connections_caps_accepting(kind):
    with Server("-k", kind, "-w", "1", "--keep-alive", "60", "--worker-connections", "2",
                "-b", "127.0.0.1:0", "testapp:app") as srv:
        held = []
        for _ in range(2):
            s = socket.create_connection(srv.address, timeout=10)
            s.sendall(request_bytes("GET", "/hello"))
            ResponseReader(s).read()
            held.append(s)
        third = socket.create_connection(srv.address, timeout=10)  # waits in the backlog
        third.sendall(request_bytes("GET", "/hello"))
        third.settimeout(0.5)
        with pytest.raises(socket.timeout):
            third.recv(1)
        held.pop().close()  # a slot frees: the third is accepted and answered
        third.settimeout(10)
        assert ResponseReader(third).read()[0] == 200
        third.close()
        held[0].close()


def test_sse_events_arrive_one_by_one(kind):
    key = uuid.uuid4().hex
    with Server("-k", kind, "-w", "1", "-b", "127.0.0.1:0", "greenapp:app") as srv:
        with socket.create_connection(srv.address, timeout=20) as s:
            s.sendall(request_bytes("GET", f"/sse?id={key}&n=4"))
            buf = b""
            for i in range(4):
                want = f"data: event {i}\n\n".encode()
                # Event i arrives while the app still waits for our ack to yield event i+1.
                while want not in buf:
                    data = s.recv(65536)
                    assert data, buf
                    buf += data
                assert b"event %d" % (i + 1) not in buf and b"no ack" not in buf
                if i < 3:
                    assert get_json(srv.address, f"/ack?id={key}&i={i}") == {"ok": True}
            assert b"text/event-stream" in buf and b"Transfer-Encoding: chunked" in buf


def test_websocket_echo(kind):
    with Server("-k", kind, "-w", "1", "--access-logfile", "-", "-b", "127.0.0.1:0",
                "wsapp:app") as srv:
        host, port = srv.address
        for _ in range(2):
            ws = websocket.create_connection(f"ws://{host}:{port}/echo", timeout=10)
            try:
                for msg in ("hello", "world" * 1000, "ünïcode"):
                    ws.send(msg)
                    assert ws.recv() == msg
                ws.send_binary(b"\x00\x01bin")
                assert ws.recv() == b"\x00\x01bin"
                ws.send("bye")
                # The app ends the session; the server closes the socket (no HTTP written).
                wait_for(lambda: _closed(ws), 10, message="the websocket to close")
            finally:
                ws.close()
        assert get(srv.address, "/")[0] == 200
        # Nothing was parsed as HTTP after a takeover (as gunicorn, a session taken over
        # gets no access line; the last request's line shows the log is written).
        wait_for(lambda: '"GET / HTTP/1.1" 200 ' in srv.log, 10, message="the access line")
        assert "Error handling" not in srv.log and '" 400 ' not in srv.log, srv.log
        # Closing a taken-over socket did not break the app's own reader of it.
        assert "Traceback" not in srv.log, srv.log


def _closed(ws):
    try:
        ws.recv()
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        return True
    return not ws.connected


def test_timeout_logs_greenlet_stacks(kind, tmp_path):
    calls = tmp_path / "calls"
    calls.touch()
    with Server("-k", kind, "-w", "1", "--timeout", "2", "-b", "127.0.0.1:0", "greenapp:app",
                env={"GREENAPP_CALLS": str(calls)}) as srv:
        pid = get_json(srv.address, "/sleep?ms=1")["pid"]
        sleeper = threading.Thread(target=_quiet_get, args=(srv.address, "/sleep?ms=60000"))
        sleeper.start()
        wait_for(lambda: "sleep 60000" in calls.read_text(), 10, message="the sleeper to start")
        spinner = threading.Thread(target=_quiet_get, args=(srv.address, "/spin?s=30"))
        spinner.start()  # blocks the worker: no heartbeat, the master times it out
        srv.wait_log(r"stacks at timeout", 30)
        wait_for(lambda: get_json(srv.address, "/sleep?ms=1")["pid"] != pid, 30, message="a new worker")
        sleeper.join(30)
        spinner.join(30)
        log = srv.log
    # The spinning request is in the thread stack, the suspended sleeper in a greenlet's.
    assert "in spin" in log or "/spin" in log or "monotonic() < until" in log, log
    assert "Greenlet" in log and "sleep_route" in log, log


def _quiet_get(address, path):
    try:
        get(address, path, timeout=60)
    except (OSError, http.client.HTTPException):
        pass


def test_max_requests_recycles(kind):
    with Server("-k", kind, "-w", "1", "--max-requests", "5", "-b", "127.0.0.1:0", "greenapp:app") as srv:
        first = get_json(srv.address, "/sleep?ms=1")["pid"]

        def recycled():
            return get_json(srv.address, "/sleep?ms=1")["pid"] != first
        wait_for(recycled, 20, interval=0.05, message="a recycled worker")
        assert "max_requests" in srv.log


@pytest.mark.parametrize("library", CLASSES)
def test_missing_library_is_a_one_line_error_naming_the_extra(library, tmp_path):
    # A shadow module on PYTHONPATH makes the library look absent.
    (tmp_path / f"{library}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{library}'\", name={library!r})\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(APPS), str(REPO)])}
    proc = run_cli("-k", library, "testapp:app", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"pip install 'unicornd[{library}]'" in lines[0]


def test_graceful_stop_closes_idle_connections_and_finishes_requests(kind, tmp_path):
    calls = tmp_path / "calls"
    calls.touch()
    with Server("-k", kind, "-w", "1", "--keep-alive", "60", "--graceful-timeout", "30",
                "-b", "127.0.0.1:0", "greenapp:app", env={"GREENAPP_CALLS": str(calls)}) as srv:
        idle = []
        for _ in range(50):
            s = socket.create_connection(srv.address, timeout=20)
            s.sendall(request_bytes("GET", "/sleep?ms=1"))
            ResponseReader(s).read()
            idle.append(s)
        busy = socket.create_connection(srv.address, timeout=20)
        busy.sendall(request_bytes("GET", "/sleep?ms=1500"))
        wait_for(lambda: "sleep 1500" in calls.read_text(), 10, message="the slow request to start")
        srv.signal(signal.SIGTERM)
        status, headers, body = ResponseReader(busy).read()
        assert status == 200 and headers.get("connection") == "close"
        for s in idle:
            try:
                assert s.recv(1) == b""  # closed, not reset, well before graceful_timeout
            except OSError as exc:
                raise AssertionError(f"{exc}\n{srv.log}")
            s.close()
        busy.close()
        assert srv.wait(10) == 0


def test_tls(kind, tmp_path):
    import ssl

    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    with Server("-k", kind, "-w", "1", "--certfile", str(tmp_path / "server.pem"),
                "--keyfile", str(tmp_path / "server.pem"), "-b", "127.0.0.1:0", "testapp:app") as srv:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with socket.create_connection(srv.address, timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                reader = ResponseReader(s)
                for _ in range(3):  # keep-alive over TLS
                    s.sendall(request_bytes("GET", "/hello"))
                    assert reader.read()[2] == b"Hello, World!\n"


def test_requests_sent_during_a_response_are_served_in_order_on_that_connection(kind, tmp_path):
    calls = tmp_path / "calls"
    with Server("-k", kind, "-w", "1", "-b", "127.0.0.1:0", "greenapp:app",
                env={"GREENAPP_CALLS": str(calls)}) as srv:
        with socket.create_connection(srv.address, timeout=20) as s:
            reader = ResponseReader(s)
            s.sendall(request_bytes("GET", "/sleep?ms=300"))
            wait_for(lambda: calls.exists() and "sleep 300" in calls.read_text(), 10)
            # While the app sleeps: a whole request, then the first half of another.
            s.sendall(request_bytes("GET", "/sleep?ms=1") + b"GET /sleep?ms=2 HTTP/1.1\r\nHo")
            status, _, body = reader.read()
            assert status == 200 and json.loads(body)["end"] - json.loads(body)["start"] >= 0.3
            assert reader.read()[0] == 200
            s.sendall(b"st: t\r\n\r\n")
            assert reader.read()[0] == 200
            assert calls.read_text().split("\n")[:3] == ["sleep 300", "sleep 1", "sleep 2"]


def test_a_pipelining_client_does_not_hold_the_worker(kind):
    n = 20000
    with Server("-k", kind, "-w", "1", "-b", "127.0.0.1:0", "greenapp:app") as srv:
        hog = socket.create_connection(srv.address, timeout=30)
        other = socket.create_connection(srv.address, timeout=30)
        try:
            counts = []

            def read_all():
                reader = ResponseReader(hog)
                for _ in range(n):
                    status, _, body = reader.read()
                    counts.append(json.loads(body)["n"] if status == 200 else None)
            t = threading.Thread(target=read_all)
            t.start()
            hog.sendall(request_bytes("GET", "/count") * n)
            wait_for(lambda: counts, 10, message="the hog's first answers")
            sent_after = counts[-1]  # (the worker may be further on: the client reads behind)
            other.sendall(request_bytes("GET", "/count"))
            status, _, body = ResponseReader(other).read()
            t.join(60)
            assert status == 200 and len(counts) == n and None not in counts
            # Answered between the hog's requests, not after the rest of them.
            position = json.loads(body)["n"]
            assert position - sent_after < 1000, (sent_after, position)
        finally:
            hog.close()
            other.close()
