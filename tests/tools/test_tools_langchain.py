"""The LangChain binding: StructuredTools returning content + artifact; errors as ToolException messages."""

import json
import sys

import pytest

pytest.importorskip("langchain_core")


def _call(tool, args, call_id="c1"):
    return tool.invoke({"type": "tool_call", "id": call_id, "name": tool.name, "args": args})


def test_content_and_artifact(ws):
    from triscale.agents.tool_bindings import langchain_tools

    tools = {t.name: t for t in langchain_tools(ws)}
    assert tools["single_point"].response_format == "content_and_artifact"
    msg = _call(tools["build_molecule"], {"name": "water"})
    assert msg.status == "success" and msg.artifact["structure_id"] == "st1"
    assert json.loads(msg.content)["formula"] == "H2O"
    sp = _call(tools["single_point"], {"structure_id": "st1", "calculator": "gfn2-xtb"})
    assert sp.artifact["energy_eV"] == pytest.approx(-137.9678, abs=1e-3)
    assert "positions" not in sp.content


def test_errors_are_tool_exception_messages(ws):
    from langchain_core.tools import ToolException

    from triscale.agents.tool_bindings import make_langchain_tool

    tool = make_langchain_tool("single_point", ws)
    msg = _call(tool, {"structure_id": "st3"})
    assert msg.status == "error" and "Unknown structure 'st3'" in msg.content and "build_molecule" in msg.content
    msg = _call(tool, {"structure_id": "water", "calculator": "vasp"})
    assert msg.status == "error" and "Unknown calculator 'vasp'" in msg.content
    tool.handle_tool_error = False
    with pytest.raises(ToolException, match="unknown argument 'foo'"):
        tool.invoke({"structure_id": "st1", "foo": 1})


def test_schema_for_the_model(ws):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from triscale.agents.tool_bindings import make_langchain_tool

    spec = convert_to_openai_tool(make_langchain_tool("optimize_geometry", ws))["function"]
    props = spec["parameters"]["properties"]
    assert spec["name"] == "optimize_geometry" and "fmax_eV_per_A" in props and "structure_id" in props
    assert spec["parameters"]["required"] == ["structure_id"]


def test_tools_package_imports_no_llm_library():
    import subprocess

    code = (
        "import sys, triscale.tools, triscale.tools.workflows, triscale.tools.mcp_server; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain', 'langchain_core', 'langgraph', "
        "'openai', 'torch')]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
