"""The addresses metrics settings take: validators for the settings table, and parsers.

Both use the ``bind`` syntax (``addresses``) for hosts and ports; what differs is the
defaults and which forms make sense. Kept free of heavy imports: the settings table
imports this module.
"""

import socket

from unicornd.config.addresses import parse_host_port, unix_path
from unicornd.config.errors import Invalid
from unicornd.config.validators import kind

DEFAULT_PORT = 8125
STATSD_EXPECTED = "expected HOST:PORT, HOST, [IPV6]:PORT or unix://PATH"
METRICS_EXPECTED = "expected HOST:PORT, [IPV6]:PORT or unix:PATH"


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def parse_statsd(value: str):
    """``(family, address)`` of a statsd_host value, as gunicorn reads it (port 8125 unless
    given, host ``localhost`` if empty)."""
    value = value.strip()
    path = unix_path(value, STATSD_EXPECTED)
    if path is not None:
        return socket.AF_UNIX, path
    host, port = parse_host_port(value, STATSD_EXPECTED)
    if port == 0:
        raise Invalid(f"port 0 is no StatsD server; {STATSD_EXPECTED}")
    return _family(host), (host or "localhost", DEFAULT_PORT if port is None else port)


def parse_metrics_bind(value: str):
    """``(family, address)`` of a metrics_bind value: a port is needed (0: any free one);
    an empty host is loopback, not every interface."""
    value = value.strip()
    path = unix_path(value, METRICS_EXPECTED)
    if path is not None:
        return socket.AF_UNIX, path
    host, port = parse_host_port(value, METRICS_EXPECTED)
    if port is None:
        raise Invalid(f"a port is needed; {METRICS_EXPECTED}")
    return _family(host), (host or "127.0.0.1", port)


def _address_setting(parse, expected):
    def validate(val):
        """The value stays the string given; ``parse`` reads it where it is used."""
        if val is None:
            return None
        if not isinstance(val, str) or not val.strip():
            raise Invalid(expected)
        parse(val)
        return val.strip()
    return validate


statsd_address = kind("string (`HOST:PORT`, `HOST`, `[IPV6]:PORT` or `unix://PATH`), or unset")(
    _address_setting(parse_statsd, STATSD_EXPECTED))
metrics_address = kind("string (`HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`), or unset")(
    _address_setting(parse_metrics_bind, METRICS_EXPECTED))
