"""The app the end-to-end tests talk to; the path picks the behaviour."""

import json
import os
import sys
import tempfile
import threading

CALLS_FILE = os.environ.get("TESTAPP_CALLS")
_lock = threading.Lock()


def _record(environ):
    if CALLS_FILE:
        with _lock, open(CALLS_FILE, "a") as f:
            f.write(environ["REQUEST_METHOD"] + " " + environ.get("RAW_URI", "") + "\n")


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _read_all(inp):
    # read() with a size on every call: wsgiref's validator insists on it (PEP 3333).
    parts = []
    while True:
        part = inp.read(8192)
        if not part:
            return b"".join(parts)
        parts.append(part)


def echo(environ, start_response):
    """Everything the app saw, as JSON: the corpus test compares it with the case."""
    body = _read_all(environ["wsgi.input"])
    headers = [[k[5:].replace("_", "-"), v] for k, v in environ.items() if k.startswith("HTTP_")]
    data = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ["RAW_URI"],
        "path_info": environ["PATH_INFO"],
        "script_name": environ["SCRIPT_NAME"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": sorted(headers),
        "content_type": environ.get("CONTENT_TYPE"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "body": body.decode("latin-1"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "server_name": environ.get("SERVER_NAME"),
        "server_port": environ.get("SERVER_PORT"),
        "url_scheme": environ["wsgi.url_scheme"],
        "multiprocess": environ["wsgi.multiprocess"],
        "multithread": environ["wsgi.multithread"],
        "input_terminated": environ.get("wsgi.input_terminated"),
        "has_socket": environ.get("unicornd.socket") is not None and environ.get("gunicorn.socket") is not None,
        "pid": os.getpid(),
    }
    return _json(start_response, data)


def app(environ, start_response):
    _record(environ)
    path = environ["PATH_INFO"]
    if path == "/__ping":
        return _json(start_response, {"ok": True})
    handler = ROUTES.get(path)
    if handler is None:
        return echo(environ, start_response)
    return handler(environ, start_response)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "14")])
    return [b"Hello, World!\n"]


def no_length(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"part one, ", b"part two"]


def generator(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(5):
        yield b"chunk %d\n" % i


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written, ")
    return [b"returned"]


def too_long(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"12345678"]


def too_short(environ, start_response):
    start_response("200 OK", [("Content-Length", "10")])
    return [b"12345"]


def crash(environ, start_response):
    raise RuntimeError("boom: this must not reach the client")


def crash_after_head(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first"
    raise RuntimeError("boom after head")


def header_injection(environ, start_response):
    start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: evil=1")])
    return [b"x"]


def bad_header_name(environ, start_response):
    start_response("200 OK", [("X Bad", "a")])
    return [b"x"]


def empty(environ, start_response):
    start_response("204 No Content", [])
    return [b"this body must not be sent"]


def not_modified(environ, start_response):
    start_response("304 Not Modified", [("ETag", '"x"')])
    return []


class _Closing:
    def __init__(self, marker):
        self.marker = marker

    def __iter__(self):
        yield b"closing body"

    def close(self):
        with open(self.marker, "a") as f:
            f.write("closed\n")


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing(environ.get("HTTP_X_MARKER", os.path.join(tempfile.gettempdir(), "unicornd-closed")))


class _SlowClosing(_Closing):
    def __iter__(self):
        for i in range(2000):
            yield b"x" * 65536


def closing_big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _SlowClosing(environ["HTTP_X_MARKER"])


def file_wrapper(environ, start_response):
    path = environ["HTTP_X_FILE"]
    f = open(path, "rb")
    size = os.path.getsize(path)
    headers = [("Content-Type", "application/octet-stream")]
    if environ.get("HTTP_X_NO_LENGTH") != "1":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 8192)


def read_lines(environ, start_response):
    inp = environ["wsgi.input"]
    lines = [line.decode() for line in inp]
    return _json(start_response, {"lines": lines})


def read_sized(environ, start_response):
    inp = environ["wsgi.input"]
    parts = []
    while True:
        part = inp.read(3)
        if not part:
            break
        parts.append(part.decode())
    return _json(start_response, {"parts": parts})


def ignore_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"ignored"]


def big_ignore_body(environ, start_response):
    body = b"z" * (8 * 1024 * 1024)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def exc_info_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("replaced")
    except ValueError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", "8")],
                       sys.exc_info())
    return [b"replaced"]


def stderr_app(environ, start_response):
    environ["wsgi.errors"].write("app wrote to wsgi.errors\n")
    return hello(environ, start_response)


def pid(environ, start_response):
    return _json(start_response, {"pid": os.getpid()})


def sleep_ms(environ, start_response):
    """/sleep?ms=N: sleep N ms; answer when it started and ended (monotonic clock), pid, thread."""
    import time
    from urllib.parse import parse_qs
    ms = int(parse_qs(environ["QUERY_STRING"]).get("ms", ["0"])[0])
    start = time.monotonic()
    time.sleep(ms / 1000)
    return _json(start_response, {"start": start, "end": time.monotonic(), "pid": os.getpid(),
                                  "thread": threading.get_ident()})


def spin_ms(environ, start_response):
    """/spin?ms=N: compute (no waiting) for N ms; the same answer as /sleep."""
    import time
    from urllib.parse import parse_qs
    ms = int(parse_qs(environ["QUERY_STRING"]).get("ms", ["0"])[0])
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < ms / 1000:
        n += 1
    return _json(start_response, {"start": start, "end": time.monotonic(), "pid": os.getpid(),
                                  "thread": threading.get_ident(), "loops": n})


ROUTES = {
    "/hello": hello,
    "/no-length": no_length,
    "/generator": generator,
    "/write": write_callable,
    "/too-long": too_long,
    "/too-short": too_short,
    "/crash": crash,
    "/crash-after-head": crash_after_head,
    "/header-injection": header_injection,
    "/bad-header-name": bad_header_name,
    "/204": empty,
    "/304": not_modified,
    "/closing": closing,
    "/closing-big": closing_big,
    "/file": file_wrapper,
    "/lines": read_lines,
    "/sized": read_sized,
    "/ignore-body": ignore_body,
    "/big-ignore-body": big_ignore_body,
    "/exc-info": exc_info_app,
    "/stderr": stderr_app,
    "/pid": pid,
    "/sleep": sleep_ms,
    "/spin": spin_ms,
}


def validated():
    """The same app wrapped in wsgiref's validator (spec: testapp:validated())."""
    from wsgiref.validate import validator
    return validator(app)


def redirect(environ, start_response):
    """/redirect: a 302 to ``target`` under the app's own URL, built as WSGI apps build it
    (wsgiref.util.application_uri: scheme, Host or SERVER_NAME/PORT, SCRIPT_NAME)."""
    from wsgiref.util import application_uri
    location = application_uri(environ).rstrip("/") + "/target"
    start_response("302 Found", [("Location", location), ("Content-Length", "0")])
    return [b""]


ROUTES["/redirect"] = redirect


def orphan(environ, start_response):
    """/orphan?code=N: leave a process behind that exits with status N once orphaned (a double
    fork, as a daemonising helper does); the kernel hands it to PID 1 or the nearest subreaper."""
    import time
    from urllib.parse import parse_qs
    code = int(parse_qs(environ["QUERY_STRING"]).get("code", ["0"])[0])
    pid = os.fork()
    if pid == 0:
        parent = os.getpid()
        if os.fork() == 0:
            deadline = time.monotonic() + 10
            while os.getppid() == parent and time.monotonic() < deadline:
                time.sleep(0.005)
            os._exit(code)
        os._exit(0)
    os.waitpid(pid, 0)
    return _json(start_response, {"orphaned": True})


ROUTES["/orphan"] = orphan


def takeover(environ, start_response):
    """/takeover?gate=PATH: take the socket over as a websocket library does, answer 101 on it
    and close it; return (gunicorn's StopIteration convention) only once PATH exists."""
    import time
    from urllib.parse import parse_qs
    gate = parse_qs(environ["QUERY_STRING"])["gate"][0]
    sock = environ["gunicorn.socket"]
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
    sock.close()
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(gate + ".returned", "w"):
        pass
    raise StopIteration


ROUTES["/takeover"] = takeover
