"""The demo runs and reports what it did."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cancellable.__main__ import main


def test_demo_releases_all_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workers", "8"]) == 0
    out = capsys.readouterr().out
    assert "One cancel() released all 8 of them" in out
    assert "names the task that ignores its token: _ignores_its_token on thread demo_" in out


def test_demo_rejects_zero_workers() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--workers", "0"])
    assert raised.value.code == 2


def test_python_dash_m_runs_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cancellable", "--workers", "4"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "released all 4" in result.stdout
