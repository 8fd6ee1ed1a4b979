"""Per-question tool selection (small local models see only the schemas a question calls for)."""

import json

from triscale.agents.graph import compact_tools
from triscale.agents.select import select_tools

AVAILABLE = compact_tools()


def test_rules_pick_the_tools_a_question_needs():
    assert select_tools("What is the energy of a water molecule with GFN2-xTB?", AVAILABLE) == [
        "build_molecule",
        "single_point",
    ]
    assert select_tools("What is the lattice constant of Cu?", AVAILABLE) == ["build_bulk", "equation_of_state"]
    # a specific energy (zero-point, Gibbs) does not also offer the plain single point
    assert select_tools("Zero-point energy of CO2 with GFN2-xTB?", AVAILABLE) == [
        "build_molecule",
        "vibrational_analysis",
    ]
    assert select_tools("Reaction energy of 2 H2 + O2 -> 2 H2O?", AVAILABLE) == ["reaction_energy"]
    assert select_tools("EMT energy of fcc aluminium", AVAILABLE) == ["build_bulk", "single_point"]
    assert select_tools("hello there", AVAILABLE) == []  # nothing matches: the caller offers everything
    assert select_tools("Dipole of ethanol", ["single_point"]) == ["single_point"]  # only what is available


def test_agent_offers_only_selected_schemas(make_agent):
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            {"tool": "equation_of_state", "args": {"structure_id": "st1", "calculator": "emt", "n_points": 5}},
            "",
            "Hello.",
        ],
        tools=compact_tools(),
        select_tools=True,
    )
    run = agent.ask("What is the lattice constant of fcc Cu with EMT?")
    turns = [json.loads(x) for x in open(run.provenance) if '"model_turn"' in x]
    assert [t["tools_offered"] for t in turns] == [["build_bulk", "equation_of_state"]] * 3
    assert run.answer.results[0].property == "lattice_constant"
    run = agent.ask("hello")  # no rule matches: every tool is offered
    turns = [json.loads(x) for x in open(run.provenance) if '"model_turn"' in x]
    assert set(turns[0]["tools_offered"]) == set(compact_tools())


def test_a_computation_is_required_before_the_final_answer(make_agent):
    """The 1.5B model built Cu and then answered in prose without the equation of state; the agent asks again
    with a computing tool required, once, and only when the question called for one."""
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
            "You need to build the crystal first and then use equation_of_state.",
            {"tool": "equation_of_state", "args": {"structure_id": "st1", "calculator": "emt", "n_points": 5}},
            "",
        ],
        tools=compact_tools(),
        select_tools=True,
    )
    run = agent.ask("What is the lattice constant of fcc Cu with EMT?")
    assert run.answer.results[0].property == "lattice_constant" and run.n_tool_calls == 2
    guards = [json.loads(x) for x in open(run.provenance) if '"guard"' in x]
    assert len(guards) == 1 and "required" in guards[0]["reason"]
    # a question no rule matches may be answered without tools
    agent = make_agent(["Hello! Ask me about molecules or materials."], tools=compact_tools(), select_tools=True)
    run = agent.ask("hello")
    assert run.n_tool_calls == 0 and run.answer.answer.startswith("Hello!")


def test_every_selectable_tool_is_offered_to_local_models():
    """planning_1 failed because the selector chose plan_experiments, which local models were never given."""
    from triscale.agents.select import rules

    assert {t for _, tools in rules() for t in tools} <= set(compact_tools())


def test_when_the_structure_is_missing_the_retry_may_build_it(agent_ws):
    """Held-out h_md_1: the model called MD on 'st1' with nothing built, then wrote prose; the required retry offered
    the computing tools only, so it could only call MD on 'st1' again. After an unknown-structure failure the retry
    offers the builders too."""
    from triscale.agents import ScienceAgent, ScriptedChatModel

    forced: list[list[str]] = []

    class Recording(ScriptedChatModel):
        def bind_tools(self, tools, *, tool_choice=None, **kwargs):
            if tool_choice == "any":
                forced.append(sorted(getattr(t, "name", None) or t["function"]["name"] for t in tools))
            return self

    turns = [
        {"tool": "molecular_dynamics", "args": {"structure_id": "st1", "calculator": "emt", "steps": 5}},
        "You need to build the structure first.",
        {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True}},
        {"tool": "molecular_dynamics", "args": {"structure_id": "st1", "calculator": "emt", "steps": 5}},
        "",
    ]
    agent = ScienceAgent(
        Recording(messages=iter(turns)), agent_ws, memory=False, tools=compact_tools(), select_tools=True
    )
    run = agent.ask("Run 5 steps of NVT molecular dynamics of cubic copper with EMT.")
    # every binding of the run, the required retry's included, offers the builder (before: MD alone)
    assert len(forced) >= 3 and all("build_bulk" in f and "molecular_dynamics" in f for f in forced), forced
    assert any(r.property == "temperature_mean" for r in run.answer.results)
