"""wsgi.input over a 1 GiB body: memory bounded by what the app asks for plus one piece, and
bytes allocated linear in the body size, whatever the app's way of reading.

Nothing here is timed. A ``Meter`` reads tracemalloc at every step (each pull of a piece, each
call the app makes): the highest level reached during a step above the level it started from is
what that step allocated at least, and a step that builds bytes writes every byte it allocates.
Summed over the run, that is a lower bound on the bytes the reading copied; it must stay within
a few times the body. The peak over the run bounds the memory. An implementation that grows a
buffer by concatenation, or copies the unread rest after each line, allocates tens to hundreds
of times the body and fails at the first step past the bound, long before it reaches the end.
"""

import tracemalloc

import pytest

from unicornd.wsgi import RequestBody

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PIECE = 64 * KiB            # what one recv() gives the parser (connection.RECV_SIZE)
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

    def __call__(self):
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
