"""What the gthread worker adds: keep-alive, pipelining, a thread pool, connection limits.

End to end against a real unicornd; every wait is on a condition with a deadline. Timing
assertions are on what the app reports (start/end of each request) or on lower bounds.
"""

import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest
from support import Server, wait_for
from workers_support import ResponseReader, readable, request_bytes, wait_eof


def gthread(*extra, **kwargs):
    return Server("-k", "gthread", "-b", "127.0.0.1:0", *extra, "testapp:app", **kwargs)


@pytest.fixture(scope="module")
def server():
    with gthread("-w", "1", "--threads", "4", "--keep-alive", "30") as srv:
        yield srv


def test_threads_option_alone_selects_gthread():
    with Server("-b", "127.0.0.1:0", "--threads", "2", "testapp:app") as srv:
        assert "Using worker: gthread" in srv.log
        conn = http.client.HTTPConnection(*srv.address, timeout=10)
        conn.request("GET", "/echo")
        assert json.loads(conn.getresponse().read())["multithread"] is True
        conn.close()


def test_keep_alive_reuses_one_connection_for_many_requests(server):
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    ports = set()
    try:
        for i in range(50):
            body = b"n=%d" % i if i % 2 else None
            conn.request("POST" if body else "GET", f"/echo?i={i}", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Connection") is None
            seen = json.loads(resp.read())
            assert seen["query"] == f"i={i}"
            assert seen["body"] == (body or b"").decode()
            ports.add(seen["remote_port"])
    finally:
        conn.close()
    # http.client reconnects silently when a connection closes: one client port proves one connection.
    assert len(ports) == 1, ports


def test_pipelined_requests_are_answered_in_order(server):
    requests = [
        request_bytes("GET", "/echo?n=1"),
        request_bytes("POST", "/echo?n=2", body=b"second body"),
        request_bytes("GET", "/sleep?ms=200"),  # slow in the middle: the next still waits for it
        b"POST /echo?n=4 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfour\r\n0\r\n\r\n",
        request_bytes("GET", "/hello"),
        request_bytes("GET", "/echo?n=6", headers=["Connection: close"]),
    ]
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"".join(requests))  # all in one send: they arrive together
        reader = ResponseReader(s)
        answers = [reader.read() for _ in requests]
        assert wait_eof(s) == b""
    assert all(status == 200 for status, _, _ in answers)
    seen = [json.loads(answers[i][2]) for i in (0, 1, 3, 5)]
    assert [s["query"] for s in seen] == ["n=1", "n=2", "n=4", "n=6"]
    assert seen[1]["body"] == "second body" and seen[2]["body"] == "four"
    assert "start" in json.loads(answers[2][2])
    assert answers[4][2] == b"Hello, World!\n"
    assert answers[5][1]["connection"] == "close"


def test_unread_small_body_is_skipped_and_the_connection_lives_on(server):
    with socket.create_connection(server.address, timeout=10) as s:
        reader = ResponseReader(s)
        s.sendall(request_bytes("POST", "/ignore-body", body=b"y" * 20_000)
                  + request_bytes("GET", "/echo?after"))
        assert reader.read()[2] == b"ignored"
        status, headers, body = reader.read()
        assert status == 200 and json.loads(body)["query"] == "after"
        assert "connection" not in headers


def test_tls_keep_alive_and_pipelining(tmp_path):
    # With TLS the first request wraps the socket in a pool thread; the connection must still
    # park, wake up and close as the TLS socket (no fd leak, no plain-socket reads).
    import ssl

    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with gthread("-w", "1", "--threads", "2", "--keep-alive", "1", "--certfile", str(tmp_path / "cert.pem"),
                 "--keyfile", str(tmp_path / "key.pem")) as srv:
        conn = http.client.HTTPSConnection(*srv.address, context=context, timeout=10)
        ports = set()
        for i in range(10):
            conn.request("GET", f"/echo?i={i}")
            seen = json.loads(conn.getresponse().read())
            assert seen["url_scheme"] == "https" and seen["query"] == f"i={i}"
            ports.add(seen["remote_port"])
        assert len(ports) == 1
        conn.close()
        raw = socket.create_connection(srv.address, timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(request_bytes("GET", "/echo?p=1") + request_bytes("GET", "/echo?p=2"))
            reader = ResponseReader(s)
            assert [json.loads(reader.read()[2])["query"] for _ in range(2)] == ["p=1", "p=2"]
            assert wait_eof(s, timeout=10) == b""  # closed after keepalive (1 s), cleanly
        # Many connections opened and closed: no descriptor leaks in the worker.
        pid = _worker_pid_tls(srv, context)
        before = len(os.listdir(f"/proc/{pid}/fd"))
        for _ in range(20):
            c = http.client.HTTPSConnection(*srv.address, context=context, timeout=10)
            c.request("GET", "/hello", headers={"Connection": "close"})
            assert c.getresponse().read() == b"Hello, World!\n"
            c.close()
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) <= before, 10,
                 message="the worker to close its TLS connections")


def _worker_pid_tls(srv, context):
    c = http.client.HTTPSConnection(*srv.address, context=context, timeout=10)
    c.request("GET", "/pid", headers={"Connection": "close"})
    pid = json.loads(c.getresponse().read())["pid"]
    c.close()
    return pid


def test_threads_run_requests_in_parallel():
    n = 4
    with gthread("-w", "1", "--threads", str(n)) as srv:
        results = [None] * n

        def slow(i):
            conn = http.client.HTTPConnection(*srv.address, timeout=20)
            conn.request("GET", "/sleep?ms=1000")
            resp = conn.getresponse()
            results[i] = (resp.status, json.loads(resp.read()))
            conn.close()

        clients = [threading.Thread(target=slow, args=(i,)) for i in range(n)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
    assert all(r is not None and r[0] == 200 for r in results), results
    answers = [r[1] for r in results]
    assert len({a["pid"] for a in answers}) == 1  # one worker process...
    assert len({a["thread"] for a in answers}) == n  # ...n threads
    # All n were running at once: each started before any of them ended.
    assert max(a["start"] for a in answers) < min(a["end"] for a in answers), answers


def test_a_long_cpu_bound_request_still_lets_another_thread_serve():
    """A thread that never waits (it computes) is taken as blocked after
    RUNNABLE_BLOCKED_AFTER (thread_gate): a request that comes meanwhile is answered by
    another thread, before the long one ends."""
    with gthread("-w", "1", "--threads", "2") as srv:
        def get(path, out):
            conn = http.client.HTTPConnection(*srv.address, timeout=20)
            conn.request("GET", path)
            resp = conn.getresponse()
            out.append((resp.status, json.loads(resp.read())))
            conn.close()

        deadline = time.monotonic() + 60
        while True:
            long_one, short_one = [], []
            t = threading.Thread(target=get, args=("/spin?ms=1500", long_one))
            t.start()
            get("/sleep?ms=0", short_one)
            t.join(30)
            (s1, spin), (s2, quick) = long_one[0], short_one[0]
            assert s1 == s2 == 200
            if quick["start"] > spin["start"] or time.monotonic() > deadline:
                break  # (else the quick one was served before the long one began: again)
        assert quick["start"] > spin["start"], (spin, quick)
        assert quick["end"] < spin["end"], (spin, quick)
        assert quick["thread"] != spin["thread"]


def test_keepalive_zero_closes_after_each_response():
    with gthread("-w", "1", "--threads", "2", "--keep-alive", "0") as srv:
        with socket.create_connection(srv.address, timeout=10) as s:
            s.sendall(request_bytes("GET", "/hello"))
            status, headers, body = ResponseReader(s).read()
            assert (status, body) == (200, b"Hello, World!\n")
            assert headers["connection"] == "close"
            assert wait_eof(s) == b""


def test_worker_connections_bounds_the_connections_held(tmp_path):
    calls = tmp_path / "calls"
    calls.touch()
    with gthread("-w", "1", "--threads", "4", "--worker-connections", "2", "--keep-alive", "60",
                 env={"TESTAPP_CALLS": str(calls)}) as srv:
        a = socket.create_connection(srv.address, timeout=10)
        b = socket.create_connection(srv.address, timeout=10)
        ra, rb = ResponseReader(a), ResponseReader(b)
        for sock, reader, name in ((a, ra, "a"), (b, rb, "b")):
            sock.sendall(request_bytes("GET", f"/hello?{name}"))
            assert reader.read()[0] == 200
        # Both held (kept alive). A third connects (the kernel completes it into the backlog)
        # and sends its request...
        c = socket.create_connection(srv.address, timeout=10)
        c.sendall(request_bytes("GET", "/echo?c"))
        # ...but requests sent after it on a and b are answered while it waits.
        for i in range(10):
            for sock, reader in ((a, ra), (b, rb)):
                sock.sendall(request_bytes("GET", f"/hello?again{i}"))
                assert reader.read()[0] == 200
        assert not readable(c, 0.2)
        assert "/echo?c" not in calls.read_text()
        # One of the two closes: the third is accepted and served.
        a.close()
        c.settimeout(10)
        status, _, body = ResponseReader(c).read()
        assert status == 200 and json.loads(body)["query"] == "c"
        lines = calls.read_text().splitlines()
        assert lines.index("GET /echo?c") > lines.index("GET /hello?again9")
        b.close()
        c.close()


def test_graceful_stop_with_keep_alive_clients_connected(tmp_path):
    calls = tmp_path / "calls"
    calls.touch()
    with gthread("-w", "1", "--threads", "4", "--keep-alive", "60", "--graceful-timeout", "20",
                 env={"TESTAPP_CALLS": str(calls)}) as srv:
        idle = []
        for i in range(5):
            s = socket.create_connection(srv.address, timeout=10)
            s.sendall(request_bytes("GET", f"/hello?idle{i}"))
            assert ResponseReader(s).read()[0] == 200
            idle.append(s)
        busy = socket.create_connection(srv.address, timeout=20)
        busy.sendall(request_bytes("GET", "/sleep?ms=3000"))
        wait_for(lambda: "GET /sleep?ms=3000" in calls.read_text(), 10, message="the slow request to start")

        srv.signal(signal.SIGTERM)
        # Idle keep-alive connections are closed (within the 1 s stop grace), cleanly (EOF,
        # no reset)...
        for s in idle:
            assert wait_eof(s, timeout=10) == b""
        # ...while the request in flight is still running...
        assert not readable(busy, 0)
        # ...and it completes; then that connection closes too and the server exits.
        status, _, body = ResponseReader(busy).read()
        assert status == 200
        times = json.loads(body)
        assert times["end"] - times["start"] >= 3.0
        assert wait_eof(busy) == b""
        assert srv.wait(20) == 0
        for s in [*idle, busy]:
            s.close()


def test_request_racing_the_stop_on_an_idle_connection_is_answered_or_cleanly_refused(tmp_path):
    # A request sent on a kept-alive connection just as the worker stops: either it is answered
    # in full (then the connection closes), or the connection closes before it was read. Either
    # way with no reset, and while the worker is still busy with its in-flight request.
    calls = tmp_path / "calls"
    calls.touch()
    with gthread("-w", "1", "--threads", "2", "--keep-alive", "60", "--graceful-timeout", "20",
                 env={"TESTAPP_CALLS": str(calls)}) as srv:
        keep = socket.create_connection(srv.address, timeout=10)
        keep.sendall(request_bytes("GET", "/hello"))
        reader = ResponseReader(keep)
        assert reader.read()[0] == 200
        busy = socket.create_connection(srv.address, timeout=20)
        busy.sendall(request_bytes("GET", "/sleep?ms=3000"))
        wait_for(lambda: "GET /sleep?ms=3000" in calls.read_text(), 10, message="the slow request to start")
        srv.signal(signal.SIGTERM)
        try:
            keep.sendall(request_bytes("GET", "/hello"))
        except OSError:
            pass  # closed already
        try:
            status, _, body = reader.read()
            assert (status, body) == (200, b"Hello, World!\n")
        except EOFError:
            pass  # closed before the request was read
        assert wait_eof(keep) == b""
        assert not readable(busy, 0)  # the slow request is still running meanwhile
        assert ResponseReader(busy).read()[0] == 200
        assert srv.wait(20) == 0
        keep.close()
        busy.close()


class KeepAliveLoad:
    """Client threads, each sending requests back to back on one keep-alive connection
    (http.client reconnects by itself after a `Connection: close`), counting every failure."""

    def __init__(self, address, clients=4):
        self.address = address
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pids = []
        self.failures = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self):
        conn = http.client.HTTPConnection(*self.address, timeout=20)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/pid")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise AssertionError(f"status {resp.status}")
                with self.lock:
                    self.pids.append(json.loads(body)["pid"])
            except Exception as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
        conn.close()

    def served(self):
        with self.lock:
            return len(self.pids)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_worker_stop_under_keep_alive_load_fails_no_request():
    # Clients send their next request the moment a response arrives, so a stopping worker
    # always has requests on the way on its idle connections: each must be answered (with
    # Connection: close), never met by a closed connection.
    with gthread("-w", "1", "--threads", "4", "--keep-alive", "30") as srv:
        load = KeepAliveLoad(srv.address)
        try:
            wait_for(lambda: load.served() >= 200, 20, message="load to run")
            old = load.pids[-1]
            for _ in range(3):  # three generations of workers, each stopped under load
                os.kill(old, signal.SIGTERM)
                wait_for(lambda: load.pids[-1] != old, 20, message=f"a new worker\n{srv.log}")
                old = load.pids[-1]
                count = load.served()
                wait_for(lambda: load.served() >= count + 200, 20, message="load on the new worker")
        finally:
            load.finish()
        assert load.failures == []


def test_max_requests_recycles_under_keep_alive_load_without_failures():
    # Every request counts (threads serve several at once); the worker asks to be recycled
    # after max_requests and is replaced while clients keep their connections busy.
    with gthread("-w", "1", "--threads", "4", "--max-requests", "300") as srv:
        load = KeepAliveLoad(srv.address)
        try:
            wait_for(lambda: len(set(load.pids)) >= 3, 60,
                     message=f"two recycles after max_requests\n{srv.log}")
        finally:
            load.finish()
        assert load.failures == []
        assert "max_requests" in srv.log


def test_a_socket_the_app_closed_itself_does_not_take_a_new_connection_with_it(tmp_path):
    # The app closes the socket it took over and goes on running; the fd number is free, and
    # the next connection gets it. When the app returns, that new connection must live on.
    gate = tmp_path / "gate"
    with gthread("-w", "1", "--threads", "4", "--keep-alive", "30", "--log-level", "debug") as srv:
        with socket.create_connection(srv.address, timeout=10) as old:
            old.sendall(request_bytes("GET", f"/takeover?gate={gate}"))
            wait_eof(old)
        with socket.create_connection(srv.address, timeout=10) as new:
            reader = ResponseReader(new)
            new.sendall(request_bytes("GET", "/hello"))
            assert reader.read()[0] == 200
            gate.write_text("go")
            # The app has returned and the server is done with the old connection (logged
            # just before it forgets it).
            wait_for(lambda: "the app took the connection over" in srv.log, 10)
            # Its next request on the same connection is still answered.
            new.sendall(request_bytes("GET", "/hello"))
            assert reader.read()[0] == 200
