"""The response writer, sans-IO: body framing and Content-Length accounting, bytes out.

``ResponseWriter`` takes what the app yields for one response and answers with the bytes to
send: the head once (serialised by ``unicornd.http.response.ResponseHead``), each piece of body
framed as the head decided (RFC 9112 §6: exactly Content-Length bytes, chunks, or until close),
the chunked terminator, the frame around a file sent with sendfile(2). It never touches a
socket; the request loop (``unicornd.connection``) sends what it returns.
"""

from unicornd.http.response import CHUNKED, LAST_CHUNK, LENGTH, NO_BODY, UNTIL_CLOSE, encode_chunk


class ResponseWriter:
    """One response's framing state."""

    __slots__ = ("head", "sent", "head_sent", "ended", "cut", "short")

    def __init__(self, head):
        self.head = head
        self.sent = 0            # body bytes accepted for sending (the access log's %(b)s)
        self.head_sent = False
        self.ended = False       # the body is complete: nothing more goes out (the chunked
        #                          terminator included)
        self.cut = False         # the app sent more than its Content-Length: the excess was cut
        # fewer bytes than the Content-Length the app announced, so far (kept up to date by
        # body() and file_frame(): the connection cannot go on if it is still so at the end)
        self.short = head.length_due

    def head_bytes(self, body: bytes = b"") -> bytes:
        """The head, with ``body`` (bytes this writer returned) after it in the same bytes."""
        self.head_sent = True
        return self.head.serialize(body)

    def body(self, data: bytes, last: bool = False) -> bytes:
        """The bytes that carry ``data`` (and, with ``last``, the end of the body)."""
        head = self.head
        framing = head.framing
        if last:
            self.ended = True
        if framing == LENGTH:
            room = head.content_length - self.sent
            if len(data) >= room:
                if len(data) > room:
                    self.cut = True
                    data = data[:room]
                self.short = False
            self.sent += len(data)
            return data
        if framing == CHUNKED:
            self.sent += len(data)
            out = encode_chunk(data) if data else b""
            if last:
                out += LAST_CHUNK
            return out
        if framing == UNTIL_CLOSE:
            self.sent += len(data)
            return data
        return b""  # NO_BODY: HEAD, 1xx, 204, 304

    def end(self) -> bytes:
        """What ends the body after the last piece went out (the chunked terminator)."""
        if self.ended:
            return b""
        self.ended = True
        return LAST_CHUNK if self.head.framing == CHUNKED else b""

    def file_size(self, available: int) -> int:
        """How much of a file of ``available`` bytes the body takes (0: send none that way)."""
        head = self.head
        if head.framing == NO_BODY:
            return 0
        if head.framing == LENGTH:
            available = min(available, head.content_length - self.sent)
        return max(0, available)

    def file_frame(self, size: int):
        """(before, after): the framing around ``size`` bytes of file sent as they are."""
        self.sent += size
        framing = self.head.framing
        if framing == LENGTH:
            self.short = self.sent < self.head.content_length
        elif framing == CHUNKED:
            return b"%x\r\n" % size, b"\r\n"
        return b"", b""
