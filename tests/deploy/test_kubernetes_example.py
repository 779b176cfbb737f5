"""examples/kubernetes/deployment.yaml: its numbers agree with each other and with unicornd.

No cluster here: the manifest is read as YAML, its unicornd command line is loaded by unicornd's
own settings loader (as the container would run it), and the probes and the grace period are
checked against those settings. What the probes see is tested end to end in
tests/server/test_readyz.py; a rolling restart behind a balancer in test_rolling_restart.py.
"""

import yaml  # PyYAML, which mkdocs (in the test extra) requires

from support import REPO
from unicornd.config import load_config
from unicornd.config.metric_addresses import parse_metrics_bind
from unicornd.master.lifecycle import KILL_MARGIN_SECONDS

EXAMPLE = REPO / "examples" / "kubernetes" / "deployment.yaml"


def documents():
    return {doc["kind"]: doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc}


def container():
    (web,) = documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return web


def settings():
    command = container()["command"]
    assert command[0] == "unicornd"
    return load_config(command[1:], {})


def port_number(name):
    return next(p["containerPort"] for p in container()["ports"] if p["name"] == name)


def test_the_command_line_is_one_unicornd_accepts():
    cfg = settings()
    assert cfg.drain_delay > 0 and cfg.metrics_bind
    assert cfg.wsgi_app == "myapp.wsgi:application"


def test_the_grace_period_covers_the_drain_and_the_graceful_stop():
    cfg = settings()
    grace = documents()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # After TERM: drain_delay, then graceful_timeout for the workers, then the master's
    # SIGKILL of stragglers and its reaping (a few seconds): all before the kubelet's SIGKILL.
    assert grace >= cfg.drain_delay + cfg.graceful_timeout + KILL_MARGIN_SECONDS, grace
    comment = f"drain_delay {cfg.drain_delay} + graceful_timeout {cfg.graceful_timeout}"
    assert comment in EXAMPLE.read_text(), "the arithmetic in the comments is out of date"


def test_the_probes_ask_the_metrics_endpoint_and_the_service_exposes_only_the_app():
    cfg = settings()
    web = container()
    metrics_port = parse_metrics_bind(cfg.metrics_bind)[1][1]
    assert port_number("metrics") == metrics_port
    assert port_number("http") == int(cfg.bind[0].rsplit(":", 1)[1])
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        assert web[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    # The drain is long enough for a probe that polls /readyz to see the 503 and act on it.
    ready = web["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < cfg.drain_delay
    (port,) = documents()["Service"]["spec"]["ports"]
    assert port["targetPort"] == "http"
    # A rollout never removes a ready pod before its replacement is ready.
    strategy = documents()["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
