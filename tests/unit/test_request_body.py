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
