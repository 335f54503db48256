"""Processes the tests and scripts start: each in a session (and process group) of its own,
its output in a log file, stopped with SIGTERM to the group and SIGKILL after a grace.

Also the process table read from /proc, to find children (a worker's job process lives
in a group of its own, so a group signal misses it) and to tell a live process from a
zombie or from a new process that reused its pid (the start time tells them apart).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.support.paths import ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    group: int
    state: str
    started: str
    """Start time in clock ticks since boot: with the pid, names one process for ever."""


def process_table() -> dict[int, ProcessInfo]:
    """Every process we can read, by pid."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = ProcessInfo(int(fields[1]), int(fields[2]), fields[0], fields[19])
    return table


def process_tree(root: int, include_root: bool = True) -> dict[int, str]:
    """pid -> start time of `root` and every process below it ({} when `root` is gone)."""
    table = process_table()
    if root not in table:
        return {}
    found = {root: table[root].started} if include_root else {}
    parents = {root}
    while parents:
        children = {pid for pid, info in table.items() if info.parent in parents and pid not in found}
        found.update({pid: table[pid].started for pid in children})
        parents = children
    return found


def children_of(pid: int) -> set[int]:
    """Processes whose parent is `pid`."""
    return {child for child, info in process_table().items() if info.parent == pid}


def parent_of(pid: int) -> int:
    return process_table()[pid].parent


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def alive(processes: dict[int, str]) -> set[int]:
    """Those of `processes` (pid -> start time) still running as the same processes."""
    table = process_table()
    return {pid for pid, started in processes.items()
            if pid in table and table[pid].started == started and table[pid].state != "Z"}


def send_signal(pid: int, signum: int) -> None:
    """Signal one process; one that is already gone is not an error."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def kill_survivors(processes: dict[int, str]) -> None:
    """SIGKILL those of `processes` that are still the same processes and still alive."""
    for pid in alive(processes):
        log.warning("killing leftover process %d", pid)
        send_signal(pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


@dataclass
class ProcessGroup:
    """A command started in a session of its own, its output (stdout and stderr) in `log_path`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None

    @classmethod
    def start(
        cls, name: str, command: list[str], env: dict[str, str], log_path: Path | None, cwd: Path = ROOT
    ) -> ProcessGroup:
        log.debug("starting %s: %s", name, shlex.join(command))
        output: IO[bytes] | int = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if not isinstance(output, int):
                output.close()  # the child holds its own copy
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 10) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace` s; then kill whatever had left the group
        (a job process in a group of its own). Returns the exit status."""
        below = process_tree(self.pid, include_root=False) if self.poll() is None else {}
        if self.poll() is None:
            signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.poll() is None or group_alive(self.pid):
            below.update(process_tree(self.pid, include_root=False))
            signal_group(self.pid, signal.SIGKILL)
        status = self.process.wait(10)
        kill_survivors(below)
        return status

    def kill(self) -> int:
        """SIGKILL the group and whatever had left it, at once: a tear-down that checks nothing
        about the way it stops need not wait for a graceful one."""
        below = process_tree(self.pid, include_root=False)
        signal_group(self.pid, signal.SIGKILL)
        status = self.process.wait(10)
        kill_survivors(below)
        return status
