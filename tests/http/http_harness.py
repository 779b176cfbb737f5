"""Drive a RequestParser the way a connection does: feed pieces, pump events, collect messages."""
from unicornd.http import errors
from unicornd.http.parser import CLOSED, NEED_DATA, EndOfMessage, ParserOptions, Request, \
    RequestParser


class Message:
    """One request as the application would see it: the head, the decoded body, the trailers."""

    def __init__(self, request):
        self.request = request
        self.body = bytearray()
        self.trailers = None

    def as_dict(self):
        r = self.request
        return {
            "method": r.method, "target": r.target, "path": r.path, "query": r.query,
            "fragment": r.fragment, "version": list(r.version),
            "headers": [list(h) for h in r.headers], "body": bytes(self.body),
            "trailers": [list(t) for t in (self.trailers or [])],
        }


class Outcome:
    def __init__(self):
        self.messages = []
        self.error = None      # the HTTPError raised, if any
        self.closed = False    # CLOSED seen
        self.stopped = False   # stopped after a request that does not keep the connection


def pump(parser, out, *, max_events=10_000_000):
    """Call next_event until it needs data; return False once parsing is over."""
    for _ in range(max_events):
        ev = parser.next_event()
        if ev is NEED_DATA:
            return True
        if ev is CLOSED:
            out.closed = True
            return False
        if isinstance(ev, Request):
            assert not out.messages or out.messages[-1].trailers is not None, "Request mid-message"
            out.messages.append(Message(ev))
        elif isinstance(ev, bytes):
            assert ev, "empty body piece"
            assert out.messages and out.messages[-1].trailers is None
            out.messages[-1].body += ev
        elif isinstance(ev, EndOfMessage):
            msg = out.messages[-1]
            assert msg.trailers is None
            msg.trailers = ev.trailers
            if not msg.request.keep_alive:
                out.stopped = True
                return False
            parser.start_next_request()
        else:
            raise AssertionError(f"unexpected event {ev!r}")
    raise AssertionError("parser does not stop producing events")


def feed(pieces, opts=None, *, proxy_allowed=True, eof=True, **kw):
    """Feed ``pieces`` one by one (then EOF); return an Outcome."""
    parser = RequestParser(opts or ParserOptions(), proxy_allowed=proxy_allowed, **kw)
    out = Outcome()
    try:
        going = True
        for piece in pieces:
            parser.receive_data(piece)
            going = pump(parser, out)
            if not going:
                break
        if going and eof:
            parser.receive_data(b"")
            pump(parser, out)
    except errors.HTTPError as exc:
        out.error = exc
    out.parser = parser
    return out


def split_at(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    pieces, last = [], 0
    for c in cuts:
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    return [p for p in pieces if p]


def splits(data, rng, count):
    """``count`` random splittings of ``data`` (seeded by the caller's rng)."""
    result = []
    for _ in range(count):
        k = rng.randint(1, max(1, min(len(data) - 1, 12)))
        result.append(split_at(data, [rng.randint(1, max(1, len(data) - 1)) for _ in range(k)]))
    return result
