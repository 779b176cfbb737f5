"""``unicornd status``: what each worker of a running server is doing now.

    unicornd status --pid PIDFILE       the master's status socket, PIDFILE.sock (mode 0600)
    unicornd status --socket PATH       a status socket, or a metrics_bind unix: socket
    unicornd status --metrics URL       the metrics_bind endpoint (http://127.0.0.1:9100)

Prints one line per worker: pid, state, requests served, the age of the request being served
(or of the worker while it boots), RSS, the request; with ``max_workers``, first the floor, the
ceiling and the last change of the count with its reason. ``--json`` prints the master's answer.
"""

import argparse
import http.client
import json
import os
import socket
import sys


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _fetch(conn) -> dict:
    try:
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise OSError(f"the master answered {resp.status}")
    return json.loads(body)


def fetch(args) -> dict:
    if args.metrics:
        url = args.metrics.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = url.rpartition(":")
        return _fetch(http.client.HTTPConnection(host.strip("[]"), int(port), timeout=args.timeout))
    path = args.socket
    if path is None:
        try:
            with open(args.pid) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError) as exc:
            raise LookupError(f"no master running for pid file {args.pid} ({exc})") from None
        path = args.pid + ".sock"
    if path.startswith("unix:"):
        path = path[5:]
    return _fetch(_UnixHTTPConnection(path, args.timeout))


def _mib(n) -> str:
    return f"{n / 1048576:.1f} MiB"


def format_table(data: dict) -> str:
    m = data["master"]
    req = data.get("requests", {})
    lines = [f"master {m['pid']} ({m['proc_name']}), unicornd {m['version']}, "
             f"{len(data['workers'])}/{m['workers_target']} {m['worker_class']} workers, "
             f"{sum(req.values())} requests served, RSS {_mib(m['rss'])}"]
    scaling = data.get("scaling")
    if scaling and scaling["enabled"]:
        line = (f"scaling between {scaling['floor']} and {scaling['ceiling']} workers "
                f"(up after {scaling['scale_up_period']:g} s busy, down after "
                f"{scaling['scale_down_period']:g} s spare)")
        last = scaling["last"]
        if last is not None:
            line += (f"; last: {last['direction']} to {last['workers']}, "
                     f"{last['seconds_ago']:g} s ago: {last['reason']}")
        lines.append(line)
    rows = [("PID", "STATE", "REQUESTS", "AGE", "RSS", "REQUEST")]
    for w in data["workers"]:
        state = w["state"] + (" (retiring)" if w["retiring"] else "")
        if w["state"] == "busy":
            age, request = f"{w['request_seconds']:.1f}s", f"{w['method']} {w['path']}"
        elif w["state"] == "booting":
            age, request = f"{w['booted_seconds']:.1f}s", "-"
        else:
            age, request = "-", "-"
        rows.append((str(w["pid"]), state, str(w["requests"]), age, _mib(w["rss"]), request))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append("  ".join(c.ljust(widths[i]) if i in (1,) else c.rjust(widths[i]) if i < 5
                               else c for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="unicornd status", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pid", "-p", metavar="PIDFILE", help="the server's pid file")
    where.add_argument("--socket", "-s", metavar="PATH", help="a status or metrics unix socket")
    where.add_argument("--metrics", "-m", metavar="URL", help="the metrics_bind address")
    p.add_argument("--json", action="store_true", help="print the master's JSON answer")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the master")
    args = p.parse_args(argv)
    try:
        data = fetch(args)
    except LookupError as exc:
        print(f"Error: {exc}: not running?", file=sys.stderr)
        return 1
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print(f"Error: cannot get the status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else format_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
