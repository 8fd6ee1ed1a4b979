import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

pytest.importorskip("langchain")


@pytest.fixture
def agent_ws(tmp_path):
    """A workspace that runs calculations in-process (fast, deterministic)."""
    from triscale.tools import Workspace

    w = Workspace(tmp_path / "ws", isolate=False)
    yield w
    w.close()


@pytest.fixture
def make_agent(agent_ws):
    """make_agent(turns, **kwargs) -> ScienceAgent driven by a scripted model."""
    from triscale.agents import ScienceAgent, ScriptedChatModel

    made = []

    def _make(turns, **kwargs):
        kwargs.setdefault("memory", False)
        agent = ScienceAgent(ScriptedChatModel(messages=iter(turns)), agent_ws, **kwargs)
        made.append(agent)
        return agent

    yield _make
    for a in made:
        conn = getattr(a.checkpointer, "conn", None)
        if conn is not None:
            conn.close()
