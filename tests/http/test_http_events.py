"""The parser's events are small fixed objects: slotted, no per-instance __dict__."""

import pytest

from unicornd.http.parser import EndOfMessage, ParserOptions, Request, RequestParser


def events(data):
    p = RequestParser(ParserOptions())
    p.receive_data(data)
    return p.next_event(), p.next_event()


@pytest.mark.parametrize("obj", events(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ids=["Request", "EndOfMessage"])
def test_events_are_slotted(obj):
    assert type(obj) in (Request, EndOfMessage)
    assert not hasattr(obj, "__dict__")
    with pytest.raises(AttributeError):
        obj.not_a_field = 1
