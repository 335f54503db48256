"""Process plumbing shared by the supervisor and its job process.

Parent-death signals (a child never outlives its supervisor, even a SIGKILLed one), the
job process's exit codes, waiting for a child through a pidfd, the wakeup pipe that
lets a signal interrupt the supervisor's wait at once, and which job code the supervisor
imports before it forks (`JobModules`).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field
from enum import IntEnum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from trustcard.catalogue import BY_FUNCTION

if TYPE_CHECKING:
    from resource import struct_rusage

    from workers.supervisor.slot import JobSlot

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

_PR_SET_PDEATHSIG = 1


class ExitCode(IntEnum):
    """How a job process says why it left (its exit status)."""

    RECYCLE = 0
    """Did its share of jobs, or grew too big: replace it."""
    STOPPED = 64
    """The supervisor asked it to stop, or is gone."""
    EMPTY = 65
    """Burst mode and the queues are empty: the worker is done."""
    IDLE = 66
    """Idle for the worker's `--max-idle-time`: the worker is done."""
    SUSPENDED = 67
    """Burst mode and `rq suspend` in force: the worker is done, as RQ's does."""
    CRASHED = 70
    """An error outside any job (the supervisor logs it and forks a new one)."""

    @property
    def ends_the_worker(self) -> bool:
        return self in (ExitCode.EMPTY, ExitCode.IDLE, ExitCode.SUSPENDED)

    @property
    def is_orderly(self) -> bool:
        """Left for a reason of its own, not by dying."""
        return self in (ExitCode.RECYCLE, ExitCode.STOPPED) or self.ends_the_worker


@dataclass
class RunningJobProcess:
    """The job process as the supervisor knows it."""

    pid: int
    slot: JobSlot
    pidfd: int | None
    started: float = field(default_factory=time.monotonic)



def exit_code_of(wait_status: int) -> ExitCode | None:
    """The job process's exit code, None when it was killed (or exited with a code of no meaning)."""
    if not os.WIFEXITED(wait_status):
        return None
    try:
        return ExitCode(os.WEXITSTATUS(wait_status))
    except ValueError:
        return None


def die_with_parent(parent_pid: int, signal_number: int = signal.SIGKILL) -> None:
    """Ask Linux to send `signal_number` to this process when its parent dies (however it
    dies); exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the job process's getppid() check remains
        log.debug("PR_SET_PDEATHSIG unavailable")
    if os.getppid() != parent_pid:
        os._exit(ExitCode.STOPPED)


def open_pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (readable once it exits), or None where Linux has none."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def wait_for_exit(
    pid: int, pidfd: int | None, wakeup_fd: int | None, timeout: float
) -> tuple[int, struct_rusage] | None:
    """Wait up to `timeout` s for `pid` to exit, or for a signal (`wakeup_fd`): its wait
    status and resource use, or None if it still runs."""
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if wakeup_fd is not None:
            poller.register(wakeup_fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(timeout * 1000)}
        if wakeup_fd in ready:
            drain(wakeup_fd)
        if pidfd not in ready:
            return None
    else:
        deadline = time.monotonic() + timeout
        while True:
            found, status, rusage = os.wait4(pid, os.WNOHANG)
            if found:
                return status, rusage
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.05, timeout))
    _, status, rusage = os.wait4(pid, 0)
    return status, rusage


def install_wakeup_pipe() -> int:
    """Signals then wake a `wait_for_exit` at once; returns the pipe's read end."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    return read_fd


def drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def describe_wait_status(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    return f"exit status {os.WEXITSTATUS(wait_status)}"


class JobModules:
    """The catalogue's job modules for a worker's queues, and which of them it has needed.

    A job module the supervisor imports is shared, page for page, with every job process it
    forks, which then starts warm. A module no job of this worker has run costs that memory
    for nothing (the analysis pipeline's loads SQLAlchemy: about 20 MB a worker), so the
    supervisor imports a module only once a job process has imported it (`JobSlot.mark_used`):
    the first job of a kind pays its import once; job processes forked after it start warm.
    """

    def __init__(self, queue_names: Iterable[str]) -> None:
        served = set(queue_names)
        names = sorted({path.rsplit(".", 1)[0] for path, job_type in BY_FUNCTION.items() if job_type.queue in served})
        self.bits = {name: 1 << index for index, name in enumerate(names[:64])}
        self.loaded = 0

    def bit_of(self, function_path: str) -> int:
        """This function's module's bit (0 for a module outside the catalogue)."""
        return self.bits.get(function_path.rpartition(".")[0], 0)

    def preload(self, used: int, worker_name: str) -> None:
        """Import, here in the supervisor, the modules in `used` not imported yet."""
        for module, bit in self.bits.items():
            if not used & bit or self.loaded & bit:
                continue
            self.loaded |= bit
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - its jobs fail with the import error when they run
                log.exception("worker %s: could not preload %s", worker_name, module)
