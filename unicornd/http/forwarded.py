"""Trusted front ends: who may send a PROXY header or forwarding headers, and what scheme they say.

``AddressList`` is a gunicorn-style allow list (``proxy_allow_ips``, ``forwarded_allow_ips``),
parsed once per worker. ``scheme_from_headers`` reads the ``secure_scheme_headers`` a trusted
front end sets.
"""
import ipaddress

from .errors import InvalidSchemeHeaders

DEFAULT_SECURE_SCHEME_HEADERS = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}


class AddressList:
    """``"127.0.0.1,::1"``, ``"*"``, CIDR networks (``"10.0.0.0/8"``), or a list of those.

    Entries are checked as gunicorn 27 checks them: ``ipaddress.ip_network`` in strict mode, so a
    network with host bits set (``192.168.1.1/24``) is a ValueError, found at configuration time.
    """
    __slots__ = ("spec", "any", "networks", "_cache")

    _CACHE_MAX = 256

    def __init__(self, spec):
        if spec is None:
            items = []
        elif isinstance(spec, str):
            items = [s.strip() for s in spec.split(",")]
        else:
            items = [str(s).strip() for s in spec]
        items = [s for s in items if s]
        self.spec = tuple(items)
        self.any = "*" in items
        self.networks = tuple(ipaddress.ip_network(s) for s in items if s != "*")
        self._cache = {}

    def __repr__(self):
        return f"AddressList({','.join(self.spec)!r})"

    def allows(self, peer) -> bool:
        """Whether ``peer`` is on the list.

        ``peer`` is a socket address: a (host, port[, flowinfo, scope_id]) tuple for TCP, or what
        a unix socket reports (a str or bytes path, often empty). As in gunicorn 27, a unix-socket
        peer is always allowed: only a local process can reach it, the file mode decides which.
        """
        if not isinstance(peer, tuple):
            return True
        if self.any:
            return True
        host = peer[0]
        hit = self._cache.get(host)
        if hit is None:
            hit = self._lookup(host)
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            self._cache[host] = hit
        return hit

    def _lookup(self, host) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        candidates = [ip]
        # A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d; let "127.0.0.1" match it.
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            candidates.append(mapped)
        for net in self.networks:
            for c in candidates:
                if c.version == net.version and c in net:
                    return True
        return False


def scheme_from_headers(headers, secure_scheme_headers=DEFAULT_SECURE_SCHEME_HEADERS):
    """"https" or "http" as a trusted front end declares it, None if it says nothing.

    ``headers`` are the parser's (NAME, value) pairs. Each header named in
    ``secure_scheme_headers`` (upper-case name -> the exact value meaning "secure") votes; when two
    votes differ the request is ambiguous and ``InvalidSchemeHeaders`` (400) is raised, as gunicorn
    27 does (for example X-Forwarded-Proto: https with X-Forwarded-Ssl: off).
    Call it only for a peer that ``forwarded_allow_ips`` trusts.
    """
    if not secure_scheme_headers:
        return None
    if any(not k.isupper() for k in secure_scheme_headers):
        secure_scheme_headers = {k.upper(): v for k, v in secure_scheme_headers.items()}
    scheme = None
    for name, value in headers:
        expected = secure_scheme_headers.get(name)
        if expected is None:
            continue
        said = "https" if value == expected else "http"
        if scheme is None:
            scheme = said
        elif said != scheme:
            raise InvalidSchemeHeaders(f"{name} contradicts an earlier scheme header")
    return scheme
