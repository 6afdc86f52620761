"""CPython's own ThreadPoolExecutor tests, run against CancellableThreadPoolExecutor.

The tests come from the interpreter's test suite: 3.11's single file
``test_concurrent_futures.py`` (Debian ships it in ``libpython3.11-testsuite``,
which ``.ci/run`` installs) or the ``test_concurrent_futures/`` package of
3.12 and later (pyenv's 3.13 build ships it). ``tests/_stdlib_runner.py`` lists
the suite's ThreadPool classes and their test counts, then runs each class in
its own subprocess, in parallel (most of their time is sleeping); every listed
test must run and pass. The runner's ``EXCLUDED`` lists any test left out,
with the reason.

Where the suite is expected (`EXPECTED_ON_CI`), ``CI=true`` turns a missing
suite into a failure; elsewhere, and off CI, it skips with a reason naming the
interpreter. ``CANCELLABLE_STDLIB_TESTS`` may point at either layout (a
CPython checkout's ``Lib/test/test_concurrent_futures``, say) to run it on any
version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("_stdlib_runner.py")
VERSION = sys.version_info[:2]
_NAME = "test_concurrent_futures"
_VERSION_TEXT = f"{VERSION[0]}.{VERSION[1]}"

# Where CI must find the suite, and where it comes from there. pyenv's 3.12.1
# build ships no test/test_concurrent_futures (the rest of its test package
# is there), and Debian has no 3.12 test package: on 3.12 the suite skips.
EXPECTED_ON_CI: dict[tuple[int, int], str] = {
    (3, 11): "Debian's libpython3.11-testsuite (apt-get install libpython3.11-testsuite)",
    (3, 13): "the interpreter's own test package (pyenv's 3.13 build ships it)",
}


def candidates() -> list[Path]:
    """Where the suite may be, most specific first: both layouts in each place."""
    places: list[Path] = []
    override = os.environ.get("CANCELLABLE_STDLIB_TESTS")
    if override:
        places.append(Path(override))
    for root in (
        Path(sysconfig.get_paths()["stdlib"]) / "test",
        Path(sys.base_prefix) / "lib" / f"python{_VERSION_TEXT}" / "test",
        Path("/usr/lib") / f"python{_VERSION_TEXT}" / "test",  # Debian's testsuite package
    ):
        places += [root / _NAME, root / f"{_NAME}.py"]
    return places


def find_suite() -> Path | None:
    for place in candidates():
        if (place / "__init__.py").is_file() or (place.suffix == ".py" and place.is_file()):
            return place
    return None


def missing_message() -> str:
    where = EXPECTED_ON_CI.get(VERSION)
    hint = (
        f"on CI it comes from {where}"
        if where
        else f"CI does not expect it on Python {_VERSION_TEXT} (its build there ships none)"
    )
    return (
        f"CPython {sys.version.split()[0]} ({sys.executable}) has no {_NAME} test suite "
        f"(neither layout); {hint}; set CANCELLABLE_STDLIB_TESTS to a {_NAME}.py or "
        f"{_NAME}/ to run it anyway"
    )


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _runner(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _json_line(out: str, tag: str) -> dict[str, object] | None:
    lines = [line[len(tag) + 1 :] for line in out.splitlines() if line.startswith(tag + " ")]
    return json.loads(lines[-1]) if lines else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpython_threadpool_suite_passes() -> None:
    path = find_suite()
    if path is None:
        if _on_ci() and VERSION in EXPECTED_ON_CI:
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    lister = _runner(path, "--list")
    out, err = lister.communicate(timeout=60)
    listing = _json_line(out, "LIST")
    assert listing is not None, f"the runner could not list {path}:\n{err[-3000:]}"
    counts: dict[str, int] = {str(k): int(v) for k, v in listing.items()}  # type: ignore[call-overload]
    # The suite's own contents set the numbers: every ThreadPool class it has,
    # each with all of its tests.
    assert counts, f"{path} has no ThreadPool test classes"
    assert all(counts.values()), counts
    procs = {name: _runner(path, name) for name in counts}
    problems: list[str] = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        summary = _json_line(out, "SUMMARY")
        if summary is None:
            problems.append(f"{name}: runner printed no summary:\n{err[-3000:]}")
            continue
        if summary["failures"] or summary["errors"]:
            problems.append(f"{name}: {summary['failures']} {summary['errors']}\n{err[-6000:]}")
        if summary["run"] != counts[name]:
            problems.append(f"{name}: ran {summary['run']} of its {counts[name]} tests")
        if summary["classes"] != [name]:
            problems.append(f"{name}: ran {summary['classes']}")
    assert not problems, "\n\n".join(problems)


def test_suite_is_found_where_ci_expects_it() -> None:
    if not _on_ci() or VERSION not in EXPECTED_ON_CI:
        pytest.skip(f"Python {_VERSION_TEXT} off CI or not expected to ship {_NAME}")
    assert find_suite() is not None, missing_message()


def test_missing_suite_message_names_the_version() -> None:
    message = missing_message()
    assert sys.version.split()[0] in message
    assert "CANCELLABLE_STDLIB_TESTS" in message
    if VERSION == (3, 11):
        assert "libpython3.11-testsuite" in message


def test_override_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / _NAME
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.setenv("CANCELLABLE_STDLIB_TESTS", str(package))
    assert find_suite() == package
    single = tmp_path / f"{_NAME}.py"
    single.write_text("")
    monkeypatch.setenv("CANCELLABLE_STDLIB_TESTS", str(single))
    assert find_suite() == single


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_suite_fails_only_where_ci_expects_it(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "find_suite", lambda: None)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci and VERSION in EXPECTED_ON_CI else pytest.skip.Exception
    with pytest.raises(expected, match=r"CPython \d+\.\d+\.\d+"):
        test_cpython_threadpool_suite_passes()
