"""The public surface: `__all__` lists exactly the public names, all from `cancellable`."""

from __future__ import annotations

import cancellable


def test_all_matches_public_names() -> None:
    public = {name for name in vars(cancellable) if not name.startswith("_")}
    assert set(cancellable.__all__) == public


def test_all_is_sorted_and_unique() -> None:
    assert list(cancellable.__all__) == sorted(set(cancellable.__all__))


def test_public_objects_report_the_package_as_module() -> None:
    for name in cancellable.__all__:
        obj = getattr(cancellable, name)
        assert getattr(obj, "__module__", "cancellable") == "cancellable", name


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("cancellable").joinpath("py.typed").is_file()
