"""Every example of examples/ served by a real unicornd, spoken to over real HTTP."""

import json
import socket


from support import REPO, Server, parse_response, raw_request, run_cli


def request(server, method="GET", path="/", body=b"", headers=""):
    head = (f"{method} {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return parse_response(raw_request(server.address, head.encode() + body))


def serve(*args):
    return Server("-b", "127.0.0.1:0", *args, cwd=REPO)


def test_hello():
    with serve("-w", "2", "examples.hello:app") as server:
        assert request(server)[::2] == (200, b"Hello, World!\n")


def test_hello_with_chdir_as_the_readme_says():
    with Server("-b", "127.0.0.1:0", "--chdir", "examples", "hello:app", cwd=REPO) as server:
        assert request(server)[::2] == (200, b"Hello, World!\n")


def test_flask():
    with serve("examples.flask_app:app") as server:
        assert request(server)[::2] == (200, b"Hello from Flask!\n")
        status, headers, body = request(server, "POST", "/echo", b'{"a": 1}',
                                        "Content-Type: application/json\r\n")
        assert (status, json.loads(body)) == (200, {"length": 8, "json": {"a": 1}})
        status, _, body = request(server, "GET", "/where", headers="X-Forwarded-Proto: https\r\n")
        assert json.loads(body) == {"url": "https://example.com/where", "remote_addr": "127.0.0.1"}


def test_django():
    with serve("examples.djangoproject.wsgi") as server:
        assert request(server)[::2] == (200, b"Hello from Django!\n")
        status, _, body = request(server, "GET", "/info", headers="X-Forwarded-Proto: https\r\n")
        assert (status, json.loads(body)) == (200, {"path": "/info", "secure": True,
                                                    "host": "example.com"})
        assert request(server, "GET", "/missing")[0] == 404


def test_falcon():
    with serve("examples.falcon_app:app") as server:
        status, _, body = request(server, "GET", "/things/lamp?color=red")
        assert (status, json.loads(body)) == (200, {"thing": "lamp", "params": {"color": "red"}})
        status, _, body = request(server, "PUT", "/things/lamp", b'{"watts": 40}',
                                  "Content-Type: application/json\r\n")
        assert (status, json.loads(body)) == (201, {"thing": "lamp", "stored": {"watts": 40}})


def test_streaming_is_chunked():
    with serve("-k", "gthread", "--threads", "4", "examples.streaming:app") as server:
        status, headers, body = request(server, "GET", "/stream")
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"".join(f"line {i}\n".encode() for i in range(5))


def test_server_sent_events_arrive_one_by_one():
    with serve("-k", "gthread", "--threads", "4", "--graceful-timeout", "1",
               "examples.streaming:app") as server:
        status, headers, body = request(server, "GET", "/events?count=3&interval=0")
        assert (status, headers["content-type"]) == (200, "text/event-stream")
        events = [e for e in body.decode().split("\n\n") if e]
        assert events == [f'id: {i}\nevent: tick\ndata: {{"n": {i}}}' for i in range(3)]
        # The first event is sent before the next one exists (60 s later): it is streamed.
        with socket.create_connection(server.address, timeout=10) as s:
            s.sendall(b"GET /events?count=2&interval=60 HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while b'data: {"n": 0}' not in received:
                chunk = s.recv(4096)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n") and b'"n": 1' not in received


def test_websocket_echo_with_gthread():
    from simple_websocket import Client

    with serve("-k", "gthread", "--threads", "4", "examples.websocket_app:app") as server:
        host, port = server.address
        ws = Client.connect(f"ws://{host}:{port}/ws")
        try:
            for message in ("hello", "bonjour", b"\x00\x01bytes"):
                ws.send(message)
                assert ws.receive(timeout=10) == message
        finally:
            ws.close()
        status, _, body = request(server)
        assert status == 200 and b"new WebSocket" in body
        assert "Error handling request" not in server.log


def test_the_full_config_file_checks():
    result = run_cli("--check-config", "-c", "examples/unicornd.conf.py", "examples.hello:app",
                     cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Configuration OK: examples.hello:app loads."
    assert "warning" not in result.stderr.lower()


def test_the_full_config_file_serves(tmp_path):
    # Its own wsgi_app, its chdir (the repository), its hooks; started from elsewhere.
    with Server("-c", str(REPO / "examples" / "unicornd.conf.py"), "-b", "127.0.0.1:0", "-w", "1",
                cwd=tmp_path) as server:
        assert request(server)[::2] == (200, b"Hello, World!\n")
        server.wait_log(r"on_starting: the master is starting")
        server.wait_log(r"when_ready: serving")


def test_the_full_config_file_sets_every_supported_group():
    text = (REPO / "examples" / "unicornd.conf.py").read_text()
    from unicornd.config.settings import SETTINGS

    core = {"config", "check_config", "print_config", "default_proc_name", "ssl_context"}
    missing = [s.name for s in SETTINGS if s.supported and s.name not in core
               and f"{s.name} = " not in text and f"def {s.name}(" not in text]
    assert missing == []
