"""A WebSocket echo endpoint with simple-websocket: ``pip install simple-websocket``.

``unicornd -k gthread --threads 16 examples.websocket_app:app`` (or ``-k gevent``).

simple-websocket takes the client socket from ``environ["gunicorn.socket"]``, which unicornd
provides (also as ``unicornd.socket``), answers the handshake itself and then owns the
connection: unicornd writes nothing more on it, sets none of its timeouts on it (``timeout``
does not cut a websocket), and when the app returns waits briefly for the close to complete
before closing it. A WebSocket holds its connection (and, with ``gthread``, one thread; with
``sync``, a whole worker) for its whole life: size ``threads`` (gthread) or
``worker_connections`` (gevent) for the open sockets. docs/workers.md, "Websockets and
taken-over sockets".
"""

from simple_websocket import ConnectionClosed, Server

INDEX = b"""<!doctype html>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onmessage = (e) => document.body.append(e.data, document.createElement("br"));
ws.onopen = () => ws.send("hello");
</script>
"""


def app(environ, start_response):
    if environ.get("PATH_INFO") != "/ws":
        start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(INDEX)))])
        return [INDEX]
    ws = Server(environ)
    try:
        while True:
            message = ws.receive()
            ws.send(message)
    except ConnectionClosed:
        pass
    # The socket is closed by now: this response only ends the request for the server
    # (its access log shows the status), nothing more reaches the client.
    start_response("101 Switching Protocols", [])
    return []
