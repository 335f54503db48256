"""Every way a task can fail: how it is written into the job, and how it reads back.

A failure reaches clients as the `exc_string` RQ keeps in the job's latest result, and
that text is a protocol: clients, dashboards and tests read it. So each way of failing
is declared once here, as a `Template` that both writes the text (`render`) and finds it
again in a stored traceback (`find`), and `summarise` turns a stored text into the one
line the status API answers. Workers write only through these templates; nothing
else parses failure texts.

Texts RQ itself writes (its soft time limit, its abandoned-job clean-up) are declared
as RQ writes them, so they are recognised the same way.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from enum import Enum
from string import Formatter

MAX_ERROR_LENGTH = 500
NO_REASON = "The job failed without recording a reason."
CANCELLED_ON_REQUEST = "Cancelled on request."


class FailureKind(str, Enum):
    """The ways a task fails (a str enum: it serializes as itself, in logs and metrics)."""

    SOFT_TIMEOUT = "soft timeout"
    HARD_LIMIT = "hard limit"
    KILLED = "killed by a signal"
    ABANDONED = "abandoned"
    SHUTDOWN_HAND_BACK = "shutdown hand-back"
    REDIS_LOST = "redis lost"
    UNREADABLE = "unreadable"
    NOT_CATALOGUED = "not catalogued"
    JOB_PROCESS_CRASHED = "job process crashed"
    CANCELLED = "cancelled"


class KillReason(str, Enum):
    """Why the supervisor killed its job process while it ran a job."""

    STOPPED = "stopped"
    """A stop command (the API's cancel): the job ends STOPPED."""
    HARD_LIMIT = "hard limit"
    """The job ran past its hard time limit: it fails with `HARD_LIMIT`'s text."""
    SHUTDOWN = "shutdown"
    """The shutdown grace is over: the job is handed back to its queue."""
    KILLED = "killed"
    """RQ's kill-horse command: the job fails as killed."""


@dataclass(frozen=True)
class Template:
    """A failure text with named fields: `render` writes it, `find` reads the fields back.

    Matching is by the fixed parts in order (the first may sit anywhere in the text, as
    the last line of a traceback); a field runs up to the next fixed part.
    """

    text: str
    _parts: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = tuple((literal, name) for literal, name, _, _ in Formatter().parse(self.text))
        object.__setattr__(self, "_parts", parts)

    def render(self, **values: object) -> str:
        return self.text.format(**values)

    def find(self, stored: str) -> dict[str, str] | None:
        """The fields of the first place `stored` holds this text, or None."""
        (head, _), *_ = self._parts
        start = stored.find(head)
        while start >= 0:
            found = self._match_at(stored, start)
            if found is not None:
                return found
            start = stored.find(head, start + 1)
        return None

    def _match_at(self, stored: str, position: int) -> dict[str, str] | None:
        values: dict[str, str] = {}
        parts = self._parts
        for index, (literal, name) in enumerate(parts):
            if not stored.startswith(literal, position):
                return None
            position += len(literal)
            if name is None:
                continue
            following = parts[index + 1][0] if index + 1 < len(parts) else ""
            end = stored.find(following, position) if following else _line_end(stored, position)
            if end < 0:
                return None
            values[name] = stored[position:end]
            position = end
        return values


def _line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


# --- written by our workers -----------------------------------------------------------

HARD_LIMIT = Template(
    "TimeLimitExceeded: the job ran past its hard time limit of {seconds} s and its process was killed."
)
SHUTDOWN_HAND_BACK = Template(
    "WorkerShutdown: the worker shut down before the job finished; it was put back on its queue."
)
REDIS_LOST = Template(
    "RedisConnectionLost: Redis went away while the job ran, so its outcome could not be recorded."
)
UNREADABLE = Template(
    "UnreadableJob: the job was not stored as JSON; workers run only JSON jobs from the catalogue."
)
NOT_CATALOGUED = Template("Refused to run {function}: workers run only the functions in the job catalogue.")
JOB_PROCESS_CRASHED = Template(
    "JobProcessCrashed: the job process died {deaths} times while taking this job, before it could start; "
    "it was not run."
)
KILLED = Template("Work-horse terminated unexpectedly; waitpid returned {status}")
"""RQ's own words for a dead work horse, kept so RQ's readers understand ours."""
KILLED_BY_SIGNAL_NOTE = Template(" (signal {signal})")
ABANDONED_BY_STATUS_CHECK = Template("AbandonedJobError: its worker is gone")

# --- written by RQ ---------------------------------------------------------------------

SOFT_TIMEOUT = Template("JobTimeoutException: Task exceeded maximum timeout value ({seconds} seconds)")
ABANDONED_MARK = "AbandonedJobError"
"""RQ's clean-up writes `Moved to FailedJobRegistry, due to AbandonedJobError, at ...`."""


def killed_text(wait_status: int) -> str:
    """The failure of a job whose process died: its wait status, and the signal if any."""
    note = KILLED_BY_SIGNAL_NOTE.render(signal=os.WTERMSIG(wait_status)) if os.WIFSIGNALED(wait_status) else ""
    return KILLED.render(status=wait_status) + note


def kind_of(exc_string: str | None) -> FailureKind | None:
    """Which declared failure a stored text is, or None (the job's own exception)."""
    if not exc_string:
        return None
    if SOFT_TIMEOUT.find(exc_string) is not None:
        return FailureKind.SOFT_TIMEOUT
    if ABANDONED_MARK in exc_string:
        return FailureKind.ABANDONED
    for kind, template in _RECOGNISED:
        if template.find(exc_string) is not None:
            return kind
    return None


_RECOGNISED: tuple[tuple[FailureKind, Template], ...] = (
    (FailureKind.HARD_LIMIT, HARD_LIMIT),
    (FailureKind.SHUTDOWN_HAND_BACK, SHUTDOWN_HAND_BACK),
    (FailureKind.REDIS_LOST, REDIS_LOST),
    (FailureKind.UNREADABLE, UNREADABLE),
    (FailureKind.NOT_CATALOGUED, NOT_CATALOGUED),
    (FailureKind.JOB_PROCESS_CRASHED, JOB_PROCESS_CRASHED),
    (FailureKind.KILLED, KILLED),
)


def summarise(exc_string: str | None) -> str:
    """One line that says why a job failed; never a traceback."""
    if not exc_string or not exc_string.strip():
        return NO_REASON
    kind = kind_of(exc_string)
    if kind is FailureKind.SOFT_TIMEOUT:
        seconds = (SOFT_TIMEOUT.find(exc_string) or {}).get("seconds", "?")
        return f"Timed out: the job ran past its soft time limit of {seconds} s."
    if kind is FailureKind.ABANDONED:
        return "Abandoned: the worker running this task stopped before it finished (killed or lost)."
    if kind is FailureKind.KILLED:
        return _killed_summary(exc_string)
    lines = [line.strip() for line in exc_string.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_ERROR_LENGTH]


def _killed_summary(exc_string: str) -> str:
    status = (KILLED.find(exc_string) or {}).get("status", "")
    status = status.split(" ", 1)[0].rstrip(";")
    signal_found = KILLED_BY_SIGNAL_NOTE.find(exc_string)
    if signal_found is not None:
        number = signal_found["signal"]
        sigkill = " (SIGKILL, for example by the out-of-memory killer)" if number == str(int(signal.SIGKILL)) else ""
        return f"The job's process was killed by signal {number}{sigkill}."
    return f"The job's process exited unexpectedly (status {status})."
