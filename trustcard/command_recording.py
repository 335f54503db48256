"""A stand-in for a redis-py pipeline that keeps RQ's commands instead of sending them.

RQ's methods take a pipeline and write into it. Given a recorder, they write here, unchanged,
and the commands then run inside one of our scripts, which is one transaction already: a
task's admission (`trustcard.admission`), a webhook delivery queued with a task's end
(`trustcard.callbacks`) and the worker's bookkeeping (`workers.supervisor.bookkeeping`).
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import DataAccessCommands


class CommandRecorder(DataAccessCommands):
    """Stands in for a pipeline: RQ's methods queue their commands here."""

    explicit_transaction = True
    """What RQ asks of a pipeline it is given before it writes (else it calls `multi()`):
    the script that runs these commands is one transaction already."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> CommandRecorder:
        self.commands.append(self.kept(args))
        return self

    def kept(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """A command as it is recorded: as given, for scripts that take its words as they are."""
        return args

    def multi(self) -> None:
        """Already atomic: the commands run inside one script."""
