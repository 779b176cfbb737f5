"""wsgi.input end to end, in every worker class (issue 16): a Content-Length body is received
from the socket straight into what the app reads (BodyReader.pull, pull_into), the
bytes that came with the head first; these check what must hold whichever way a body arrives.

- a body sent in many small TCP segments is read whole and in order by read(n), readline(n)
  and readinto for any n, each call returning all it is asked for until the body ends;
- the request right behind a body, in the same segment, is still served (the direct reads
  never go past the body);
- 100-continue is sent before the direct read waits for the body;
- a body that stalls in the middle of a direct read gets its 408 at header_timeout.
"""

import hashlib
import json
import random
import socket
import time

import pytest
from workers_support import KEEPS_ALIVE, ResponseReader, server_args, wait_eof
from support import Server

HEADER_TIMEOUT = 2
# Lines of random length (readline has lines to find), random bytes: 300 KB, several socket
# reads' worth.
_rng = random.Random(16)
BODY = b"".join(_rng.randbytes(_rng.randrange(0, 3000)) + b"\n" for _ in range(200))
SEGMENT = 1000


@pytest.fixture(scope="module")
def server(worker_class):
    args = server_args(worker_class, "-w", "1", "--header-timeout", str(HEADER_TIMEOUT))
    with Server(*args, "bodyapp:app") as srv:
        yield srv


def expected(body):
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "short": 0}


def post(path, body, *headers, length=None):
    """A POST of ``body``; ``length``: the Content-Length said, when not the body's."""
    length = len(body) if length is None else length
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {length}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


WAYS = [("read", 1), ("read", 1000), ("read", 65536), ("read", 65537), ("read", 1 << 20),
        ("read", -1), ("readline", -1), ("readline", 100), ("readinto", 4096),
        ("readinto", 1 << 20)]


@pytest.mark.parametrize("how,n", WAYS, ids=[f"{how}({n})" for how, n in WAYS])
def test_a_body_in_many_segments_is_read_whole_and_the_next_request_served(server, worker_class, how, n):
    body = BODY if n != 1 else BODY[:20000]  # (one byte a call: a shorter body keeps it quick)
    request = post(f"/?how={how}&n={n}", body)
    head_len = request.index(b"\r\n\r\n") + 4
    behind = post("/?how=read&n=10", b"behind") if KEEPS_ALIVE[worker_class] else b""
    with socket.create_connection(server.address, timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request[:head_len])
        data = request[head_len:] + behind  # the next request in the body's last segment
        for i in range(0, len(data), SEGMENT):
            s.sendall(data[i:i + SEGMENT])
        reader = ResponseReader(s)
        status, _, answer = reader.read()
        assert status == 200, answer
        assert json.loads(answer) == expected(body)
        if behind:
            status, _, answer = reader.read()
            assert (status, json.loads(answer)) == (200, expected(b"behind"))


@pytest.mark.parametrize("how", ["read", "readinto"])
def test_100_continue_comes_before_the_body_is_waited_for(server, how):
    body = BODY[:100000]
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(post(f"/?how={how}&n=65536", b"", "Expect: 100-continue", length=len(body)))
        reader = ResponseReader(s)
        status, _, _ = reader.read()
        assert status == 100  # the client sends nothing before it
        s.sendall(body)
        status, _, answer = reader.read()
        assert (status, json.loads(answer)) == (200, expected(body))


@pytest.mark.parametrize("how", ["read", "readinto"])
def test_a_body_that_stalls_mid_read_gets_408_at_header_timeout(server, how):
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(post(f"/?how={how}&n=65536", b"x" * 10, length=100000))
        s.sendall(b"y" * 5000)  # (after the head: read past the parser, if the app reads by then)
        last_byte = time.monotonic()
        status, headers, answer = ResponseReader(s).read()
        waited = time.monotonic() - last_byte
        assert status == 408 and b"stalled" in answer
        assert headers.get("connection") == "close"
        assert waited >= HEADER_TIMEOUT - 0.5  # not before the client was silent that long
        assert waited < HEADER_TIMEOUT + 10
        assert wait_eof(s, 10) == b""


@pytest.fixture(scope="module")
def tls_server(worker_class, tmp_path_factory):
    import trustme  # (the test extra has it: tests/deploy/test_tls.py)
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(tmp / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp / "cert.pem")
    ca.cert_pem.write_to_path(tmp / "ca.pem")
    args = server_args(worker_class, "-w", "1", "--header-timeout", str(HEADER_TIMEOUT),
                       "--certfile", str(tmp / "cert.pem"), "--keyfile", str(tmp / "key.pem"))
    with Server(*args, "bodyapp:app") as srv:
        yield srv, str(tmp / "ca.pem")


@pytest.mark.parametrize("how", ["read", "readinto"])
def test_over_tls_a_body_in_many_segments_is_read_whole(tls_server, worker_class, how):
    """The direct reads on a TLS socket (its recv and recv_into give decrypted bytes)."""
    import ssl
    srv, ca = tls_server
    context = ssl.create_default_context(cafile=ca)
    behind = post("/?how=read&n=10", b"behind") if KEEPS_ALIVE[worker_class] else b""
    with context.wrap_socket(socket.create_connection(srv.address, timeout=30),
                             server_hostname="127.0.0.1") as s:
        request = post(f"/?how={how}&n=65536", BODY) + behind
        for i in range(0, len(request), 4 * SEGMENT):
            s.sendall(request[i:i + 4 * SEGMENT])
        reader = ResponseReader(s)
        status, _, answer = reader.read()
        assert (status, json.loads(answer)) == (200, expected(BODY))
        if behind:
            status, _, answer = reader.read()
            assert (status, json.loads(answer)) == (200, expected(b"behind"))
