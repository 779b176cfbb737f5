"""A client that goes away mid-response or mid-upload: the iterable is closed, one debug line,
no traceback, and the worker serves the next connection."""

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import Server, parse_response, raw_request, wait_for  # noqa: E402


def test_gone_mid_response_and_mid_upload(tmp_path):
    marker = tmp_path / "closed"
    with Server("-w", "1", "--log-level", "debug", "-b", "127.0.0.1:0", "testapp:app") as srv:
        for _ in range(3):
            with socket.create_connection(srv.address) as s:  # mid-response
                s.sendall(f"GET /closing-big HTTP/1.1\r\nHost: x\r\nX-Marker: {marker}\r\n\r\n".encode())
                s.recv(1024)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        wait_for(lambda: marker.exists() and marker.read_text().count("closed") == 3, 10)
        for _ in range(3):
            with socket.create_connection(srv.address) as s:  # mid-upload
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        assert parse_response(raw_request(srv.address, b"GET /hello HTTP/1.0\r\n\r\n"))[2] == b"Hello, World!\n"
        wait_for(lambda: srv.log.count("went away") == 6, 10)  # one line each, no storm
        log = srv.log
        assert "Traceback" not in log, log
        assert log.count("Booting worker") == 1  # the worker lived on
