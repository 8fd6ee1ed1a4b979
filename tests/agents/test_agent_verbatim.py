"""What the user typed reaches the tools: SMILES, temperatures, methods and basis sets stated in the question;
failing loops end with a plain answer; formulas and SMILES in the prose are traced like numbers."""

import json

import pytest


def test_question_facts():
    from triscale.agents.verbatim import question_facts

    f = question_facts("Report the dipole moment using GFN2-xTB for the molecule with SMILES: [C-]#[O+].")
    assert f.smiles == ["[C-]#[O+]"] and f.methods == ["gfn2-xtb"] and f.temperatures == []
    f = question_facts("Gibbs energy at 800 K of the molecule with SMILES O=C=O (Hartree-Fock, sto-3g basis)?")
    assert f.smiles == ["O=C=O"] and f.temperatures == [800.0] and f.methods == ["hf"] and f.bases == ["sto-3g"]
    f = question_facts("Energy of the molecule with SMILES CCO, then of water")
    assert f.smiles == ["CCO"]
    f = question_facts("Reaction energy of N2 + 3 H2 -> 2 NH3 with EMT or GFN1-xTB?")
    assert f.smiles == [] and set(f.methods) == {"gfn1-xtb", "emt"}
    # 'HF' alone is hydrogen fluoride, not a method; 'scan' is an English word
    assert question_facts("Energy of HF after an energy-volume scan").methods == []


def test_repair_call():
    from triscale.agents.verbatim import question_facts, repair_call

    f = question_facts("Report the dipole moment using GFN2-xTB for the molecule with SMILES: [C-]#[O+].")
    args, notes = repair_call("build_molecule", {"smiles": "C-]#[O+]"}, f)
    assert args == {"smiles": "[C-]#[O+]"} and "as written in the question" in notes[0]
    args, _ = repair_call("build_molecule", {"name": "carbon monoxide"}, f)
    assert args == {"smiles": "[C-]#[O+]"}  # the question's SMILES, not the g2 geometry of a retyped name
    args, notes = repair_call("single_point", {"structure_id": "st1", "calculator": "gfn1-xtb"}, f)
    assert args["calculator"] == "gfn2-xtb" and notes
    f = question_facts("Gibbs free energy of reaction for CO + H2O -> CO2 + H2 at 600 K using GFN2-xTB")
    args, notes = repair_call("reaction_energy", {"reaction": "CO + H2O -> CO2 + H2"}, f)
    assert args["temperature_K"] == 600 and args["free_energy"] is True and args["calculator"] == "gfn2-xtb"
    f = question_facts("HOMO-LUMO gap of water with Hartree-Fock in the sto-3g basis")
    args, _ = repair_call("orbital_energies", {"structure_id": "st1", "calculator": "hf"}, f)
    assert args["calculator"] == {"method": "hf", "basis": "sto-3g"}
    # nothing stated, nothing changed; two temperatures: ambiguous, left alone
    f = question_facts("Build caffeine")
    assert repair_call("build_molecule", {"name": "caffeine"}, f) == ({"name": "caffeine"}, [])
    f = question_facts("Free energy of water at 300 K and at 400 K")
    assert "temperature_K" not in repair_call("thermochemistry", {"structure_id": "st1"}, f)[0]


def test_mangled_smiles_reaches_the_tool_as_typed(make_agent):
    """The 1.5B model passed 'C-]#[O+]' for '[C-]#[O+]', got an error and repeated the call."""
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"smiles": "C-]#[O+]"}},
            {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "gfn2-xtb"}},
            "",
        ]
    )
    run = agent.ask("Report the dipole moment using GFN2-xTB for the molecule with SMILES: [C-]#[O+].")
    props = {r.property: r.value for r in run.answer.results}
    assert props["dipole_magnitude"] > 0.5 and len(props["dipole"]) == 3  # the vector: the question says dipole
    calls = [json.loads(line) for line in open(run.provenance)]
    built = next(c for c in calls if c["kind"] == "tool_call" and c["name"] == "build_molecule")
    assert built["args"] == {"smiles": "[C-]#[O+]"} and built["status"] == "ok"
    assert "as written in the question" in run.answer.answer


def test_failing_loop_ends_with_a_plain_answer(make_agent):
    """Invented model names, each call different: stopped after three failures in a row, saying what failed."""
    turns = [{"tool": "build_bulk", "args": {"name": "Al", "cubic": True}}]
    turns += [
        {"tool": "predict_properties", "args": {"structure_id": "${1.structure_id}", "model": f"invented-{i}"}}
        for i in range(10)
    ]
    agent = make_agent(turns + [""], max_model_calls=30)
    run = agent.ask("Use the foundation model to predict the energy of fcc aluminium")
    assert run.stop_reason == "repeated_failures"
    assert run.n_tool_calls == 4  # the build and three failed predictions
    assert "3 tool calls in a row failed" in run.answer.answer and "invented-2" in run.answer.answer


def test_invented_strings_are_flagged(make_agent):
    """Asked for a SMILES, the model wrote one for another molecule: it is flagged; the true one is a result."""
    agent = make_agent(
        [{"tool": "build_molecule", "args": {"name": "caffeine"}}, "Its SMILES is CC(=O)Oc1ccccc1C(=O)O."]
    )
    run = agent.ask("What is the SMILES of caffeine?")
    smiles = [r.value for r in run.answer.results if r.property == "smiles"]
    assert smiles == ["Cn1c(=O)c2c(ncn2C)n(C)c1=O"]
    assert "come from no tool result" in run.answer.answer and "CC(=O)Oc1ccccc1C(=O)O" in run.answer.answer
    agent = make_agent([{"tool": "build_molecule", "args": {"name": "caffeine"}}, "Caffeine is C8H10N4O2."])
    run = agent.ask("Formula of caffeine?")
    assert "come from no tool result" not in run.answer.answer
    agent = make_agent([{"tool": "build_molecule", "args": {"name": "caffeine"}}, "Caffeine is C8H10N4O3."])
    assert "C8H10N4O3" in agent.ask("Formula of caffeine?").answer.answer.split("Note:")[1]


def test_asked_quantity_reaches_the_results():
    from triscale.agents.answer import ToolRecord, results_from_records

    rec = ToolRecord(
        name="make_supercell",
        result={"structure_id": "st2", "formula": "Al108", "n_atoms": 108, "volume_A3": 1793.6, "call_id": "c1"},
    )
    assert "volume" not in {r.property for r in results_from_records([rec], "Build a 3x3x3 supercell of Al")}
    got = {r.property: r.value for r in results_from_records([rec], "What is the volume of a 3x3x3 Al supercell?")}
    assert got["volume"] == 1793.6


def test_question_entities():
    from triscale.agents.entities import question_entities as q

    assert q("Which of water, ammonia and hydrogen sulfide has the largest dipole moment?") == [
        "water",
        "ammonia",
        "hydrogen sulfide",
    ]
    assert q("Between copper and aluminium, which has the larger EMT bulk modulus?") == ["copper", "aluminium"]
    assert q("Compare the GFN2-xTB HOMO-LUMO gaps of ethylene and benzene.") == ["ethylene", "benzene"]
    assert q("Build a caffeine molecule. What is its chemical formula and how many atoms does it have?") == []
    assert q("What is the reaction energy of 2 H2 + O2 -> 2 H2O with GFN2-xTB?") == []
    assert q("Run 200 steps of NVT dynamics of a 2x2x2 fcc copper supercell at 300 K with EMT (seed 0).") == []


def test_comparison_computes_every_entity(make_agent):
    """ "which of A, B and C": the model computed A only; the same calls run for B and C, and the answer ranks."""
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "gfn2-xtb"}},
            "Water has the largest dipole.",
        ]
    )
    run = agent.ask("Which of water, ammonia and hydrogen sulfide has the largest dipole moment with GFN2-xTB?")
    dip = [r for r in run.answer.results if r.property == "dipole_magnitude"]
    assert len(dip) == 3 and len({r.structure_ids[0] for r in dip}) == 3
    assert "dipole magnitude, largest to smallest: water (" in run.answer.answer
    assert "ammonia" in run.answer.answer and "hydrogen sulfide" in run.answer.answer
    logged = [json.loads(line) for line in open(run.provenance)]
    assert sum(e.get("note") == "run for another entity of the question" for e in logged) == 4
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "gfn2-xtb"}},
            "",
        ],
        fan_out=False,
    )
    run = agent.ask("Which of water, ammonia and hydrogen sulfide has the largest dipole moment with GFN2-xTB?")
    assert len([r for r in run.answer.results if r.property == "dipole_magnitude"]) == 1


def test_run_settings_are_one_typed_object(agent_ws):
    import pytest

    from triscale.agents import RunSettings, ScienceAgent, ScriptedChatModel

    llm = ScriptedChatModel(messages=iter([]))
    agent = ScienceAgent(llm, agent_ws, memory=False, settings=RunSettings(max_model_calls=5), max_failures=2)
    assert agent.settings.max_model_calls == 5 and agent.settings.max_failures == 2 and agent.guard.max_failures == 2
    with pytest.raises(TypeError, match="max_modle_calls"):
        ScienceAgent(llm, agent_ws, memory=False, max_modle_calls=5)
    with pytest.raises(TypeError, match="max_tool_calls"):
        ScienceAgent(llm, agent_ws, memory=False, max_tool_calls=0)


def test_runs_keep_their_state_apart(make_agent):
    """Per-run state travels in the run's context: two runs of one agent do not see each other's calls."""
    turns = [
        {"tool": "build_molecule", "args": {"name": "water"}},
        {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "gfn2-xtb"}},
        "",
        {"tool": "build_molecule", "args": {"name": "water"}},
        "",
    ]
    agent = make_agent(turns)
    first = agent.ask("GFN2-xTB energy of water?")
    second = agent.ask("Build water")
    assert (first.n_tool_calls, second.n_tool_calls) == (2, 1) and second.stop_reason == "answered"
    assert (first.n_model_calls, second.n_model_calls) == (3, 2)


def test_model_routing_from_registry_descriptions(make_agent):
    """route="model": one forced call picks tools from one-line registry descriptions; only those are offered."""
    from triscale.agents.select import route_schema, tool_menu

    menu = tool_menu(["single_point", "thermochemistry"])
    assert menu.startswith("- single_point: ") and "\n- thermochemistry: " in menu
    enum = route_schema(["single_point", "analyze_structure"])["function"]["parameters"]["properties"]["tools"]
    assert enum["items"]["enum"] == ["single_point", "analyze_structure"]

    offered = {}

    def first_turn(msgs):
        return {"tool": "choose_tools", "args": {"tools": ["thermochemistry"]}}

    def compute(msgs):
        return {"tool": "build_molecule", "args": {"name": "water"}}

    agent = make_agent([first_turn, compute, ""], select_tools=True, route="model")
    orig = agent.guard._selected

    def spy(request, st):
        out = orig(request, st)
        offered.setdefault("tools", [t.name for t in out.tools])
        return out

    agent.guard._selected = spy
    # "energy" would send the keyword rules to single_point; the model's pick is thermochemistry
    run = agent.ask("How much free energy does water have at room temperature?")
    assert sorted(offered["tools"]) == ["build_molecule", "thermochemistry"]
    routed = [json.loads(line) for line in open(run.provenance) if '"route"' in line]
    assert routed and routed[0]["tools"] == ["build_molecule", "thermochemistry"]


def test_reaction_species_as_users_write_them(agent_ws):
    """'=' inside a SMILES is not an arrow, and 'Hydrogen gas' is hydrogen (ChemGraph's reaction phrasing)."""
    from triscale.agents.tool_bindings import _reaction_with_ids, call_for_agent

    notes = []
    text = _reaction_with_ids("C=C + Hydrogen gas -> CC", agent_ws, notes)
    assert text.endswith(" + Hydrogen -> CC") and text.startswith("st") and "built from its SMILES" in notes[0]
    assert _reaction_with_ids("2 H2 + O2 -> 2 H2O", agent_ws, []) == "2 H2 + O2 -> 2 H2O"
    args = {"reaction": "Ethene + Hydrogen gas -> Ethane", "calculator": "gfn2-xtb"}
    r = call_for_agent("reaction_energy", args, agent_ws)
    assert -2.6 < r.reaction_energy_eV < -1.8  # ethene hydrogenation, GFN2-xTB (-2.24 eV in tuning.json)


def test_time_limit_ends_the_run(make_agent):
    import time

    def slow(msgs):
        time.sleep(0.3)
        return {"tool": "build_molecule", "args": {"name": "water"}}

    agent = make_agent(
        [slow, {"tool": "single_point", "args": {"structure_id": "st1", "calculator": "emt"}}, ""], max_wall_s=0.2
    )
    run = agent.ask("Energy of water with EMT?")
    assert run.stop_reason == "time_limit" and run.n_tool_calls == 1 and "time limit (0.2 s)" in run.answer.answer


def test_plain_smiles_after_the_word_are_traced():
    from triscale.agents.answer import ToolRecord, untraced_strings

    recs = [ToolRecord(name="build_molecule", result={"formula": "C2H6O", "label": "ethanol"})]
    q = "What is the SMILES of ethanol?"
    assert untraced_strings("Its SMILES is CCO.", recs, q, extra=["CCO"]) == []
    assert untraced_strings("Its SMILES is CCN.", recs, q, extra=["CCO"]) == ["CCN"]
    assert untraced_strings("The SMILES string of ethanol is `OCC`", recs, q, extra=["CCO"]) == []


def test_structure_smiles():
    from triscale.agents.answer import structure_smiles
    from triscale.tools.builders import molecule_from_text

    def smi(name):
        return structure_smiles(molecule_from_text(name)[0])

    assert smi("sulfur dioxide") == "O=S=O" and smi("carbon monoxide") == "[C-]#[O+]"
    assert smi("DMSO") == "CS(C)=O" and smi("acetic acid") == "CC(=O)O"
    assert smi("nitrogen dioxide") is None  # open shell, geometry only: no SMILES rather than a wrong one
    assert structure_smiles(molecule_from_text("nitrogen dioxide")[0], "nitrogen dioxide") == "[O]N=O"


def test_invalid_choice_of_an_optional_argument_is_left_out(make_agent):
    """The 1.5B model wrote build_bulk(crystalstructure="cubic") and gave up on the error."""
    agent = make_agent(
        [
            {
                "tool": "build_bulk",
                "args": {"name": "Al", "crystalstructure": "cubic", "cubic": True, "repeat": [3, 3, 3]},
            },
            "",
        ]
    )
    run = agent.ask("Take the conventional cubic cell of aluminium, repeat it 3x3x3: what is the volume?")
    got = {r.property: r.value for r in run.answer.results}
    assert got["n_atoms"] == 108 and abs(got["volume"] - 1793.6) < 1


def test_fallback_routing_only_when_no_keyword_matches(make_agent):
    agent = make_agent([{"tool": "build_molecule", "args": {"name": "water"}}, ""], select_tools=True, route="fallback")
    run = agent.ask("Build water")  # a keyword matches: no routing call (the script has none to give)
    assert run.stop_reason == "answered" and run.n_tool_calls == 1
    turns = [
        {"tool": "choose_tools", "args": {"tools": ["build_bulk"]}},
        {"tool": "build_bulk", "args": {"name": "Al"}},
        "",
    ]
    run = make_agent(turns, select_tools=True, route="fallback").ask("Make me some aluminium, please")
    routed = [json.loads(line) for line in open(run.provenance) if '"route"' in line]
    assert routed[0]["tools"] == ["build_bulk"] and run.n_tool_calls == 1


def test_mangled_smiles_in_the_name_argument():
    """Seen on ChemGraph 24/28 with the offline model: build_molecule(name='C-]#[O+]')."""
    from triscale.agents.verbatim import question_facts, repair_call

    f = question_facts("Run geometry optimization using GFN2-xTB for the molecule with SMILES: [C-]#[O+] and report")
    assert repair_call("build_molecule", {"name": "C-]#[O+"}, f)[0] == {"smiles": "[C-]#[O+]"}
    f = question_facts("Energy of the molecule with SMILES CCO (ethanol)")
    assert repair_call("build_molecule", {"name": "ethanol"}, f)[0] == {"name": "ethanol"}  # stated: kept


def test_comparison_when_the_entity_is_named_as_the_structure(make_agent):
    """Held-out h_cmp_1 with the offline model: single_point(structure_id='water') and an answer for water only."""
    agent = make_agent([{"tool": "single_point", "args": {"structure_id": "water", "calculator": "gfn2-xtb"}}, ""])
    run = agent.ask("Which of water, ammonia and hydrogen sulfide has the largest dipole moment with GFN2-xTB?")
    assert len([r for r in run.answer.results if r.property == "dipole_magnitude"]) == 3
    assert "dipole magnitude, largest to smallest: water (" in run.answer.answer


def test_comparison_when_the_element_is_named_by_its_symbol(make_agent):
    """Held-out h_cmp_3 with the offline model: equation_of_state(structure_id='Cu') for "copper and aluminium"."""
    agent = make_agent([{"tool": "equation_of_state", "args": {"structure_id": "Cu", "calculator": "emt"}}, ""])
    run = agent.ask("Between copper and aluminium, which has the larger EMT bulk modulus?")
    moduli = [r.value for r in run.answer.results if r.property == "bulk_modulus"]
    assert len(moduli) == 2 and moduli[0] > 2 * moduli[1]  # EMT: Cu ~134 GPa, Al ~40 GPa
    assert "bulk modulus, largest to smallest: copper (" in run.answer.answer


def test_reaction_equation_in_the_question_is_passed_as_written():
    """ChemGraph 34: the model rewrote 'Ethene + Hydrogen gas -> Ethane' as 'CH4 + H2 -> CH3CH2OH'."""
    from triscale.agents.verbatim import question_facts, question_reactions, repair_call

    q = (
        "Report the Gibbs free energy of reaction for Ethene Hydrogenation at 300 K using GFN2-xTB. Report the "
        "energy in eV. The balanced reaction is: Ethene + Hydrogen gas -> Ethane"
    )
    assert question_reactions(q) == ["Ethene + Hydrogen gas -> Ethane"]
    assert question_reactions("Reaction energy of 2 H2 + O2 -> 2 H2O with GFN2-xTB?") == ["2 H2 + O2 -> 2 H2O"]
    assert question_reactions("Is N2 + 3 H2 -> 2 NH3 exothermic at 400 K?") == ["N2 + 3 H2 -> 2 NH3"]
    assert question_reactions("Energy of C=C + [H][H] -> CC?") == ["C=C + [H][H] -> CC"]
    assert question_reactions("What is the energy of water?") == []
    args, notes = repair_call("reaction_energy", {"reaction": "CH4 + H2 -> CH3CH2OH"}, question_facts(q))
    assert args["reaction"] == "Ethene + Hydrogen gas -> Ethane" and "as written in the question" in notes[0]
    assert args["temperature_K"] == 300 and args["free_energy"] is True
    same, notes = repair_call("reaction_energy", {"reaction": "Ethene  + Hydrogen gas -> Ethane"}, question_facts(q))
    assert "reaction" not in " ".join(notes)
    # species the model built first and passes as ids are its structures of the question's species: kept
    ids, notes = repair_call("reaction_energy", {"reaction": "st1 + st2 -> st3"}, question_facts(q))
    assert ids["reaction"] == "st1 + st2 -> st3" and "reaction" not in " ".join(notes)


def test_angle_named_by_elements_is_measured_at_the_right_atom(make_agent):
    """Held-out h_geom_2: the model gave [0, 1, 2] for water's H-O-H angle (O is atom 0: the angle at an H)."""
    agent = make_agent(
        [
            {"tool": "build_molecule", "args": {"name": "water"}},
            {"tool": "analyze_structure", "args": {"structure_id": "st1", "angles": [[0, 1, 2]]}},
            "",
        ]
    )
    run = agent.ask("What is the H-O-H angle of water as the builder makes it?")
    (angle,) = [r for r in run.answer.results if r.property == "angle"]
    assert angle.value == pytest.approx(104.0, abs=0.01)


def test_planner_answer_names_its_first_pick(make_agent):
    """Held-out h_plan_1: batch_size 3 for "pick one"; the answer's 'selected' was 'phenol, benzene, toluene'."""
    agent = make_agent(
        [
            {
                "tool": "plan_experiments",
                "args": {"candidates": ["benzene", "toluene", "phenol"], "calculator": "gfn2-xtb", "batch_size": 3},
            },
            "",
        ]
    )
    run = agent.ask("Benzene, toluene or phenol: which one should I simulate next? Use the greedy planner.")
    res = {r.property: r.value for r in run.answer.results}
    assert res["selected"] in ("benzene", "toluene", "phenol")
    assert res["proposed_batch"].split(", ")[0] == res["selected"] and len(res["proposed_batch"].split(", ")) == 3


def test_an_element_alone_is_its_crystal(make_agent):
    """Held-out h_pred_2: predict_properties(structure_id='al') predicted one aluminium atom for "fcc aluminium"."""
    agent = make_agent([{"tool": "predict_properties", "args": {"structure_id": "al"}}, ""])
    run = agent.ask("Use the TriScale foundation model to predict the energy of fcc aluminium.")
    (st,) = [r for r in run.answer.results if r.property == "energy" and r.unit == "eV"]
    atoms = agent.workspace.get(st.structure_ids[0])
    # the agent builds it as its build_bulk calls do: the conventional cubic cell
    assert atoms.pbc.all() and len(atoms) == 4 and atoms.cell.volume == pytest.approx(4.05**3)
    assert any(r.property == "energy" and r.unit == "eV/atom" for r in run.answer.results)


def test_time_step_and_supercell_the_question_states():
    from triscale.agents.verbatim import question_facts, repair_call, supercell_repairs

    f = question_facts(
        "Run 200 steps of NVT MD of a 2x2x2 fcc copper supercell at 300 K with EMT and a 2 fs time step."
    )
    assert f.timesteps_fs == [2.0] and f.supercell == [2, 2, 2] and f.temperatures == [300.0]
    assert question_facts("time step of 0.5 fs, 3 × 3 × 3 cell").supercell == [3, 3, 3]
    assert question_facts("Simulate 100 fs of water").timesteps_fs == []  # total time, not the step
    assert question_facts("a 2x2x2 k-point grid").supercell is None  # no cell named
    args, notes = repair_call("molecular_dynamics", {"structure_id": "st1", "calculator": "emt"}, f)
    assert args["timestep_fs"] == 2.0 and notes
    # the model builds the unit cell and runs on it: the build gets the stated repeat, once
    calls = [{"name": "build_bulk", "args": {"name": "Cu", "cubic": True}, "id": "a"}]
    out, notes, built = supercell_repairs(calls, f, False)
    assert out[0]["args"]["repeat"] == [2, 2, 2] and built and notes
    # ... and a later make_supercell with that repeat would repeat it twice: it copies instead
    later = [{"name": "make_supercell", "args": {"structure_id": "st1", "repeat": [2, 2, 2]}, "id": "b"}]
    assert supercell_repairs(later, f, True)[0][0]["args"]["repeat"] == [1, 1, 1]
    # the model makes the supercell itself in the same turn: nothing changes
    both = calls + later
    assert supercell_repairs(both, f, False) == (both, [], False)


def test_md_on_the_stated_supercell_with_the_stated_time_step(make_agent):
    """Public md_summary_1 (local model): it built the 4-atom cell and ran MD on it with the default 0.5 fs step."""
    agent = make_agent(
        [
            {"tool": "build_bulk", "args": {"name": "Cu", "crystalstructure": "fcc", "cubic": True}},
            {"tool": "molecular_dynamics", "args": {"structure_id": "st1", "calculator": "emt", "steps": 20}},
            "",
        ]
    )
    run = agent.ask("Run 20 steps of NVT MD of a 2x2x2 fcc copper supercell at 300 K with EMT and a 2 fs time step.")
    md = next(c for c in agent.workspace.calls() if c["tool"] == "molecular_dynamics")
    assert md["args"]["timestep_fs"] == 2.0 and md["result"]["n_atoms"] == 32
    assert "repeat -> [2, 2, 2]" in run.answer.answer


def test_a_lattice_constant_from_memory_is_dropped():
    """Held-out h_md_1: the local model built copper with "a_A": 3.162 (copper's a is 3.61 Å)."""
    from triscale.agents.verbatim import question_facts, repair_call

    q = question_facts("NVT dynamics of a 2x2x2 supercell of cubic copper at 500 K with EMT")
    args, notes = repair_call("build_bulk", {"name": "Cu", "a_A": 3.162, "repeat": [2, 2, 2]}, q)
    assert "a_A" not in args and args["cubic"] is True and len(notes) == 2
    stated = question_facts("the EMT energy of fcc Cu with a = 3.6 Å")
    assert repair_call("build_bulk", {"name": "Cu", "a_A": 3.6}, stated)[0]["a_A"] == 3.6
    # a number an earlier tool result gave (the fitted lattice constant of an EOS) is the model's to reuse
    fitted = question_facts("Fit the EOS of Cu with EMT, then build Cu at the fitted lattice constant")
    fitted.results = '{"lattice_constant_A": 3.5903, "bulk_modulus_GPa": 134.2}'
    assert repair_call("build_bulk", {"name": "Cu", "a_A": 3.5903}, fitted)[0]["a_A"] == 3.5903
