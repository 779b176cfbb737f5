"""The addresses metrics settings take: validators for the settings table, and parsers.

Kept free of heavy imports: the settings table imports this module.
"""

import socket

from unicornd.config.errors import Invalid
from unicornd.config.validators import kind

DEFAULT_PORT = 8125


@kind("string (`HOST:PORT`, `HOST`, `[IPV6]:PORT` or `unix://PATH`), or unset")
def statsd_address(val):
    """Validate ``statsd_host``; the value stays the string given (parsed by ``parse_statsd``)."""
    if val is None:
        return None
    if not isinstance(val, str) or not val.strip():
        raise Invalid("expected HOST:PORT or unix://PATH")
    val = val.strip()
    try:
        parse_statsd(val)
    except ValueError as exc:
        raise Invalid(f"expected HOST:PORT or unix://PATH ({exc})") from None
    return val


def parse_statsd(value: str):
    """``(family, address)`` of a statsd_host value, as gunicorn reads it."""
    if value.startswith("unix://"):
        path = value[len("unix://"):]
        if not path:
            raise ValueError("empty path")
        return socket.AF_UNIX, path
    if value.startswith("unix:"):
        raise ValueError("a Unix socket is written unix://PATH")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("bad IPv6 address")
        port = rest[1:] or DEFAULT_PORT
        family = socket.AF_INET6
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = value, DEFAULT_PORT
        if ":" in host:
            raise ValueError("put an IPv6 address in brackets")
        family = socket.AF_INET
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"bad port {port!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    return family, (host or "localhost", port)


@kind("string (`HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`), or unset")
def metrics_address(val):
    if val is None:
        return None
    if not isinstance(val, str) or not val.strip():
        raise Invalid("expected HOST:PORT or unix:PATH")
    val = val.strip()
    try:
        parse_metrics_bind(val)
    except ValueError as exc:
        raise Invalid(f"expected HOST:PORT or unix:PATH ({exc})") from None
    return val


def parse_metrics_bind(value: str):
    """(family, address) of a metrics_bind value."""
    if value.startswith("unix:"):
        path = value[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("empty path")
        return socket.AF_UNIX, path
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPV6]:PORT")
        family, port = socket.AF_INET6, rest[1:]
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("a port is needed")
        family = socket.AF_INET
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"bad port {port!r}") from None
    if not 0 <= port < 65536:
        raise ValueError(f"bad port {port}")
    return family, (host or "127.0.0.1", port)
