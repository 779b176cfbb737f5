"""systemd: socket activation with Debian's systemd-socket-activate, and sd_notify messages
received on a datagram socket of the test's own (path and abstract), as systemd would.

The unit files in examples/systemd/ are the source of the socket path and the command line.
"""

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import APPS, REPO, alive, children, parse_response, wait_for  # noqa: E402

EXAMPLES = REPO / "examples" / "systemd"


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(EXAMPLES / name)
    return parser


def service_args(app="testapp:app"):
    """ExecStart of the example service, with our interpreter and the test app."""
    words = shlex.split(unit("unicornd.service")["Service"]["ExecStart"])
    assert Path(words[0]).name == "unicornd"
    args = [w for w in words[1:] if ":" not in w or w.startswith("-")]
    return [sys.executable, "-m", "unicornd", *args, app]


def env():
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(REPO)]), PYTHONUNBUFFERED="1")
    for key in ("UNICORND_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "NOTIFY_SOCKET"):
        e.pop(key, None)
    return e


class Output:
    def __init__(self, proc):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self):
        return "\n".join(self.lines)


def unix_get(path, target="/echo"):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: example.org\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def tcp_get(port, target="/hello"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_example_units_say_what_the_deployment_guide_says():
    service = unit("unicornd.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "all"
    assert service["KillMode"] == "mixed"
    assert service["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    assert unit("unicornd.socket")["Socket"]["ListenStream"].startswith("/")


def test_socket_activation_on_a_unix_and_a_tcp_socket():
    assert shutil.which("systemd-socket-activate"), "systemd-socket-activate must be installed"
    # The example's ListenStream (a fixed path under /run) moved into a directory of the test's own,
    # short enough for a unix socket path, so that the test runs as any user.
    example = Path(unit("unicornd.socket")["Socket"]["ListenStream"])
    short = Path(tempfile.mkdtemp(prefix="unicornd-sa-"))
    path = short / example.name
    port = free_port()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(path), "-l", f"127.0.0.1:{port}", "--fdname=web:admin",
         "-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED", *service_args()],
        cwd=APPS, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    out = Output(proc)
    try:
        wait_for(lambda: path.exists(), 10, message="the socket made by systemd-socket-activate")
        # The first connection starts unicornd, which must answer it on the passed socket.
        status, _, body = parse_response(unix_get(path))
        assert status == 200, out.text
        assert b'"server_name": "example.org"' in body
        assert parse_response(tcp_get(port))[2] == b"Hello, World!\n"
        text = out.text
        assert "Using 2 socket(s) passed by systemd" in text
        assert f"Listening at: unix:{path}" in text and f"Listening at: http://127.0.0.1:{port}" in text
        master = int(re.search(r"Listening at: \S+ \((\d+)\)", text).group(1))
        workers = wait_for(lambda: (lambda c: c if len(c) == 4 else None)(children(master)), 20)

        # HUP keeps the sockets (they are systemd's) and replaces the workers.
        os.kill(master, signal.SIGHUP)
        wait_for(lambda: (lambda c: len(c) == 4 and not (c & workers))(children(master)), 30,
                 message=lambda: out.text)
        assert parse_response(unix_get(path, "/hello"))[2] == b"Hello, World!\n"
        assert parse_response(tcp_get(port))[0] == 200

        os.kill(master, signal.SIGTERM)
        wait_for(lambda: not alive(master), 30)
        assert path.exists()  # systemd's socket file is systemd's to remove
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        shutil.rmtree(short, ignore_errors=True)


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages = []

    def collect(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait(self, predicate, timeout=30, what="a notification"):
        return wait_for(lambda: next((m for m in self.collect() if predicate(m)), None), timeout,
                        message=lambda: f"{what}; got {self.messages}")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_ready_reloading_stopping(tmp_path, abstract):
    if abstract:
        name = f"unicornd-test-{os.getpid()}-{time.monotonic_ns()}"
        listener, notify_socket = NotifyListener("\0" + name), "@" + name
    else:
        listener, notify_socket = NotifyListener(str(tmp_path / "notify")), str(tmp_path / "notify")
    e = env()
    e["NOTIFY_SOCKET"] = notify_socket
    proc = subprocess.Popen([sys.executable, "-m", "unicornd", "-w", "2", "-b", "127.0.0.1:0", "testapp:app"],
                            cwd=APPS, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = Output(proc)
    try:
        ready = listener.wait(lambda m: m.get("READY") == "1", what="READY=1")
        assert ready["STATUS"] == "2 workers serving (sync)"
        assert len(children(proc.pid)) == 2  # ready means the workers are there
        os.kill(proc.pid, signal.SIGTTIN)
        listener.wait(lambda m: m.get("STATUS") == "3 workers serving (sync)", what="STATUS after TTIN")
        before = len(listener.messages)
        proc.send_signal(signal.SIGHUP)
        reloading = listener.wait(lambda m: m.get("RELOADING") == "1", what="RELOADING=1")
        assert abs(int(reloading["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60e6
        wait_for(lambda: any(m.get("READY") == "1" for m in listener.collect()[before:]), 30,
                 message=lambda: f"READY=1 after the reload; got {listener.messages}")
        proc.send_signal(signal.SIGTERM)
        listener.wait(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
        assert proc.wait(30) == 0, out.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_new_master_of_an_upgrade_announces_itself(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify"))
    e = env()
    e["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    proc = subprocess.Popen([sys.executable, "-m", "unicornd", "-w", "1", "-b", "127.0.0.1:0", "testapp:app"],
                            cwd=APPS, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = Output(proc)
    new_master = None
    try:
        listener.wait(lambda m: m.get("READY") == "1", what="READY=1")
        old_workers = children(proc.pid)
        proc.send_signal(signal.SIGUSR2)
        announced = listener.wait(lambda m: "MAINPID" in m, what="MAINPID= from the new master")
        new_master = int(announced["MAINPID"])
        assert new_master != proc.pid and new_master in children(proc.pid)
        assert announced.get("READY") == "1" or any(m.get("READY") == "1" for m in listener.messages[-3:])
        assert old_workers <= children(proc.pid), out.text
    finally:
        if new_master:
            os.kill(new_master, signal.SIGTERM)
            wait_for(lambda: not alive(new_master), 30)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
