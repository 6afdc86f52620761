"""A hung test fails the run instead of stalling it.

The project's pytest settings (``timeout`` with ``timeout_method = "thread"``)
must end the whole run when a test hangs, even with its main thread blocked in
``Thread.join`` on a thread that never ends. (The signal method fails such a
test but then waits at interpreter exit for the non-daemon thread, forever;
the thread method dumps every stack and exits.) Each test here runs a child
pytest with the project's own configuration on a tiny file that hangs, and
checks that the child ends, failed by the timeout, with the stacks in its
output.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HANGS = {
    "thread_join": """
        import threading

        def test_hangs_in_thread_join():
            # Not a daemon: even a test failed by a signal would leave the
            # process waiting for it at exit.
            blocker = threading.Thread(target=threading.Event().wait)
            blocker.start()
            blocker.join()  # never returns
    """,
    "lock_acquire": """
        import threading

        def test_hangs_in_lock_acquire():
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()  # never returns
    """,
}


def _run_child(tmp_path: Path, source: str, timeout: int) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_child_hang.py"
    test_file.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            "-p",
            "no:cacheprovider",
            "-o",
            f"timeout={timeout}",
            str(test_file),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # the guard under test must fire long before this
        cwd=tmp_path,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(HANGS))
def test_a_hung_test_fails_the_run(tmp_path: Path, name: str) -> None:
    result = _run_child(tmp_path, HANGS[name], timeout=2)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Timeout" in output, output
    # The stacks of the hung test are in the report, so the hang can be found.
    assert "test_child_hang.py" in output, output
    assert ("join" if name == "thread_join" else "acquire") in output, output
