"""Benchmarks for cancellable, run with ``python -m benchmarks``."""
