"""Response heads and body framing, sans-IO: decisions and bytes, never a socket.

``ResponseHead`` checks what the app gave to ``start_response``, decides how the body is framed
(RFC 9112 §6) and serialises the status line and header block into one ``bytes``, together with
the first piece of body. ``response_head()`` hands out the same head again for a status and
header list the app repeats, so they are checked and serialised once.
"""

import re
import time
from email.utils import formatdate

from unicornd import SERVER_SOFTWARE

# RFC 9110 §5.6.2 token; §5.5 field-value (VCHAR, obs-text, SP/HTAB inside). Anything else,
# CR and LF above all, would let an app inject headers: we refuse it with a 500.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")
# RFC 9112 §4: status-code SP [reason-phrase]; PEP 3333 asks for the reason phrase.
_STATUS = re.compile(r"([1-5][0-9]{2})(?: [ \t\x21-\x7e\x80-\xff]*)?")

# Hop-by-hop fields belong to the server (PEP 3333 forbids apps to send them); Date and
# Server are ours too, as in gunicorn. Connection and Upgrade are looked at, then dropped.
_SERVER_OWNED = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "server", "date",
))

# Framing modes.
NO_BODY = 0       # HEAD, 1xx, 204, 304: whatever the app yields is not sent
LENGTH = 1        # the app's Content-Length, honoured exactly
CHUNKED = 2       # HTTP/1.1 without a length
UNTIL_CLOSE = 3   # HTTP/1.0 without a length: the end of the body is the close


# What a header pair from the app means, checked once and remembered: apps send the same
# few pairs again and again (Content-Type, a Content-Length, Cache-Control), and checking
# them is most of a response head's cost. A pair that fails the checks is never remembered.
_KEEP = 0         # sent as is
_LENGTH = 1       # Content-Length (its value: the int and the text sent)
_CONNECTION = 2   # Connection: dropped; its value (close?, upgrade?) decides
_UPGRADE = 3      # Upgrade: sent only with a 101
_DROP = 4         # another server-owned field
_checked = {}
_CHECKED_MAX = 1024  # past this many distinct pairs, start over (bounded memory)
_checked_status = {}


def _check_field(name, value):
    """(kind, name, value) for a header pair; InvalidResponse if it is not one."""
    if type(name) is not str or _TOKEN.fullmatch(name) is None:
        raise InvalidResponse(f"invalid header name {name!r}")
    if type(value) is not str or _FIELD_VALUE.fullmatch(value) is None:
        # The value is not echoed: it may hold secrets and is the injected part.
        raise InvalidResponse(f"invalid value for header {name!r}")
    lname = name.lower()
    if lname == "content-length":
        value = value.strip(" \t")
        if not value.isdigit() or not value.isascii():
            raise InvalidResponse(f"invalid Content-Length {value!r}")
        return _LENGTH, name, (int(value), value)
    if lname in _SERVER_OWNED:
        if lname == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            return _CONNECTION, name, ("close" in tokens, "upgrade" in tokens)
        if lname == "upgrade":
            return _UPGRADE, name, value.strip(" \t")
        return _DROP, name, value
    return _KEEP, name, value


def _check_status(status):
    """(status line text, code) for a WSGI status; InvalidResponse if it is not one."""
    if not isinstance(status, str):
        raise InvalidResponse(f"status must be a str, got {status!r}")
    m = _STATUS.fullmatch(status)
    if m is None:
        raise InvalidResponse(f"invalid status {status!r}")
    # RFC 9112 §4: the SP after the code is required even when the reason is empty.
    return (status if len(status) > 3 else status + " "), int(m.group(1))


class InvalidResponse(Exception):
    """The app broke PEP 3333 or HTTP in its status or headers; answered with a 500."""


class _DateCache:
    """The Date header changes once a second; format it once a second, not per request.
    ``block`` is the Server and Date lines every response head carries, as bytes."""

    __slots__ = ("second", "value", "block")

    def __init__(self):
        self.second = -1
        self.value = ""
        self.block = b""

    def _tick(self, now):
        value = formatdate(now, usegmt=True)
        self.block = f"{_SERVER_LINE}Date: {value}\r\n".encode("latin-1")
        self.value = value
        self.second = now  # last: another thread that sees the new second sees its lines

    def get(self) -> str:
        now = int(time.time())
        if now != self.second:
            self._tick(now)
        return self.value


_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n"
_date = _DateCache()
http_date = _date.get
_time = time.time


class ResponseHead:
    """What start_response was given, checked, with the framing it implies.

    A head is not changed once made: ``response_head()`` hands the same one to every response
    that repeats a status and header list, and ``closing()`` makes the copy that says
    "Connection: close".
    """

    __slots__ = ("status", "status_code", "headers", "content_length", "framing",
                 "close", "upgrade", "version", "length_due", "_start", "_tail")

    def __init__(self, status, headers, *, method, version, keep_alive):
        try:
            self.status, code = _checked_status[status]
        except (KeyError, TypeError):
            checked = _check_status(status)
            if len(_checked_status) >= _CHECKED_MAX:
                _checked_status.clear()
            _checked_status[status] = checked
            self.status, code = checked
        self.status_code = code
        self.version = version
        kept = []
        content_length = None
        close = not keep_alive
        upgrade = False
        checked = _checked
        for item in headers:
            try:
                name, value = item
            except (TypeError, ValueError):
                raise InvalidResponse(f"header must be a (name, value) pair, got {item!r}") from None
            try:
                kind, name, value = checked[(name, value)]
            except (KeyError, TypeError):
                field = _check_field(name, value)
                if type(name) is str and type(value) is str:
                    if len(checked) >= _CHECKED_MAX:
                        checked.clear()
                    checked[(name, value)] = field
                kind, name, value = field
            if kind == _KEEP:
                kept.append((name, value))
            elif kind == _LENGTH:
                if content_length is not None:
                    if value[0] != content_length:
                        raise InvalidResponse("conflicting Content-Length headers")
                    continue
                content_length = value[0]
                kept.append((name, value[1]))
            elif kind == _CONNECTION:
                if value[0]:
                    close = True
                if value[1]:
                    upgrade = True
            elif kind == _UPGRADE and code == 101:
                kept.append((name, value))
        self.headers = tuple(kept)

        if method == "HEAD" or code < 200 or code == 204 or code == 304:
            framing = NO_BODY
        elif content_length is not None:
            framing = LENGTH
        elif version >= (1, 1):
            framing = CHUNKED
        else:
            framing = UNTIL_CLOSE
            close = True
        self.framing = framing
        self.content_length = content_length
        # a body of Content-Length bytes is owed (a writer is short of it until they are sent)
        self.length_due = framing == LENGTH and content_length > 0
        self.upgrade = upgrade and code == 101
        self.close = close
        self._start = self._tail = None

    def closing(self):
        """This head with "Connection: close" (a copy: the head itself may be shared)."""
        if self.close:
            return self
        other = object.__new__(ResponseHead)
        for name in ResponseHead.__slots__:
            setattr(other, name, getattr(self, name))
        other.close = True
        other._start = other._tail = None
        return other

    def _serialize_parts(self):
        """(status line, the header block after Server and Date), as bytes, made once."""
        proto = "HTTP/1.1" if self.version >= (1, 1) else "HTTP/1.0"
        parts = []
        for name, value in self.headers:
            parts += (name, ": ", value, "\r\n")
        if self.upgrade:
            parts.append("Connection: upgrade\r\n")
        elif self.close:
            parts.append("Connection: close\r\n")
        elif self.version < (1, 1):
            parts.append("Connection: keep-alive\r\n")
        if self.framing == CHUNKED:
            parts.append("Transfer-Encoding: chunked\r\n")
        parts.append("\r\n")
        self._start = f"{proto} {self.status}\r\n".encode("latin-1")
        self._tail = "".join(parts).encode("latin-1")

    def serialize(self, body=b"") -> bytes:
        """Status line and header block, ending with the empty line (and ``body`` after it,
        so that a small response is one bytes object without another copy)."""
        if self._tail is None:
            self._serialize_parts()
        now = int(_time())
        if now != _date.second:
            _date._tick(now)
        return b"".join((self._start, _date.block, self._tail, body))


# The heads made from what apps repeat (the same status and header list, for the same kind of
# request): looked up by value, checked and serialised once. Only exact str statuses and
# (str, str) tuples are kept, so an equal key always means the same head; bounded in entries
# and in size, so apps that put per-request values in headers only cost a miss.
_heads = {}
_HEADS_MAX = 256
_HEAD_TAIL_MAX = 4096


def response_head(status, headers, method, version, keep_alive):
    """``ResponseHead(status, headers, ...)``, shared with earlier responses that gave equal
    arguments (so never to be changed: see ``ResponseHead.closing``)."""
    try:
        key = (status, tuple(headers), method == "HEAD", version, keep_alive)
        return _heads[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable header pair (a list), or headers not a sequence
        return ResponseHead(status, headers, method=method, version=version, keep_alive=keep_alive)
    head = ResponseHead(status, headers, method=method, version=version, keep_alive=keep_alive)
    if type(status) is str and all(type(item) is tuple for item in key[1]):
        head._serialize_parts()
        if len(head._tail) <= _HEAD_TAIL_MAX:
            if len(_heads) >= _HEADS_MAX:
                _heads.clear()
            _heads[key] = head
    return head


def encode_chunk(data) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); empty data must not be sent this way."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(status: int, reason: str, body: str = "") -> bytes:
    """A complete response for a request we refuse ourselves; the connection closes after it.
    ``body`` may quote the request (the reason it was refused): plain text, never sniffed."""
    payload = (body or f"{status} {reason}\n").encode("utf-8", "replace")
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"{_SERVER_LINE}"
        f"Date: {http_date()}\r\n"
        "Connection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    ).encode("latin-1") + payload
