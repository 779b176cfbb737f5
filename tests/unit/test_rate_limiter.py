"""The rate limit on refused-request warnings (a flood of bad requests cannot fill the disk)."""

from unicornd.logging import RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_at_most_n_lines_per_window_then_the_count_of_those_left_out():
    clock = Clock()
    limit = RateLimiter(3, 60.0, clock)
    assert [limit.allow() for _ in range(3)] == [(True, 0)] * 3
    assert [limit.allow() for _ in range(5)] == [(False, 0)] * 5
    clock.now += 59.9
    assert limit.allow() == (False, 0)
    clock.now += 0.2  # a new window: the first line says how many were held back
    assert limit.allow() == (True, 6)
    assert limit.allow() == (True, 0)
