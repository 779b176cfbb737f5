"""Metrics: statsd from the workers, Prometheus text and live status from the master.

- ``statsd``: gunicorn's statsd metrics (same names), sent by each worker per request and by
  the master (workers gauge, backlog), plus log counters from a handler on the error log.
- ``prometheus``: the text exposition (format 0.0.4) of the scoreboard's counters.
- ``endpoint``: the master's small non-blocking HTTP server for ``metrics_bind`` and the
  owner-only status socket next to the pid file; restart counts by reason.

See docs/metrics.md.
"""
