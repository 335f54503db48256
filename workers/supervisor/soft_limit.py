"""The soft time limit of a job: RQ's SIGALRM death penalty, set and cleared for less.

RQ's `UnixSignalDeathPenalty` calls `signal.signal` twice a job. That wrapper turns the
handler it returns into a `signal.Handlers` member by trying `Handlers(value)`, which for
a bound-method handler raises and catches a ValueError: about 10 us a job of the job
process's time, against 2.4 us through `_signal`, the C module that `signal` itself
re-exports (its functions are `signal`'s, without the enum wrapping). What the job sees
is the same: the same alarm, the same handler, the same `JobTimeoutException` message,
and SIGALRM back at its default once the job is done.
"""

from __future__ import annotations

import _signal

from rq.timeouts import UnixSignalDeathPenalty


class SoftTimeLimit(UnixSignalDeathPenalty):
    """RQ's death penalty (`JobTimeoutException` raised inside the job at its timeout)."""

    def setup_death_penalty(self) -> None:
        _signal.signal(_signal.SIGALRM, self.handle_death_penalty)
        _signal.alarm(self._timeout)

    def cancel_death_penalty(self) -> None:
        _signal.alarm(0)
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
