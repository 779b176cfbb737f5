"""wsgi.input semantics (unicornd.wsgi.RequestBody) over a scripted source of body pieces."""

from hypothesis import given, strategies as st

from unicornd.wsgi import RequestBody


def body_of(pieces):
    it = iter(pieces)
    return RequestBody(lambda: next(it, b""))


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
    def pull():
        raise AssertionError("must not pull")
    assert RequestBody(pull, has_body=False).read() == b""


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

    def feed(self, data):
        self._buf += data


class Pieces:
    """pull() over a list of pieces, counting the calls (a read must not pull ahead)."""

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.calls = 0

    def __call__(self):
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


def test_fed_pieces_come_before_the_pulled_ones_without_pulling():
    pull = Pieces([b"C\n"])
    b = RequestBody(pull)
    b.feed(b"A")
    b.feed(b"B\nx")
    assert b.readline() == b"AB\n" and pull.calls == 0
    assert b.read(1) == b"x" and pull.calls == 0
    assert b.read() == b"C\n"
