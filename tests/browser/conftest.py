"""Headless Chromium driven over the DevTools protocol (CDP), and nginx + unicornd for it.

Chromium (Debian's ``chromium``) starts with ``--remote-debugging-port=0`` and a fresh profile
in a temporary directory; the port it picked is read from ``DevToolsActivePort`` in that
profile, and one websocket (websocket-client, in the test extra) to the browser target carries
every command: open a tab, evaluate JavaScript in it. No webdriver, no new dependency. A
missing Chromium is a failure, not a skip (``.ci/run`` installs it).

nginx runs with examples/nginx/unicornd.conf as shipped except for two values a test must own:
the listen port (a free one) and the unix socket path (in a temporary directory). Chromium
resolves the example's server name to 127.0.0.1, so the example's ``server_name`` routing is
what is exercised.
"""

import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "server"))
from support import REPO, Server, wait_for  # noqa: E402


def _deploy_support():
    """tests/deploy/conftest.py (its Nginx class and helpers), loaded once by name."""
    module = sys.modules.get("deploy_support")
    if module is None:
        spec = importlib.util.spec_from_file_location("deploy_support", TESTS / "deploy" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["deploy_support"] = module
        spec.loader.exec_module(module)
    return module


deploy = _deploy_support()
EXAMPLE_CONF = REPO / "examples" / "nginx" / "unicornd.conf"
SERVER_NAME = "example.com"


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)",
                pytrace=False)


class CDPError(Exception):
    pass


class Browser:
    """One headless Chromium; ``open(url)`` gives a tab to evaluate JavaScript in."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-default-browser-check", "--disable-extensions", "--no-proxy-server",
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows", "--remote-allow-origins=*",
             "--remote-debugging-port=0"]

    def __init__(self, host_rules=""):
        import websocket  # websocket-client
        self.profile = Path(tempfile.mkdtemp(prefix="unicornd-chromium-"))
        self.stderr = self.profile.parent / (self.profile.name + ".stderr")
        args = [chromium_binary(), *self.FLAGS, f"--user-data-dir={self.profile}"]
        if host_rules:
            args.append(f"--host-resolver-rules={host_rules}")
        args.append("about:blank")
        self._stderr_file = open(self.stderr, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr_file, start_new_session=True)
        self._ids = itertools.count(1)
        self.ws = None
        try:
            port_file = self.profile / "DevToolsActivePort"

            def listening():
                if self.proc.poll() is not None:
                    raise AssertionError(f"chromium exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    lines = port_file.read_text().split("\n")
                except OSError:
                    return None
                return lines if len(lines) >= 2 and lines[0].strip() and lines[1].strip() else None
            port, path = wait_for(listening, 60, interval=0.05,
                                  message=lambda: f"chromium's DevToolsActivePort\n{self.log()}")[:2]
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{port.strip()}{path.strip()}",
                                                  timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def log(self) -> str:
        try:
            return self.stderr.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def send(self, method, params=None, session=None, timeout=60.0):
        """One CDP command; its result (events that arrive meanwhile are dropped)."""
        msg_id = next(self._ids)
        message = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if time.monotonic() > deadline:
                raise CDPError(f"{method}: no answer in {timeout} s")

    def open(self, url) -> "Tab":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, target, session)
        tab.navigate(url)
        return tab

    def close(self):
        try:
            if self.ws is not None:
                try:
                    self.send("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001 - it may be gone already; killed below
                    pass
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its zygote and renderers too
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            self._stderr_file.close()
            shutil.rmtree(self.profile, ignore_errors=True)
            try:
                self.stderr.unlink()
            except OSError:
                pass


class Tab:
    def __init__(self, browser, target, session):
        self.browser = browser
        self.target = target
        self.session = session

    def navigate(self, url):
        result = self.browser.send("Page.navigate", {"url": url}, session=self.session)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture(scope="module")
def browser():
    b = Browser(host_rules=f"MAP {SERVER_NAME} 127.0.0.1")
    try:
        yield b
    finally:
        b.close()


# -- nginx with the shipped example, unicornd behind it ---------------------------------------------

def example_for(port: int, socket_path: Path) -> str:
    """examples/nginx/unicornd.conf with its listen port and upstream socket replaced."""
    text = EXAMPLE_CONF.read_text()
    text, n_listen = re.subn(r"(^\s*listen\s+127\.0\.0\.1:)\d+", rf"\g<1>{port}", text, flags=re.M)
    text, n_socket = re.subn(r"(^\s*server\s+unix:)\S+?(?=[\s;])", rf"\g<1>{socket_path}", text, flags=re.M)
    assert n_listen == 2 and n_socket == 1, "examples/nginx/unicornd.conf changed shape"
    return text


class Site:
    """unicornd (one worker class) on a unix socket, and nginx with the example in front."""

    def __init__(self, kind, unicornd_args, app):
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix=f"unicornd-browser-{kind}-"))
        self.dir.chmod(0o755)  # nginx's worker (www-data) reaches the socket through it
        self.socket = self.dir / "unicornd.sock"
        self.port = deploy.free_port()
        self.server = None
        self.nginx = None
        self.server = Server(*unicornd_args, "-b", f"unix:{self.socket}", app,
                             cwd=str(REPO))
        wait_for(self._answers, 30, message=lambda: f"a {kind} worker on {self.socket}\n{self.server.log}")
        conf = self.dir / "example.conf"
        conf.write_text(example_for(self.port, self.socket))
        self.nginx = deploy.Nginx(include=conf)
        self.nginx.start(("127.0.0.1", self.port))

    def _answers(self):
        if self.server.proc.poll() is not None:
            raise AssertionError(f"unicornd exited with {self.server.proc.returncode}:\n{self.server.log}")
        try:
            reply = deploy.unix_request(self.socket, b"GET /fetch?n=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 2)
            return reply.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://{SERVER_NAME}:{self.port}"

    def fetch(self, path):
        """A request through nginx from here, with the example's Host."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Host": SERVER_NAME})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()

    def close(self):
        try:
            if self.nginx is not None:
                self.nginx.stop()
        finally:
            if self.server is not None:
                self.server.stop()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sites():
    started = []

    def make(kind, args, app):
        site = Site(kind, args, app)
        started.append(site)
        return site
    yield make
    for site in reversed(started):
        site.close()
