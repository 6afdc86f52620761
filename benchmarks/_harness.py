"""Shared benchmark machinery: interleaved repeats, medians, ratios, markdown.

Machines here are shared and noisy, so every comparison runs its variants in
one process, alternating them round by round, and reports the median of each
and its ratio to a baseline rather than absolute figures alone.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Row", "compare", "machine", "markdown_table", "percentile", "timed"]


def machine() -> str:
    """One line naming this machine and interpreter, for result headers."""
    import os

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.system()}"
    )


def timed(fn: Callable[[], object]) -> float:
    """Run ``fn`` once with the collector off; return the seconds it took."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Row:
    """One variant's samples in a comparison."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def compare(
    variants: dict[str, Callable[[], float]],
    *,
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Run each variant once per round, alternating, and collect what each returns.

    Each variant returns its own measurement (seconds, ns per op, bytes...),
    so one harness serves throughput, latency and memory alike. The order of
    the variants rotates every round so none always runs first.
    """
    rows = {name: Row(name) for name in variants}
    names = list(variants)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if progress is not None:
                progress(f"round {round_index + 1}/{rounds}: {name}")
            rows[name].samples.append(variants[name]())
    return list(rows.values())


def markdown_table(
    title: str, rows: list[Row], *, baseline: str, unit: str, lower_is_better: bool = True
) -> str:
    """Format rows as a markdown table with each median's ratio to ``baseline``."""
    base = next(row for row in rows if row.name == baseline).median
    what = "lower is better" if lower_is_better else "higher is better"
    lines = [
        f"**{title}** ({unit}, median; ratio to {baseline}, {what})",
        "",
        "| variant | median | ratio |",
        "| --- | ---: | ---: |",
    ]
    for row in rows:
        ratio = row.median / base if base else float("nan")
        lines.append(f"| {row.name} | {row.median:.4g} | {ratio:.2f} |")
    return "\n".join(lines)
