"""Body decoders: Content-Length and chunked (RFC 9112 §6, §7.1), sans-IO.

A decoder holds only its framing state. The parser owns the buffer and asks
``decoder.step(buf, eof)``, which answers ``(event, consumed)``: ``event`` is a non-empty
``bytes`` of body, an ``EndOfMessage``, or None when more input is needed; ``consumed`` is how
many bytes at the front of ``buf`` the parser may now drop. Errors are raised as ``errors`` types.
"""
from . import errors
from .grammar import B_CHUNK_LINE, B_CHUNK_SIZE, has_bare_lf


class EndOfMessage:
    """The body is complete. ``trailers``: (NAME, value) pairs of the chunked trailer section."""
    __slots__ = ("trailers",)

    def __init__(self, trailers=None):
        self.trailers = [] if trailers is None else trailers

    def __repr__(self):
        return f"EndOfMessage(trailers={self.trailers!r})"

    def __eq__(self, other):
        if not isinstance(other, EndOfMessage):
            return NotImplemented
        return self.trailers == other.trailers


def take(buf, start, stop):
    """``bytes`` of buf[start:stop], with one copy at most (none when it is all of a bytes)."""
    if type(buf) is bytes:
        return buf[start:stop]
    return bytes(memoryview(buf)[start:stop])


class LengthDecoder:
    """Content-Length framing (RFC 9112 §6.2): exactly ``length`` bytes."""
    __slots__ = ("remaining",)

    def __init__(self, length):
        self.remaining = length

    def step(self, buf, eof):
        remaining = self.remaining
        if remaining == 0:
            return EndOfMessage(), 0
        n = len(buf)
        if n == 0:
            if eof:
                raise errors.NoMoreData(f"{remaining} bytes of body missing")
            return None, 0
        if n > remaining:
            n = remaining
        self.remaining = remaining - n
        return take(buf, 0, n), n


# chunked decoder states
_LINE, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)

#: chunk sizes above this are refused: nobody sends 8 EiB, and Python ints would take it
MAX_CHUNK_SIZE = (1 << 63) - 1


class ChunkedDecoder:
    """The chunked transfer coding (RFC 9112 §7.1), trailer section included (§7.1.2).

    ``max_line``: longest chunk-size line (size plus extensions) before InvalidChunkSize;
    ``max_trailers``: largest trailer section before LimitRequestHeaders;
    ``parse_trailers(text)``: turns the latin-1 text of a complete trailer section (without its
    final empty line) into (NAME, value) pairs, raising on what it refuses.
    """
    __slots__ = ("state", "remaining", "scan", "checked", "max_line", "max_trailers",
                 "parse_trailers")

    def __init__(self, max_line, max_trailers, parse_trailers):
        self.state = _LINE
        self.remaining = 0
        self.scan = 0
        self.checked = 0
        self.max_line = max_line
        self.max_trailers = max_trailers
        self.parse_trailers = parse_trailers

    def step(self, buf, eof):
        pos = 0
        n = len(buf)
        while True:
            state = self.state
            if state == _DATA:
                avail = n - pos
                if avail == 0:
                    if eof:
                        raise errors.NoMoreData("EOF in chunk data")
                    return None, pos
                remaining = self.remaining
                if avail >= remaining:
                    avail = remaining
                    self.state = _DATA_END
                self.remaining = remaining - avail
                return take(buf, pos, pos + avail), pos + avail

            if state == _LINE:
                end = buf.find(b"\r\n", pos + self.scan)
                if end < 0 or end - pos > self.max_line:
                    self._line_incomplete(buf, pos, n, end, eof)
                    return None, pos
                self.scan = 0
                line = bytes(buf[pos:end])
                m = B_CHUNK_LINE.fullmatch(line)
                if m is None:
                    _refuse_chunk_line(line)
                size = int(m.group(1), 16)
                if size > MAX_CHUNK_SIZE:
                    raise errors.InvalidChunkSize(f"chunk size {m.group(1)[:32]!r} too large")
                pos = end + 2
                if size:
                    self.remaining = size
                    self.state = _DATA
                else:
                    self.state = _TRAILERS
                continue

            if state == _DATA_END:
                got = buf[pos:pos + 2]
                if got != b"\r\n":
                    if len(got) == 2 or got not in (b"", b"\r"):
                        raise errors.ChunkMissingTerminator(f"{bytes(got)!r} after chunk data")
                    if eof:
                        raise errors.ChunkMissingTerminator("EOF before the CRLF ending a chunk")
                    return None, pos
                pos += 2
                self.state = _LINE
                continue

            if state == _TRAILERS:
                if buf[pos:pos + 2] == b"\r\n":
                    self.state = _DONE
                    return EndOfMessage(), pos + 2
                end = buf.find(b"\r\n\r\n", pos + self.scan)
                if end < 0:
                    self._trailers_incomplete(buf, pos, n, eof)
                    return None, pos
                self.scan = 0
                text = bytes(buf[pos:end]).decode("latin-1")
                trailers = self.parse_trailers(text)
                self.state = _DONE
                return EndOfMessage(trailers), end + 4

            raise RuntimeError("chunked body already complete")

    def _line_incomplete(self, buf, pos, n, end, eof):
        limit = self.max_line
        stop = n if end < 0 else end
        lf = buf.find(b"\n", pos, min(stop, pos + limit + 1))
        if lf >= 0:
            # RFC 9112 §2.2: lines end with CRLF; a bare LF means this line never will.
            _refuse_chunk_line(bytes(buf[pos:lf + 1]))
        if stop - pos > limit:
            raise errors.InvalidChunkSize(f"chunk size line longer than {limit} bytes")
        if eof:
            raise errors.NoMoreData("EOF in chunk size line")
        self.scan = max(0, n - pos - 1)

    def _trailers_incomplete(self, buf, pos, n, eof):
        if n - pos > self.max_trailers:
            raise errors.LimitRequestHeaders("trailer section too large")
        # RFC 9112 §2.2: trailer lines end with CRLF too; refuse a bare LF now rather than wait.
        # Only the bytes not yet looked at are counted (a CRLF may straddle the boundary).
        new = pos + self.checked
        if has_bare_lf(buf, new, n, pos):
            raise errors.InvalidHeader("bare LF in trailer section")
        self.checked = n - pos
        if eof:
            # RFC 9112 §7.1: the last chunk is followed by a trailer section and a final CRLF;
            # EOF before it is a truncated body.
            raise errors.ChunkMissingTerminator("EOF before the end of the chunked body")
        self.scan = max(0, n - pos - 3)


def _refuse_chunk_line(line):
    """Raise the error that names what is wrong with a chunk-size line that did not match."""
    semi = line.find(b";")
    if semi < 0:
        size = line
    else:
        # RFC 9112 §7.1.1: BWS is allowed before the ";" of an extension, and only there.
        size = line[:semi].rstrip(b" \t")
    if not B_CHUNK_SIZE.fullmatch(size):
        raise errors.InvalidChunkSize(repr(size[:32]))
    raise errors.InvalidChunkExtension(repr(line[semi:semi + 64]))
