"""`JobSlot`: what the job process is running, in memory its supervisor can read.

The job process runs many jobs in a row without telling its parent about each one: a
message per job would wake the parent for every job and cost as much as the work. It
writes the running job into this small shared page instead, and the parent reads it
when it has a reason to (a tick of its clock, a stop command, the job process's death).

Changing the running job and killing the job process for that job must not interleave: the
parent would otherwise stop the next job instead of the one it meant. Both happen under
the slot's lock; a job process cannot move on while the parent holds it.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

ID_BYTES = 256
"""Longest job id, execution id or queue name the slot keeps (RQ's ids are far shorter)."""

_LAYOUT = struct.Struct(f"<QQBB6xddddQ{ID_BYTES}s{ID_BYTES}s{ID_BYTES}s{ID_BYTES}s")
# seq, done, running, stop_requested, started_wall, started_mono, soft_timeout, hard_deadline,
# waiting_client, job_id, execution_id, origin, popped
_USED_OFFSET = _LAYOUT.size
"""After the fields `_write` rewrites: a bit per catalogue job module a job process imported."""
_USED = struct.Struct("<Q")
_STOP_OFFSET = struct.calcsize("<QQB")
_WAITING_CLIENT_OFFSET = struct.calcsize("<QQBB6xdddd")


@dataclass(frozen=True)
class SlotView:
    """One consistent reading of the slot."""

    seq: int
    """Incremented each time the job process starts a job: tells two runs of one job apart."""
    done: int
    """Jobs this job process has finished."""
    running: bool
    stop_requested: bool
    started_wall: float
    started_mono: float
    soft_timeout: float
    hard_deadline: float
    """`time.monotonic()` value (one clock for every process) past which the parent kills."""
    waiting_client: int
    """Redis client id of the connection the job process blocks on while idle (0: none):
    `CLIENT UNBLOCK` on it makes an idle job process notice a stop at once."""
    job_id: str
    execution_id: str
    origin: str
    popped: str
    """A job id taken off its queue and not started yet ("" when none): if the job process dies
    now, the parent puts it back at the front of its queue."""


def _pack_text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > ID_BYTES:
        raise ValueError(f"{value[:40]!r}... is longer than {ID_BYTES} bytes")
    return raw


def _unpack_text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode(errors="replace")


class JobSlot:
    """A page of shared memory and a lock, made before the fork and used by both sides."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LAYOUT.size + _USED.size)  # anonymous and MAP_SHARED: seen across fork
        self._lock = multiprocessing.get_context("fork").Lock()
        self._write(seq=0, done=0, running=False, stop_requested=False)

    # --- both sides ---------------------------------------------------------------

    def stop_requested(self) -> bool:
        """`read().stop_requested`, without unpacking the rest: asked between every two jobs."""
        return self._memory[_STOP_OFFSET] != 0

    def read(self) -> SlotView:
        """The slot's fields; read under the lock when a decision depends on them."""
        seq, done, running, stop, wall, mono, soft, hard, client, job_id, execution_id, origin, popped = (
            _LAYOUT.unpack_from(self._memory)
        )
        return SlotView(
            seq, done, bool(running), bool(stop), wall, mono, soft, hard, client,
            _unpack_text(job_id), _unpack_text(execution_id), _unpack_text(origin), _unpack_text(popped),
        )

    @contextmanager
    def locked(self, timeout: float) -> Iterator[bool]:
        """Hold the lock for a decision; yields False when it could not be had in time
        (a job process stopped or killed inside its few-instruction critical section)."""
        acquired = self._lock.acquire(timeout=timeout)
        try:
            yield acquired
        finally:
            if acquired:
                self._lock.release()

    # --- the job process ------------------------------------------------------------

    def begin(self, job_id: str, execution_id: str, origin: str, soft_timeout: float, hard_timeout: float) -> int:
        """Record the job the job process is about to start; returns its sequence number."""
        with self._lock:
            current = self.read()
            mono = time.monotonic()
            self._write(
                seq=current.seq + 1,
                done=current.done,
                running=True,
                stop_requested=current.stop_requested,
                started_wall=time.time(),
                started_mono=mono,
                soft_timeout=soft_timeout,
                hard_deadline=mono + hard_timeout,
                waiting_client=current.waiting_client,
                job_id=job_id,
                execution_id=execution_id,
                origin=origin,
            )
            return current.seq + 1

    def end(self, popped: str = "") -> None:
        """The job process has recorded the job's end in Redis (and may have taken the next
        job off its queue in the same call: `popped`)."""
        with self._lock:
            current = self.read()
            self._write(
                seq=current.seq, done=current.done + 1, running=False, stop_requested=current.stop_requested,
                waiting_client=current.waiting_client, popped=popped,
            )

    def set_popped(self, popped: str) -> None:
        """The job process holds a job id it has not started yet ("" once it has let go of it)."""
        with self._lock:
            struct.pack_into(f"{ID_BYTES}s", self._memory, _LAYOUT.size - ID_BYTES, _pack_text(popped))

    def set_waiting_client(self, client_id: int) -> None:
        """The Redis client id the job process waits for work on (0: none)."""
        with self._lock:
            struct.pack_into("<Q", self._memory, _WAITING_CLIENT_OFFSET, client_id)

    def mark_used(self, bits: int) -> None:
        """The job process has imported these job modules (`process.JobModules`)."""
        with self._lock:
            _USED.pack_into(self._memory, _USED_OFFSET, self.used() | bits)

    # --- the supervisor ----------------------------------------------------------------

    def used(self) -> int:
        """The job modules the job process has imported, as `mark_used` set them."""
        bits: int = _USED.unpack_from(self._memory, _USED_OFFSET)[0]
        return bits

    def request_stop(self) -> None:
        """Ask the job process to take no new job (it checks between jobs and while idle)."""
        with self._lock:
            struct.pack_into("<B", self._memory, _STOP_OFFSET, 1)

    def close(self) -> None:
        self._memory.close()

    def _write(
        self,
        *,
        seq: int,
        done: int,
        running: bool,
        stop_requested: bool,
        started_wall: float = 0.0,
        started_mono: float = 0.0,
        soft_timeout: float = 0.0,
        hard_deadline: float = 0.0,
        waiting_client: int = 0,
        job_id: str = "",
        execution_id: str = "",
        origin: str = "",
        popped: str = "",
    ) -> None:
        _LAYOUT.pack_into(
            self._memory, 0, seq, done, int(running), int(stop_requested), started_wall, started_mono,
            soft_timeout, hard_deadline, waiting_client, _pack_text(job_id), _pack_text(execution_id), _pack_text(origin),
            _pack_text(popped),
        )
