"""The pool scenario of ``python -m cancellable``."""

from __future__ import annotations

from cancellable.__main__ import run_pool_scenario


def test_pool_scenario_accounts_for_every_task() -> None:
    stats = run_pool_scenario(tasks=400, workers=2)
    total = stats["ran"] + stats["cancelled_pending"] + stats["stopped_cooperatively"]
    assert total == 400
    assert stats["ran"] >= 200  # the cancel comes half-way through
    assert stats["stopped_cooperatively"] <= 2  # only running tasks can stop cooperatively
    assert stats["seconds_to_empty"] >= 0
