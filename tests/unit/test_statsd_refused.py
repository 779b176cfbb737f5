"""A refused request (a bad head) is counted in statsd as requests are: gunicorn.requests and
gunicorn.request.status.NNN, without a timer."""

import socket

from unicornd.metrics.statsd import Statsd


def test_refused_request_is_counted_with_its_status():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    try:
        client = Statsd(f"127.0.0.1:{receiver.getsockname()[1]}", prefix="app")
        client.refused(431)
        lines = receiver.recv(65536).decode().split("\n")
        client.close()
    finally:
        receiver.close()
    assert lines == ["app.gunicorn.requests:1|c|@1.0", "app.gunicorn.request.status.431:1|c|@1.0"]
