"""When to add or retire a worker (``max_workers``): a decision from how busy the workers are.

Pure, as the lifecycle model is: the model feeds it samples of the scoreboard at its ticks
(:meth:`Autoscaler.observe`) and asks it, in ``Lifecycle.step``, whether to move
(:meth:`Autoscaler.decide`). It keeps no clock of its own and does no I/O.

What it measures. Each worker keeps in its scoreboard slot the integral over time of its
requests in flight (request-seconds). Between two samples a worker's *load* is what that
integral grew by, divided by the time between the samples and by the worker's capacity (the
requests it runs at once: 1 for ``sync``, ``threads`` for ``gthread``, ``worker_connections``
for ``gevent`` and ``eventlet``): the share of its capacity in use, on average, from 0 to 1.
An integral and not a glance at the slot, so that a ``sync`` worker serving short requests
back to back counts as busy though a glance may find it between two requests, and a worker
that served one request in a quiet second does not count as idle.

- A sample is *busy* when every serving worker's load is at least ``BUSY_LOAD``.
- A sample has *spare* capacity when the summed load would fit on one worker fewer, each at
  most ``SPARE_LOAD`` busy: ``sum <= (n - 1) * SPARE_LOAD``.
- Busy samples back to back for ``scale_up_period``: one worker more (up to the ceiling).
- Spare samples back to back for ``scale_down_period``: the least busy worker retires
  (gracefully; never below the floor).

The two thresholds are far apart (hysteresis): a count that a busy run raised is not lowered
by the same load. After any change both runs start again, so the count moves at most once
per period; while a worker boots, or a reload rolls, samples count for nothing.
"""

BUSY_LOAD = 0.9            # a worker whose capacity was in use 90% of the time is busy
SPARE_LOAD = 0.5           # retire one when the rest would be at most half busy
MIN_SAMPLE_SECONDS = 0.5   # ticks closer than this to the last sample are not samples

UP, DOWN = "up", "down"
# Why the count moved: the metrics' label values (unicornd_worker_scaling_total).
REASONS = ((UP, "busy"), (DOWN, "spare"), (UP, "ttin"), (DOWN, "ttou"))


class Autoscaler:
    """The floor, the ceiling and the runs of busy or spare samples that move the count."""

    def __init__(self, cfg):
        self.changes = {reason: 0 for reason in REASONS}  # kept across reloads (counters)
        self.last = None        # the last change: dict(direction, workers, reason, at)
        self.changed_at = None  # when the count last moved: no run begins before it
        self.configure(cfg, cfg.workers)

    def configure(self, cfg, count: int) -> int:
        """New settings (start, HUP, a reload rolled back): returns the worker count to keep,
        ``count`` brought within the new floor and ceiling (``workers`` when scaling is off)."""
        self.enabled = getattr(cfg, "max_workers", 0) > 0
        self.floor = cfg.workers
        self.ceiling = max(cfg.max_workers, cfg.workers) if self.enabled else cfg.workers
        self.up_period = getattr(cfg, "scale_up_period", 5.0)
        self.down_period = getattr(cfg, "scale_down_period", 30.0)
        self._reset()
        self.samples = {}
        self.sampled_at = None
        self.loads = {}
        return min(max(count, self.floor), self.ceiling) if self.enabled else cfg.workers

    def _reset(self) -> None:
        self.busy_since = None   # when the current run of busy samples began
        self.spare_since = None  # when the current run of spare samples began
        self.spare_peak = 0.0    # the highest summed load during that run

    # -- samples ---------------------------------------------------------------------------

    def observe(self, now: float, workers, steady: bool) -> None:
        """``workers``: (pid, load seconds now, capacity) of every serving worker; ``steady``:
        no worker is booting and no reload is rolling, so the count is the one asked for."""
        if self.sampled_at is not None and now - self.sampled_at < MIN_SAMPLE_SECONDS:
            return  # too close to the last sample to say anything: wait for the next tick
        previous, since = self.samples, self.sampled_at
        self.samples = {pid: load for pid, load, _ in workers}
        self.sampled_at = now
        loads = {}
        for pid, load, capacity in workers:
            if pid in previous and capacity > 0 and since is not None and now > since:
                share = (load - previous[pid]) / (capacity * (now - since))
                loads[pid] = min(1.0, max(0.0, share))  # (a torn read of the slot: clamped)
        self.loads = loads
        if not (self.enabled and steady and loads and len(loads) == len(workers)):
            self._reset()  # a worker came or went, or one boots: the runs start again
            return
        if self.changed_at is not None:
            since = max(since, self.changed_at)
        if all(share >= BUSY_LOAD for share in loads.values()):
            if self.busy_since is None:
                self.busy_since = since
        else:
            self.busy_since = None
        total = sum(loads.values())
        if len(loads) > 1 and total <= (len(loads) - 1) * SPARE_LOAD:
            if self.spare_since is None:
                self.spare_since, self.spare_peak = since, total
            self.spare_peak = max(self.spare_peak, total)
        else:
            self.spare_since = None

    # -- decisions -------------------------------------------------------------------------

    def decide(self, count: int):
        """(+1, reason), (-1, reason) or None, for a server asked to run ``count`` workers.
        A run is known only up to the last sample (not up to now: asked between two ticks,
        the time since that sample has not been measured)."""
        if not self.enabled or self.sampled_at is None:
            return None
        if self.busy_since is not None and count < self.ceiling:
            busy = self.sampled_at - self.busy_since
            if busy >= self.up_period:
                return +1, f"all {len(self.loads)} busy for {busy:.1f} s"
        if self.spare_since is not None and count > self.floor:
            spare = self.sampled_at - self.spare_since
            if spare >= self.down_period:
                return -1, (f"at most {self.spare_peak:.1f} of {len(self.loads)} workers' "
                            f"capacity in use for {spare:.1f} s")
        return None

    def least_busy(self, records):
        """Which of these worker records to retire: the least busy in the last sample, the
        oldest of equals."""
        return min(records, key=lambda rec: (self.loads.get(rec.pid, 0.0), rec.age))

    def changed(self, now: float, direction: str, kind: str, workers: int, reason: str) -> None:
        """The count moved (``kind``: busy, spare, ttin, ttou): counted, remembered for the
        status, and both runs start again, so the next change is a period away at least."""
        self.changes[(direction, kind)] += 1
        self.last = {"direction": direction, "workers": workers, "reason": reason, "at": now}
        self.changed_at = now
        self._reset()

    def move_floor(self, delta: int, count: int) -> None:
        """TTIN/TTOU: the floor moves with the count (never below one, never above the
        count); the ceiling rises if the count passes it."""
        if not self.enabled:
            self.floor = self.ceiling = count
            return
        self.floor = min(max(1, self.floor + delta), count)
        self.ceiling = max(self.ceiling, count)

    def status(self, now: float) -> dict:
        """What /status and ``unicornd status`` show."""
        last = None
        if self.last is not None:
            last = dict(self.last)
            last["seconds_ago"] = round(now - last.pop("at"), 1)
        return {"enabled": self.enabled, "floor": self.floor, "ceiling": self.ceiling,
                "scale_up_period": self.up_period, "scale_down_period": self.down_period,
                "last": last}
