"""Agent metadata read from each tool's registration: approval on validated inputs, builders, answer fields."""

import pytest

from triscale.agents.middleware import is_expensive, makes_structures_only
from triscale.tools import list_tools


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("single_point", {"structure_id": "water", "calculator": "dft"}),
        ("single_point", {"structure_id": "water", "calculator": "DFT"}),
        ("single_point", {"structure": "water", "calculator": " B3LYP "}),
        ("single_point", {"structure_id": "water", "calculator": {"method": "PySCF", "basis": "sto-3g"}}),
        ("optimize_geometry", {"structure_id": "water", "calculator": {"method": "hf"}}),
        ("vibrational_analysis", {"structure_id": "water", "calculator": "pbe"}),
        ("reaction_energy", {"reaction": "H2 + H2 -> 2 H2", "calculator": "Dft"}),
        ("electronic_structure", {"structure_id": "water", "method": "dft"}),
        ("electronic_structure", {"structure_id": "water", "method": "HF"}),
        ("electronic_structure", {"structure_id": "water", "method": "b3lyp"}),
        ("plan_experiments", {"candidates": ["water", "methane"], "calculator": "dft"}),
        ("molecular_dynamics", {"structure_id": "water", "calculator": "gfn2-xtb", "steps": 50_000}),
        ("submit_job", {"tool": "single_point", "arguments": {"structure_id": "water", "calculator": "DFT"}}),
    ],
)
def test_every_spelling_of_an_expensive_call_needs_approval(name, args):
    assert is_expensive(name, args)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("single_point", {"structure_id": "water", "calculator": "gfn2-xtb"}),
        ("single_point", {"structure_id": "water"}),  # auto never resolves to DFT
        ("electronic_structure", {"structure_id": "water", "method": "xtb"}),
        ("molecular_dynamics", {"structure_id": "water", "calculator": "emt", "steps": 2000}),
        ("submit_job", {"tool": "single_point", "arguments": {"structure_id": "water", "calculator": "emt"}}),
        ("build_molecule", {"name": "water"}),
        ("single_point", {"structure_id": "water", "calculator": "dft", "bogus": 1}),  # refused before it runs
        ("no_such_tool", {"calculator": "dft"}),
    ],
)
def test_cheap_or_invalid_calls_need_no_approval(name, args):
    assert not is_expensive(name, args)


@pytest.mark.parametrize("approved", [False, True])
def test_approval_asked_for_electronic_structure_hf(make_agent, approved):
    """The old check read only a ``calculator`` argument: electronic_structure(method='HF') ran unasked."""
    asked = []
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "H2"}},
            {"tool": "electronic_structure", "args": {"structure_id": "st1", "method": "HF", "basis": "sto-3g"}},
            "",
        ],
        approve=lambda name, args: asked.append(name) or approved,
    )
    run = agent.ask("HF orbitals of H2")
    assert asked == ["electronic_structure"]
    gaps = [r for r in run.answer.results if r.property == "gap"]
    assert bool(gaps) is approved
    if approved:
        assert gaps[0].unit == "eV" and gaps[0].value > 10


def test_registry_metadata_is_consistent():
    tools = {t.name: t for t in list_tools()}
    compact = {n for n, t in tools.items() if t.compact}
    assert {"build_molecule", "single_point", "vibrational_analysis", "analyze_structure"} <= compact
    assert {n for n, t in tools.items() if t.keywords} <= compact  # the selector only picks offered tools
    builders = {n for n in tools if makes_structures_only(n)}
    assert {"build_molecule", "build_bulk", "make_supercell", "build_surface", "list_structures"} <= builders
    assert not builders & {"single_point", "analyze_structure", "equation_of_state"}
    for t in tools.values():
        assert set(t.answer_fields) <= set(t.result_model.model_fields), t.name


def test_register_refuses_bad_metadata():
    from triscale.tools.registry import ToolInput, ToolResult, register

    class In(ToolInput):
        x: int = 0

    class Out(ToolResult):
        y_eV: float

    with pytest.raises(ValueError, match="not fields of Out"):
        register("t_bad_fields", input=In, result=Out, answer_fields=("z_eV",))
    with pytest.raises(ValueError, match="Unknown approval policy"):
        register("t_bad_policy", input=In, result=Out, needs_approval="sometimes")


def test_vibrational_frequencies_reach_the_structured_answer(make_agent):
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "vibrational_analysis", "args": {"structure_id": "st1", "calculator": "gfn2-xtb"}},
            "",
        ]
    )
    run = agent.ask("Vibrational frequencies of water with GFN2-xTB?")
    res = {r.property: r for r in run.answer.results}
    freqs = res["vibrational_frequencies"]
    assert freqs.unit == "cm-1" and freqs.method == "gfn2-xtb" and isinstance(freqs.value, list)
    assert len(freqs.value) == 3 and 1300 < freqs.value[0] < 1800 and 3000 < freqs.value[-1] < 4000
    assert res["zero_point_energy"].unit == "eV" and 0.4 < res["zero_point_energy"].value < 0.7
    assert freqs.tool_calls == res["zero_point_energy"].tool_calls
    assert "vibrational frequencies = [" in run.answer.answer
    assert run.as_json()["results"][0]["property"] == "zero_point_energy"


def test_measured_distance_reaches_the_structured_answer(make_agent):
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "optimize_geometry", "args": {"structure_id": "st1", "calculator": "gfn2-xtb"}},
            {"tool": "analyze_structure", "args": {"structure_id": "${2.structure_id}", "distances": [[0, 1]]}},
            "",
        ]
    )
    run = agent.ask("O-H bond length of water after a GFN2-xTB relaxation?")
    # the question names the bond by its elements: every bonded O-H pair is measured (both, equal by symmetry)
    dist, other = [r for r in run.answer.results if r.property == "distance"]
    ws = agent.workspace
    relaxed = ws.get("st2")
    assert dist.unit == "Å" and dist.value == pytest.approx(relaxed.get_distance(0, 1), abs=1e-6)
    assert other.value == pytest.approx(relaxed.get_distance(0, 2), abs=1e-6)
    assert dist.structure_ids == ["st2"] and 0.9 < dist.value < 1.05
    assert any(r.property == "energy_final" for r in run.answer.results)
