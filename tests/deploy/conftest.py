"""Real nginx in front of real unicornd, both started by the test, over loopback only.

nginx runs in the foreground (``daemon off``) with a configuration the test writes: its own
pid file, logs and temp paths in a fresh directory, and ``include`` of the example from
examples/nginx/ exactly as it is in the repository. A missing nginx is a failure, not a skip.

The examples listen on a fixed loopback address and proxy to a fixed socket path, as a real
deployment does. The tests include them as written, except that the socket path
(a fixed path under ``/run``) becomes one in a fresh temporary directory (``example_sock``,
``example_copy``), so that they run as any user; tests that listen on the examples' fixed address
take a lock (``fixed_addresses``) so that two test runs on one machine never share it.
"""

import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import REPO, Load, Server, alive, parse_response, wait_for  # noqa: E402

EXAMPLES = REPO / "examples" / "nginx"
LOCK_FILE = Path(tempfile.gettempdir()) / "unicornd-deploy-nginx.lock"


# -- what the examples say ----------------------------------------------------------------------

def example_text(name="unicornd.conf") -> str:
    return (EXAMPLES / name).read_text()


def example_listen(name="unicornd.conf"):
    """(host, port) of the example's application server block (not the 444 default one)."""
    found = re.findall(r"^\s*listen\s+([\d.]+):(\d+)\s*;", example_text(name), re.M)
    assert len(found) == 1, found
    return found[0][0], int(found[0][1])


def example_socket() -> Path:
    """The unix socket unicornd.conf proxies to."""
    m = re.search(r"^\s*server\s+unix:(\S+?)[\s;]", example_text("unicornd.conf"), re.M)
    assert m, "unicornd.conf has no unix socket upstream"
    return Path(m.group(1))


def example_copy(name, directory, sock) -> Path:
    """examples/nginx/NAME written into ``directory``, as it is but for its unix socket: ``sock``."""
    text = example_text(name)
    fixed = f"unix:{example_socket()}"
    assert fixed in text, f"examples/nginx/{name} no longer proxies to {fixed}"
    path = Path(directory) / name
    path.write_text(text.replace(fixed, f"unix:{sock}"))
    return path


@pytest.fixture
def example_sock():
    """The socket the test's unicornd listens on in place of the example's fixed path under ``/run``.

    In a fresh short temporary directory (a unix socket path is limited to 107 bytes), open to
    nginx's workers, which run as www-data when the tests run as root.
    """
    directory = Path(tempfile.mkdtemp(prefix="unicornd-sock-"))
    directory.chmod(0o755)
    try:
        yield directory / "unicornd.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def example_upstreams(name="upstream.conf"):
    """[(host, port), ...] of the upstream servers in examples/nginx/NAME."""
    found = re.findall(r"^\s*server\s+([\d.]+):(\d+)[\s;]", example_text(name), re.M)
    return [(host, int(port)) for host, port in found]


# -- nginx --------------------------------------------------------------------------------------

def nginx_binary() -> str:
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.fail("nginx is not installed (apt-get install nginx libnginx-mod-stream; .ci/run does)",
                    pytrace=False)
    return path


def _stream_module_line() -> str:
    """``load_module`` for the stream module when this nginx has it as a dynamic module."""
    out = subprocess.run([nginx_binary(), "-V"], capture_output=True, text=True).stderr
    if "--with-stream=dynamic" not in out:
        if "--with-stream" in out:
            return ""  # built in
        pytest.fail(f"this nginx has no stream module:\n{out}", pytrace=False)
    m = re.search(r"--modules-path=(\S+)", out)
    module = Path(m.group(1) if m else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
    if not module.exists():
        pytest.fail(f"{module} is missing (apt-get install libnginx-mod-stream; .ci/run does)",
                    pytrace=False)
    return f"load_module {module};"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connectable(address) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


class Nginx:
    """One nginx master (and its worker) in the foreground, with a configuration of our own."""

    def __init__(self, *, include=None, http="", stream=""):
        self.binary = nginx_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="unicornd-nginx-"))
        self.dir.chmod(0o755)  # nginx's workers (www-data) write their temp files here
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.pidfile = self.dir / "nginx.pid"
        self.proc = None
        user = ""
        if os.geteuid() == 0:
            try:
                user = f"user {pwd.getpwnam('www-data').pw_name};"
            except KeyError:
                user = ""
        d = self.dir
        temp = "\n".join(f"    {kind}_temp_path {d / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        text = f"""{_stream_module_line() if stream else ""}
{user}
daemon off;
worker_processes 1;
pid {self.pidfile};
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
    access_log {self.access_log};
{temp}
{f"    include {include};" if include else ""}
{http}
}}
"""
        if stream:
            text += f"stream {{\n{stream}\n}}\n"
        self.conf = d / "nginx.conf"
        self.conf.write_text(text)

    def _cmd(self, *extra):
        return [self.binary, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on this configuration."""
        return subprocess.run(self._cmd("-t"), capture_output=True, text=True, timeout=30)

    def log(self) -> str:
        try:
            return self.error_log.read_text()
        except OSError:
            return ""

    def start(self, *addresses, timeout=15.0):
        """Start nginx and wait until every address in ``addresses`` accepts connections."""
        self.proc = subprocess.Popen(self._cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            return self.pidfile.exists() and all(connectable(a) for a in addresses)
        wait_for(up, timeout, interval=0.02, message=lambda: f"nginx to listen on {addresses}\n{self.log()}")
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the workers go too
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind, if any
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def upstream_errors(self) -> list:
        """Error-log lines where nginx failed to talk to an upstream (and retried, or gave 502)."""
        return [line for line in self.log().splitlines()
                if "upstream" in line and re.search(r"\[(error|crit|alert|emerg)\]", line)]


@pytest.fixture
def nginx_factory():
    started = []

    def make(**kwargs):
        n = Nginx(**kwargs)
        started.append(n)
        return n
    yield make
    for n in reversed(started):
        n.stop()


# -- the fixed address and socket of the examples ----------------------------------------------

def _open_lock_file() -> int:
    """The lock file, shared by every user's test runs: read-only is enough for ``flock``, and
    opening another user's file in /tmp with O_CREAT fails where ``fs.protected_regular`` is on."""
    try:
        return os.open(LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        pass
    try:
        return os.open(LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o644)
    except FileExistsError:  # another run made it in between
        return os.open(LOCK_FILE, os.O_RDONLY)


@pytest.fixture
def fixed_addresses():
    """Hold the lock on the examples' fixed address for the whole test."""
    fd = _open_lock_file()

    def take():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    try:
        wait_for(take, 100, interval=0.05,
                 message="the lock on the nginx examples' address (another test run holds it)")
        for name in ("unicornd.conf", "upstream.conf", "three-instances.conf"):
            address = example_listen(name)
            if connectable(address):
                pytest.fail(f"something already listens on {address[0]}:{address[1]}, the address of "
                            f"examples/nginx/{name}", pytrace=False)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- unicornd ------------------------------------------------------------------------------------

def unix_request(path, data: bytes, timeout=10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _unix_answers(srv, path):
    if srv.proc.poll() is not None:
        raise AssertionError(f"unicornd exited with {srv.proc.returncode}:\n{srv.log}")
    try:
        return unix_request(path, b"GET /__ping HTTP/1.1\r\nHost: t\r\n\r\n", 2).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_unicornd_unix(path, *args, env=None) -> Server:
    """unicornd with the test app on the unix socket ``path``, once a worker answers there."""
    srv = Server("-b", f"unix:{path}", *args, "testapp:app", env=env)
    try:
        wait_for(lambda: _unix_answers(srv, path), 20, message=lambda: f"a worker on {path}\n{srv.log}")
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture
def unicornd_factory():
    started = []

    def make(*args, unix=None, env=None):
        srv = start_unicornd_unix(unix, *args, env=env) if unix else Server(*args, "testapp:app", env=env)
        started.append(srv)
        return srv
    yield make
    for srv in reversed(started):
        srv.stop()


# -- clients -------------------------------------------------------------------------------------

def http_get(address, path="/", host="example.com", headers=(), method="GET", body=b""):
    """One request on a new connection, raw, so exactly these headers go out.

    Returns (status, headers, body), or None when the server closed without a response.
    """
    from support import raw_request
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    reply = raw_request(address, head.encode("latin-1") + b"\r\n" + body)
    return parse_response(reply) if reply else None


class HostLoad(Load):
    """``support.Load`` with a Host header of our choosing (nginx routes on it)."""

    def __init__(self, address, path="/", host="example.com", **kwargs):
        self.host = host
        super().__init__(address, path, **kwargs)

    def _one(self):
        import http.client
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        try:
            conn.request("GET", self.path, headers={"Host": self.host})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


# The test modules import these helpers as ``deploy_support`` (every conftest.py is "conftest").
sys.modules["deploy_support"] = sys.modules[__name__]

__all__ = ["EXAMPLES", "HostLoad", "Nginx", "alive", "connectable", "example_copy", "example_listen",
           "example_socket",
           "example_upstreams", "free_port", "http_get", "start_unicornd_unix", "unix_request"]
