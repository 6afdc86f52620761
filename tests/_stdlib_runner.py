"""Run CPython's own ThreadPoolExecutor tests against CancellableThreadPoolExecutor.

Usage: ``python tests/_stdlib_runner.py PATH [CLASS...]`` where PATH is a
``test_concurrent_futures.py``; with CLASS names, runs only those classes.
Loads that file by path, substitutes the executor for
``concurrent.futures.ThreadPoolExecutor`` (in the module and in the child
processes some tests start), runs every test class whose name contains
``ThreadPool`` and prints one JSON line with the counts. Tests in `EXCLUDED`
are skipped with their reason; it is empty while every test passes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import unittest
from concurrent import futures

import cancellable

# Test id (class.method) -> why it cannot run against this executor.
EXCLUDED: dict[str, str] = {}

_PRELUDE = """\
import importlib.util as _u, sys as _s
import concurrent.futures as _cf
import cancellable as _c
_cf.CancellableThreadPoolExecutor = _c.CancellableThreadPoolExecutor
_cf.ThreadPoolExecutor = _c.CancellableThreadPoolExecutor
_spec = _u.spec_from_file_location("test.test_concurrent_futures", {path!r})
_m = _u.module_from_spec(_spec)
_s.modules["test.test_concurrent_futures"] = _m
_spec.loader.exec_module(_m)
"""


def load(path: str) -> object:
    spec = importlib.util.spec_from_file_location("test.test_concurrent_futures", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["test.test_concurrent_futures"] = module
    spec.loader.exec_module(module)
    return module


def main(path: str, only: list[str]) -> int:
    ours = cancellable.CancellableThreadPoolExecutor
    futures.ThreadPoolExecutor = ours  # type: ignore[misc]
    module = load(path)
    module.ThreadPoolMixin.executor_type = ours  # type: ignore[attr-defined]
    original = module.assert_python_ok  # type: ignore[attr-defined]
    prelude = _PRELUDE.format(path=path)

    def assert_python_ok(*args: str, **env: object) -> object:
        # The child imports the executor by its class name from
        # concurrent.futures and helpers from test.test_concurrent_futures:
        # provide both there too.
        args = tuple(prelude + arg if arg.startswith("if ") else arg for arg in args)
        return original(*args, **env)

    module.assert_python_ok = assert_python_ok  # type: ignore[attr-defined]

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    names = sorted(n for n in vars(module) if "ThreadPool" in n and (not only or n in only))
    for name in names:
        cls = getattr(module, name)
        if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
            for test in loader.loadTestsFromTestCase(cls):
                test_id = f"{name}.{test._testMethodName}"  # type: ignore[attr-defined]
                if test_id in EXCLUDED:
                    skip = unittest.skip(EXCLUDED[test_id])(lambda: None)
                    setattr(test, test._testMethodName, skip)  # type: ignore[attr-defined]
                suite.addTest(test)
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
                "classes": names,
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
