"""``bench_token --against DIR`` runs end to end (at smoke-test size; no figures checked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benchmarks import bench_token

import cancellable

SRC = Path(cancellable.__file__).resolve().parent.parent


def test_against_another_tree_reports_every_workload() -> None:
    # This very tree, imported a second time under another name, stands in
    # for an older one.
    try:
        report = bench_token.against(SRC, tiny=True)
        before = sys.modules["cancellable_before"]
        assert before.CancellationTokenSource is not cancellable.CancellationTokenSource
    finally:
        sys.modules.pop("cancellable_before", None)
        for name in [n for n in sys.modules if n.startswith("cancellable_before.")]:
            del sys.modules[name]
    assert "| workload | before | after | ratio | best before | best after | ratio |" in report
    for workload in ("ns per callback", "ns per child", "`CancellationTokenSource()`", "dropped"):
        assert workload in report, workload


def test_against_a_folder_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no cancellable/__init__\.py under"):
        bench_token.load_tree(tmp_path)
