"""The WSGI side of a request (PEP 3333): environ, wsgi.input and wsgi.file_wrapper.

The environ is built from a dict made once per worker and per listener; a request only adds
what is its own, and a request that repeats its connection's previous fields copies the part
they made then (``ConnectionBase``). Nothing here reads a socket: ``RequestBody`` pulls decoded body pieces from
its connection through one ``pull(want)`` call.
"""

import os
import stat
from collections import deque
from io import BytesIO
from urllib.parse import unquote_to_bytes

from unicornd import SERVER_SOFTWARE
from unicornd.http.forwarded import scheme_from_headers
from unicornd.http.parser import V11


class FileWrapper:
    """``wsgi.file_wrapper``: the connection sends real files with ``sendfile``."""

    __slots__ = ("filelike", "blksize", "close")

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self):
        read = self.filelike.read
        size = self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def sendable_file(self):
        """(fd, offset) when the file can go out with sendfile, else None."""
        try:
            fd = self.filelike.fileno()
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            offset = self.filelike.tell() if hasattr(self.filelike, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return None
        return fd, offset


# What readline asks for when it needs more and the line's length is unknown: one socket read.
LINE_PIECE = 1 << 16


class RequestBody:
    """``wsgi.input``: a read-only stream over the decoded body (Content-Length or chunked).

    ``pull(want)`` returns the next piece of body or ``b""`` at its end; ``want`` is how many
    bytes the read still needs (-1: all of the body), so that a connection reading the socket
    directly asks for no more than that (the piece may be longer when the bytes were there
    already). Reads never go past the end of this request's body, so ``wsgi.input_terminated``
    is true.

    The unread bytes are the tail ``_buf[_pos:]`` of the current piece, then the pieces fed
    ahead (``feed``), then what ``pull()`` has not returned yet. Pieces are never concatenated
    into a growing buffer: a read takes what it needs, copying each byte once into the bytes
    it returns, so reading a body costs time linear in its size and holds no more than what
    the app asked for plus one piece.
    """

    __slots__ = ("_pull", "_pull_into", "_buf", "_pos", "_fed", "_done")

    def __init__(self, pull, has_body: bool = True, pull_into=None):
        self._pull = pull
        # pull_into(view): body received straight into view, for readinto: the byte count, 0 at
        # the end, -1 when the next bytes must be pulled as a piece instead; None: always pull.
        self._pull_into = pull_into
        self._buf = b""
        self._pos = 0
        self._fed = None    # a deque of pieces fed ahead of pull(), made on the first feed
        self._done = not has_body

    def _next(self, want) -> bytes:
        """The piece after the current one: fed ahead, else pulled; b"" at the end."""
        fed = self._fed
        if fed:
            return fed.popleft()
        if self._done:
            return b""
        data = self._pull(want)
        if not data:
            self._done = True
            return b""
        return data

    def _rest(self):
        """The unread tail of the current piece, taken out of it (a view when it is not the
        whole piece: the bytes returned copy it once); None when there is none."""
        buf, pos = self._buf, self._pos
        self._buf = b""
        self._pos = 0
        if pos >= len(buf):
            return None
        return memoryview(buf)[pos:] if pos else buf

    def read(self, size=-1):
        buf, pos = self._buf, self._pos
        n = len(buf)
        everything = size is None or size < 0
        if not everything:
            end = pos + size
            if end <= n:
                # the common case: what is asked for is in the current piece
                if pos == 0 and end == n:
                    self._buf = b""
                    return buf
                self._pos = end
                return buf[pos:end]
            need = end - n
        data = self._next(-1 if everything else need)
        self._buf = b""
        self._pos = 0
        if not data:
            # the body ends within the current piece (a small body that came with the head)
            return buf[pos:] if pos else buf
        if not everything and len(data) >= need:
            # the next piece holds the rest of the answer (the direct reads ask for just that)
            if pos == n:
                if len(data) == need:
                    return data
                self._buf = data
                self._pos = need
                return data[:need]
            rest = memoryview(buf)[pos:] if pos else buf
            if len(data) == need:
                return b"".join((rest, data))
            self._buf = data
            self._pos = need
            return b"".join((rest, memoryview(data)[:need]))
        out = _Out(None if pos == n else memoryview(buf)[pos:] if pos else buf)
        try:
            if everything:
                while data:
                    out.add(data)
                    data = self._next(-1)
                return out.value()
            while True:
                dn = len(data)
                if dn >= need:
                    if dn == need:
                        out.add(data)
                    else:
                        out.add(memoryview(data)[:need])
                        self._buf = data
                        self._pos = need
                    break
                out.add(data)
                need -= dn
                data = self._next(need)
                if not data:
                    break
        except BaseException:
            self._unread(out)
            raise
        return out.value()

    def readline(self, size=-1):
        if size is None:
            size = -1
        buf, pos = self._buf, self._pos
        n = len(buf)
        stop = n if size < 0 or pos + size > n else pos + size
        idx = buf.find(b"\n", pos, stop)
        if idx >= 0 or (size >= 0 and stop == pos + size):
            # the line (or as much of it as asked for) is in the current piece
            end = idx + 1 if idx >= 0 else stop
            if pos == 0 and end == n:
                self._buf = b""
                return buf
            self._pos = end
            return buf[pos:end]
        got = n - pos
        out = _Out(self._rest())
        try:
            while True:
                # (a line's length is unknown: a piece of socket size, or what the size leaves)
                data = self._next(LINE_PIECE if size < 0 else size - got)
                if not data:
                    break
                n = len(data)
                stop = n if size < 0 or got + n <= size else size - got
                idx = data.find(b"\n", 0, stop)
                if idx >= 0:
                    end = idx + 1
                elif stop < n or got + n == size:
                    end = stop
                else:
                    out.add(data)
                    got += n
                    continue
                if end == n:
                    out.add(data)
                else:
                    out.add(memoryview(data)[:end])
                    self._buf = data
                    self._pos = end
                break
        except BaseException:
            self._unread(out)
            raise
        return out.value()

    def readinto(self, b) -> int:
        """Fill the writable buffer ``b`` with the next body bytes, as read(len) would return
        them (all of it unless the body ends first); how many, 0 at the end. Body still in the
        socket is received straight into ``b`` when the connection can (pull_into): an app
        that reuses one buffer reads a large upload with no copy of its own."""
        view = memoryview(b)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = len(view)
        got = 0
        buf, pos = self._buf, self._pos
        try:
            while got < size:
                avail = len(buf) - pos
                if avail:
                    k = avail if avail < size - got else size - got
                    view[got:got + k] = memoryview(buf)[pos:pos + k]
                    got += k
                    pos += k
                    continue
                buf, pos = b"", 0
                fed = self._fed
                if fed:
                    buf = fed.popleft()
                    continue
                if self._done:
                    break
                if self._pull_into is not None:
                    k = self._pull_into(view[got:])
                    if k > 0:
                        got += k
                        continue
                    if k == 0:
                        self._done = True
                        break
                buf = self._pull(size - got)
                if not buf:
                    self._done = True
                    break
        except BaseException:
            # (as _unread: what this call had placed in b stays unread, ahead of the rest)
            self._buf = bytes(view[:got]) + (buf[pos:] if pos < len(buf) else b"")
            self._pos = 0
            raise
        self._buf, self._pos = buf, pos
        return got

    def _unread(self, out):
        """A pull failed (the client stalled or went away) in the middle of a read: what the
        read had gathered stays unread, as if it had not started."""
        self._buf = out.value()
        self._pos = 0

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def feed(self, data: bytes) -> None:
        """Body bytes read for the app ahead of its reads: those that came with the head, and
        an unread rest read before the response head goes out (connection._head_bytes)."""
        if not data:
            return
        if self._pos >= len(self._buf) and not self._fed:
            self._buf = data
            self._pos = 0
            return
        if self._fed is None:
            self._fed = deque()
        self._fed.append(data)


# ``wsgi.input`` of every request without a body: at its end from the start, and nothing it
# does changes it (its reads only set its empty state again; feed() is never called on it),
# so one serves them all, across threads too, instead of a RequestBody per request.
NO_BODY = RequestBody(None, has_body=False)


class _Out:
    """What one read returns, gathered piece by piece: a lone piece is returned as it is; two
    (the common case: the rest of a piece, then the bytes it lacked) are joined with one copy;
    more go into a BytesIO, whose value is not copied again (BytesIO.getvalue hands over its
    buffer), so a read holds at most what it returns plus the piece being added (two pieces:
    twice what it returns, for the moment of the join)."""

    __slots__ = ("first", "second", "io")

    def __init__(self, first):
        self.first = first
        self.second = None
        self.io = None

    def add(self, data):
        io_ = self.io
        if io_ is not None:
            io_.write(data)
        elif self.first is None:
            self.first = data
        elif self.second is None:
            self.second = data
        else:
            io_ = self.io = BytesIO()
            io_.write(self.first)
            io_.write(self.second)
            self.first = self.second = None
            io_.write(data)

    def value(self) -> bytes:
        if self.io is not None:
            return self.io.getvalue()
        first = self.first
        if first is None:
            return b""
        if self.second is not None:
            return b"".join((first, self.second))
        return first if type(first) is bytes else bytes(first)


def _path_to_wsgi(path: str) -> str:
    # PEP 3333: PATH_INFO is the percent-decoded bytes, carried in a latin-1 str.
    if "%" not in path:
        return path
    return unquote_to_bytes(path).decode("latin-1")


# A field name as the parser gives it (upper case) -> its environ key (PEP 3333: HTTP_ and "_"
# for "-"; Content-Type and Content-Length without the prefix). Made once per name; bounded,
# since the names are the clients' to choose.
_ENVIRON_KEYS = {}
_ENVIRON_KEYS_MAX = 1024


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        if name == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif name == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.replace("-", "_")
        if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
            _ENVIRON_KEYS[name] = key
    return key


for _name in ("HOST", "USER-AGENT", "ACCEPT", "ACCEPT-ENCODING", "ACCEPT-LANGUAGE", "CONNECTION",
              "CONTENT-TYPE", "CONTENT-LENGTH", "COOKIE", "REFERER", "ORIGIN", "AUTHORIZATION",
              "CACHE-CONTROL", "X-FORWARDED-FOR", "X-FORWARDED-PROTO", "X-REAL-IP"):
    _environ_key(_name)
del _name


class EnvironBuilder:
    """Builds request environs for one worker and one listener, from a base made once
    (``base``) and, per connection, from that base with the peer and the socket in it
    (``connection_base``): a request copies the connection's dict and adds what is its own.

    ``one_request``: each connection carries one request (no keep-alive: the sync worker, or
    keepalive = 0). Nothing is then kept on the connection for a next request: the request's
    environ is the listener's base copied once, with the fields and the peer added (instead of
    three copies: the connection's dict, the request's, and the fields kept for the next)."""

    __slots__ = ("base", "script_name", "trust_forwarded", "secure_scheme_headers",
                 "secure_keys", "server_name", "server_port", "unix", "one_request")

    def __init__(self, cfg, error_stream, listener_addr, *, multithread=False, scheme="http",
                 one_request=False):
        self.one_request = one_request
        self.script_name = os.environ.get("SCRIPT_NAME", "")
        # Upper-cased once, as the parser gives header names.
        self.secure_scheme_headers = {k.upper(): v for k, v in (cfg.secure_scheme_headers or {}).items()}
        # their environ keys: a request with none of them needs no look at its scheme headers
        self.secure_keys = frozenset(_environ_key(k) for k in self.secure_scheme_headers)
        self.unix = isinstance(listener_addr, (str, bytes))
        if self.unix:
            self.server_name, self.server_port = "", ""
        else:
            self.server_name, self.server_port = str(listener_addr[0]), str(listener_addr[1])
        self.base = {
            "wsgi.version": (1, 0),
            "wsgi.errors": error_stream,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "wsgi.url_scheme": scheme,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self.script_name,
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": self.server_port,
        }

    def connection_base(self, peer, sock) -> "ConnectionBase":
        """The part of every environ on one connection: the base, the peer and the socket
        (its dict made when first asked for: a one-request connection never needs it)."""
        return ConnectionBase(self, peer, sock)

    def connection_environ(self, peer, sock) -> dict:
        """The base with the peer and the socket in it."""
        environ = self.base.copy()
        _add_peer(environ, peer, sock)
        return environ

    def build(self, req, body, base, trusted_forwarder: bool) -> dict:
        """The environ of ``req`` on the connection whose ``connection_base()`` is ``base``."""
        headers = req.headers
        if headers == base.headers and trusted_forwarder is base.trusted:
            # the fields of the connection's previous request, again: they make the same part
            environ = base.fields.copy()
            host = base.host
            script_name = base.script_name
        elif self.one_request:
            environ, host, script_name = self._fields(headers, self.base, trusted_forwarder)
            peer = base.peer
            if peer and type(peer) is tuple:  # (_add_peer, inline)
                environ["REMOTE_ADDR"] = peer[0]
                environ["REMOTE_PORT"] = str(peer[1])
                environ["unicornd.socket"] = environ["gunicorn.socket"] = base.sock
            else:
                _add_peer(environ, peer, base.sock)
        else:
            environ, host, script_name = self._fields(headers, base.environ, trusted_forwarder)
            base.headers = headers[:]  # (a copy: a hook may change the request's list)
            base.trusted = trusted_forwarder
            base.fields = environ.copy()
            base.host = host
            base.script_name = script_name
        environ["REQUEST_METHOD"] = req.method
        environ["RAW_URI"] = req.target
        environ["QUERY_STRING"] = req.query
        version = req.version
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if version is V11 else "HTTP/%d.%d" % version
        environ["wsgi.input"] = body

        if host and self.unix:
            # WSGI has no words for a unix socket: name the server after the Host header.
            if host.startswith("["):
                name, _, port = host.partition("]")
                name += "]"
                port = port[1:]
            else:
                name, _, port = host.partition(":")
            environ["SERVER_NAME"] = name
            environ["SERVER_PORT"] = port or ("443" if environ["wsgi.url_scheme"] == "https" else "80")

        proxy = req.proxy
        if proxy is not None and getattr(proxy, "src_addr", None):
            environ["REMOTE_ADDR"] = proxy.src_addr
            environ["REMOTE_PORT"] = str(proxy.src_port)

        path = req.path
        if script_name and path.startswith(script_name):
            path = path[len(script_name):]
        environ["PATH_INFO"] = path if "%" not in path else _path_to_wsgi(path)
        return environ

    def _fields(self, headers, base, trusted_forwarder):
        """(the connection's dict with the request's fields in it, Host, SCRIPT_NAME)."""
        script_name = self.script_name
        secure = self.secure_scheme_headers if trusted_forwarder else None
        # The common head: every name's key is known and no two names share one (which would
        # combine them: the environ grows by one entry per field), no SCRIPT_NAME field, no
        # scheme header to look at. Anything else: again, field by field (_add_fields).
        environ = base.copy()
        try:
            keys = _ENVIRON_KEYS
            for name, value in headers:
                environ[keys[name]] = value
            plain = len(environ) - len(base) == len(headers) and "HTTP_SCRIPT_NAME" not in environ
        except KeyError:
            plain = False
        if plain and secure:
            for key in self.secure_keys:
                if key in environ:
                    plain = False
                    break
        if not plain:
            environ = base.copy()
            host, script_name = self._add_fields(environ, headers, script_name, secure)
        else:
            host = environ.get("HTTP_HOST") if self.unix else None  # (only a unix socket uses it)
        return environ, host, script_name

    @staticmethod
    def _add_fields(environ, headers, script_name, secure):
        """Every field, one by one: repeats combined, SCRIPT_NAME, the scheme headers.
        Returns (Host, SCRIPT_NAME)."""
        host = None
        scheme_said = False
        for name, value in headers:
            key = _environ_key(name)
            if name == "HOST":
                host = value
            elif name == "SCRIPT_NAME":
                # Only present when a trusted front end sent it (forwarder_headers).
                script_name = environ["SCRIPT_NAME"] = value
            if secure and name in secure:
                scheme_said = True
            prev = environ.get(key)
            if prev is None or key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                environ[key] = value
            else:
                # RFC 9110 §5.3: repeated fields combine into one comma-separated list.
                environ[key] = prev + "," + value
        if scheme_said:
            scheme = scheme_from_headers(headers, secure)
            if scheme:
                environ["wsgi.url_scheme"] = scheme
        return host, script_name


def _add_peer(environ, peer, sock) -> None:
    if peer and not isinstance(peer, (str, bytes)):
        environ["REMOTE_ADDR"] = peer[0]
        environ["REMOTE_PORT"] = str(peer[1])
    else:
        environ["REMOTE_ADDR"] = peer.decode() if isinstance(peer, bytes) else (peer or "")
    environ["unicornd.socket"] = sock
    environ["gunicorn.socket"] = sock


class ConnectionBase:
    """What every environ on one connection holds (``environ``: the listener's base, the peer,
    the socket), and the part its last request's fields made (``fields``, with the Host and
    SCRIPT_NAME read there), kept with those fields: a client on a kept-alive connection mostly
    sends the same fields again, and equal fields from an equally trusted peer make an equal
    part, so a request that repeats them copies it instead of adding them one by one."""

    __slots__ = ("builder", "peer", "sock", "_environ", "headers", "trusted", "fields", "host",
                 "script_name")

    def __init__(self, builder, peer, sock):
        self.builder = builder
        self.peer = peer
        self.sock = sock
        self._environ = None
        self.headers = None
        self.trusted = self.fields = self.host = self.script_name = None

    @property
    def environ(self) -> dict:
        environ = self._environ
        if environ is None:
            environ = self._environ = self.builder.connection_environ(self.peer, self.sock)
        return environ


def reraise(exc_info):
    """start_response(..., exc_info) after the head went out: PEP 3333 says re-raise."""
    try:
        raise exc_info[1].with_traceback(exc_info[2])
    finally:
        exc_info = None

