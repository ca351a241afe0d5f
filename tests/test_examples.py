"""Every example states, in its docstring, the result it reaches and that the result was measured."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_states_its_measured_result(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Expected" in doc, f"{path.name}: say what a run with the defaults ends with"
    assert "measured" in doc.lower(), f"{path.name}: say that the expected result was measured"
    assert f"python examples/{path.name}" in doc, f"{path.name}: give the command that runs it"
