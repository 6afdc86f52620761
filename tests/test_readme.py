"""Every Python example in README.md runs, and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# A ```python block, optionally followed by "prints" and a ```text block.
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*\nprints\n\n```text\n(.*?)```)?", re.DOTALL)


def _examples() -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def test_readme_has_examples() -> None:
    assert _examples(), "README.md lost its Python examples"


@pytest.mark.parametrize(("code", "expected"), _examples())
def test_readme_example_runs(code: str, expected: str | None) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    if expected is not None:
        assert out.getvalue() == expected
