"""Chat memory across turns (SQLite sessions that resume) and the workflow export/replay round trip."""

import pytest


def test_memory_across_turns_and_resume_from_disk(agent_ws):
    from langchain_core.messages import HumanMessage, ToolMessage

    from triscale.agents import ScienceAgent, ScriptedChatModel

    seen = {}

    def second_turn(msgs):
        seen["humans"] = [m.content for m in msgs if isinstance(m, HumanMessage)]
        # the id built in the first turn is visible in the remembered tool result
        sid = [m for m in msgs if isinstance(m, ToolMessage)][0].artifact["structure_id"]
        return {"tool": "single_point", "args": {"structure_id": sid, "calculator": "emt"}}

    turns = [{"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}}, "Built Cu as st1.", second_turn, ""]
    agent = ScienceAgent(ScriptedChatModel(messages=iter(turns)), agent_ws, memory=True)
    agent.ask("Build fcc Cu.", thread_id="s1")
    run2 = agent.ask("Now its EMT energy?", thread_id="s1")
    assert seen["humans"] == ["Build fcc Cu.", "Now its EMT energy?"]
    assert [r.property for r in run2.answer.results][0] == "energy"  # only this turn's results
    n = len(agent.history("s1"))
    agent.close()
    # a new process/agent on the same workspace resumes the session from the SQLite file
    again = ScienceAgent(ScriptedChatModel(messages=iter([])), agent_ws, memory=True)
    assert len(again.history("s1")) == n >= 6 and again.history("other") == []
    again.close()


def test_export_and_replay_reproduces_numbers(make_agent, agent_ws, tmp_path):
    from triscale.agents.provenance import export_workflow, load_run
    from triscale.tools import Workspace
    from triscale.tools.workflows import load_workflow, run_workflow

    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "make_supercell", "args": {"structure_id": "${1.structure_id}", "repeat": [2, 1, 1]}},
            {
                "tool": "optimize_geometry",
                "args": {"structure_id": "${2.structure_id}", "calculator": "emt", "fmax_eV_per_A": 0.05},
            },
            {"tool": "single_point", "args": {"structure_id": "${3.structure_id}", "calculator": "emt"}},
            {"tool": "single_point", "args": {"structure_id": "st99"}},  # a failed call is not exported
            "",
        ]
    )
    run = agent.ask("Relax a Cu supercell and give its energy.")
    path = export_workflow(run.run_id, agent_ws.root)
    wf = load_workflow(path)
    assert [s.tool for s in wf.steps] == ["build_bulk", "make_supercell", "optimize_geometry", "single_point"]
    assert wf.steps[1].args["structure_id"] == "${s1.structure_id}"
    assert wf.steps[3].args["structure_id"] == "${s3.structure_id}"
    fresh = Workspace(tmp_path / "replay", isolate=False)
    fresh.add(__import__("ase").Atoms("H"), label="offset")  # ids in the replay differ from the original
    out = run_workflow(path, fresh)
    assert out.ok
    original = [e["result"] for e in load_run(run.provenance) if e["kind"] == "tool_call" and e["status"] == "ok"]
    for step, orig in zip(out.steps, original, strict=True):
        for key, value in orig.items():
            if isinstance(value, float):
                assert step.result[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    assert out.steps[-1].result["structure_id"] != original[-1]["structure_id"]


def test_cli_replays_exported_workflow(make_agent, agent_ws, tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu"}},
            {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}},
            "",
        ]
    )
    run = agent.ask("Energy of Cu")
    r = CliRunner().invoke(app, ["runs", "export", run.run_id, "--workspace", str(agent_ws.root)])
    assert r.exit_code == 0, r.output
    wf = r.output.strip()
    r = CliRunner().invoke(app, ["run", wf, "--workspace", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    energy = json.loads(r.output[r.output.index("{") :])["steps"][1]["result"]["energy_eV"]
    assert energy == pytest.approx(run.answer.results[0].value, abs=1e-9)
    r = CliRunner().invoke(app, ["runs", "show", run.run_id[:12], "--workspace", str(agent_ws.root)])
    assert r.exit_code == 0 and "single_point" in r.output and "answer" in r.output


def test_chat_repl_streams_tools_and_keeps_the_session(tmp_path):
    import json

    from typer.testing import CliRunner

    from triscale.cli import app

    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
                {"tool": "equation_of_state", "args": {"structure_id": "st1", "calculator": "emt", "n_points": 5}},
                "",
                "You asked about the Cu lattice constant.",
            ]
        )
    )
    ws = tmp_path / "ws"
    r = CliRunner().invoke(
        app,
        ["chat", "--llm", f"scripted:{script}", "--workspace", str(ws), "--session", "demo"],
        input="Lattice constant of Cu with EMT?\nWhat did I ask?\n/runs\n/quit\n",
    )
    assert r.exit_code == 0, r.output
    assert "→ build_bulk" in r.output and "→ equation_of_state" in r.output and "lattice constant" in r.output
    assert "You asked about the Cu lattice constant." in r.output
    assert r.output.count("Lattice constant of Cu with EMT?") >= 1  # listed by /runs
    from triscale.agents import ScienceAgent, ScriptedChatModel

    again = ScienceAgent(ScriptedChatModel(messages=iter([])), ws)
    assert len(again.history("demo")) >= 6
    again.close()
