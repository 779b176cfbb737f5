"""Metrics end to end: real servers with 2 workers, real traffic, scraped with curl and parsed
with prometheus_client; statsd received by the test's own sockets; ``unicornd status``."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from support import REPO, Server, children, request, wait_for

HERE = Path(__file__).resolve().parent
_SERVING = r"Serving /metrics and /status at: (\S+)"


def start(*args, **kw):
    return Server("-w", "2", "-b", "127.0.0.1:0", *args, "metricsapp:app", cwd=HERE, **kw)


def get(address, path):
    return request(address, path)[0]


def metrics_url(srv):
    return re.search(_SERVING, srv.wait_log(_SERVING).string).group(1)


def scrape(url):
    """GET /metrics with curl; {(name, labels): value} parsed by prometheus_client."""
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", url + "/metrics"],
                         capture_output=True, text=True, check=True).stdout
    head, _, body = out.partition("\n\n")  # (text mode: CRLF read as LF)
    assert head.startswith("HTTP/1.1 200"), head
    assert "text/plain; version=0.0.4" in head
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests_by_status(samples):
    return {dict(labels)["status"]: value for (name, labels), value in samples.items()
            if name == "unicornd_requests_total"}


def workers(srv, count):
    return wait_for(lambda: (lambda w: w if len(w) == count else None)(children(srv.proc.pid)),
                    20, message=lambda: f"{count} workers\n{srv.log}")


def test_prometheus_totals_add_up_across_workers_and_survive_a_killed_worker():
    with start("--metrics-bind", "127.0.0.1:0", "--backlog", "77") as srv:
        url = metrics_url(srv)
        old = workers(srv, 2)
        base = requests_by_status(scrape(url))
        # Many short connections. (Which worker takes each is the kernel's choice: a worker back
        # in accept() before the next connection comes may take them all.)
        sent = {"/": 40, "/missing": 5, "/fail": 3, "/moved": 2}
        for path, n in sent.items():
            for _ in range(n):
                get(srv.address, path)
        status = json.loads(subprocess.run(["curl", "-sS", url + "/status"], capture_output=True,
                                           text=True, check=True).stdout)
        assert sorted(w["pid"] for w in status["workers"]) == sorted(old)
        samples = scrape(url)
        now = requests_by_status(samples)
        assert now["2xx"] - base["2xx"] == 40
        assert now["4xx"] - base["4xx"] == 5
        assert now["5xx"] - base["5xx"] == 3
        assert now["3xx"] - base["3xx"] == 2
        assert now["none"] == base["none"] == 0
        count = samples[("unicornd_request_duration_seconds_count", ())]
        assert count == sum(now.values())
        assert samples[("unicornd_request_duration_seconds_bucket", (("le", "+Inf"),))] == count
        assert 0 < samples[("unicornd_request_duration_seconds_sum", ())] < count
        assert samples[("unicornd_workers", (("state", "idle"),))] == 2
        assert samples[("unicornd_workers", (("state", "busy"),))] == 0
        listener = (("listener", srv.urls[0]),)
        assert samples[("unicornd_listen_queue_limit", listener)] == 77
        assert samples[("unicornd_listen_queue", listener)] == 0
        # The served counts of a worker killed by SIGKILL are kept: the one that served most.
        victim = max(status["workers"], key=lambda w: w["requests"])
        served_by_victim = victim["requests"]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: (lambda w: len(w) == 2 and victim["pid"] not in w)(children(srv.proc.pid)),
                 20, message="a replacement worker")
        srv.wait_log(r"Booting worker(.|\n)*Booting worker(.|\n)*Booting worker")
        for _ in range(10):
            assert get(srv.address, "/") == 200
        after = scrape(url)
        assert requests_by_status(after)["2xx"] == now["2xx"] + 10
        assert after[("unicornd_request_duration_seconds_count", ())] == count + 10
        assert after[("unicornd_worker_restarts_total", (("reason", "crashed"),))] == 1
        assert after[("unicornd_worker_restarts_total", (("reason", "timeout"),))] == 0
        assert served_by_victim > 0


def test_restarts_by_reason_recycle_and_reload():
    with start("--metrics-bind", "127.0.0.1:0", "--max-requests", "5") as srv:
        url = metrics_url(srv)
        for _ in range(30):
            assert get(srv.address, "/") == 200
        wait_for(lambda: scrape(url)[("unicornd_worker_restarts_total",
                                      (("reason", "recycle-max_requests"),))] >= 1, 20,
                 message=lambda: f"a recycle counted\n{srv.log}")
        before = {w for w in children(srv.proc.pid)}
        srv.signal(signal.SIGHUP)
        wait_for(lambda: scrape(url)[("unicornd_worker_restarts_total",
                                      (("reason", "reload"),))] >= 2, 30,
                 message=lambda: f"the reload counted\n{srv.log}")
        samples = scrape(url)
        assert samples[("unicornd_worker_restarts_total", (("reason", "crashed"),))] == 0
        assert requests_by_status(samples)["2xx"] >= 30
        assert before


def test_metrics_on_a_unix_socket_and_status_socket_are_owner_only(tmp_path):
    path = tmp_path / "metrics.sock"
    pidfile = tmp_path / "u.pid"
    with start("--metrics-bind", f"unix:{path}", "--pid", str(pidfile)) as srv:
        srv.wait_log(_SERVING)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        status_sock = Path(str(pidfile) + ".sock")
        wait_for(status_sock.exists, 10)
        assert stat.S_IMODE(os.stat(status_sock).st_mode) == 0o600
        get(srv.address, "/")
        out = subprocess.run(["curl", "-sS", "--unix-socket", str(path), "http://x/metrics"],
                             capture_output=True, text=True, check=True).stdout
        names = {f.name for f in text_string_to_metric_families(out)}
        assert {"unicornd_requests", "unicornd_request_duration_seconds", "unicornd_workers",
                "unicornd_worker_restarts"} <= names
    assert not path.exists() and not status_sock.exists()  # removed when the master exits


def run_status(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "unicornd", "status", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_unicornd_status_shows_each_worker_and_the_request_it_serves(tmp_path):
    pidfile = tmp_path / "u.pid"
    with start("--pid", str(pidfile), "--metrics-bind", "127.0.0.1:0") as srv:
        pids = workers(srv, 2)
        for _ in range(6):
            get(srv.address, "/")
        slow = threading.Thread(target=get, args=(srv.address, "/sleep?ms=3000"), daemon=True)
        slow.start()
        wait_for(lambda: "busy" in run_status("--pid", str(pidfile)).stdout, 10)
        result = run_status("--pid", str(pidfile))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"master {srv.proc.pid}")
        header = lines[1].split()
        assert header == ["PID", "STATE", "REQUESTS", "AGE", "RSS", "REQUEST"]
        rows = {int(line.split()[0]): line for line in lines[2:] if line.strip()}
        assert set(rows) == pids
        busy = [row for row in rows.values() if row.split()[1] == "busy"]
        assert len(busy) == 1 and "GET /sleep" in busy[0]
        assert re.search(r"\d+\.\ds", busy[0]) and "MiB" in busy[0]
        assert sum(int(row.split()[2]) for row in rows.values()) >= 6
        # The same through the HTTP endpoint, and as JSON.
        by_url = run_status("--metrics", metrics_url(srv), "--json")
        data = json.loads(by_url.stdout)
        assert {w["pid"] for w in data["workers"]} == pids
        slow.join(10)
    missing = run_status("--pid", str(pidfile))
    assert missing.returncode == 1 and "not running" in missing.stderr


class Receiver:
    """The test's own statsd server: a datagram socket collecting lines."""

    def __init__(self, family=socket.AF_INET, path=None):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(path or ("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.lines = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return self.sock.getsockname()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.lines.extend(data.decode().split("\n"))

    def count(self, line):
        return sum(1 for l in list(self.lines) if l == line)

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()


def test_statsd_names_prefix_and_tags_as_gunicorn():
    rx = Receiver()
    try:
        host, port = rx.address
        with start("--statsd-host", f"{host}:{port}", "--statsd-prefix", "web",
                   "--dogstatsd-tags", "env:test,app:m", "--enable-backlog-metric") as srv:
            base = rx.count("web.gunicorn.requests:1|c|@1.0|#env:test,app:m")
            for path in ["/"] * 7 + ["/missing"] * 2 + ["/crash"]:
                get(srv.address, path)
            tags = "|#env:test,app:m"
            wait_for(lambda: rx.count(f"web.gunicorn.requests:1|c|@1.0{tags}") >= base + 10, 10,
                     message=lambda: f"10 request counters in {rx.lines[-20:]}")
            wait_for(lambda: rx.count(f"web.gunicorn.workers:2|g{tags}") >= 1, 10,
                     message="the workers gauge")
            wait_for(lambda: rx.count(f"web.gunicorn.log.exception:1|c|@1.0{tags}") >= 1, 10,
                     message=lambda: f"the log counter in {rx.lines[-20:]}")
            wait_for(lambda: any(l.startswith("web.gunicorn.backlog:") and l.endswith(f"|h{tags}")
                                 for l in rx.lines), 10, message="the backlog histogram")
            assert rx.count(f"web.gunicorn.request.status.404:1|c|@1.0{tags}") == 2
            assert rx.count(f"web.gunicorn.request.status.200:1|c|@1.0{tags}") >= 7
            timers = [l for l in rx.lines if l.startswith("web.gunicorn.request.duration:")]
            assert len(timers) >= 10
            assert all(re.fullmatch(r"web\.gunicorn\.request\.duration:\d+\.\d+(e-\d+)?\|ms"
                                    + re.escape(tags), l) for l in timers), timers
    finally:
        rx.close()


def test_statsd_over_a_unix_datagram_socket(tmp_path):
    path = str(tmp_path / "statsd.sock")
    rx = Receiver(socket.AF_UNIX, path)
    try:
        with start("--statsd-host", f"unix://{path}") as srv:
            for _ in range(3):
                get(srv.address, "/")
            wait_for(lambda: rx.count("gunicorn.request.status.200:1|c|@1.0") >= 3, 10,
                     message=lambda: f"3 status counters in {rx.lines[-20:]}")
            assert rx.count("gunicorn.requests:1|c|@1.0") >= 3
    finally:
        rx.close()


def test_statsd_without_a_server_costs_nothing_visible():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nobody listens: ICMP port unreachable makes sends fail; requests do not notice.
    with start("--statsd-host", f"127.0.0.1:{port}") as srv:
        for _ in range(20):
            assert get(srv.address, "/") == 200
        assert "Traceback" not in srv.log


def test_bad_metrics_settings_are_refused():
    from support import run_cli
    bad = run_cli("--metrics-bind", "nowhere", "metricsapp:app", cwd=HERE)
    assert bad.returncode == 2 and "metrics_bind" in bad.stderr
    bad = run_cli("--statsd-host", "h:notaport", "metricsapp:app", cwd=HERE)
    assert bad.returncode == 2 and "statsd_host" in bad.stderr


def test_metrics_bind_in_use_stops_the_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = Server("-b", "127.0.0.1:0", "--metrics-bind", f"127.0.0.1:{port}", "metricsapp:app",
                     cwd=HERE, expect_listen=False)
        try:
            assert srv.wait(30) == 1
            assert f"Cannot serve metrics at 127.0.0.1:{port}" in srv.log
        finally:
            srv.stop()
