"""PROXY protocol v1 and v2 (haproxy's proxy-protocol.txt), sans-IO.

The header comes once, first thing on a connection, before the first request. The parser calls
``detect`` on what it has buffered and then ``parse_v1`` / ``parse_v2``; each answers "need more
bytes" (None) or how many bytes the header took and what it said, or raises.

Modes are gunicorn 27's ``proxy_protocol`` values: ``off``, ``v1``, ``v2``, ``auto`` (either). As
in gunicorn the header is optional in every mode: a connection that starts with a request is served
as it is. Whether the peer may send one at all (``proxy_allow_ips``) is the caller's decision,
passed to the parser as ``proxy_allowed``.
"""
import socket
import struct

from . import errors
from .grammar import (PROXY_V1_LINE, PROXY_V1_MAX_LINE, PROXY_V1_PREFIX, PROXY_V1_UNKNOWN,
                      PROXY_V2_SIGNATURE)

MODES = ("off", "v1", "v2", "auto")

_MODE_ALIASES = {
    "off": "off", "false": "off", "0": "off", "none": "off", "": "off",
    "auto": "auto", "true": "auto", "1": "auto",
    "v1": "v1", "v2": "v2",
}


def normalize_mode(value) -> str:
    """Map a proxy_protocol setting to off / v1 / v2 / auto, as gunicorn 27 does (True is auto)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "auto"
    if isinstance(value, str):
        mode = _MODE_ALIASES.get(value.strip().lower())
        if mode is not None:
            return mode
    raise ValueError(f"proxy_protocol must be off, v1, v2 or auto, not {value!r}")


class ProxyInfo:
    """What the PROXY header said about the connection the proxy accepted.

    ``protocol`` is "TCP4", "TCP6", "UNKNOWN" (v1), "LOCAL" or "UNSPEC" (v2); for the last three
    the addresses and ports are None and the real socket peer stands.
    """
    __slots__ = ("version", "protocol", "src_addr", "src_port", "dst_addr", "dst_port", "tlvs")

    def __init__(self, version, protocol, src_addr=None, src_port=None, dst_addr=None,
                 dst_port=None, tlvs=b""):
        self.version = version
        self.protocol = protocol
        self.src_addr = src_addr
        self.src_port = src_port
        self.dst_addr = dst_addr
        self.dst_port = dst_port
        self.tlvs = tlvs

    def __repr__(self):
        return (f"ProxyInfo(v{self.version} {self.protocol} {self.src_addr}:{self.src_port} -> "
                f"{self.dst_addr}:{self.dst_port})")

    def __eq__(self, other):
        if not isinstance(other, ProxyInfo):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)


NEED_MORE = "need-more"


def detect(buf, mode):
    """Which PROXY header ``buf`` starts with: "v1", "v2", None (none), or NEED_MORE to decide."""
    n = len(buf)
    if mode in ("v2", "auto"):
        if n >= 12:
            if buf[:12] == PROXY_V2_SIGNATURE:
                return "v2"
        elif PROXY_V2_SIGNATURE.startswith(bytes(buf)):
            return NEED_MORE
    if mode in ("v1", "auto"):
        if n >= 6:
            if buf[:6] == PROXY_V1_PREFIX:
                return "v1"
        elif PROXY_V1_PREFIX.startswith(bytes(buf)):
            return NEED_MORE
    return None


def _check_addr(family, text):
    try:
        socket.inet_pton(family, text)
    except (OSError, ValueError):
        return False
    return True


def parse_v1(buf):
    """(ProxyInfo, consumed) for a complete v1 line at the start of ``buf``, None if incomplete."""
    end = buf.find(b"\r\n", 0, PROXY_V1_MAX_LINE)
    if end < 0:
        if b"\n" in buf[:PROXY_V1_MAX_LINE]:
            raise errors.InvalidProxyLine("bare LF in PROXY line")
        if len(buf) >= PROXY_V1_MAX_LINE:
            raise errors.InvalidProxyLine("PROXY line longer than 107 bytes")
        return None
    line = bytes(buf[:end])
    m = PROXY_V1_LINE.fullmatch(line)
    if m is None:
        if PROXY_V1_UNKNOWN.fullmatch(line):
            # v1 §2.1: UNKNOWN: the receiver must ignore the rest and use the real connection.
            return ProxyInfo(1, "UNKNOWN"), end + 2
        raise errors.InvalidProxyLine(line.decode("latin-1"))
    proto, src, dst, sport, dport = m.groups()
    family = socket.AF_INET if proto == b"TCP4" else socket.AF_INET6
    src = src.decode("ascii")
    dst = dst.decode("ascii")
    if not (_check_addr(family, src) and _check_addr(family, dst)):
        raise errors.InvalidProxyLine(line.decode("latin-1"))
    sport = int(sport)
    dport = int(dport)
    if sport > 65535 or dport > 65535:
        raise errors.InvalidProxyLine(line.decode("latin-1"))
    return ProxyInfo(1, proto.decode("ascii"), src, sport, dst, dport), end + 2


_V2_FIXED = struct.Struct(">BBH")
_V4_ADDRS = struct.Struct(">4s4sHH")
_V6_ADDRS = struct.Struct(">16s16sHH")


def parse_v2(buf):
    """(ProxyInfo, consumed) for a whole v2 header at the start of ``buf``, None if incomplete."""
    if len(buf) < 16:
        return None
    ver_cmd, fam_proto, length = _V2_FIXED.unpack_from(buf, 12)
    if ver_cmd >> 4 != 2:
        raise errors.InvalidProxyHeader(f"unsupported version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise errors.InvalidProxyHeader(f"unsupported command {command}")
    total = 16 + length
    if len(buf) < total:
        return None
    block = bytes(buf[16:total])
    if command == 0:
        # LOCAL: the proxy speaks for itself (health checks); the address block is ignored.
        return ProxyInfo(2, "LOCAL"), total
    family = fam_proto >> 4
    protocol = fam_proto & 0x0F
    if family == 0:
        return ProxyInfo(2, "UNSPEC"), total
    if protocol != 1:
        raise errors.InvalidProxyHeader("only STREAM (TCP) connections are supported")
    if family == 1:
        if length < _V4_ADDRS.size:
            raise errors.InvalidProxyHeader("address block too short for IPv4")
        src, dst, sport, dport = _V4_ADDRS.unpack_from(block)
        af, proto, tlv_at = socket.AF_INET, "TCP4", _V4_ADDRS.size
    elif family == 2:
        if length < _V6_ADDRS.size:
            raise errors.InvalidProxyHeader("address block too short for IPv6")
        src, dst, sport, dport = _V6_ADDRS.unpack_from(block)
        af, proto, tlv_at = socket.AF_INET6, "TCP6", _V6_ADDRS.size
    else:
        raise errors.InvalidProxyHeader(f"unsupported address family {family}")
    return (ProxyInfo(2, proto, socket.inet_ntop(af, src), sport, socket.inet_ntop(af, dst),
                      dport, block[tlv_at:]), total)
