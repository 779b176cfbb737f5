"""statsd_host and metrics_bind: the bind syntax with their own defaults and limits."""

import socket

import pytest

from unicornd.config.errors import Invalid
from unicornd.config.metric_addresses import parse_metrics_bind, parse_statsd

INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9125", (INET, ("127.0.0.1", 9125))),
    ("statsd.internal", (INET, ("statsd.internal", 8125))),
    ("Stats.Example:8126", (INET, ("stats.example", 8126))),
    (":9125", (INET, ("localhost", 9125))),
    ("[::1]:9125", (INET6, ("::1", 9125))),
    ("[::1]", (INET6, ("::1", 8125))),
    ("unix:///run/statsd.sock", (UNIX, "/run/statsd.sock")),
    ("unix:/run/statsd.sock", (UNIX, "/run/statsd.sock")),  # gunicorn takes both spellings
])
def test_statsd_addresses(text, expected):
    assert parse_statsd(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9100", (INET, ("127.0.0.1", 9100))),
    ("127.0.0.1:0", (INET, ("127.0.0.1", 0))),
    (":9100", (INET, ("127.0.0.1", 9100))),  # loopback, not every interface
    ("[::1]:9100", (INET6, ("::1", 9100))),
    ("unix:/run/metrics.sock", (UNIX, "/run/metrics.sock")),
    ("unix:///run/metrics.sock", (UNIX, "/run/metrics.sock")),
])
def test_metrics_bind_addresses(text, expected):
    assert parse_metrics_bind(text) == expected


@pytest.mark.parametrize("parse, text, reason", [
    (parse_statsd, "h:notaport", "port 'notaport' is not a number"),
    (parse_statsd, "h:0", "port 0 is no StatsD server"),
    (parse_statsd, "h:70000", "out of range 0..65535"),
    (parse_statsd, "::1:8125", "must be in brackets"),
    (parse_statsd, "[nothost]:8125", "is not an IPv6 address"),
    (parse_statsd, "bad host:1", "is not a host name"),
    (parse_statsd, "unix://", "needs a socket path"),
    (parse_metrics_bind, "nowhere", "a port is needed"),
    (parse_metrics_bind, "[::1]", "a port is needed"),
    (parse_metrics_bind, "300.1.1.1:9100", "is not an IPv4 address"),
    (parse_metrics_bind, "unix:", "needs a socket path"),
])
def test_bad_addresses_say_why(parse, text, reason):
    with pytest.raises(Invalid) as exc:
        parse(text)
    assert reason in str(exc.value)
