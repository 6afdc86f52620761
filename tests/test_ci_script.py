"""What `.ci/run` does before any suite runs: find each version, or say how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "run"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)


def test_a_missing_version_fails_the_run_with_how_to_get_it() -> None:
    env = {**os.environ, "CI_PYTHONS": "3.99"}
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 1
    assert "Python 3.99 is not installed: get it with 'pyenv install 3.99'" in result.stderr
    assert not (ROOT / ".ci-venv" / "3.99").exists()


def test_the_readme_test_command_is_found() -> None:
    # .ci/run runs exactly this line of the README.
    lines = (ROOT / "README.md").read_text().splitlines()
    found = [line for line in lines if line.startswith('python -m pip install -e ".[test]" && ')]
    assert found[:1] == ['python -m pip install -e ".[test]" && python -m pytest']
