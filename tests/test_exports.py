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

    cdask = pytest.importorskip("cancellable.dask", reason="needs the 'dask' extra")
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
