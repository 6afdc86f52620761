"""The public surface: `__all__` lists exactly the public names, all from `cancellable`."""

from __future__ import annotations

import cancellable


def test_all_matches_public_names() -> None:
    # ``cancellable.dask`` is a public submodule (imported only with its extra),
    # not a re-exported name.
    public = {name for name in vars(cancellable) if not name.startswith("_")} - {"dask"}
    assert set(cancellable.__all__) == public


def test_process_pool_names_are_exported() -> None:
    assert cancellable.CancellableProcessPoolExecutor.__module__ == "cancellable"
    assert cancellable.CancellableProcessFuture.__module__ == "cancellable"


def test_dask_submodule_reports_its_own_module() -> None:
    import pytest

    pytest.importorskip("distributed", reason="needs the 'dask' extra")
    import cancellable.dask as cdask

    assert cdask.DaskExecutor.__module__ == "cancellable.dask"
    assert cdask.DaskFuture.__module__ == "cancellable.dask"
    assert set(cdask.__all__) == {"DaskExecutor", "DaskFuture"}


def test_all_is_sorted_and_unique() -> None:
    assert list(cancellable.__all__) == sorted(set(cancellable.__all__))


def test_public_objects_report_the_package_as_module() -> None:
    for name in cancellable.__all__:
        obj = getattr(cancellable, name)
        assert getattr(obj, "__module__", "cancellable") == "cancellable", name


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("cancellable").joinpath("py.typed").is_file()


def test_dask_submodule_without_the_extra_names_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "try:\n    import cancellable.dask\n"
        "except ModuleNotFoundError as e:\n    print(e.name, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.startswith("distributed ")
    assert "cancellable[dask]" in out
