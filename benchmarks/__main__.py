"""``python -m benchmarks [--quick] [--only NAME ...]``: run every benchmark, one process.

Each ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> str``
returning markdown. This runner calls them in turn, prints their tables with a
header naming the date, machine and command, and writes the same text to
``benchmarks/results/latest.md``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from benchmarks._harness import machine

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules (``bench_*``), sorted."""
    return sorted(
        info.name for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print one markdown report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these modules (e.g. bench_token)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for latest.md")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark modules: {', '.join(unknown)}")
        names = [name for name in names if name in args.only]
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    if args.only:
        command += " --only " + " ".join(args.only)
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    sections = [f"## {today}: `{command}`", "", f"Machine: {machine()}.", ""]
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        sections.append(module.run(quick=args.quick))
        sections.append("")
        elapsed = time.perf_counter() - started
        print(f"[{index}/{len(names)}] {name} done in {elapsed:.1f} s", file=sys.stderr)
    report = "\n".join(sections)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
