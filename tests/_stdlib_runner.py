"""Run CPython's own ThreadPoolExecutor tests against CancellableThreadPoolExecutor.

Usage::

    python tests/_stdlib_runner.py PATH --list
    python tests/_stdlib_runner.py PATH [CLASS...]

PATH is either 3.11's single file ``test_concurrent_futures.py`` or the
``test_concurrent_futures/`` package of 3.12 and later. The runner loads it by
path as ``test.test_concurrent_futures`` and substitutes the executor for
``concurrent.futures.ThreadPoolExecutor`` (in the tests and in the child
processes some of them start). The test classes are those whose name contains
``ThreadPool``, each named ``module:Class`` (``module`` is the file's own name
in the single-file layout).

``--list`` prints one ``LIST`` JSON line mapping each class to how many tests
it has. Otherwise the runner runs the given classes (all of them without
CLASS names) and prints one ``SUMMARY`` JSON line with the counts. Tests in
`EXCLUDED` are skipped with their reason; it is empty while every test passes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
import unittest
from concurrent import futures
from pathlib import Path

import cancellable

PACKAGE = "test.test_concurrent_futures"

# Test id (Class.method) -> why it cannot run against this executor.
EXCLUDED: dict[str, str] = {}

# Run at the top of every ``python -c`` child the tests start: the executor
# under the stdlib names, and the suite importable by its stdlib name.
_PRELUDE = """\
import sys as _s
_s.path.insert(0, {here!r})
import _stdlib_runner as _r
_r.register({path!r})
"""


def register(path: str) -> list[types.ModuleType]:
    """Load the suite at ``path`` as ``test.test_concurrent_futures``; patch the executor in.

    Returns the suite's test modules (one for the single-file layout).
    """
    ours = cancellable.CancellableThreadPoolExecutor
    futures.ThreadPoolExecutor = ours  # type: ignore[misc]
    futures.CancellableThreadPoolExecutor = ours  # type: ignore[attr-defined]
    import test  # noqa: F401  (the interpreter's test package: test.support)

    where = Path(path)
    if where.is_dir():
        spec = importlib.util.spec_from_file_location(
            PACKAGE, where / "__init__.py", submodule_search_locations=[str(where)]
        )
    else:
        spec = importlib.util.spec_from_file_location(PACKAGE, where)
    assert spec is not None
    assert spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    if not where.is_dir():
        modules = [package]
    else:
        names = sorted(p.stem for p in where.glob("test_*.py"))
        modules = [importlib.import_module(f"{PACKAGE}.{name}") for name in names]
    for module in [package, *modules]:
        mixin = getattr(module, "ThreadPoolMixin", None)
        if mixin is not None:
            mixin.executor_type = ours
    return modules


def _short(module: types.ModuleType) -> str:
    return module.__name__.rpartition(".")[2]


def classes(modules: list[types.ModuleType]) -> dict[str, type[unittest.TestCase]]:
    """Every ThreadPool test class of the suite, by ``module:Class``."""
    found: dict[str, type[unittest.TestCase]] = {}
    for module in modules:
        for name, value in sorted(vars(module).items()):
            if (
                "ThreadPool" in name
                and isinstance(value, type)
                and issubclass(value, unittest.TestCase)
                and value.__module__ == module.__name__
            ):
                found[f"{_short(module)}:{name}"] = value
    return found


def _patch_children(modules: list[types.ModuleType], path: str) -> None:
    prelude = _PRELUDE.format(here=str(Path(__file__).parent), path=path)
    for module in modules:
        original = getattr(module, "assert_python_ok", None)
        if original is None:
            continue

        def assert_python_ok(*args: str, _original: object = original, **env: object) -> object:
            # The child imports the executor by its class name from
            # concurrent.futures and helpers from test.test_concurrent_futures:
            # provide both there too.
            args = tuple(prelude + arg if arg.startswith("if ") else arg for arg in args)
            return _original(*args, **env)  # type: ignore[operator]

        module.assert_python_ok = assert_python_ok  # type: ignore[attr-defined]


def main(path: str, only: list[str]) -> int:
    modules = register(path)
    found = classes(modules)
    loader = unittest.TestLoader()
    if only == ["--list"]:
        counts = {
            key: loader.loadTestsFromTestCase(cls).countTestCases() for key, cls in found.items()
        }
        print("\nLIST " + json.dumps(counts))
        return 0
    unknown = sorted(set(only) - set(found))
    if unknown:
        print(f"no such test classes: {unknown}; the suite has {sorted(found)}", file=sys.stderr)
        return 2
    _patch_children(modules, path)
    wanted = only or sorted(found)
    suite = unittest.TestSuite()
    setups: dict[str, types.ModuleType] = {}
    for key in wanted:
        cls = found[key]
        for test in loader.loadTestsFromTestCase(cls):
            test_id = f"{cls.__name__}.{test._testMethodName}"  # type: ignore[attr-defined]
            if test_id in EXCLUDED:
                skip = unittest.skip(EXCLUDED[test_id])(lambda: None)
                setattr(test, test._testMethodName, skip)  # type: ignore[attr-defined]
            suite.addTest(test)
        module = sys.modules[cls.__module__]
        setups[module.__name__] = module
    for module in setups.values():
        setup = getattr(module, "setUpModule", None)
        if setup is not None:
            setup()
    try:
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    finally:
        unittest.case.doModuleCleanups()
    # The tests print timings to stdout without newlines: start a fresh line.
    print(
        "\nSUMMARY "
        + json.dumps(
            {
                "classes": wanted,
                "run": result.testsRun,
                "failures": [t.id() for t, _ in result.failures],
                "errors": [t.id() for t, _ in result.errors],
                "skipped": [t.id() for t, _ in result.skipped],
            }
        )
    )
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
