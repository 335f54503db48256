"""The Procfile's release step (`alembic upgrade head`) refuses a bad setting the way the
web does: one sentence on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.procfile import procfile_command


def release_command() -> list[str]:
    return procfile_command("release")


def run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'release.db'}", **env}
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("setting", "value", "sentence"),
    [
        ("REDIS_URL", "nonsense", "REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel:// or "
         "rediss+sentinel://, got 'nonsense'."),
        ("JOB_TIMEOUT", "abc", "JOB_TIMEOUT must be a whole number, got 'abc'."),
    ],
)
def test_release_with_a_malformed_setting_prints_the_webs_sentence(
    tmp_path: Path, setting: str, value: str, sentence: str
) -> None:
    release = run(release_command(), tmp_path, **{setting: value})
    assert release.returncode != 0
    assert release.stderr.strip() == f"trustcard: configuration error: {sentence}"
    assert "Traceback" not in release.stderr + release.stdout
    assert not (tmp_path / "release.db").exists()  # it stopped before touching the database
    web = run([sys.executable, "-c", "import trustcard.wsgi"], tmp_path, **{setting: value})
    assert web.returncode != 0 and web.stderr.strip() == release.stderr.strip()


def test_release_at_the_defaults_migrates(tmp_path: Path) -> None:
    release = run(release_command(), tmp_path)
    assert release.returncode == 0, release.stderr
    assert (tmp_path / "release.db").exists()
