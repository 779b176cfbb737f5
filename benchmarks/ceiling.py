"""The ceiling of the 50 ms sleep scenario: the least server a library allows.

Not unicornd: a bare keep-alive loop (no HTTP parsing beyond finding the end of a head,
no WSGI, no logging) that sleeps 50 ms per request with the library's own sleep, forked
into N processes sharing one listening socket. What wrk measures against it is what the
library's scheduler and timers allow on this machine; a real server can only come close.

    python3 benchmarks/ceiling.py --library gevent --workers 2 --port 8100 &
    wrk -t2 -c200 -d5s --latency http://127.0.0.1:8100/

``--library threads`` (a thread per connection, ``time.sleep``) shows the limit without a
greenlet hub: the kernel's own timers. Run it with the python of a venv that has the
library (``~/.cache/unicornd-bench/gunicorn27/bin/python`` has gevent,
``.../gunicorn23/bin/python`` eventlet). Loopback only; stop it with Ctrl-C or SIGTERM.
"""

import argparse
import os
import signal
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nslept 50ms\n"
SLEEP_SECONDS = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=("gevent", "eventlet", "threads"), required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    if args.library == "gevent":
        from gevent import monkey
        monkey.patch_all()
        import gevent
        spawn, sleep, after_fork = gevent.spawn_raw, gevent.sleep, gevent.reinit
    elif args.library == "eventlet":
        import eventlet
        import eventlet.hubs
        eventlet.monkey_patch()
        spawn, sleep, after_fork = eventlet.spawn_n, eventlet.sleep, eventlet.hubs.use_hub
    else:
        import threading
        import time

        def spawn(fn, *a):
            threading.Thread(target=fn, args=a, daemon=True).start()
        sleep, after_fork = time.sleep, (lambda: None)
    import socket

    def serve(conn):
        pending = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    _, pending = pending.split(b"\r\n\r\n", 1)
                    sleep(SLEEP_SECONDS)
                    conn.sendall(RESPONSE)
        except OSError:
            return  # wrk closes its connections at the end of a run
        finally:
            conn.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(2048)
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            after_fork()
            while True:
                conn, _ = listener.accept()
                spawn(serve, conn)
        children.append(pid)

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{args.library} ceiling server, {args.workers} processes, http://127.0.0.1:{args.port}/",
          flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
