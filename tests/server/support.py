"""Start a real unicornd process and talk to it over real sockets.

No sleeps as synchronisation: everything waits on a condition with a deadline.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
_LISTEN_RE = re.compile(r"Listening at: (\S+) \((\d+)\)")


def wait_for(predicate, timeout=10.0, interval=0.01, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if callable(message):
                message = message()
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Server:
    """A unicornd subprocess; its error log is collected line by line."""

    def __init__(self, *args, cwd=None, env=None, expect_listen=True, timeout=20.0):
        self.args = [sys.executable, "-m", "unicornd", *args]
        full_env = dict(os.environ)
        full_env.pop("UNICORND_CMD_ARGS", None)
        full_env.pop("GUNICORN_CMD_ARGS", None)
        full_env.pop("WEB_CONCURRENCY", None)
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), str(REPO), full_env.get("PYTHONPATH", "")]))
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.lines = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            self.args, cwd=cwd or APPS, env=full_env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.urls = []
        if expect_listen:
            try:
                self.wait_listening(timeout)
            except BaseException:
                self.stop()  # never leave a server behind when it did not come up
                raise

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log), timeout, message=f"log line {pattern!r}\n{self.log}")

    def wait_listening(self, timeout=20.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"unicornd exited with {self.proc.returncode}:\n{self.log}")
            found = _LISTEN_RE.findall(self.log)
            return found if found and "Booting worker" in self.log else None
        found = wait_for(ready, timeout, message="Listening at")
        self.urls = [url for url, _ in found]
        # A worker is up once it answers: poll with a real connection.
        if self.urls[0].startswith(("http://", "https://")):
            wait_for(self._answers, timeout, message=lambda: f"a worker to answer\n{self.log}")

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"unicornd exited with {self.proc.returncode}:\n{self.log}")
        try:
            with socket.create_connection(self.address, timeout=2) as s:
                if self.urls[0].startswith("https://"):
                    import ssl
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    s = context.wrap_socket(s)
                s.sendall(b"GET /__ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.1")
        except OSError:
            return False

    @property
    def address(self):
        url = self.urls[0]
        assert url.startswith(("http://", "https://")), url
        hostport = url.split("://", 1)[1]
        host, _, port = hostport.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any orphaned worker
        except ProcessLookupError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_cli(*args, cwd=None, env=None, timeout=30.0):
    """Run unicornd to completion (for options that exit before serving)."""
    full_env = dict(os.environ)
    for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY"):
        full_env.pop(key, None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)])
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "unicornd", *args], cwd=cwd or APPS, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def request(address, path="/", method="GET", body=None, headers=None, timeout=30, context=None):
    """One request on a new connection with http.client (HTTPS with an ssl ``context``):
    ``(status, headers with lower-case names, body)``."""
    if context is None:
        conn = http.client.HTTPConnection(*address, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(*address, context=context, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_request(address, data: bytes, timeout=10.0, shut_wr=False) -> bytes:
    """Send raw bytes, read until the server closes; returns all it sent."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                raise AssertionError(f"connection reset after {b''.join(chunks)!r}")
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def unix_request(path, data: bytes, timeout=5.0):
    """Send ``data`` over a unix socket and read the answer until the server closes; None if
    the socket cannot be reached."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(data)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
            return received
    except OSError:
        return None


def parse_response(data: bytes):
    """(status, headers dict lower-cased, body) of one response; chunked bodies are decoded."""
    head, _, body = data.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # interim responses (100 Continue) come first
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        rest = body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = out
    return status, headers, body


def children(pid: int) -> set:
    """Live child processes of ``pid`` from the process table (zombies excluded)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Load:
    """Background clients on loopback, each request on a new connection; every failure counted.

    Bounded: at most ``max_requests`` requests and ``max_seconds`` seconds, then it stops.
    """

    def __init__(self, address, path="/", clients=4, max_requests=200_000, max_seconds=120.0,
                 unix_path=None):
        self.address = address
        self.path = path
        self.unix_path = unix_path
        self.ok = 0
        self.failures = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget = max_requests
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _one(self):
        import http.client
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self._budget <= 0:
                    return
                self._budget -= 1
            try:
                status = self._one()
                error = None if status == 200 else f"status {status}"
            except Exception as exc:  # every kind of failure counts
                error = repr(exc)
            with self._lock:
                if error:
                    self.failures.append(error)
                else:
                    self.ok += 1

    def wait_ok(self, count, timeout=30.0):
        """Wait until ``count`` more requests have succeeded."""
        target = self.ok + count
        wait_for(lambda: self.ok >= target, timeout, message=f"{count} more successful requests")

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self.ok, self.failures
