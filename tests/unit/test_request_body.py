"""wsgi.input (unicornd.wsgi.RequestBody) over a scripted source of body pieces: its semantics,
and what reading a large body costs (memory and bytes allocated, never time)."""

import tracemalloc

import pytest
from hypothesis import given, strategies as st

from unicornd.wsgi import NO_BODY, RequestBody


def body_of(pieces):
    it = iter(pieces)
    return RequestBody(lambda want: next(it, b""))


def test_read_all_and_sized():
    b = body_of([b"abc", b"defg"])
    assert b.read(2) == b"ab"
    assert b.read(3) == b"cde"
    assert b.read() == b"fg"
    assert b.read() == b"" and b.read(5) == b""


def test_readline_across_pieces_and_limits():
    b = body_of([b"ab", b"c\nde", b"f\n", b"tail"])
    assert b.readline() == b"abc\n"
    assert b.readline(2) == b"de"
    assert b.readline() == b"f\n"
    assert b.readline() == b"tail"
    assert b.readline() == b""


def test_iteration_and_readlines():
    assert list(body_of([b"a\nb", b"\nc"])) == [b"a\n", b"b\n", b"c"]
    assert body_of([b"a\nb\n"]).readlines() == [b"a\n", b"b\n"]


def test_no_body_reads_nothing_without_pulling():
    def pull(want):
        raise AssertionError("must not pull")
    assert RequestBody(pull, has_body=False).read() == b""


def test_the_shared_input_of_bodyless_requests_stays_empty_whatever_is_asked_of_it():
    # (one object serves every request without a body: nothing an app does may change it)
    state = [getattr(NO_BODY, name) for name in RequestBody.__slots__]
    buf = bytearray(b"xyz")
    assert NO_BODY.read() == NO_BODY.read(5) == NO_BODY.read(None) == b""
    assert NO_BODY.readline() == NO_BODY.readline(3) == b""
    assert NO_BODY.readlines() == list(NO_BODY) == []
    assert NO_BODY.readinto(buf) == 0 and buf == b"xyz"
    assert [getattr(NO_BODY, name) for name in RequestBody.__slots__] == state


@given(st.lists(st.binary(min_size=1, max_size=20), max_size=10), st.lists(st.integers(-1, 25), max_size=20))
def test_any_mix_of_reads_returns_the_body_in_order(pieces, sizes):
    b = body_of(pieces)
    out = b""
    for size in sizes:
        out += b.read(size) if size % 2 else b.readline(size)
    out += b.read()
    assert out == b"".join(pieces)


class ReferenceBody:
    """The plain model of wsgi.input: one growing buffer (quadratic, but obviously right)."""

    def __init__(self, pull):
        self._pull = pull
        self._buf = b""
        self._done = False

    def _more(self):
        if self._done:
            return False
        data = self._pull()
        if not data:
            self._done = True
            return False
        self._buf += data
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            while self._more():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._more():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size=-1):
        size = -1 if size is None else size
        while b"\n" not in self._buf and (size < 0 or len(self._buf) < size) and self._more():
            pass
        idx = self._buf.find(b"\n")
        end = len(self._buf) if idx < 0 else idx + 1
        if 0 <= size < end:
            end = size
        data, self._buf = self._buf[:end], self._buf[end:]
        return data

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def feed(self, data):
        self._buf += data


class Pieces:
    """pull() over a list of pieces, counting the calls (a read must not pull ahead)."""

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.calls = 0

    def __call__(self, want=-1):
        self.calls += 1
        return self.pieces.pop(0) if self.pieces else b""


def apply(body, op):
    kind, arg = op
    if kind == "read":
        return body.read(arg)
    if kind == "readline":
        return body.readline(arg)
    if kind == "readlines":
        return body.readlines(arg)
    if kind == "readinto":
        buf = bytearray(b"?" * arg)
        n = body.readinto(buf)
        return n, bytes(buf)
    if kind == "next":
        try:
            return next(body)
        except StopIteration:
            return "stop"
    body.feed(arg)
    return None


piece = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\x00", b"\n"))
size_arg = st.one_of(st.none(), st.integers(-2, 30))
ops = st.lists(st.one_of(
    st.tuples(st.just("read"), size_arg),
    st.tuples(st.just("readline"), size_arg),
    st.tuples(st.just("readlines"), st.integers(-1, 30)),
    st.tuples(st.just("readinto"), st.integers(0, 30)),
    st.tuples(st.just("next"), st.none()),
    st.tuples(st.just("feed"), piece),
), max_size=25)


@given(st.lists(piece, max_size=12), ops)
def test_same_answers_and_same_pulls_as_the_plain_model(pieces, script):
    """Every call answers what the one-buffer model answers, and pulls no more than it does
    (a pull can wait on the client or send 100 Continue: it happens only when needed)."""
    mine, model = Pieces(pieces), Pieces(pieces)
    body, ref = RequestBody(mine), ReferenceBody(model)
    for op in script + [("read", -1)]:
        assert apply(body, op) == apply(ref, op), op
        assert mine.calls == model.calls, op


class Socket:
    """A body still in the socket, as the connection reads it past the parser: ``pull_into``
    receives straight into the reader's buffer (at most ``segment`` bytes a call, as TCP
    segments arrive), ``pull`` receives a piece; ``head`` is what came with the request head
    (fed to the body before the app reads, as the connection does)."""

    def __init__(self, head, rest, segment):
        self.head = head
        self.rest = rest
        self.segment = segment
        self.direct = 0   # bytes received straight into the reader's buffer

    def pull(self, want=-1):
        n = min(self.segment, len(self.rest) if want < 0 else want)
        data, self.rest = self.rest[:n], self.rest[n:]
        return data

    def pull_into(self, view):
        n = min(self.segment, len(view), len(self.rest))
        view[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        self.direct += n
        return n


@given(st.binary(max_size=40), st.binary(max_size=200), st.integers(1, 50),
       st.lists(st.tuples(st.sampled_from(["read", "readline", "readinto"]), st.integers(-1, 70)),
                max_size=30))
def test_readinto_receives_straight_into_the_buffer_in_order(head, rest, segment, script):
    """readinto gets the bytes that came with the head first, then the rest straight from the
    socket into the app's buffer (pull_into), mixed with reads in any order: the body in order,
    and each readinto fills its buffer unless the body ends."""
    sock = Socket(head, rest, segment)
    body = RequestBody(sock.pull, True, sock.pull_into)
    body.feed(head)
    out = b""
    for kind, n in script + [("read", -1)]:
        if kind == "readinto":
            buf = bytearray(max(n, 0))
            k = body.readinto(buf)
            assert k == len(buf) or sock.rest == b""
            out += bytes(buf[:k])
        else:
            out += body.read(n) if kind == "read" else body.readline(n)
    assert out == head + rest
    if rest and script and script[0][0] == "readinto" and script[0][1] > len(head):
        assert sock.direct > 0  # the first readinto took the rest of its buffer from the socket


def test_readinto_accepts_any_writable_buffer():
    import array
    body = body_of([b"abcdefgh"])
    words = array.array("H", [0, 0])
    assert body.readinto(words) == 4 and words.tobytes() == b"abcd"
    view = memoryview(bytearray(3))
    assert body.readinto(view) == 3 and bytes(view) == b"efg"
    assert body.readinto(bytearray(5)) == 1 and body.readinto(bytearray(5)) == 0


def test_fed_pieces_come_before_the_pulled_ones_without_pulling():
    pull = Pieces([b"C\n"])
    b = RequestBody(pull)
    b.feed(b"A")
    b.feed(b"B\nx")
    assert b.readline() == b"AB\n" and pull.calls == 0
    assert b.read(1) == b"x" and pull.calls == 0
    assert b.read() == b"C\n"


# --- cost: a 1 GiB body -------------------------------------------------------------------------
# wsgi.input over a 1 GiB body: memory bounded by what the app asks for plus one piece, and
# bytes allocated linear in the body size, whatever the app's way of reading.
#
# Nothing here is timed. A ``Meter`` reads tracemalloc at every step (each pull of a piece, each
# call the app makes): the highest level reached during a step above the level it started from is
# what that step allocated at least, and a step that builds bytes writes every byte it allocates.
# Summed over the run, that is a lower bound on the bytes the reading copied; it must stay within
# a few times the body. The peak over the run bounds the memory. An implementation that grows a
# buffer by concatenation, or copies the unread rest after each line, allocates tens to hundreds
# of times the body and fails at the first step past the bound, long before it reaches the end.

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PIECE = 64 * KiB            # what one recv() gives the parser (closing.RECV_SIZE)
ALLOCATED_PER_BODY_BYTE = 3  # the piece as received, the bytes returned to the app, one spare
SLACK = 4 * MiB             # the interpreter's own allocations while the test runs


class Meter:
    """Allocation bounds checked as the reading goes (see the module docstring)."""

    def __init__(self, body_size, peak_limit):
        self.allocated = 0
        self.peak = 0
        self.pulled = 0             # body bytes handed to the reader so far
        self.allocated_limit = ALLOCATED_PER_BODY_BYTE * body_size + SLACK
        self.peak_limit = peak_limit
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        self.level = self.base

    def step(self):
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        self.allocated += peak - self.level
        self.level = current
        self.peak = max(self.peak, peak - self.base)
        assert self.peak <= self.peak_limit, (
            f"memory reached {self.peak / MiB:.1f} MiB (limit {self.peak_limit / MiB:.1f} MiB)")
        assert self.allocated <= self.allocated_limit, (
            f"allocated {self.allocated / MiB:.0f} MiB after {self.pulled / MiB:.0f} MiB of body"
            f" (limit {self.allocated_limit / MiB:.0f} MiB for the whole body)")

    def stop(self):
        self.step()
        tracemalloc.stop()


class Source:
    """pull(): a body of ``size`` bytes, made of lines of ``line`` bytes, in fresh PIECE-sized
    pieces as recv() would give them (lines straddle the pieces)."""

    def __init__(self, size, line):
        self.line = line
        # made before the meter starts: the test's own data is not the reader's memory
        self.template = (b"x" * (line - 1) + b"\n") * (PIECE // line + 2)
        self.left = size
        self.offset = 0
        self.meter = None

    def __call__(self, want=-1):
        self.meter.step()
        n = min(PIECE, self.left)
        if not n:
            return b""
        start = self.offset % self.line
        data = self.template[start:start + n]
        self.offset += n
        self.left -= n
        self.meter.pulled += n
        return data


def consume(body, how, meter):
    """Read the whole body the app's way; return (bytes read, bytes of the longest result)."""
    total = longest = 0
    kind, arg = how
    if kind == "read":
        while True:
            meter.step()
            data = body.read(arg)
            if not data:
                break
            total += len(data)
            longest = max(longest, len(data))
    elif kind == "readline":
        while True:
            meter.step()
            data = body.readline(arg)
            if not data:
                break
            total += len(data)
            longest = max(longest, len(data))
    elif kind == "iter":
        for data in body:
            meter.step()
            total += len(data)
            longest = max(longest, len(data))
    elif kind == "readlines":
        while True:
            meter.step()
            lines = body.readlines(arg)
            if not lines:
                break
            n = sum(map(len, lines))
            total += n
            longest = max(longest, n)
            del lines
    return total, longest


# (way of reading, line length in the body, the most the app asks for in one call, body size)
# A quarter GiB where the app makes one call per short line, to keep the test's own time down
# (the bounds are checked at every step, so the size only has to be many pieces).
WAYS = [
    (("read", PIECE), 10_000, PIECE, GiB),
    (("read", 16 * KiB + 1), 10_000, 16 * KiB + 1, GiB // 4),
    (("read", MiB + 1), 10_000, MiB + 1, GiB),
    (("readline", -1), 10_000, 10_000, GiB // 4),
    (("readline", 8192), 100_000, 8192, GiB // 4),     # lines straddling pieces, cut by size
    (("iter", None), 10_000, 10_000, GiB // 4),
    (("readlines", MiB), 10_000, MiB + 10_000, GiB // 4),
    (("readline", -1), 4 * MiB, 4 * MiB, GiB),         # lines longer than many pieces
    (("read", -1), 10_000, 64 * MiB, 64 * MiB),         # the app asks for all of it at once
]


@pytest.mark.parametrize("how,line,asked,size", WAYS, ids=repr)
def test_reading_a_large_body_is_linear_and_bounded(how, line, asked, size):
    source = Source(size, line)
    # the app holds what one call returned while it makes the next
    meter = source.meter = Meter(size, peak_limit=2 * asked + 2 * PIECE + SLACK)
    body = RequestBody(source)
    try:
        total, longest = consume(body, how, meter)
    finally:
        meter.stop()
    assert total == size
    assert longest == asked or how[0] == "readlines"
    assert meter.allocated >= size  # the meter saw the pieces go by (it measures something)


class Stalls(Pieces):
    """Pieces whose pull raises once, at the given call (a client that stalls mid-body)."""

    def __init__(self, pieces, fail_at):
        super().__init__(pieces)
        self.fail_at = fail_at

    def __call__(self, want=-1):
        if self.calls + 1 == self.fail_at:
            self.calls += 1
            self.fail_at = None
            raise TimeoutError("stalled")
        return super().__call__()


@given(st.lists(piece, max_size=8), ops, st.integers(1, 8))
def test_a_failed_pull_loses_nothing_the_read_had_gathered(pieces, script, fail_at):
    """A pull that raises (a 408 for a stalled body, a disconnect) leaves every byte already
    received unread, as the one-buffer model does: an app that catches it and reads on gets
    the body in order."""
    mine, model = Stalls(pieces, fail_at), Stalls(pieces, fail_at)
    body, ref = RequestBody(mine), ReferenceBody(model)
    for op in script + [("read", -1)]:
        got = expected = None
        try:
            got = apply(body, op)
        except TimeoutError:
            got = "raised"
        try:
            expected = apply(ref, op)
        except TimeoutError:
            expected = "raised"
        assert got == expected, op
        assert mine.calls == model.calls, op
