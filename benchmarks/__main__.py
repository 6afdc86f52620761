"""``python -m benchmarks [--quick] [--only NAME ...] [--no-plots] [--publish]``: every benchmark.

Each ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> str``
returning markdown. This runner calls them in turn, in one process, prints
their tables with a header naming the date, machine and command, and writes
the same text to ``latest.md`` in ``benchmarks/local/`` (git-ignored, so a run
that only measures this machine leaves the checkout clean); ``--publish``
writes to the committed ``benchmarks/results/`` instead, the figures and plots
the README shows. ``run`` may take a keyword ``tiny``
(``--tiny``: smoke-test sizes for the test suite). A module may also expose ``plots(outdir)``,
which draws what its last ``run`` measured as PNG files (matplotlib, from the
``bench`` extra; without it the plots are skipped with a message). Progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path
from types import ModuleType

from benchmarks._harness import machine

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules (``bench_*``), sorted."""
    return sorted(
        info.name for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("bench_")
    )


LOCAL = HERE / "local"
PUBLISHED = HERE / "results"


def output_folder(out: Path | None, *, publish: bool) -> Path:
    """Where a run writes: ``out`` if given, the committed results with ``publish``, else local."""
    if out is not None:
        return out
    return PUBLISHED if publish else LOCAL


def _plot(module: ModuleType, outdir: Path) -> None:
    try:
        paths = module.plots(outdir)
    except ImportError as error:
        print(f"    no plots: {error.name or error} is not installed", file=sys.stderr)
        return
    for path in paths:
        print(f"    wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print one markdown report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test sizes, seconds in all: figures mean nothing"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these modules (e.g. bench_token)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for latest.md and the plots (default: benchmarks/local, git-ignored)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write to the committed benchmarks/results/ (the README's figures and plots)",
    )
    parser.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw PNG plots for modules that offer them (default: on)",
    )
    args = parser.parse_args(argv)
    if args.publish and args.out is not None:
        parser.error("--publish writes to benchmarks/results; it takes no --out")
    args.out = output_folder(args.out, publish=args.publish)
    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark modules: {', '.join(unknown)}")
        names = [name for name in names if name in args.only]
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    command += " --tiny" if args.tiny else ""
    if args.only:
        command += " --only " + " ".join(args.only)
    if not args.plots:
        command += " --no-plots"
    if args.publish:
        command += " --publish"
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    sections = [f"## {today}: `{command}`", "", f"Machine: {machine()}.", ""]
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        if args.tiny and "tiny" in inspect.signature(module.run).parameters:
            sections.append(module.run(quick=True, tiny=True))
        else:
            sections.append(module.run(quick=args.quick or args.tiny))
        sections.append("")
        if args.plots and hasattr(module, "plots"):
            _plot(module, args.out)
        elapsed = time.perf_counter() - started
        print(f"[{index}/{len(names)}] {name} done in {elapsed:.1f} s", file=sys.stderr)
    report = "\n".join(sections)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
