"""Shared benchmark machinery: interleaved repeats, medians, ratios, markdown.

Machines here are shared and noisy, so every comparison runs its variants in
one process, alternating them round by round, and reports the median of each
and its ratio to a baseline rather than absolute figures alone.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = [
    "Row",
    "cli",
    "compare",
    "header",
    "load_tree",
    "machine",
    "markdown_table",
    "percentile",
    "quantile_table",
    "timed",
]


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


def quantile_table(
    title: str, rows: list[Row], quantiles: Sequence[float], *, digits: int
) -> list[str]:
    """Markdown lines: ``title``, then each row's ``quantiles`` (p50, p99...) to ``digits`` places.

    Lines, not text, so a caller can append its verdict before joining them.
    """
    names = [f"p{round(q * 100)}" for q in quantiles]
    lines = [
        title,
        "",
        "| variant | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for row in rows:
        cells = (f"{percentile(row.samples, q):.{digits}f}" for q in quantiles)
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def header(title: str, module: str, quick: bool, *, note: str | None = None) -> str:
    """The heading of one module's results: ``title``, the command, the time and the machine.

    ``module`` is the file's stem (``bench_token``): under ``python -m`` a
    module's ``__name__`` is ``__main__``. ``note`` ends the line, after the machine.
    """
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python -m benchmarks.{module}" + (" --quick" if quick else "")
    tail = f"; {note}" if note else ""
    return f"### {title} (`benchmarks/{module}.py`)\n\n`{command}` on {when}; {machine()}{tail}."


def cli(
    run: Callable[..., str],
    doc: str | None,
    *,
    quick_help: str = "small sizes, a few seconds",
    against: Callable[..., str] | None = None,
    against_help: str = "compare with the package in DIR/cancellable (e.g. an older commit's src)",
    module: str = "",
) -> None:
    """``python -m benchmarks.<module> [--quick] [--against DIR]``: print a report.

    What ``run(quick=...)`` returns or, with ``--against DIR`` (offered when
    ``against`` is given), a line naming the command and the machine, then
    what ``against(DIR, quick=...)`` returns.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if against is not None:
        parser.add_argument("--against", metavar="DIR", help=against_help)
    args = parser.parse_args()
    if against is not None and args.against is not None:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = f"python -m benchmarks.{module} --against {args.against}" + (
            " --quick" if args.quick else ""
        )
        print(f"`{command}` on {when}; {machine()}.\n")
        print(against(args.against, quick=args.quick))
        return
    print(run(quick=args.quick))


def load_tree(src: str | Path, name: str = "cancellable_before") -> ModuleType:
    """Import the package found in ``src``/cancellable under the module name ``name``.

    Its classes still say ``cancellable`` in their ``__module__``, so this
    tree's package must be imported first.
    """
    init = Path(src) / "cancellable" / "__init__.py"
    if not init.is_file():
        raise ValueError(f"no cancellable/__init__.py under {str(src)!r}")
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
