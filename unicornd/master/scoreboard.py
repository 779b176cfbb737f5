"""Shared memory, one slot per worker: how the master sees what each worker is doing.

The master maps an anonymous shared region before forking; a worker writes only its own slot
(a few bytes per request, no syscall), the master reads them all once per loop tick. This is
the heartbeat (no temp file per worker, so no fchmod on a slow disk) and it is what lets a
timeout kill say which request the worker was serving.

Each slot also holds the worker's request counters (requests by status class, a request
duration histogram and its sum), written by the worker alone without locks: one 8-byte store
per counter, through a memoryview cast to unsigned/double words. The master adds them up for
``/metrics``; when a worker is released its counters are folded into ``Scoreboard.ended`` so
that what dead workers served is not lost.
"""

import bisect
import functools
import mmap
import struct
import time

# pid, state, flags, mode, heartbeat, boot start, request start, requests served, method, path,
# then what the timeout decision reads about requests in progress (master/timeouts.py): the
# oldest and newest progress among the "candidates" (requests not waiting on their client and
# not on a socket the app took over), how many candidates there are, and how many requests the
# worker can serve at once (its capacity: 1 for sync, threads for gthread).
_SLOT = struct.Struct("=iBBBxdddQ16s96sddII")
_HEARTBEAT = struct.Struct("=d")
_REQUEST = struct.Struct("=16s96s")
_COUNT = struct.Struct("=Q")

# Request duration histogram: upper bounds in seconds (Prometheus ``le``); one more bucket, +Inf.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FIRST_BOUND = DURATION_BUCKETS[0]  # (most requests: no search)
# Requests by status class: 1xx..5xx, then "none" (ended without a response head: the client
# went away, or an error answer the connection wrote itself).
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
_NSTATUS = len(STATUS_CLASSES)
_NBUCKETS = len(DURATION_BUCKETS) + 1
_COUNTERS = struct.Struct(f"={_NSTATUS}Q{_NBUCKETS}Qd")
_OFF_COUNTERS = _SLOT.size  # 176, 8-aligned
# The load, for scaling the workers (master/autoscale.py): requests in flight now, and the
# integral of requests in flight over time (request-seconds) up to the moment it last changed.
_LOAD = struct.Struct("=Qdd")
_OFF_LOAD = _OFF_COUNTERS + _COUNTERS.size
SLOT_SIZE = _OFF_LOAD + _LOAD.size  # a multiple of 8: every slot's words stay aligned
assert SLOT_SIZE % 8 == 0
# word (8-byte) indexes inside a slot
_W_REQUESTS = 32 // 8
_W_STATUS = _OFF_COUNTERS // 8
_W_BUCKETS = _W_STATUS + _NSTATUS
_W_SUM = _W_BUCKETS + _NBUCKETS
_W_INFLIGHT = _OFF_LOAD // 8
_W_LOAD = _W_INFLIGHT + 1
_W_LOAD_AT = _W_INFLIGHT + 2
_W_SLOT = SLOT_SIZE // 8
# float words (heartbeat, request start, progress) and the candidates' 4-byte word: written
# through the word views, one store each, on every request
_W_HEARTBEAT = 8 // 8
_W_REQ_START = 24 // 8
_W_OLDEST = 152 // 8
_W_NEWEST = _W_OLDEST + 1
_H_CANDIDATES = 168 // 4

FREE, BOOTING, IDLE, BUSY = 0, 1, 2, 3
STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy"}

# flags a worker raises for the master
WANTS_RECYCLE = 1          # near max_requests (or asked otherwise): start my replacement
OVER_MEMORY_AT_BOOT = 2    # above max_worker_memory right after loading the app

# mode: how the worker runs requests (set once at boot)
SERIAL = 1  # the request runs on the worker's loop (sync): no heartbeat while it is busy

_OFF_STATE = 4
_OFF_FLAGS = 5
_OFF_HEARTBEAT = 8
_OFF_REQ_START = 24
_OFF_REQUESTS = 32
_OFF_MODE = 6
_OFF_REQUEST = 40
_OFF_PROGRESS = 152
_PROGRESS = struct.Struct("=ddI")  # oldest, newest, candidates
_OFF_CAPACITY = 172
_CAPACITY = struct.Struct("=I")
assert _SLOT.size == 176 and struct.calcsize("=iBBBxdddQ16s96s") == _OFF_PROGRESS


class SlotView:
    __slots__ = ("pid", "state", "flags", "mode", "heartbeat", "boot_start", "request_start",
                 "requests", "method", "path", "progress", "recent", "candidates", "capacity",
                 "inflight", "load", "load_at")

    def __init__(self, raw, load=(0, 0.0, 0.0)):
        (self.pid, self.state, self.flags, self.mode, self.heartbeat, self.boot_start,
         self.request_start, self.requests, method, path, self.progress, self.recent,
         self.candidates, self.capacity) = raw
        self.method = method.rstrip(b"\0").decode("latin-1")
        self.path = path.rstrip(b"\0").decode("latin-1")
        self.inflight, self.load, self.load_at = load

    def load_seconds(self, now: float) -> float:
        """Request-seconds served up to ``now``: the integral of requests in flight."""
        return self.load + self.inflight * max(0.0, now - self.load_at)

    @property
    def state_name(self):
        return STATE_NAMES.get(self.state, "?")


class Counters:
    """Request counters: one worker's (read from its slot), or sums of several."""

    __slots__ = ("status", "buckets", "duration_sum")

    def __init__(self, status=None, buckets=None, duration_sum=0.0):
        self.status = list(status) if status is not None else [0] * _NSTATUS
        self.buckets = list(buckets) if buckets is not None else [0] * _NBUCKETS
        self.duration_sum = duration_sum

    @classmethod
    def unpack(cls, raw):
        return cls(raw[:_NSTATUS], raw[_NSTATUS:_NSTATUS + _NBUCKETS], raw[-1])

    def add(self, other: "Counters") -> "Counters":
        self.status = [a + b for a, b in zip(self.status, other.status)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.duration_sum += other.duration_sum
        return self

    @property
    def requests(self) -> int:
        return sum(self.status)

    def by_status(self) -> dict:
        return dict(zip(STATUS_CLASSES, self.status))

    def cumulative_buckets(self):
        """[(upper bound, cumulative count)], the last bound being +Inf."""
        out, total = [], 0
        for bound, count in zip(DURATION_BUCKETS + (float("inf"),), self.buckets):
            total += count
            out.append((bound, total))
        return out


class Scoreboard:
    """Owned by the master: slot allocation and reading."""

    def __init__(self, nslots: int = 1024):
        self.nslots = nslots
        self.mm = mmap.mmap(-1, SLOT_SIZE * nslots, flags=mmap.MAP_SHARED)
        self._free = list(range(nslots - 1, -1, -1))
        # Word views shared by every SlotWriter (the mmap stays mapped for the process's life).
        self._words = memoryview(self.mm).cast("Q")
        self._floats = memoryview(self.mm).cast("d")
        self._halves = memoryview(self.mm).cast("I")
        self.ended = Counters()  # the counters of released slots (workers that ended)

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError(f"no free scoreboard slot (all {self.nslots} in use)")
        index = self._free.pop()
        now = time.monotonic()
        _SLOT.pack_into(self.mm, index * SLOT_SIZE, 0, BOOTING, 0, 0, now, now, 0.0, 0, b"", b"",
                        0.0, 0.0, 0, 0)
        return index

    def assign(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self.mm, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        """The worker has ended: keep its counters in ``ended``, clear the slot for reuse."""
        self.ended.add(self.counters(index))
        _SLOT.pack_into(self.mm, index * SLOT_SIZE, 0, FREE, 0, 0, 0.0, 0.0, 0.0, 0, b"", b"",
                        0.0, 0.0, 0, 0)
        _COUNTERS.pack_into(self.mm, index * SLOT_SIZE + _OFF_COUNTERS,
                            *([0] * (_NSTATUS + _NBUCKETS)), 0.0)
        _LOAD.pack_into(self.mm, index * SLOT_SIZE + _OFF_LOAD, 0, 0.0, 0.0)
        self._free.append(index)

    def counters(self, index: int) -> Counters:
        return Counters.unpack(_COUNTERS.unpack_from(self.mm, index * SLOT_SIZE + _OFF_COUNTERS))

    def totals(self, indexes) -> Counters:
        """Counters of ended workers plus those of the live slots ``indexes``."""
        total = Counters().add(self.ended)
        for index in indexes:
            total.add(self.counters(index))
        return total

    def read(self, index: int) -> SlotView:
        base = index * SLOT_SIZE
        return SlotView(_SLOT.unpack_from(self.mm, base), _LOAD.unpack_from(self.mm, base + _OFF_LOAD))

    def clear_flags(self, index: int) -> None:
        self.mm[index * SLOT_SIZE + _OFF_FLAGS] = 0

    def writer(self, index: int) -> "SlotWriter":
        return SlotWriter(self.mm, index * SLOT_SIZE, self._words, self._floats, self._halves)


class SlotWriter:
    """Used in the worker, on its own slot only. Each call is a few aligned word stores into
    shm (a struct write for the request's name), no syscall: the sync worker makes them on
    every request."""

    __slots__ = ("mm", "base", "requests", "duration_sum", "words", "floats", "halves", "w",
                 "h", "named", "progress")

    def __init__(self, mm, base, words=None, floats=None, halves=None):
        self.mm = mm
        self.base = base
        # what this worker counted, kept here too: a store into the slot is cheaper than an
        # add there (the slot is all zeros when a worker gets it)
        self.requests = 0
        self.duration_sum = 0.0
        self.words = words if words is not None else memoryview(mm).cast("Q")
        self.floats = floats if floats is not None else memoryview(mm).cast("d")
        self.halves = halves if halves is not None else memoryview(mm).cast("I")
        self.w = base // 8
        self.h = base // 4
        # The (method, path) the slot shows, in a SERIAL worker (set_mode): a request named as
        # the one before it (a client asking for the same URL again) needs no new write of the
        # name. (Not where several threads may name requests at once: the cache could then
        # disagree with the slot; those write the name each time, as few times as they do.)
        self.named = False
        # progress(oldest, newest, candidates): the requests in progress that could be hung
        # (not waiting on their client, not on a socket the app took over): how many, and the
        # oldest and newest time one of them progressed (started, or read from or wrote to its
        # client); for the timeout decision (master/timeouts.py). The struct's own pack_into
        # bound to this slot: no Python frame, and the sync worker writes it three times per
        # request.
        self.progress = functools.partial(_PROGRESS.pack_into, mm, base + _OFF_PROGRESS)

    def heartbeat(self, now: float) -> None:
        self.floats[self.w + _W_HEARTBEAT] = now

    def idle(self, now: float) -> None:
        self.mm[self.base + _OFF_STATE] = IDLE
        self.floats[self.w + _W_HEARTBEAT] = now

    def busy(self, now: float, method: str, path: str) -> None:
        floats, w = self.floats, self.w
        floats[w + _W_REQ_START] = now
        # No candidate yet: the previous request's progress must not judge this one.
        floats[w + _W_OLDEST] = now
        floats[w + _W_NEWEST] = now
        self.halves[self.h + _H_CANDIDATES] = 0
        named = self.named
        if not named or named[1] != path or named[0] != method:
            self._name(method, path)
        # Write the state last: the master reads a busy slot only once its request is set.
        floats[w + _W_HEARTBEAT] = now
        self.mm[self.base + _OFF_STATE] = BUSY

    def is_idle(self) -> bool:
        return self.mm[self.base + _OFF_STATE] == IDLE

    def serving(self, started: float, method: str, path: str) -> None:
        """A worker running several requests at once, at its tick: busy, showing the one that
        started at ``started`` (heartbeat and progress are written on their own)."""
        self.name_request(started, method, path)
        self.mm[self.base + _OFF_STATE] = BUSY

    def finished(self, now: float, status: int = 0, duration: float = None) -> None:
        """A request ended with ``status`` (0: no response head) after ``duration`` seconds
        (None: not measured, only the served count moves); the worker is idle."""
        self.count(status, duration)
        self.mm[self.base + _OFF_STATE] = IDLE
        self.floats[self.w + _W_HEARTBEAT] = now

    def count(self, status: int = 0, duration: float = None) -> None:
        """A request ended: counted, state untouched (a worker running several requests at
        once turns idle at its tick, when none is left)."""
        self.requests += 1
        words, w = self.words, self.w
        words[w + _W_REQUESTS] = self.requests
        if duration is not None:
            c = status // 100
            words[w + _W_STATUS + (c - 1 if 0 < c < 6 else 5)] += 1
            words[w + _W_BUCKETS + (0 if duration <= _FIRST_BOUND
                                    else bisect.bisect_left(DURATION_BUCKETS, duration))] += 1
            self.duration_sum += duration
            self.floats[w + _W_SUM] = self.duration_sum

    def count_status(self, status: int) -> None:
        """A request refused before the app saw it (400, 408, 431...): its status class only,
        no duration and no change of state."""
        c = status // 100
        self.words[self.w + _W_STATUS + (c - 1 if 0 < c < 6 else 5)] += 1

    def in_flight(self, now: float, count: int) -> None:
        """The number of requests in progress is now ``count`` (one started or ended): the
        load integral is brought up to ``now`` first. Three word stores; the master may read
        between them and see one sample off, which the autoscaler's clamping absorbs."""
        words, floats, w = self.words, self.floats, self.w
        floats[w + _W_LOAD] += words[w + _W_INFLIGHT] * (now - floats[w + _W_LOAD_AT])
        floats[w + _W_LOAD_AT] = now
        words[w + _W_INFLIGHT] = count

    def raise_flag(self, flag: int) -> None:
        self.mm[self.base + _OFF_FLAGS] |= flag

    # -- for the timeout decision (master/timeouts.py) ---------------------------------------

    def set_mode(self, mode: int, capacity: int) -> None:
        """Once at boot: how requests run (SERIAL or 0) and how many at once."""
        self.named = None if mode & SERIAL else False
        self.mm[self.base + _OFF_MODE] = mode
        _CAPACITY.pack_into(self.mm, self.base + _OFF_CAPACITY, capacity)

    def name_request(self, started: float, method: str, path: str) -> None:
        """Which request the slot shows (the one a timeout line names), state untouched."""
        self.floats[self.w + _W_REQ_START] = started
        self._name(method, path)

    def _name(self, method: str, path: str) -> None:
        _REQUEST.pack_into(self.mm, self.base + _OFF_REQUEST, method.encode("latin-1", "replace"),
                           path.encode("latin-1", "replace"))
        if self.named is not False:
            self.named = (method, path)
