"""Listening addresses: the syntax of one ``bind`` entry.

``parse_bind`` is syntax only (no DNS, no sockets); the master binds what it returns.
Accepted, as gunicorn does: ``HOST:PORT``, ``HOST`` (port 8000), ``[IPv6]:PORT``,
``[IPv6]``, ``:PORT`` (all IPv4 interfaces), ``tcp://`` before any of those,
``unix:PATH`` / ``unix://PATH`` and ``fd://N``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from unicornd.config.errors import Invalid

DEFAULT_PORT = 8000
EXPECTED = "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"

# RFC 1123 host names; "_" is tolerated because container names use it.
_HOSTNAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
_UNIX = re.compile(r"unix:(//)?")


class BindAddress(NamedTuple):
    kind: str  # 'tcp' | 'unix' | 'fd'
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fd: int | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str, expected: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise Invalid(f"port {text!r} is not a number; {expected}")
    port = int(text)
    if port > 65535:
        raise Invalid(f"port {port} is out of range 0..65535")
    return port


def parse_host_port(text: str, expected: str = EXPECTED):
    """``(host, port)`` of ``HOST:PORT``, ``HOST``, ``[IPv6]:PORT``, ``[IPv6]`` or ``:PORT``,
    checked: host lower-cased, ``''`` when absent; port ``None`` when absent. The syntax of a
    TCP ``bind`` entry, and of the other settings naming a host (``statsd_host``,
    ``metrics_bind``); ``expected`` ends their error messages."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise Invalid(f"missing ']' after an IPv6 address; {expected}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"{host!r} is not an IPv6 address; {expected}") from None
        if rest == "":
            return host.lower(), None
        if not rest.startswith(":"):
            raise Invalid(expected)
        return host.lower(), _port(rest[1:], expected)

    if text.count(":") > 1:
        raise Invalid(f"an IPv6 address must be in brackets, as in [::1]:8000; {expected}")
    host, sep, port = text.partition(":")
    host = host.lower()
    if host and not _HOSTNAME.fullmatch(host):
        raise Invalid(f"{host!r} is not a host name or IP address; {expected}")
    if host and re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise Invalid(f"{host!r} is not an IPv4 address; {expected}") from None
    return host, (_port(port, expected) if sep else None)


def unix_path(text: str, expected: str = EXPECTED):
    """The path of ``unix:PATH`` / ``unix://PATH`` (``None`` if text is not one)."""
    m = _UNIX.match(text)
    if not m:
        return None
    path = text[m.end():]
    if not path:
        raise Invalid(f"unix: needs a socket path; {expected}")
    return path


def parse_bind(value: str) -> BindAddress:
    """Parse one bind entry. Raises ``Invalid`` (a ValueError) with the reason."""
    if not isinstance(value, str):
        raise Invalid(f"expected a string; {EXPECTED}")
    text = value.strip()
    if not text:
        raise Invalid(f"empty address; {EXPECTED}")

    path = unix_path(text)
    if path is not None:
        return BindAddress("unix", path=path)

    if text.startswith("fd://"):
        fd = text[5:]
        if not (fd.isdigit() and fd.isascii()):
            raise Invalid(f"{fd!r} is not a file descriptor number; {EXPECTED}")
        return BindAddress("fd", fd=int(fd))

    if text.startswith("tcp://"):
        text = text[6:]
    elif "://" in text:
        scheme = text.partition("://")[0]
        raise Invalid(f"unknown address scheme {scheme + '://'!r}; {EXPECTED}")

    host, port = parse_host_port(text)
    return BindAddress("tcp", host=host or "0.0.0.0", port=DEFAULT_PORT if port is None else port)
