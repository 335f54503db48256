"""The Procfile as the one source of the process commands, for the tests and the scripts.

Nothing here names the worker class: it is read from the `worker:` line, so a rename in
the Procfile needs no change in any test or script.
"""

from __future__ import annotations

import shlex

from tests.support.paths import ROOT, venv_command

WORKER_CLASS_OPTION = "--worker-class"


def procfile_line(process_type: str) -> list[str]:
    """The Procfile's line for `process_type`, split as a shell would (no $VARS in it are expanded)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return shlex.split(command.strip())
    raise LookupError(f"the Procfile has no {process_type}: line")


def procfile_command(process_type: str) -> list[str]:
    """The line for `process_type`, its program taken from the virtualenv (rq, gunicorn, alembic)."""
    return venv_command(procfile_line(process_type))


def worker_class(command: list[str] | None = None) -> str:
    """The `--worker-class` of the worker line (or of `command`): the class production runs."""
    words = procfile_line("worker") if command is None else command
    for index, word in enumerate(words):
        if word == WORKER_CLASS_OPTION and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(f"{WORKER_CLASS_OPTION}="):
            return word.partition("=")[2]
    raise LookupError(f"the worker line names no {WORKER_CLASS_OPTION}: {shlex.join(words)}")


def with_worker_class(command: list[str], class_path: str | None) -> list[str]:
    """`command` (an `rq worker` line) with its worker class set to `class_path`; None: RQ's own."""
    out: list[str] = []
    skip = False
    for word in command:
        if skip:
            skip = False
        elif word == WORKER_CLASS_OPTION:
            skip = True
        elif not word.startswith(f"{WORKER_CLASS_OPTION}="):
            out.append(word)
    if class_path is not None:
        out[2:2] = [WORKER_CLASS_OPTION, class_path]  # after `rq worker`
    return out
