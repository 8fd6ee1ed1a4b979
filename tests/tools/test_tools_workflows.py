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
        load_workflow({"steps": [{"id": "a", "tool": "single_point", "args": {"structure_id": "${b.structure_id}"}}]})
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


_STEPS = [{"id": "w", "tool": "build_molecule", "args": {"name": "water"}}]


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("where", ["/tmp/triscale-escape", "..", "../escape", "a/../../escape", "~/escape", "link/ws"])
def test_workflow_workspace_is_confined_to_the_run_directory(tmp_path, monkeypatch, where):
    from typer.testing import CliRunner

    from triscale.cli import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "outside").mkdir()
    (run_dir / "link").symlink_to(tmp_path / "outside")  # a symlink out of the run directory
    monkeypatch.chdir(run_dir)
    wf = run_dir / "wf.yaml"
    wf.write_text(yaml.safe_dump({"name": "esc", "workspace": where, "steps": _STEPS}))
    before = _tree(tmp_path)
    with pytest.raises(ToolInputError, match="workspace"):
        run_workflow(wf)
    res = CliRunner().invoke(app, ["run", str(wf)])
    assert res.exit_code == 2 and "workspace" in res.output and "--workspace" in res.output, res.output
    assert _tree(tmp_path) == before  # nothing created anywhere, inside or outside the run directory
    assert not Path("/tmp/triscale-escape").exists()
    # the file stays invalid even with --workspace; without the key, --workspace picks any directory
    res = CliRunner().invoke(app, ["run", str(wf), "--workspace", str(tmp_path / "chosen")])
    assert res.exit_code == 2 and not (tmp_path / "chosen").exists()
    wf.write_text(yaml.safe_dump({"name": "esc", "steps": _STEPS}))
    res = CliRunner().invoke(app, ["run", str(wf), "--workspace", str(tmp_path / "chosen"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "chosen" / "structures.db").exists() and not any((tmp_path / "outside").iterdir())


def test_workflow_relative_workspace_lands_under_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = run_workflow({"name": "rel", "workspace": "runs/rel", "steps": _STEPS})
    assert run.ok and Path(run.workspace) == (tmp_path / "runs" / "rel").resolve()
    assert (tmp_path / "runs" / "rel" / run.results_file).exists()


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("steps: [{id: x, tool: list_structures, args: {v: *i}}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ToolInputError, match="expands to more than"):
        load_workflow(bomb)
    many = tmp_path / "many.yaml"
    many.write_text("x: &x 1\nsteps: [" + ",".join(["*x"] * 500) + "]\n")
    with pytest.raises(ToolInputError, match="more than 100 YAML aliases"):
        load_workflow(many)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [*a]\nsteps: []\n")
    with pytest.raises(ToolInputError, match="recursive YAML alias"):
        load_workflow(loop)
    # a few anchors for shared arguments are fine
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "steps:\n  - {id: a, tool: build_molecule, args: &w {name: water}}\n"
        "  - {id: b, tool: build_molecule, args: *w}\n"
    )
    assert [s.args for s in load_workflow(ok).steps] == [{"name": "water"}] * 2


def test_binary_huge_and_secret_bearing_files_give_clear_errors_without_their_contents(tmp_path):
    binary = tmp_path / "wf.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ToolInputError, match="not a text"):
        load_workflow(binary)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ToolInputError, match="larger than"):
        load_workflow(huge)
    with pytest.raises(ToolInputError, match="does not exist"):
        load_workflow(tmp_path)  # a directory
    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = hunter2SECRET: : [\n")
    with pytest.raises(ToolInputError) as err:
        load_workflow(secret)
    assert "hunter2SECRET" not in str(err.value) and "line" in str(err.value)
