"""A platform's build installs requirements.txt alone: every process of the Procfile must
start from that, without what the test and bench requirements bring along.

gunicorn's gevent worker imports `packaging`, which gunicorn does not declare; pytest
brings it into the developers' virtualenv, so every other test passed while a platform's
web process would not boot. This builds a virtualenv from requirements.txt only (pip's
cache makes that quick after the first time) and imports what each Procfile process
loads: gunicorn's worker class and the WSGI app, the worker class and its job code, and
the release step's migrations environment.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.procfile import worker_class

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # a first build downloads


def test_every_procfile_process_loads_from_requirements_txt_alone(tmp_path: Path) -> None:
    env_dir = tmp_path / "platform-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=540,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    module, _, name = worker_class().rpartition(".")
    code = "; ".join([
        "import importlib, sys",
        "import trustcard.gunicorn_worker",  # the web's gunicorn worker class (gevent)
        "from gunicorn.workers.ggevent import GeventWorker",
        "import trustcard.wsgi",  # the WSGI app: builds it from the settings
        f"getattr(importlib.import_module({module!r}), {name!r})",  # the worker class
        "import trustcard.catalogue",
        "[importlib.import_module(t.function.rpartition('.')[0]) for t in trustcard.catalogue.ALL_JOB_TYPES]",
        "import alembic.config, sqlalchemy, psycopg2",  # the release step
        "print('loaded')",
    ])
    ran = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PATH": f"{env_dir / 'bin'}", "PYTHONPATH": str(ROOT), "DATABASE_URL": "sqlite://", "REDIS_URL": "redis://127.0.0.1:1/0",
             "SECRET_KEY": "production-install-test", "HOME": str(tmp_path)},
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "loaded", ran.stderr[-3000:]
