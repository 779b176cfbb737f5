#!/usr/bin/env python3
"""Syscalls per request: strace -c on one worker while it answers N requests.

For each worker class, unicornd is started with one worker (`-w 1`, so every
connection lands on it) on the hello app; a client sends --warmup requests on
one keep-alive connection, then `strace -c -f -p WORKER` is attached (every
thread of the worker), the same connection sends --requests more, strace is
detached and its counts are divided by the number of requests.  The floor
(../shared/bench/py_floor.py, one worker) is measured the same way.

The sync worker closes the connection after each response: the client then
opens a new one per request, so sync's counts include accept and close.  What
a worker does with no request (heartbeat, ticks) is measured separately for
--idle seconds and shown as syscalls/s; it is not subtracted.

Loopback only, bounded in time.  Needs Debian's strace (benchmarks/setup.sh).

    python3 benchmarks/syscalls.py --classes gthread,gevent,eventlet,sync --requests 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness's process and server helpers)

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Client:
    """Sequential keep-alive GETs; reconnects when the server closes."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.buf = b""
        self.connections = 0

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.connections += 1

    def get(self, retry: bool = True) -> None:
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(REQUEST)
            while b"\r\n\r\n" not in self.buf:
                self._recv()
        except (RuntimeError, ConnectionError):
            # The server closed a connection we meant to reuse without saying
            # "Connection: close": open a new one, once.
            if not retry or self.buf:
                raise
            self.close()
            return self.get(retry=False)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer {head[:100]!r}")
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            rest += self._recv_more()
        self.buf = rest[length:]
        if close:
            self.close()

    def _recv(self):
        self.buf += self._recv_more()

    def _recv_more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("server closed the connection mid-response")
        return data

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def wait_for(cond, deadline_s: float, what: str):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def all_traced(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                traced = any(line.startswith("TracerPid:") and line.split()[1] != "0"
                             for line in f)
        except OSError:
            return False
        if not traced:
            return False
    return True


def parse_strace_c(path: str) -> dict[str, int]:
    """{syscall: calls} from strace -c's table (the total row left out)."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or not parts[0][0].isdigit():
                continue
            name = parts[-1]
            if name == "total":
                continue
            counts[name] = int(parts[3])
    return counts


def traced(strace: str, pid: int, action, outdir: str, label: str) -> dict[str, int]:
    """Run action() with strace -c -f attached to pid; returns the counts."""
    out = os.path.join(outdir, f"{label}.strace")
    proc = subprocess.Popen([strace, "-c", "-f", "-o", out, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: all_traced(pid), 10, f"strace to attach to {pid}")
        action()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return parse_strace_c(out)


def measure(name: str, argv_for, strace: str, args, logdir: str) -> dict:
    server = run.Server(name, argv_for, b"Hello, World!\n", logdir)
    try:
        server.wait_ready(args.ready_timeout)
        workers = wait_for(lambda: children(server.proc.pid), 10, f"{name}'s worker")
        if len(workers) != 1:
            raise RuntimeError(f"{name}: expected one worker, found {workers}")
        wpid = workers[0]
        client = Client(server.port)
        for _ in range(args.warmup):
            client.get()
        idle = traced(strace, wpid, lambda: time.sleep(args.idle), logdir, f"{name}-idle")
        conns0 = client.connections
        t0 = time.monotonic()

        def send():
            for _ in range(args.requests):
                client.get()
        counts = traced(strace, wpid, send, logdir, name)
        elapsed = time.monotonic() - t0
        client.close()
        return {"name": name, "counts": counts, "idle": idle, "elapsed": elapsed,
                "connections": client.connections - conns0}
    finally:
        server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", default="gthread,gevent,eventlet,sync")
    p.add_argument("--threads", type=int, default=4, help="--threads for gthread")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--idle", type=float, default=1.0,
                   help="seconds of idle tracing per server")
    p.add_argument("--no-floor", action="store_true", help="skip the floor")
    p.add_argument("--unicornd-cmd", help="command for unicornd (shell words)")
    p.add_argument("--top", type=int, default=6, help="syscalls listed per class")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    args = p.parse_args(argv)

    strace = shutil.which("strace")
    if not strace:
        sys.exit("strace not found: install Debian's strace (apt-get install strace, "
                 "or run benchmarks/setup.sh)")
    if not args.no_floor and not os.path.exists(run.FLOOR):
        sys.exit(f"the pure-Python floor is missing: {run.FLOOR} "
                 "(../shared/bench/py_floor.py beside the repository); or pass --no-floor")
    if args.unicornd_cmd:
        import shlex
        ucmd = shlex.split(args.unicornd_cmd)
    else:
        ucmd = (["env", f"PYTHONPATH={run.REPO}:{run.APPS_DIR}"]
                + run.default_cmd("unicornd"))

    signal.signal(signal.SIGTERM, run._on_signal)
    logdir = tempfile.mkdtemp(prefix="unicornd-syscalls-")
    print(f"# syscalls per request  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# command: {' '.join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"# unicornd: {' '.join(ucmd)}  (tree {run.REPO} at {run.git_rev()})")
    print(f"# {args.requests} GET / after {args.warmup} warm-up, strace -c -f -p WORKER, "
          f"-w 1, hello app\n", flush=True)
    results = []
    try:
        for k in run.csv(args.classes):
            extra = ["--threads", str(args.threads)] if k == "gthread" else []

            def argv_for(port, k=k, extra=extra):
                return ucmd + ["-w", "1", "-k", k, "-b", f"127.0.0.1:{port}"] + extra \
                    + ["hello:app"]
            results.append(measure(f"unicornd:{k}", argv_for, strace, args, logdir))
            print(f"  measured unicornd:{k}", flush=True)
        if not args.no_floor:
            def floor_argv(port):
                return [sys.executable, run.FLOOR, str(port), "1"]
            results.append(measure("floor", floor_argv, strace, args, logdir))
            print("  measured floor", flush=True)
    except RuntimeError as e:
        print(f"ERROR: {e}\n(logs in {logdir})", file=sys.stderr)
        return 2
    finally:
        run.cleanup_all()

    rows = []
    for r in results:
        total = sum(r["counts"].values())
        top = sorted(r["counts"].items(), key=lambda kv: -kv[1])[:args.top]
        rows.append([r["name"], args.requests, r["connections"],
                     f"{total / args.requests:.2f}",
                     f"{sum(r['idle'].values()) / args.idle:.0f}",
                     ", ".join(f"{n} {c / args.requests:.2f}" for n, c in top)])
    print()
    run.print_table(["server", "requests", "connections", "syscalls/request",
                     "idle syscalls/s", "most frequent, per request"], rows)
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        run.cleanup_all()
        sys.exit(130)
