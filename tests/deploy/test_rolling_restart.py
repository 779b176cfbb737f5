"""The scale-out path for real: three unicornd instances behind nginx
(examples/nginx/three-instances.conf, as written), restarted one after another under a client
load through nginx. Each step is what docs/deployment.md tells an operator to do: TERM (with
drain_delay), wait for the instance to exit, start the new one on the same address, wait for
its GET /readyz to answer 200, then the next. No request may fail at the client.

Run alone, with the numbers printed (docs/deployment.md records a run):

    python3 -m pytest -s -p no:cacheprovider tests/deploy/test_rolling_restart.py
"""

import json
import signal
import time

import pytest

from deploy_support import EXAMPLES, HostLoad, example_listen, example_upstreams, http_get
from support import Server, children, parse_response, raw_request, wait_for

pytestmark = pytest.mark.timeout(300)

EXAMPLE = "three-instances.conf"
DRAIN_DELAY = 2
_METRICS = r"Serving /metrics and /status at: http://(\S+):(\d+)"


def readyz(metrics):
    """The status /readyz answers, or None when nothing listens there (the instance is gone)."""
    try:
        reply = raw_request(metrics, b"GET /readyz HTTP/1.1\r\nHost: probe\r\n\r\n", timeout=5)
    except (OSError, AssertionError):
        return None
    return parse_response(reply)[0] if reply else None


class Instance:
    """One unicornd of the three, and the address of its metrics endpoint."""

    def __init__(self, host, port):
        self.srv = Server("-w", "2", "-b", f"{host}:{port}", "--metrics-bind", "127.0.0.1:0",
                          "--drain-delay", str(DRAIN_DELAY), "--forwarded-allow-ips", "127.0.0.1",
                          "testapp:app")
        try:
            m = self.srv.wait_log(_METRICS, 30)
            self.metrics = (m.group(1), int(m.group(2)))
            # What a deploy script (or a Kubernetes readiness probe) waits for.
            wait_for(lambda: readyz(self.metrics) == 200, 30, message=lambda: self.srv.log)
        except BaseException:
            self.srv.stop()
            raise

    @property
    def workers(self):
        return children(self.srv.proc.pid)


def test_the_example_passes_nginx_t_without_warnings(nginx_factory):
    result = nginx_factory(include=EXAMPLES / EXAMPLE).check()
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "test is successful" in out, out
    assert "[warn]" not in out and "[emerg]" not in out, out


def test_rolling_restart_of_three_instances_behind_nginx_fails_no_request(fixed_addresses,
                                                                          nginx_factory):
    hosts = example_upstreams(EXAMPLE)
    assert len(hosts) == 3, hosts
    address = example_listen(EXAMPLE)
    instances = []
    try:
        for host, port in hosts:
            instances.append(Instance(host, port))
        nginx = nginx_factory(include=EXAMPLES / EXAMPLE).start(address)

        def answered_by(workers):
            def one():
                reply = http_get(address, "/pid", host="example.com")
                assert reply is not None and reply[0] == 200, reply
                return json.loads(reply[2])["pid"] in workers
            wait_for(one, 30, message=f"an answer through nginx from one of {workers}")

        for inst in instances:
            answered_by(inst.workers)

        load = HostLoad(address, "/sleep?ms=10", host="example.com", clients=4, max_seconds=200)
        started = time.monotonic()
        try:
            load.wait_ok(20)
            for i, (host, port) in enumerate(hosts):
                old = instances[i]
                old.srv.signal(signal.SIGTERM)
                old.srv.wait_log(f"Draining for {DRAIN_DELAY} s")
                # From TERM on the instance is never ready again (503 while it drains, nothing
                # once it has gone).
                assert readyz(old.metrics) != 200
                assert old.srv.wait(60) == 0, old.srv.log
                log = old.srv.log
                assert log.index("Draining for") < log.index("Drain over") \
                    < log.index("Shutting down: Master"), log
                instances[i] = Instance(host, port)  # returns once its /readyz answers 200
                load.wait_ok(20)
                answered_by(instances[i].workers)
        finally:
            ok, failures = load.stop()
        elapsed = time.monotonic() - started
        retried = nginx.upstream_errors()
        print(f"\nrolling restart of 3 instances behind nginx (drain_delay {DRAIN_DELAY} s): "
              f"{ok} requests through nginx in {elapsed:.1f} s, {len(failures)} failed; "
              f"nginx retried {len(retried)} on another instance")
        for line in retried:
            print("  nginx:", line.split("] ", 1)[-1][:160])
        assert failures == [], failures[:5]
        assert ok > 100, ok
    finally:
        for inst in instances:
            inst.srv.stop()
