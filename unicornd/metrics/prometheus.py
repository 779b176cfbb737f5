"""The Prometheus text exposition format (0.0.4) of what the master knows.

Everything comes from the scoreboard (shared memory) and the master's own counters: no
multiprocess directory, no client library. Counters of workers that ended are kept by the
scoreboard (folded in when their slot is released), so totals never go backwards while the
master runs.
"""

import socket
import struct

from unicornd.master.scoreboard import BOOTING, BUSY, IDLE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESTART_REASONS = ("timeout", "recycle-max_requests", "recycle-memory", "crashed", "reload")
_STATES = ((IDLE, "idle"), (BUSY, "busy"), (BOOTING, "booting"))
_TCP_INFO = struct.Struct("=8B24I")  # struct tcp_info's start (include/uapi/linux/tcp.h)
_TCP_LISTEN = 10


def listen_queue(sock):
    """(connections waiting to be accepted, backlog limit) of a listening TCP socket, from
    Linux's TCP_INFO (tcpi_unacked / tcpi_sacked of a LISTEN socket), or None."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    info = _TCP_INFO.unpack(raw)
    if info[0] != _TCP_LISTEN:
        return None
    return info[8 + 4], info[8 + 5]  # tcpi_unacked, tcpi_sacked


def _num(value) -> str:
    if isinstance(value, float):
        if value == float("inf"):
            return "+Inf"
        return repr(value)
    return str(value)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(totals, workers_by_state, restarts, listeners, target_workers, scaling=None) -> str:
    """``totals``: scoreboard Counters (live + ended); ``workers_by_state``: {state: count};
    ``restarts``: {reason: count}; ``listeners``: [(url, socket)]; ``scaling``: the
    master's Autoscaler (max_workers), shown when it is on."""
    out = []
    add = out.append
    add("# HELP unicornd_requests_total Requests served by all workers (live and ended), by "
        "status class; \"none\": ended without a response head.")
    add("# TYPE unicornd_requests_total counter")
    for status, count in totals.by_status().items():
        add(f'unicornd_requests_total{{status="{status}"}} {count}')
    add("# HELP unicornd_request_duration_seconds Time from a request's head to its last byte "
        "sent.")
    add("# TYPE unicornd_request_duration_seconds histogram")
    count = 0
    for bound, count in totals.cumulative_buckets():
        add(f'unicornd_request_duration_seconds_bucket{{le="{_num(float(bound))}"}} {count}')
    add(f"unicornd_request_duration_seconds_sum {_num(float(totals.duration_sum))}")
    add(f"unicornd_request_duration_seconds_count {count}")
    add("# HELP unicornd_workers Worker processes, by state.")
    add("# TYPE unicornd_workers gauge")
    for state, name in _STATES:
        add(f'unicornd_workers{{state="{name}"}} {workers_by_state.get(state, 0)}')
    add("# HELP unicornd_workers_target The number of workers the master keeps running.")
    add("# TYPE unicornd_workers_target gauge")
    add(f"unicornd_workers_target {target_workers}")
    if scaling is not None and scaling.enabled:
        add("# HELP unicornd_workers_floor The fewest workers the master scales down to "
            "(workers, moved by TTIN/TTOU).")
        add("# TYPE unicornd_workers_floor gauge")
        add(f"unicornd_workers_floor {scaling.floor}")
        add("# HELP unicornd_workers_ceiling The most workers the master scales up to "
            "(max_workers).")
        add("# TYPE unicornd_workers_ceiling gauge")
        add(f"unicornd_workers_ceiling {scaling.ceiling}")
        add("# HELP unicornd_worker_scaling_total Changes of the worker count, by direction and "
            "reason: busy (all workers busy for scale_up_period), spare (the load fitted on one "
            "fewer for scale_down_period), ttin, ttou.")
        add("# TYPE unicornd_worker_scaling_total counter")
        for (direction, reason), count in scaling.changes.items():
            add(f'unicornd_worker_scaling_total{{direction="{direction}",reason="{reason}"}} '
                f'{count}')
    add("# HELP unicornd_worker_restarts_total Workers replaced, by reason.")
    add("# TYPE unicornd_worker_restarts_total counter")
    for reason in RESTART_REASONS:
        add(f'unicornd_worker_restarts_total{{reason="{reason}"}} {restarts.get(reason, 0)}')
    queues = [(url, listen_queue(sock)) for url, sock in listeners]
    queues = [(url, q) for url, q in queues if q is not None]
    if queues:
        add("# HELP unicornd_listen_queue Connections waiting in a listening socket's accept "
            "queue (Linux TCP_INFO).")
        add("# TYPE unicornd_listen_queue gauge")
        for url, (queued, _) in queues:
            add(f'unicornd_listen_queue{{listener="{_label(url)}"}} {queued}')
        add("# HELP unicornd_listen_queue_limit The accept queue's limit (the effective backlog).")
        add("# TYPE unicornd_listen_queue_limit gauge")
        for url, (_, limit) in queues:
            add(f'unicornd_listen_queue_limit{{listener="{_label(url)}"}} {limit}')
    return "\n".join(out) + "\n"
