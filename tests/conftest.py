import os

import pytest

# Must be set before torch/tblite/pyscf start their OpenMP runtimes (see DESIGN.md: spin-waiting threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def ws(tmp_path):
    """A fresh tool workspace (structure store) for the test."""
    from triscale.tools import Workspace

    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture
def call(ws):
    """call(name, **args) -> result, in the test's workspace."""
    from triscale.tools import call_tool

    def _call(tool_name, /, **args):
        return call_tool(tool_name, args, ws)

    return _call
