"""The hostile-input catalogue (benchmarks/hostile_catalogue.py) as a test: every input gets a clear error or the
correct number, and nothing outside the workspace is touched. Slow (~2-3 min: real PySCF/xTB/EMT calls and CLI
subprocesses), so it runs in CI's second step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

CATALOGUE = Path(__file__).resolve().parents[2] / "benchmarks" / "hostile_catalogue.py"


def _load():
    spec = importlib.util.spec_from_file_location("hostile_catalogue", CATALOGUE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cat = _load()


@pytest.mark.slow
@pytest.mark.parametrize("case", cat.CASES, ids=[c[0] for c in cat.CASES])
def test_tool_input(case):
    outcome, detail = cat.run_tool_case(*case)
    assert outcome in ("clear", "correct"), f"{outcome}: {detail}"


@pytest.mark.slow
@pytest.mark.parametrize("case", cat.CLI_CASES, ids=[c[0] for c in cat.CLI_CASES])
def test_cli_input(case):
    outcome, detail = cat.run_cli_case(*case)
    assert outcome in ("clear", "correct"), f"{outcome}: {detail}"
