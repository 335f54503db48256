"""Where things are: the project root (every process starts there) and the virtualenv."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The project root: the Procfile's commands run from here, as on a platform."""
BIN = Path(sys.executable).parent
"""The virtualenv's executables (rq, gunicorn, alembic), used without activating it."""


def venv_command(words: list[str]) -> list[str]:
    """`words` with its program taken from the virtualenv when it has one of that name."""
    program = BIN / words[0]
    return [str(program), *words[1:]] if program.exists() else list(words)
