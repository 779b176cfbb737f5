"""The request parser: fed bytes, it hands back request heads, body data and end-of-message.

INTERFACE (used by connection.py and every worker class; keep it stable):

    opts = ParserOptions.from_config(cfg)           # once per worker
    p = RequestParser(opts, proxy_allowed=True)     # once per connection
    p.receive_data(data)                            # b"" means the peer closed (EOF)
    ev = p.next_event()
        -> Request            the head of the next request (first event of a message)
        -> bytes              a non-empty piece of decoded body (chunked framing removed)
        -> EndOfMessage       body done; .trailers is a list of (NAME, value)
        -> NEED_DATA          feed more bytes, then call again
        -> CLOSED             EOF arrived cleanly between two requests
        raises errors.HTTPError subclass on bad input (NoMoreData for EOF mid-request)
    p.start_next_request()  # after EndOfMessage: parse the next (pipelined) request
    p.buffered              # bytes received but not yet consumed (len() is cheap)
    p.direct_body_size()    # body bytes the caller may read past the parser (Content-Length)
    p.body_read_directly(n) # ... n of them were: True when that ends the body

Additions that keep that interface: ``ParserOptions.forwarder_headers`` (gunicorn's setting of the
same name) and ``RequestParser(..., forwarder_trusted=False)``: when the peer is in
``forwarded_allow_ips``, header names with "_" listed in ``forwarder_headers`` (SCRIPT_NAME,
PATH_INFO by default) are kept whatever ``header_map`` says, as gunicorn 27 does.

How a head is parsed: find the blank line that ends it, decode it once as latin-1 and split it
into lines. A request line the fast pattern takes (a conventional method, an origin-form target,
HTTP/1.0 or 1.1) and field lines the strict grammar takes whole are read the fast way, and kept
by their text in small bounded caches (``_REQUEST_LINES``, ``_LINES``: what such a line means does
not depend on the settings), so a line seen before costs a dict lookup. Anything else, and any
error met on the fast way, goes to a careful line-by-line pass, which accepts what the leniency
settings allow (obs-fold, spaces before ":") or names the exact error, so the error a head gets
does not depend on the way it was read (tests/http/test_http_fast_path.py holds both ways to the
same answers). A connection's parser also keeps the field block of its last head and what it
read there: a client on a kept-alive connection mostly repeats its fields, and an equal block
reads the same under the same settings, so it costs one string comparison. Until a connection has
such a block of its own, its heads are also looked up in what the worker's other connections read
under the same settings and trust (``ParserOptions.seen_heads``: whole heads by their bytes;
``seen_blocks``: field blocks by their text; bounded): a client that opens a connection per
request (every client of the sync worker) sends the same head each time, and it is read once.
Errors are never kept. That is the scan step (``_scan_head``); it hands the values of the fields that
steer framing (Content-Length, Transfer-Encoding, Connection, Expect, Upgrade) to the interpret
step, ``framing()``, where every framing decision is made. A head with none of them (a GET with
ordinary fields) skips the call.
After an error the parser is spent: ``next_event`` raises the same error again.
"""
from dataclasses import dataclass, field

from . import errors
from . import proxy as _proxy
from .body import ChunkedDecoder, EndOfMessage, LengthDecoder
from .grammar import (ABSOLUTE_FORM, ASTERISK_FORM, AUTHORITY_FORM, FIELD_VALUE_INVALID,
                      HOST_FIELD, HTTP_VERSION, has_bare_lf, METHOD_CONVENTIONAL, ORIGIN_FORM, OWS,
                      REQUEST_LINE_FAST, REQUEST_LINE_FAST_ANY_METHOD, TARGET_CHAR, TOKEN,
                      TRANSFER_CODING)
from .grammar import CONTENT_LENGTH as _CONTENT_LENGTH, FIELD_LINE as _FIELD_LINE
import re as _re
import sys

__all__ = ["NEED_DATA", "CLOSED", "Request", "EndOfMessage", "ParserOptions", "RequestParser"]


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    def __reduce__(self):
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")

# gunicorn 27's limits (gunicorn/http/message.py): what 0, negative and too large values mean.
MAX_REQUEST_LINE = 8190            # limit_request_line is capped here; negative means this
UNLIMITED_REQUEST_LINE = 1 << 20   # limit_request_line = 0 ("unlimited"): gunicorn's C parser cap
MAX_HEADERS = 32768                # limit_request_fields <= 0 or above this means this
DEFAULT_MAX_FIELD_SIZE = 8190      # limit_request_field_size <= 0 means this

HEADER_MAPS = ("drop", "refuse", "dangerous")

V10 = (1, 0)
V11 = (1, 1)

_TARGET = _re.compile(TARGET_CHAR + "+")
FIELD_LINE = _FIELD_LINE.fullmatch
CONTENT_LENGTH = _CONTENT_LENGTH.fullmatch


def _as_name_set(value):
    if not value:
        return frozenset()
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(v.strip().upper() for v in value if v and v.strip())


@dataclass(frozen=True, slots=True)
class ParserOptions:
    """The settings the parser obeys, read once per worker (gunicorn 27's names and meanings)."""
    limit_request_line: int = 4094
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    permit_obsolete_folding: bool = False
    permit_unconventional_http_method: bool = False
    permit_unconventional_http_version: bool = False
    casefold_http_method: bool = False
    strip_header_spaces: bool = False
    header_map: str = "drop"
    proxy_protocol: str = "off"
    forwarder_headers: frozenset = frozenset()
    # derived, effective limits
    max_request_line: int = field(init=False, repr=False, compare=False)
    max_fields: int = field(init=False, repr=False, compare=False)
    max_field_size: int = field(init=False, repr=False, compare=False)
    max_head: int = field(init=False, repr=False, compare=False)
    # Field blocks read without error under these settings, by their text (bounded), for a
    # peer the forwarder settings do not trust ([0]) and one they do ([1]): a block seen
    # before, on any connection, reads as it read then. See RequestParser._scan_head.
    seen_blocks: tuple = field(init=False, repr=False, compare=False)
    # ... and whole heads (request line and fields), by their bytes, likewise.
    seen_heads: tuple = field(init=False, repr=False, compare=False)

    _NAMES = ("limit_request_line", "limit_request_fields", "limit_request_field_size",
              "permit_obsolete_folding", "permit_unconventional_http_method",
              "permit_unconventional_http_version", "casefold_http_method",
              "strip_header_spaces", "header_map", "proxy_protocol", "forwarder_headers")

    def __post_init__(self):
        setattr_ = object.__setattr__
        setattr_(self, "proxy_protocol", _proxy.normalize_mode(self.proxy_protocol))
        hm = str(self.header_map).strip().lower()
        if hm not in HEADER_MAPS:
            raise ValueError(f"header_map must be one of {HEADER_MAPS}, not {self.header_map!r}")
        setattr_(self, "header_map", hm)
        setattr_(self, "forwarder_headers", _as_name_set(self.forwarder_headers))

        line = int(self.limit_request_line)
        if line < 0 or line >= MAX_REQUEST_LINE:
            line = MAX_REQUEST_LINE
        elif line == 0:
            line = UNLIMITED_REQUEST_LINE
        fields = int(self.limit_request_fields)
        if fields <= 0 or fields > MAX_HEADERS:
            fields = MAX_HEADERS
        size = int(self.limit_request_field_size)
        if size <= 0:
            size = DEFAULT_MAX_FIELD_SIZE
        setattr_(self, "max_request_line", line)
        setattr_(self, "max_fields", fields)
        setattr_(self, "max_field_size", size)
        # gunicorn's bound on a whole header section: every field at its largest, with CRLFs
        setattr_(self, "max_head", fields * (size + 2) + 4)
        setattr_(self, "seen_blocks", ({}, {}))
        setattr_(self, "seen_heads", ({}, {}))

    @classmethod
    def from_config(cls, cfg):
        """Read the settings of the same names from any object (missing ones keep defaults)."""
        kwargs = {}
        for name in cls._NAMES:
            value = getattr(cfg, name, None)
            if value is not None:
                kwargs[name] = value
        return cls(**kwargs)


class Request:
    """The head of one request. Field names are upper-case; nothing is percent-decoded.

    Made from the two answers the head parser gives: the request line, (method, target, path,
    query, fragment, version) as the scan step reads it, and the framing, (content_length,
    chunked, keep_alive, expect_continue, upgrade) as ``framing()`` decides it; both are
    tuples the parser keeps for heads that repeat, so they are passed whole, not field by
    field (13 arguments cost a request more than the unpacking here)."""
    __slots__ = ("method", "target", "path", "query", "fragment", "version", "headers",
                 "content_length", "chunked", "keep_alive", "expect_continue", "upgrade", "proxy")

    def __init__(self, request_line, framing, headers, proxy=None):
        self.method, self.target, self.path, self.query, self.fragment, self.version = \
            request_line
        self.content_length, self.chunked, self.keep_alive, self.expect_continue, \
            self.upgrade = framing
        self.headers = headers
        self.proxy = proxy

    def __repr__(self):
        return (f"<Request {self.method} {self.target} HTTP/{self.version[0]}.{self.version[1]}"
                f" {len(self.headers)} headers>")


# --- field names ---------------------------------------------------------------------------------
# Names that steer the parser get a kind; every raw spelling seen is mapped once to its interned
# upper-case form and kind, so the per-header cost is one dict lookup.
_K_PLAIN, _K_UNDERSCORE, _K_CL, _K_TE, _K_CONNECTION, _K_EXPECT, _K_UPGRADE, _K_HOST, \
    _K_CTYPE = range(9)
_KINDS = {
    "CONTENT-LENGTH": _K_CL,
    "TRANSFER-ENCODING": _K_TE,
    "CONNECTION": _K_CONNECTION,
    "EXPECT": _K_EXPECT,
    "UPGRADE": _K_UPGRADE,
    "HOST": _K_HOST,
    "CONTENT-TYPE": _K_CTYPE,
}
_NAME_CACHE = {}
_HOSTS_OK = {}          # Host values already found valid (bounded)
_CONNECTION_COMMON = {v: frozenset(o.strip().lower() for o in v.split(","))
                      for v in ("keep-alive", "Keep-Alive", "close", "Close", "upgrade", "Upgrade",
                                "keep-alive, Upgrade", "Upgrade, HTTP2-Settings")}
_NAME_CACHE_MAX = 2048


def _name_info(name):
    upper = name.upper()
    if "_" in upper:
        info = (upper, _K_UNDERSCORE)
    else:
        info = (upper, _KINDS.get(upper, _K_PLAIN))
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        info = (sys.intern(upper), info[1])
        _NAME_CACHE[name] = info
    return info


for _n in ("Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection",
           "Content-Length", "Content-Type", "Transfer-Encoding", "Cookie", "Referer", "Origin",
           "Authorization", "Cache-Control", "Upgrade", "Expect", "X-Forwarded-For",
           "X-Forwarded-Proto", "X-Real-IP", "If-None-Match", "If-Modified-Since", "Range"):
    for _s in (_n, _n.lower(), _n.upper()):
        _name_info(_s)
del _n, _s


def _check_host(value):
    """RFC 9110 §7.2 Host = uri-host [ ":" port ]; RFC 9112 §3.2: an invalid Host is a 400."""
    if not HOST_FIELD.fullmatch(value):
        raise errors.InvalidHeader(f"Host: {value[:80]!r}")
    if len(_HOSTS_OK) >= 256:
        _HOSTS_OK.clear()
    _HOSTS_OK[value] = True


# --- field lines -------------------------------------------------------------------------------
# A field line the strict grammar takes whole (grammar.FIELD_LINE) means the same wherever it comes
# and whatever the settings: its (NAME, value) pair and kind are kept by the line's text, so a
# line seen before (Host, User-Agent, Accept... repeat across requests and clients) costs one dict
# lookup instead of a regex. Bounded in lines and in line length: the lines are the clients'.
_LINES = {}
_LINES_MAX = 1024
_LINE_MAX = 256
# the same for request lines the strict fast pattern takes (see _fast_request_line)
_REQUEST_LINES = {}
# Whole field blocks and whole heads read without error are kept too (ParserOptions.seen_blocks,
# seen_heads): so many, so long at most (a few MB in all, whatever the peers send).
_SEEN_BLOCKS_MAX = 256
_SEEN_BLOCK_MAX = 4096
_SEEN_HEAD_MAX = 4096


def _strict_line(line):
    """((NAME, value), kind) of a field line the strict grammar takes whole, else None."""
    m = FIELD_LINE(line)
    if m is None:
        return None
    name, value = m.groups()
    info = _NAME_CACHE.get(name) or _name_info(name)
    answer = ((info[0], value), info[1])
    if len(line) <= _LINE_MAX:
        if len(_LINES) >= _LINES_MAX:
            _LINES.clear()
        _LINES[line] = answer
    return answer


# RFC 9110 §6.5.1: a trailer field must not be one a recipient needs before the content: framing
# (Content-Length, Transfer-Encoding, Trailer, TE), routing (Host), authentication and connection
# control. Receiving one is refused (InvalidHeaderName) rather than silently dropped.
FORBIDDEN_TRAILERS = frozenset((
    "HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "TE", "AUTHORIZATION",
    "PROXY-AUTHORIZATION", "CONNECTION", "KEEP-ALIVE", "UPGRADE", "EXPECT",
))

# RFC 9112 §6.1 / RFC 9110 §8.4.1: the transfer codings we frame: chunked (decoded), and the
# registered content codings that may precede it (passed through undecoded, as gunicorn does, and
# the connection closes after the response). "identity" (no longer registered) is tolerated
# before chunked, as the corpus requires.
_PASSTHROUGH_CODINGS = frozenset(("gzip", "x-gzip", "deflate", "compress", "x-compress"))

# parser states
_S_PROXY, _S_HEAD, _S_BODY, _S_NO_BODY, _S_DONE, _S_CLOSED, _S_ERROR = range(7)


class RequestParser:
    __slots__ = ("_opts", "_buf", "_eof", "_state", "_decoder", "_error", "_proxy_allowed",
                 "_forwarder_trusted", "_proxy_info", "_crlf_done", "_scan", "_lf_checked",
                 "_line_end", "_rl", "_block", "_block_headers", "_block_steering",
                 "_seen_blocks", "_seen_heads")

    def __init__(self, opts, proxy_allowed=True, *, forwarder_trusted=False):
        self._opts = opts
        self._buf = b""
        self._eof = False
        self._state = _S_PROXY if opts.proxy_protocol != "off" else _S_HEAD
        self._decoder = None
        self._error = None
        self._proxy_allowed = proxy_allowed
        self._forwarder_trusted = bool(forwarder_trusted and opts.forwarder_headers)
        self._proxy_info = None
        # (the limits and the request-line settings are read from opts where they are used:
        # a parser is made per connection, and a head seen before uses none of them)
        self._block = None  # the field block of the last head read (_scan_head), and its reading
        self._block_headers = self._block_steering = None
        self._seen_blocks = opts.seen_blocks[self._forwarder_trusted]
        self._seen_heads = opts.seen_heads[self._forwarder_trusted]
        self._crlf_done = False  # (_reset_head, inline: a parser is made per connection)
        self._scan = 0
        self._lf_checked = 0
        self._line_end = -1
        self._rl = None

    def _reset_head(self):
        self._crlf_done = False
        self._scan = 0
        self._lf_checked = 0
        self._line_end = -1
        self._rl = None

    # --- input ----------------------------------------------------------------------------------
    def receive_data(self, data):
        """Add bytes from the peer; ``b""`` means it closed its side (EOF)."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        buf = self._buf
        if not buf:
            self._buf = data if type(data) is bytes else bytes(data)
        elif type(buf) is bytes:
            buf = bytearray(buf)
            buf += data
            self._buf = buf
        else:
            buf += data

    @property
    def body_remaining(self):
        """Body bytes of the current request not yet received, for a Content-Length body
        (0 once complete); None for a chunked body, whose size is unknown until its end."""
        decoder = self._decoder
        if decoder is None:
            return 0
        if type(decoder) is not LengthDecoder:
            return None
        return max(0, decoder.remaining - len(self._buf))

    def direct_body_size(self) -> int:
        """How many bytes of the current body the caller may read itself, from the connection
        straight into the app's hands: the rest of a Content-Length body, when nothing is
        buffered here (else 0: a chunked body, whose framing is ours to remove; bytes already
        received, which come first; no body under way). Going past the parser saves a copy and
        a round trip through it for every piece of a large upload; it never reads past the
        body, so a pipelined request behind it stays in the connection for us. Report what was
        read with body_read_directly()."""
        if self._state == _S_BODY and not self._buf and not self._eof:
            decoder = self._decoder
            if type(decoder) is LengthDecoder:
                return decoder.remaining
        return 0

    def body_read_directly(self, n: int) -> bool:
        """``n`` bytes of the body (at most direct_body_size()) were read past the parser.
        True when that completes the body: the parser is then where the EndOfMessage event
        would have left it (ready for start_next_request()), without making one."""
        decoder = self._decoder
        if type(decoder) is not LengthDecoder or not 0 < n <= decoder.remaining or self._buf:
            raise RuntimeError(f"body_read_directly({n}) with {self.direct_body_size()} bytes "
                               "readable directly")
        remaining = decoder.remaining = decoder.remaining - n
        if remaining:
            return False
        self._state = _S_DONE
        self._decoder = None
        return True

    @property
    def proxy(self):
        """The connection's PROXY header (a proxy.ProxyInfo), or None."""
        return self._proxy_info

    def _consume(self, n):
        buf = self._buf
        if n >= len(buf):
            self._buf = b""
        elif type(buf) is bytes:
            self._buf = buf[n:]
        else:
            del buf[:n]

    # --- events ---------------------------------------------------------------------------------
    def next_event(self):
        state = self._state
        try:
            if state == _S_HEAD:
                if not self._buf and not self._eof:
                    return NEED_DATA  # (a kept-alive connection's first look, every request)
                return self._next_head()
            if state == _S_BODY:
                buf = self._buf
                ev, used = self._decoder.step(buf, self._eof)
                if used:
                    if used >= len(buf):
                        self._buf = b""     # (the common case: the piece is all body)
                    else:
                        self._consume(used)
                if ev is None:
                    return NEED_DATA
                if type(ev) is EndOfMessage:
                    self._state = _S_DONE
                    self._decoder = None
                return ev
            if state == _S_NO_BODY:
                self._state = _S_DONE
                return EndOfMessage()
            if state == _S_PROXY:
                return self._next_proxy()
        except errors.HTTPError as exc:
            self._state = _S_ERROR
            self._error = exc
            raise
        if state == _S_CLOSED:
            return CLOSED
        if state == _S_ERROR:
            raise self._error
        raise RuntimeError("next_event() after EndOfMessage: call start_next_request() first")

    def end_bodyless(self) -> bool:
        """For a request without a body: take its EndOfMessage without making one (the
        next_event() it would be). False, and nothing changed, if the request has a body."""
        if self._state != _S_NO_BODY:
            return False
        self._state = _S_DONE
        return True

    def start_next_request(self):
        """After EndOfMessage: go on to the next request; buffered bytes are kept."""
        if self._state != _S_DONE:
            raise RuntimeError("start_next_request() before EndOfMessage")
        self._state = _S_HEAD
        self._crlf_done = False
        if self._line_end >= 0 or self._scan:
            self._reset_head()  # (only a head that came in pieces leaves more to reset)

    # --- PROXY protocol -------------------------------------------------------------------------
    def _next_proxy(self):
        buf = self._buf
        if not buf:
            if self._eof:
                self._state = _S_CLOSED
                return CLOSED
            return NEED_DATA
        kind = _proxy.detect(buf, self._opts.proxy_protocol)
        if kind is _proxy.NEED_MORE:
            if self._eof:
                raise errors.NoMoreData("EOF in what may be a PROXY header")
            return NEED_DATA
        if kind is not None:
            if not self._proxy_allowed:
                raise errors.ForbiddenProxyRequest("PROXY header from a peer not allowed one")
            res = (_proxy.parse_v1 if kind == "v1" else _proxy.parse_v2)(buf)
            if res is None:
                if self._eof:
                    raise errors.NoMoreData("EOF in PROXY header")
                return NEED_DATA
            self._proxy_info, used = res
            self._consume(used)
        self._state = _S_HEAD
        return self._next_head()

    # --- the head -------------------------------------------------------------------------------
    def _next_head(self):
        """Wait for a whole head, then scan it (``_scan_head``) and interpret its framing
        fields (``framing``); answer the Request and set up the body's decoder."""
        buf = self._buf
        if not buf:
            # nothing of this request yet (at most the one CRLF ignored below)
            if self._eof:
                self._state = _S_CLOSED
                return CLOSED
            return NEED_DATA
        if not self._crlf_done:
            # RFC 9112 §2.2: ignore one empty line (CRLF) before the request-line; only one.
            if buf[0] == 13:
                if len(buf) < 2:
                    if self._eof:
                        raise errors.NoMoreData("EOF before a request line")
                    return NEED_DATA
                if buf[1] == 10:
                    self._consume(2)
                    buf = self._buf
                    if not buf:
                        self._crlf_done = True
                        if self._eof:
                            self._state = _S_CLOSED
                            return CLOSED
                        return NEED_DATA
            self._crlf_done = True

        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            return self._head_incomplete(buf)

        # A whole head read before under these settings and trust (ParserOptions.seen_heads)
        # reads as it read then, without a scan. (Its bytes are the key: the buffer itself when
        # it holds just the head, as it mostly does; a bytearray, a head that came in pieces,
        # is none.) Only until the connection has a field block of its own to compare with
        # (_block, see _scan_head): the shared caches are for clients that open a connection
        # per request; a kept-alive client's heads cost no look-up in them.
        seen = head_key = None
        if self._block is None and type(buf) is bytes and end < _SEEN_HEAD_MAX:
            head_key = buf[:end + 4]
            seen = self._seen_heads.get(head_key)
        if seen is not None:
            req = Request(seen[0], seen[2], list(seen[1]), self._proxy_info)
        else:
            req = self._read_head(buf, end, head_key)

        if end + 4 >= len(buf):
            self._buf = b""
        else:
            self._consume(end + 4)
        if req.chunked:
            opts = self._opts
            self._decoder = ChunkedDecoder(opts.max_field_size, opts.max_head,
                                           self._parse_trailers)
            self._state = _S_BODY
        elif req.content_length:
            self._decoder = LengthDecoder(req.content_length)
            self._state = _S_BODY
        else:
            self._state = _S_NO_BODY
        return req

    def _read_head(self, buf, end, head_key):
        """The Request of the head in buf[:end + 4]: scanned, its framing decided; kept by
        ``head_key`` (its bytes) unless that is None."""
        rl, headers, fields = self._scan_head(buf, end)
        method = rl[0]
        if method == "CONNECT":
            decided = framing(method, rl[5], fields or _NO_FIELDS)
        elif fields is None:
            # the common head: no field that steers framing (a GET with ordinary fields)
            decided = _PLAIN_FRAMING[rl[5] >= V11]
        else:
            # framing() depends on nothing else than (version, fields) for any other method:
            # the answers it gave (never its errors) are kept for the heads that repeat, when
            # the values are short (the cache stays small whatever the peers send)
            key = (rl[5], fields)
            decided = _FRAMING_SEEN.get(key)
            if decided is None:
                decided = framing(method, rl[5], fields)
                if sum(len(v) for v in fields[:4] if v) <= 64:
                    if len(_FRAMING_SEEN) >= 256:
                        _FRAMING_SEEN.clear()
                    _FRAMING_SEEN[key] = decided
        if head_key is not None:
            seen = self._seen_heads
            if len(seen) >= _SEEN_BLOCKS_MAX:
                seen.clear()
            seen[head_key] = (rl, tuple(headers), decided)
        return Request(rl, decided, headers, self._proxy_info)

    # --- the head, scan step: lines, limits, field syntax -----------------------------------------
    def _scan_head(self, buf, end):
        """The complete head in buf[:end + 4], split and checked line by line.

        Returns the request line (method, target, path, query, fragment, version), the headers
        ((NAME, value) pairs) and the values of the fields that steer framing: None when there
        are none, else (Content-Length, Transfer-Encoding, Connection, Expect, has Upgrade),
        repeated fields joined with ",". What the lines break (their syntax first, then, in the
        order of the lines, a second Content-Length, Host or Content-Type, a "_" in a name) is
        refused here.
        """
        # one decode: the request line (up to the first CRLF, as _head_incomplete found it),
        # then the block of field lines
        head = buf[:end].decode("latin-1")
        line_end = head.find("\r\n")
        if line_end < 0:
            line_end = end

        # request line
        rl = self._rl
        if rl is None:
            if line_end > self._opts.max_request_line:
                self._refuse_long_line(buf)
            request_line = head[:line_end]
            rl = _REQUEST_LINES.get(request_line)
            if rl is None:
                rl = self._fast_request_line(request_line) or self._request_line(request_line)

        if line_end == end:
            return rl, [], None
        block = head[line_end + 2:]
        if block == self._block:
            # the field block of this connection's previous head, again (a client on a kept-alive
            # connection repeats its fields): it reads as it read then, under the same settings
            return rl, list(self._block_headers), self._block_steering
        seen = self._seen_blocks.get(block) if self._block is None else None
        if seen is not None:
            # a block another connection sent (a client that opens a connection per request
            # sends the same one each time), read under the same settings and trust
            self._block, self._block_headers, self._block_steering = block, seen[0], seen[1]
            return rl, list(seen[0]), seen[1]
        if end + 4 - (line_end + 2) > self._opts.max_head:
            self._refuse_large_section(buf, line_end + 2)

        # field lines: each line the strict grammar takes whole is found in _LINES (or scanned
        # once by _strict_line and kept). A line it does not take, or any error, sends the block
        # to the careful pass, which accepts what a leniency setting allows (obs-fold, space
        # before ":") or names the error, the same whichever pass met it first.
        lines = block.split("\r\n")
        fields = None
        opts = self._opts
        if end - line_end <= opts.max_field_size and len(lines) <= opts.max_fields:
            try:
                fields = self._read_fields(lines, _LINES.get)
            except errors.HTTPError:
                pass
        if fields is None:
            fields = self._read_fields(*self._careful_fields(block))
        self._remember_block(block, fields)
        return rl, fields[0], fields[1]

    def _remember_block(self, block, fields):
        """Keep a field block that was read without error, and what it gave, for the next
        head on this connection (see _scan_head), and for other connections if it is this
        one's first."""
        first = self._block is None
        self._block = block
        headers = self._block_headers = tuple(fields[0])
        self._block_steering = fields[1]
        if first and len(block) <= _SEEN_BLOCK_MAX:
            seen = self._seen_blocks
            if len(seen) >= _SEEN_BLOCKS_MAX:
                seen.clear()
            seen[block] = (headers, fields[1])

    def _read_fields(self, items, get):
        """(headers, the fields that steer framing or None) from field lines: ``get(item)``
        gives a line's ((NAME, value), kind); None (a line the strict grammar does not take,
        on the fast pass) ends the pass with None. What one field line can break (a second
        Content-Length, Host or Content-Type, a "_" in its name) is refused here."""
        headers = []
        cl = te = conn = expect = None
        has_upgrade = steering = False
        append = headers.append
        seen_host = seen_ctype = False
        for item in items:
            info = get(item)
            if info is None:
                info = _strict_line(item)
                if info is None:
                    return None
            pair, kind = info
            if kind:
                value = pair[1]
                if kind == _K_HOST:  # (first: nearly every request has one)
                    # RFC 9112 §3.2: more than one Host, or an invalid one, is a 400
                    if seen_host:
                        raise errors.InvalidHeader("more than one Host")
                    if value not in _HOSTS_OK:
                        _check_host(value)
                    seen_host = True
                elif kind == _K_CL:
                    # RFC 9110 §8.6 Content-Length = 1*DIGIT, in one field line only
                    # (RFC 9112 §6.3; several, even equal, are refused, as §8.6 allows)
                    if cl is not None:
                        raise errors.InvalidHeader("more than one Content-Length")
                    if not CONTENT_LENGTH(value):
                        raise errors.InvalidHeader(f"Content-Length: {value[:40]!r}")
                    cl = value
                    steering = True
                elif kind == _K_CONNECTION:
                    conn = value if conn is None else f"{conn},{value}"
                    steering = True
                elif kind == _K_TE:
                    te = value if te is None else f"{te},{value}"
                    steering = True
                elif kind == _K_UNDERSCORE:
                    if not self._keep_underscore(pair[0]):
                        continue
                elif kind == _K_EXPECT:
                    expect = value if expect is None else f"{expect},{value}"
                    steering = True
                elif kind == _K_UPGRADE:
                    has_upgrade = steering = True
                elif kind == _K_CTYPE:
                    # RFC 9110 §5.3: a singleton field; a repeat is ambiguous
                    if seen_ctype:
                        raise errors.InvalidHeader("more than one Content-Type")
                    seen_ctype = True
            append(pair)
        return headers, (cl, te, conn, expect, has_upgrade) if steering else None

    def _careful_fields(self, block):
        """(items, get) for _read_fields from the careful pass."""
        infos = []
        for name, value, _ in self._split_fields(block):
            info = _NAME_CACHE.get(name) or _name_info(name)
            infos.append(((info[0], value), info[1]))
        return range(len(infos)), infos.__getitem__

    def _refuse_large_section(self, buf, start):
        """A header section over the limit: 431, unless a bare LF comes within the limit: that
        is refused first (400) when the head arrives in pieces (_head_incomplete), so whole too."""
        stop = start + self._opts.max_head
        if has_bare_lf(buf, start, stop, start):
            raise errors.InvalidHeader("bare LF in the header section")
        raise errors.LimitRequestHeaders("header section too large")

    def _keep_underscore(self, up):
        """header_map for a field name with "_" (which a WSGI environ cannot tell from "-")."""
        if self._forwarder_trusted and up in self._opts.forwarder_headers:
            return True
        hm = self._opts.header_map
        if hm == "drop":
            return False
        if hm == "dangerous":
            return True
        raise errors.InvalidHeaderName(f"{up!r}: '_' in a field name (header_map = refuse)")

    def _refuse_long_line(self, buf):
        limit = self._opts.max_request_line
        if buf.find(b"\n", 0, limit + 1) >= 0:
            raise errors.InvalidRequestLine("bare LF in the request line")
        raise errors.LimitRequestLine(f"request line longer than {limit} bytes")

    def _head_incomplete(self, buf):
        """No blank line yet: refuse early what can already be refused, else wait."""
        n = len(buf)
        line_end = self._line_end
        if line_end < 0:
            # (what lies before self._scan was searched by the previous calls)
            line_end = buf.find(b"\r\n", self._scan)
            if line_end < 0:
                limit = self._opts.max_request_line
                if buf.find(b"\n", self._scan, limit + 1) >= 0:
                    raise errors.InvalidRequestLine("bare LF in the request line")
                if n - 1 > limit:
                    raise errors.LimitRequestLine(f"request line longer than {limit} bytes")
                if self._eof:
                    raise errors.NoMoreData("EOF in the request line")
                self._scan = max(0, n - 3)
                return NEED_DATA
            if line_end > self._opts.max_request_line:
                self._refuse_long_line(buf)
            self._rl = self._request_line(bytes(buf[:line_end]).decode("latin-1"))
            self._line_end = line_end
            self._lf_checked = line_end + 2
        start = line_end + 2
        if n - start > self._opts.max_head:
            self._refuse_large_section(buf, start)  # (400 if a bare LF comes within the limit)
        # RFC 9112 §2.2: every line of the head ends with CRLF. A bare LF means the head will not
        # end the way it must; refuse it now rather than wait. Only new bytes are counted.
        new = self._lf_checked
        if has_bare_lf(buf, new, n, start):
            raise errors.InvalidHeader("bare LF in the header section")
        self._lf_checked = n
        if self._eof:
            raise errors.NoMoreData("EOF in the header section")
        self._scan = max(0, n - 3)
        return NEED_DATA

    def _fast_request_line(self, line):
        """The request line if the fast pattern takes it (a conventional method, an origin-form
        target, HTTP/1.0 or 1.1), else None. What the strict pattern takes reads the same under
        any settings, so it is kept by its text (_REQUEST_LINES)."""
        strict = not self._opts.permit_unconventional_http_method
        m = (REQUEST_LINE_FAST if strict else REQUEST_LINE_FAST_ANY_METHOD).fullmatch(line)
        if m is None:
            return None
        method, target, minor = m.groups()
        version = V11 if minor == "1" else V10
        if "#" in target:
            path, query, fragment = ORIGIN_FORM.fullmatch(target).groups("")
        else:
            path, _, query = target.partition("?")
            fragment = ""
        if self._opts.casefold_http_method:
            method = method.upper()
            if method == "CONNECT":
                return None
        rl = (method, target, path, query, fragment, version)
        if strict and len(line) <= _LINE_MAX:
            if len(_REQUEST_LINES) >= _LINES_MAX:
                _REQUEST_LINES.clear()
            _REQUEST_LINES[line] = rl
        return rl

    def _request_line(self, line):
        """The careful request-line parser: every form and version; names the error."""
        opts = self._opts
        if "\n" in line or "\r" in line:
            raise errors.InvalidRequestLine("bare CR or LF in the request line")
        parts = line.split(" ")
        if len(parts) != 3:
            # RFC 9112 §3: method SP request-target SP HTTP-version, single spaces
            raise errors.InvalidRequestLine(line[:200])
        method, target, version = parts

        # RFC 9110 §9.1 method = token (and gunicorn's conventional subset unless permitted)
        if not opts.permit_unconventional_http_method and not METHOD_CONVENTIONAL.fullmatch(method):
            raise errors.InvalidRequestMethod(method[:40])
        if not TOKEN.fullmatch(method):
            raise errors.InvalidRequestMethod(method[:40])
        if opts.casefold_http_method:
            method = method.upper()

        # RFC 9112 §3.2 request-target
        if not _TARGET.fullmatch(target):
            raise errors.InvalidRequestLine(f"request-target {target[:200]!r}")
        query = fragment = ""
        if target[0] == "/":
            if method == "CONNECT":     # RFC 9112 §3.2.3: CONNECT takes authority-form only
                raise errors.InvalidRequestLine("CONNECT needs an authority-form target")
            path, query, fragment = ORIGIN_FORM.fullmatch(target).groups()
        elif target == ASTERISK_FORM:   # RFC 9112 §3.2.4: asterisk-form only for OPTIONS
            if method != "OPTIONS":
                raise errors.InvalidRequestLine(f"'*' target with {method}")
            path = "*"
        elif "://" in target:           # RFC 9112 §3.2.2 absolute-form
            m = ABSOLUTE_FORM.fullmatch(target)
            if m is None or method == "CONNECT":
                raise errors.InvalidRequestLine(f"request-target {target[:200]!r}")
            path, query, fragment = m.group(3, 4, 5)
            path = path or ""
        else:                           # RFC 9112 §3.2.3 authority-form, CONNECT only
            if method != "CONNECT" or not AUTHORITY_FORM.fullmatch(target):
                raise errors.InvalidRequestLine(f"request-target {target[:200]!r}")
            # no path in this form: report the authority itself (as the corpus does for [::1]:443)
            path = target
        query = query or ""
        fragment = fragment or ""

        # RFC 9112 §2.3 HTTP-version = "HTTP/" DIGIT "." DIGIT
        m = HTTP_VERSION.fullmatch(version)
        if m is None:
            raise errors.InvalidHTTPVersion(version[:40])
        major, minor = int(m.group(1)), int(m.group(2))
        if major != 1:
            # RFC 9110 §15.6.6: a major version we do not speak is a 505.
            raise errors.UnsupportedHTTPVersion(version)
        if minor > 1 and not opts.permit_unconventional_http_version:
            raise errors.InvalidHTTPVersion(version)
        return method, target, path, query, fragment, (V10, V11)[minor] if minor < 2 else (1, minor)

    def _split_fields(self, block):
        """The careful field-line parser: (name, value, "") triples."""
        opts = self._opts
        lines = block.split("\r\n")
        n = len(lines)
        if block.count("\n") != n - 1:
            raise errors.InvalidHeader("bare LF in the header section")
        max_fields = opts.max_fields
        max_size = opts.max_field_size
        strip_names = opts.strip_header_spaces
        fold = opts.permit_obsolete_folding
        out = []
        i = 0
        while i < n:
            if len(out) >= max_fields:
                raise errors.LimitRequestHeaders(f"more than {max_fields} header fields")
            line = lines[i]
            i += 1
            size = len(line) + 2
            if line[:1] in (" ", "\t"):
                # RFC 9112 §2.2: whitespace before the first field line: refused.
                raise errors.InvalidHeader("whitespace before the first field line")
            colon = line.find(":")
            if colon <= 0:
                raise errors.InvalidHeader(f"no field name in {line[:80]!r}")
            name = line[:colon]
            if strip_names:
                name = name.rstrip(OWS)
            if not TOKEN.fullmatch(name):
                raise errors.InvalidHeaderName(repr(name[:80]))
            value = line[colon + 1:].strip(OWS)
            folded = False
            while i < n and lines[i][:1] in (" ", "\t"):
                # RFC 9112 §5.2: obs-fold; a server must refuse it or replace it with SP.
                if not fold:
                    raise errors.ObsoleteFolding(name)
                cont = lines[i]
                i += 1
                size += len(cont) + 2
                if size > max_size:
                    raise errors.LimitRequestHeaders(f"field {name!r} larger than {max_size}")
                value = value + " " + cont.strip(OWS)
                folded = True
            if size > max_size:
                raise errors.LimitRequestHeaders(f"field {name!r} larger than {max_size}")
            if folded:
                value = value.strip(OWS)
            if FIELD_VALUE_INVALID.search(value):
                raise errors.InvalidHeader(f"control character in {name!r}")
            out.append((name, value, ""))
        return out

    def _parse_trailers(self, text):
        """Trailer section (RFC 9112 §7.1.2) -> (NAME, value) pairs."""
        trailers = []
        seen_ctype = False
        for name, value, _ in self._split_fields(text):
            up = name.upper()
            if up in FORBIDDEN_TRAILERS:
                raise errors.InvalidHeaderName(f"{up} not allowed in trailers (RFC 9110 §6.5.1)")
            if "_" in up:
                hm = self._opts.header_map
                if hm == "drop":
                    continue
                if hm == "refuse":
                    raise errors.InvalidHeaderName(f"{up!r}: '_' in a field name")
            elif up == "CONTENT-TYPE":
                if seen_ctype:
                    raise errors.InvalidHeader("more than one Content-Type")
                seen_ctype = True
            trailers.append((up, value))
        return trailers


# ``p.buffered``, the bytes received and not consumed yet (the start of what comes next), is the
# ``_buf`` slot itself under its public name: the request loop reads it on every request, and a
# property would cost a call each time. Read it, never assign it.
RequestParser.buffered = RequestParser._buf


# --- the head, interpret step: framing ---------------------------------------------------------
def framing(method, version, fields):
    """Every framing decision for a request, from the fields that steer it as _scan_head
    gives them: (Content-Length, Transfer-Encoding, Connection, Expect, has Upgrade), repeated
    fields joined with ",", Content-Length already 1*DIGIT, None for a field not sent.

    Returns (content_length, chunked, keep_alive, expect_continue, upgrade).
    """
    cl, te, conn, expect, has_upgrade = fields
    # RFC 9110 §10.1.1 Expect: only 100-continue is defined; HTTP/1.0 must ignore it.
    expect_continue = False
    if expect is not None:
        for item in expect.split(","):
            if item.strip(OWS).lower() != "100-continue":
                raise errors.ExpectationFailed(f"Expect: {expect[:80]!r}")
        expect_continue = version >= V11

    # RFC 9110 §7.6.1 Connection options; RFC 9112 §9.3 persistence
    upgrade = False
    if conn is None:
        keep_alive = version >= V11
    else:
        options = _CONNECTION_COMMON.get(conn)
        if options is None:
            options = frozenset(o.strip(OWS).lower() for o in conn.split(","))
        if "close" in options:
            keep_alive = False
        elif version >= V11:
            keep_alive = True
        else:
            keep_alive = "keep-alive" in options
        upgrade = has_upgrade and "upgrade" in options
    if method == "CONNECT":
        # what follows a CONNECT is tunnel data, never another request (as gunicorn 27)
        keep_alive = False

    chunked = False
    content_length = None
    if te is not None:
        chunked, passthrough = _transfer_codings(te)
        if version < V11:
            # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            raise errors.InvalidHeader("Transfer-Encoding in an HTTP/1.0 request")
        if cl is not None:
            # RFC 9112 §6.3: both framings at once is how requests are smuggled.
            raise errors.InvalidHeader("both Content-Length and Transfer-Encoding")
        if passthrough:
            keep_alive = False
    elif cl is not None:
        try:
            content_length = int(cl)
        except ValueError:   # more digits than int() takes from a str
            raise errors.InvalidHeader("Content-Length too large") from None
    return content_length, chunked, keep_alive, expect_continue, upgrade


_NO_FIELDS = (None, None, None, None, False)
# framing() of a head with no field that steers it, by "HTTP/1.1 or later": the fast path's
# answer, computed by the one function that decides
_PLAIN_FRAMING = {v >= V11: framing("GET", v, _NO_FIELDS) for v in (V10, V11)}
_FRAMING_SEEN = {}     # (version, fields) -> framing(), for methods but CONNECT (bounded, short)


def _transfer_codings(te):
    """RFC 9112 §6.1, §6.3: (chunked, passthrough) from the joined Transfer-Encoding values.

    chunked must come once and last (else 400); a coding we do not know is a 501 (§6.1).
    """
    chunked = False
    passthrough = False
    for item in te.split(","):
        item = item.strip(OWS)
        if not item:
            continue    # RFC 9110 §5.6.1: empty list elements are ignored
        m = TRANSFER_CODING.fullmatch(item)
        if m is None:
            raise errors.InvalidHeader(f"Transfer-Encoding: {te[:80]!r}")
        coding = m.group(1).lower()
        if chunked:
            if coding in _PASSTHROUGH_CODINGS or coding in ("chunked", "identity"):
                raise errors.InvalidHeader("chunked is not the final transfer coding")
            raise errors.UnsupportedTransferCoding(coding)
        if coding == "chunked":
            if m.end(1) != len(item):
                raise errors.InvalidHeader("parameters on chunked")
            chunked = True
        elif coding in _PASSTHROUGH_CODINGS:
            passthrough = True
        elif coding != "identity":
            raise errors.UnsupportedTransferCoding(coding)
    if not chunked:
        raise errors.InvalidHeader("Transfer-Encoding without chunked as the final coding")
    return chunked, passthrough
