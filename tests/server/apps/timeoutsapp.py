"""What timeouts the socket handed to the app carries (tests/workers/test_longlived.py)."""

import json
import socket
import struct


def app(environ, start_response):
    sock = environ["gunicorn.socket"]
    rcv = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    snd = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
    body = json.dumps({"timeout": sock.gettimeout(), "kernel_rcv": rcv[0] + rcv[1] / 1e6,
                       "kernel_snd": snd[0] + snd[1] / 1e6}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
