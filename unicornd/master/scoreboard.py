"""Shared memory, one slot per worker: how the master sees what each worker is doing.

The master maps an anonymous shared region before forking; a worker writes only its own slot
(a few bytes per request, no syscall), the master reads them all once per loop tick. This is
the heartbeat (no temp file per worker, so no fchmod on a slow disk) and it is what lets a
timeout kill say which request the worker was serving.
"""

import mmap
import struct
import time

# pid, state, flags, heartbeat, boot start, request start, requests served, method, path
_SLOT = struct.Struct("=iBBxxdddQ16s96s")
_HEARTBEAT = struct.Struct("=d")
_REQUEST = struct.Struct("=16s96s")
_COUNT = struct.Struct("=Q")
SLOT_SIZE = _SLOT.size

FREE, BOOTING, IDLE, BUSY = 0, 1, 2, 3
STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy"}

# flags a worker raises for the master
WANTS_RECYCLE = 1

_OFF_STATE = 4
_OFF_FLAGS = 5
_OFF_HEARTBEAT = 8
_OFF_REQ_START = 24
_OFF_REQUESTS = 32
_OFF_REQUEST = 40


class SlotView:
    __slots__ = ("pid", "state", "flags", "heartbeat", "boot_start", "request_start",
                 "requests", "method", "path")

    def __init__(self, raw):
        (self.pid, self.state, self.flags, self.heartbeat, self.boot_start,
         self.request_start, self.requests, method, path) = raw
        self.method = method.rstrip(b"\0").decode("latin-1")
        self.path = path.rstrip(b"\0").decode("latin-1")

    @property
    def state_name(self):
        return STATE_NAMES.get(self.state, "?")


class Scoreboard:
    """Owned by the master: slot allocation and reading."""

    def __init__(self, nslots: int = 1024):
        self.nslots = nslots
        self.mm = mmap.mmap(-1, SLOT_SIZE * nslots, flags=mmap.MAP_SHARED)
        self._free = list(range(nslots - 1, -1, -1))

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError(f"no free scoreboard slot (all {self.nslots} in use)")
        index = self._free.pop()
        now = time.monotonic()
        _SLOT.pack_into(self.mm, index * SLOT_SIZE, 0, BOOTING, 0, now, now, 0.0, 0, b"", b"")
        return index

    def assign(self, index: int, pid: int) -> None:
        struct.pack_into("=i", self.mm, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        _SLOT.pack_into(self.mm, index * SLOT_SIZE, 0, FREE, 0, 0.0, 0.0, 0.0, 0, b"", b"")
        self._free.append(index)

    def read(self, index: int) -> SlotView:
        return SlotView(_SLOT.unpack_from(self.mm, index * SLOT_SIZE))

    def clear_flags(self, index: int) -> None:
        self.mm[index * SLOT_SIZE + _OFF_FLAGS] = 0

    def writer(self, index: int) -> "SlotWriter":
        return SlotWriter(self.mm, index * SLOT_SIZE)


class SlotWriter:
    """Used in the worker, on its own slot only. Each call is one struct write into shm."""

    __slots__ = ("mm", "base", "requests")

    def __init__(self, mm, base):
        self.mm = mm
        self.base = base
        self.requests = 0

    def heartbeat(self, now: float) -> None:
        _HEARTBEAT.pack_into(self.mm, self.base + _OFF_HEARTBEAT, now)

    def idle(self, now: float) -> None:
        mm, base = self.mm, self.base
        mm[base + _OFF_STATE] = IDLE
        _HEARTBEAT.pack_into(mm, base + _OFF_HEARTBEAT, now)

    def busy(self, now: float, method: str, path: str) -> None:
        mm, base = self.mm, self.base
        _HEARTBEAT.pack_into(mm, base + _OFF_REQ_START, now)
        _REQUEST.pack_into(mm, base + _OFF_REQUEST, method.encode("latin-1", "replace"),
                           path.encode("latin-1", "replace"))
        # Write the state last: the master reads a busy slot only once its request is set.
        _HEARTBEAT.pack_into(mm, base + _OFF_HEARTBEAT, now)
        mm[base + _OFF_STATE] = BUSY

    def finished(self, now: float) -> None:
        self.requests += 1
        mm, base = self.mm, self.base
        _COUNT.pack_into(mm, base + _OFF_REQUESTS, self.requests)
        mm[base + _OFF_STATE] = IDLE
        _HEARTBEAT.pack_into(mm, base + _OFF_HEARTBEAT, now)

    def raise_flag(self, flag: int) -> None:
        self.mm[self.base + _OFF_FLAGS] |= flag
