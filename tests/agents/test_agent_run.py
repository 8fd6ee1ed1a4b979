"""Full scripted runs: question -> tool calls -> structured answer whose numbers trace to the tool calls."""

import json

import pytest


def _entries(run):
    return [json.loads(line) for line in open(run.provenance)]


def test_question_to_structured_answer_with_provenance(make_agent, agent_ws):
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "gfn2-xtb"}},
            "The GFN2-xTB energy of water is -137.968 eV.",
        ]
    )
    run = agent.ask("What is the GFN2-xTB energy of water?")
    assert run.stop_reason == "answered" and run.n_tool_calls == 2
    out = run.as_json()
    assert set(out) == {"answer", "results"}
    energy = next(r for r in out["results"] if r["property"] == "energy")
    assert set(energy) == {"property", "value", "unit", "method", "uncertainty", "structure_ids", "tool_calls"}
    assert energy["value"] == pytest.approx(-137.9678, abs=1e-3)
    assert energy["unit"] == "eV" and energy["method"] == "gfn2-xtb" and energy["structure_ids"] == ["st1"]
    assert "-137.968 eV" in out["answer"] and "Note" not in out["answer"]
    # every result traces to a registry call that the workspace logged with this value
    calls = {c["call_id"]: c for c in agent_ws.calls()}
    for r in out["results"]:
        (cid,) = r["tool_calls"]
        assert calls[cid]["status"] == "ok" and r["value"] in calls[cid]["result"].values()
    entries = _entries(run)
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "run_start" and kinds[-1] == "final_answer"
    assert kinds.count("model_turn") == 3 and kinds.count("tool_call") == 2
    assert entries[0]["versions"]["langchain"] and entries[0]["llm"]["backend"] == "scripted"
    sp = [e for e in entries if e["kind"] == "tool_call" and e["name"] == "single_point"][0]
    assert sp["args"] == {"structure_id": "st1", "calculator": "gfn2-xtb"} and sp["result"]["energy_eV"] < -137
    assert sp["call_id"] == energy["tool_calls"][0] and sp["wall_time_s"] >= 0


def test_empty_final_turn_assembles_answer_from_results(make_agent):
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "equation_of_state", "args": {"structure_id": "st1", "calculator": "emt", "n_points": 5}},
            "",
        ]
    )
    run = agent.ask("Lattice constant of Cu with EMT?")
    res = {r.property: r for r in run.answer.results}
    assert res["lattice_constant"].unit == "Å" and 3.5 < res["lattice_constant"].value < 3.7
    assert res["bulk_modulus"].unit == "GPa" and res["bulk_modulus"].method == "emt"
    assert "lattice constant = 3.5" in run.answer.answer or "lattice constant = 3.6" in run.answer.answer


def test_predicted_gap_reaches_the_answer_with_its_uncertainty(make_agent):
    agent = make_agent([{"tool": "predict_properties", "args": {"structure_id": "acetone"}}, ""])
    run = agent.ask("Predict the HOMO-LUMO gap of acetone with the foundation model, with uncertainty.")
    res = {r.property: r for r in run.answer.results}
    gap = res["gap"]
    assert gap.unit == "eV" and 2.0 < gap.value < 6.0  # GFN2-xTB: 3.94 eV
    assert gap.uncertainty is not None and gap.uncertainty > 0  # the committee's spread, traced to the same call
    assert gap.tool_calls == res["energy"].tool_calls


def test_invented_numbers_are_flagged(make_agent):
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}},
            "The energy is -3.54 eV and the band gap is 1.234 eV.",
        ]
    )
    run = agent.ask("Energy of Cu?")
    assert "1.234" in run.answer.answer.split("must not be trusted:")[1]
    assert all(r.tool_calls for r in run.answer.results)


def test_structured_response_values_must_trace(make_agent):
    """With response_format the model's structured answer is used only where its values trace to tool results."""
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}},
            lambda msgs: {
                "tool": "ModelAnswer",
                "args": {
                    "answer": "Cu energy computed with EMT.",
                    "results": [
                        {
                            "property": "energy",
                            "value": [m for m in msgs if getattr(m, "artifact", None)][-1].artifact["energy_eV"],
                            "unit": "eV",
                            "method": "emt",
                            "structure_ids": ["st1"],
                        },
                        {"property": "band_gap", "value": 9.99, "unit": "eV", "method": "emt"},
                    ],
                },
            },
        ],
        structured=True,
    )
    run = agent.ask("Energy of Cu with EMT?")
    assert [r.property for r in run.answer.results] == ["energy"]
    assert run.answer.results[0].tool_calls and "Dropped band_gap" in run.answer.answer


def test_a_cancelled_run_starts_nothing_more_and_answers_from_what_finished(make_agent, agent_ws):
    """``ask(cancel=token)``: the token set after the first result (here from the event callback, as the web page's
    cancel does from another thread) ends the run before the next model turn; the answer keeps that result."""
    from triscale.tools.worker import CancelToken

    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}},
            "never reached",
        ]
    )
    token = CancelToken()

    def on_event(kind, data):
        if kind == "tool_end":
            token.cancel()

    run = agent.ask("Energy of Cu with EMT?", on_event=on_event, cancel=token)
    assert run.stop_reason == "cancelled" and run.n_tool_calls == 1 and run.n_model_calls == 1
    assert "Cancelled by the user" in run.answer.answer
    assert [c["tool"] for c in agent_ws.calls()] == ["build_bulk"]
    # a token already set: the call is refused by the binding without running
    from triscale.agents.context import CURRENT_CANCEL
    from triscale.agents.tool_bindings import make_langchain_tool

    tool = make_langchain_tool("single_point", agent_ws)
    reset = CURRENT_CANCEL.set(token)
    try:
        out = tool.invoke({"structure_id": "st1", "calculator": "emt"})
    finally:
        CURRENT_CANCEL.reset(reset)
    assert "not run" in out and "cancelled" in out and len(list(agent_ws.calls())) == 1
