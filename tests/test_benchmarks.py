"""The benchmark runner finds every module, and each one runs at smoke-test size.

Nothing here measures speed: the figures of a tiny run mean nothing, only that
every workload still runs end to end and reports.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
from benchmarks import __main__ as runner

ROOT = Path(__file__).resolve().parent.parent


def test_runner_discovers_every_bench_module() -> None:
    on_disk = sorted(path.stem for path in (ROOT / "benchmarks").glob("bench_*.py"))
    assert runner.discover() == on_disk
    assert {"bench_executor", "bench_pools", "bench_primitives", "bench_token"} <= set(on_disk)


def test_a_plain_run_writes_to_an_ignored_folder_and_only_publish_to_results() -> None:
    assert runner.output_folder(None, publish=False) == ROOT / "benchmarks" / "local"
    assert runner.output_folder(None, publish=True) == ROOT / "benchmarks" / "results"
    assert runner.output_folder(ROOT / "x", publish=False) == ROOT / "x"
    assert "benchmarks/local/" in (ROOT / ".gitignore").read_text().splitlines()
    with pytest.raises(SystemExit):
        runner.main(["--publish", "--out", "elsewhere"])


def test_every_module_exposes_run_with_a_tiny_size() -> None:
    import inspect

    for name in runner.discover():
        module = importlib.import_module(f"benchmarks.{name}")
        parameters = inspect.signature(module.run).parameters
        assert "quick" in parameters, name
        assert "tiny" in parameters, name


def test_tiny_run_of_every_module_writes_one_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.main(["--tiny", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "latest.md").read_text()
    assert report.startswith("## ")
    assert "`python -m benchmarks --tiny`" in report
    assert "Machine: " in report
    for heading in (
        "no-op submit+result",  # bench_executor and bench_pools
        "Cancelling a backlog of pending tasks",  # bench_pools
        "Throughput against max_workers",
        "Mixed workload",
        "Lock acquire/release",  # bench_primitives
        "### Token core",  # bench_token
    ):
        assert heading in report, heading
    out = capsys.readouterr()
    assert out.out.strip() == report.strip()
    count = len(runner.discover())
    assert f"[{count}/{count}]" in out.err
    pngs = sorted(path.name for path in tmp_path.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert pngs == []
        assert "no plots" in out.err
    else:
        assert pngs == [
            "pools_cancel_vs_backlog.png",
            "pools_throughput_vs_workers.png",
            "pools_wake_latency.png",
        ]


def test_no_plots_flag_writes_no_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--no-plots", "--only", "bench_primitives", "--out", str(tmp_path)]
    assert runner.main(argv) == 0
    assert list(tmp_path.glob("*.png")) == []
    assert "--no-plots" in (tmp_path / "latest.md").read_text()
    capsys.readouterr()


def test_pool_adapters_agree_on_results() -> None:
    from benchmarks._pools import available

    for name, make in available().items():
        pool = make(2)
        try:
            handles = [pool.submit(pow, i, 2) for i in range(50)]
            pool.wait(handles)
            assert sorted(pool.map(abs, range(-20, 0))) == list(range(1, 21)), name
        finally:
            pool.shutdown()


@pytest.mark.parametrize("module", ["bench_pools", "bench_token"])
def test_against_another_tree_reports_both(module: str) -> None:
    # This tree's own src stands in for an older one.
    bench = importlib.import_module(f"benchmarks.{module}")
    report = bench.against(ROOT / "src", tiny=True)
    assert f"This tree against `{ROOT / 'src'}`" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 4, report  # the header and at least three workloads
