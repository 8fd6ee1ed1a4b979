"""YAML workflows end to end, including the CLI."""

from pathlib import Path

import pytest
import yaml

from triscale.tools import ToolInputError
from triscale.tools.workflows import load_workflow, resolve_references, run_workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "workflows"


def test_cu_eos_example_end_to_end(ws):
    run = run_workflow(EXAMPLES / "cu_eos.yaml", ws)
    assert run.ok, [s.error for s in run.steps]
    steps = {s.id: s for s in run.steps}
    assert steps["relax"].result["parent_id"] == steps["cu"].result["structure_id"]
    assert steps["eos"].result["parent_id"] == steps["relax"].result["structure_id"]
    assert steps["eos"].result["lattice_constant_A"] == pytest.approx(3.59, abs=0.01)
    assert (ws.root / "cu_equilibrium.cif").exists() and (ws.root / run.results_file).exists()


@pytest.mark.parametrize("name", ["water_thermo.yaml", "combustion.yaml"])
def test_examples_parse(name):
    wf = load_workflow(EXAMPLES / name)
    assert len(wf.steps) >= 3


def test_water_thermo_example(ws):
    run = run_workflow(EXAMPLES / "water_thermo.yaml", ws)
    assert run.ok, [s.error for s in run.steps]
    vib = next(s for s in run.steps if s.id == "vib").result
    assert len(vib["vibrational_frequencies_cm1"]) == 3 and vib["ir_intensities_D2_per_A2_amu"]


def test_references_keep_types_and_interpolate():
    results = {"a": {"x": 2.5, "ids": ["st1", "st2"], "n": {"m": 3}}}
    out = resolve_references({"v": "${a.x}", "s": "id=${a.ids.1}", "deep": ["${a.n.m}"]}, results)
    assert out == {"v": 2.5, "s": "id=st2", "deep": [3]}
    with pytest.raises(ToolInputError, match="no 'y' in the result"):
        resolve_references("${a.y}", results)


def test_bad_workflows_fail_before_running(ws, tmp_path):
    with pytest.raises(ToolInputError, match="not an earlier step"):
        load_workflow(
            {"steps": [{"id": "a", "tool": "single_point", "args": {"structure_id": "${b.structure_id}"}}]}
        )
    with pytest.raises(ToolInputError, match="Unknown tool 'bild_bulk'"):
        load_workflow({"steps": [{"id": "a", "tool": "bild_bulk"}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [ {id: a, tool: build_bulk, args: {name: Cu}\n")
    with pytest.raises(ToolInputError, match="not valid YAML"):
        load_workflow(bad)
    assert ws.count() == 0


def test_failing_step_stops_the_run(ws):
    run = run_workflow(
        {
            "steps": [
                {"id": "a", "tool": "build_bulk", "args": {"name": "Cu"}},
                {
                    "id": "b",
                    "tool": "single_point",
                    "args": {"structure_id": "${a.structure_id}", "calculator": "vasp"},
                },
                {"id": "c", "tool": "list_structures"},
            ]
        },
        ws,
    )
    assert not run.ok and [s.status for s in run.steps] == ["ok", "error"]
    assert "Unknown calculator 'vasp'" in run.steps[1].error


def test_cli_run(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    wf = tmp_path / "wf.yaml"
    wf.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "steps": [
                    {"id": "w", "tool": "build_molecule", "args": {"name": "water"}},
                    {
                        "id": "sp",
                        "tool": "single_point",
                        "args": {"structure_id": "${w.structure_id}", "calculator": "emt"},
                    },
                ],
            }
        )
    )
    res = CliRunner().invoke(app, ["run", str(wf), "--workspace", str(tmp_path / "ws"), "--json"])
    assert res.exit_code == 0, res.output
    assert '"ok": true' in res.output and "energy_eV" in res.output


@pytest.mark.parametrize("ref", ["${a.energy_eV.0}", "${a.missing_value.x}", "${a.name.first}"])
def test_reference_into_a_scalar_or_null_is_a_clear_error(ref):
    results = {"a": {"energy_eV": -3.5, "missing_value": None, "name": "Cu"}}
    with pytest.raises(ToolInputError, match="has no fields"):
        resolve_references(ref, results)
