"""The bad-input catalogue: each case gives a clear ToolError and leaves the store intact."""

import os

import numpy as np
import pytest
from ase import Atoms

from triscale.tools import (
    CalculationError,
    ToolError,
    ToolInputError,
    ToolLimitError,
    call_tool,
)


@pytest.fixture
def seeded(ws, call):
    """A workspace with two structures whose contents must survive every bad call."""
    call("build_bulk", name="Cu", cubic=True)
    call("build_molecule", name="water")
    before = [(r["id"], r["formula"]) for r in ws.records()]
    pos = ws.get("st2").positions.copy()
    yield ws
    # earlier structures are untouched (a molecule named in a failing call may have been built and kept)
    assert [(r["id"], r["formula"]) for r in ws.records()][: len(before)] == before
    np.testing.assert_array_equal(ws.get("st2").positions, pos)


def _write(ws, name, text):
    p = ws.root / name
    p.write_text(text)
    return name


CASES = {
    # name: (tool, args, error class, regex the message must match)
    "unknown element (bulk)": (
        "build_bulk",
        {"name": "Xx"},
        ToolInputError,
        "Unknown element or formula 'Xx'",
    ),
    "unknown element (substitute)": (
        "substitute_atoms",
        {"structure_id": "st1", "new_element": "Qq", "indices": [0]},
        ToolInputError,
        "Unknown element 'Qq'",
    ),
    "unknown molecule": ("build_molecule", {"name": "unobtainium-9"}, ToolInputError, "not a known molecule"),
    "invalid smiles": ("build_molecule", {"smiles": "C1CC(("}, ToolInputError, "not a valid SMILES"),
    "empty smiles": ("build_molecule", {"smiles": ""}, ToolInputError, "not a valid SMILES|Give either"),
    "overlap from lattice constant": (
        "build_bulk",
        {"name": "Cu", "a_A": 0.6},
        ToolInputError,
        "Atoms overlap",
    ),
    "unknown structure id": (
        "single_point",
        {"structure_id": "st99"},
        ToolInputError,
        r"Unknown structure 'st99'.*st1 \(Cu bulk\), st2 \(water\)",
    ),
    "unknown calculator": (
        "single_point",
        {"structure_id": "st2", "calculator": "vasp"},
        ToolInputError,
        "Unknown calculator 'vasp'.*gfn2-xtb",
    ),
    "near-miss calculator": (
        "single_point",
        {"structure_id": "st2", "calculator": "gfn3-xtb"},
        ToolInputError,
        "did you mean",
    ),
    "emt unsupported element": (
        "single_point",
        {"structure_id": "SiH4", "calculator": "emt"},
        ToolInputError,
        "emt has no parameters for Si.*Use",
    ),
    "dft on a crystal": (
        "single_point",
        {"structure_id": "st1", "calculator": "dft"},
        ToolInputError,
        "molecules only",
    ),
    "unknown argument": (
        "single_point",
        {"structure_id": "st2", "temperature": 300},
        ToolInputError,
        "unknown argument 'temperature'.*Allowed arguments: structure_id, calculator",
    ),
    "missing argument": ("optimize_geometry", {}, ToolInputError, "missing required argument 'structure_id'"),
    "fmax not positive": (
        "optimize_geometry",
        {"structure_id": "st2", "fmax_eV_per_A": 0},
        ToolInputError,
        "fmax_eV_per_A: Input should be greater than 0",
    ),
    "negative temperature": (
        "molecular_dynamics",
        {"structure_id": "st2", "temperature_K": -5},
        ToolInputError,
        "temperature_K",
    ),
    "zero steps": ("molecular_dynamics", {"structure_id": "st2", "steps": 0}, ToolInputError, "steps"),
    "npt on a molecule": (
        "molecular_dynamics",
        {"structure_id": "st2", "ensemble": "npt", "calculator": "gfn2-xtb"},
        ToolInputError,
        "NPT needs a 3D periodic",
    ),
    "eos on a molecule": (
        "equation_of_state",
        {"structure_id": "st2", "calculator": "gfn2-xtb"},
        ToolInputError,
        "periodic crystal",
    ),
    "cell relax of a molecule": (
        "optimize_geometry",
        {"structure_id": "st2", "relax_cell": True},
        ToolInputError,
        "relax_cell needs",
    ),
    "unbalanced reaction": (
        "reaction_energy",
        {"reaction": "H2 + O2 -> H2O"},
        ToolInputError,
        r"not balanced.*O: -1",
    ),
    "unparseable reaction": (
        "reaction_energy",
        {"reaction": "water"},
        ToolInputError,
        "Cannot parse reaction",
    ),
    "orbitals with emt": (
        "orbital_energies",
        {"structure_id": "st1", "calculator": "emt"},
        ToolInputError,
        "Orbital energies need",
    ),
    "odd electrons with spin 0": (
        "single_point",
        {"structure_id": "NO", "calculator": {"method": "dft", "spin": 0}},
        ToolInputError,
        "cannot have 0 unpaired",
    ),
    "unknown basis": (
        "single_point",
        {"structure_id": "st2", "calculator": {"method": "dft", "basis": "no-such-basis"}},
        ToolInputError,
        "basis 'no-such-basis'",
    ),
    "unknown job": ("job_status", {"job_id": "job77"}, ToolInputError, "Unknown job 'job77'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_catalogue(seeded, case):
    tool, args, err, pattern = CASES[case]
    with pytest.raises(err, match=pattern):
        call_tool(tool, args, seeded)


def test_unknown_tool(seeded):
    with pytest.raises(ToolInputError, match=r"Unknown tool 'single_pont'. Did you mean single_point"):
        call_tool("single_pont", {}, seeded)
    with pytest.raises(ToolInputError, match="must be a JSON object"):
        call_tool("single_point", ["st1"], seeded)


def test_oversized_systems_suggest_cheaper_methods(seeded, call):
    decane = call("build_molecule", smiles="CCCCCCCCCC")  # 32 atoms
    with pytest.raises(ToolLimitError, match=r"dft is limited to 30 atoms; this structure has 32.*gfn2-xtb"):
        call("single_point", structure_id=decane.structure_id, calculator="dft")
    big = call("make_supercell", structure_id="st1", repeat=[5, 5, 4])  # 400 Cu atoms
    with pytest.raises(ToolLimitError, match=r"gfn2-xtb is limited to 300 atoms.*Use a cheaper method: emt"):
        call("single_point", structure_id=big.structure_id, calculator="gfn2-xtb")
    with pytest.raises(ToolLimitError, match="limit 20000"):
        call("make_supercell", structure_id="st1", repeat=[20, 20, 20])


def test_malformed_empty_nan_overlapping_files(seeded, call):
    ws = seeded
    cases = {
        "garbage.xyz": ("this is not\nan xyz file at all\n", "Could not read"),
        "broken.cif": ("data_x\n_cell_length_a 3.6\nloop_\n_atom_site_label\n", "Could not read|no atoms"),
        "empty.xyz": ("0\n\n", "no atoms|Could not read"),
        "nan.xyz": ("2\n\nH nan 0 0\nH 0 0 0.74\n", "NaN|Could not read"),
        "overlap.xyz": ("2\n\nH 0 0 0\nH 0 0 0.1\n", "Atoms overlap"),
        "badelement.xyz": ("1\n\nXx 0 0 0\n", "Could not read|Unknown element"),
    }
    for name, (text, pattern) in cases.items():
        _write(ws, name, text)
        with pytest.raises(ToolInputError, match=pattern):
            call("import_structure", path=name)
    with pytest.raises(ToolInputError, match="does not exist in the workspace.*Files present"):
        call("import_structure", path="missing.xyz")
    with pytest.raises(ToolInputError, match="Cannot tell the format"):
        call("import_structure", path=_write(ws, "notes.txt", "x"))


def test_path_traversal_is_refused(seeded, call, tmp_path):
    ws = seeded
    outside = tmp_path / "outside.xyz"
    outside.write_text("1\n\nH 0 0 0\n")
    for bad in ["../outside.xyz", str(outside), "/etc/passwd", "a/../../outside.xyz", "~/x.xyz"]:
        with pytest.raises(ToolInputError, match="outside the workspace|does not exist"):
            call("import_structure", path=bad, format="xyz")
    for bad in ["../leak.cif", "/tmp/leak.cif", "sub/../../leak.cif"]:
        with pytest.raises(ToolInputError, match="outside the workspace"):
            call("export_structure", structure_id="st1", path=bad)
    assert not (tmp_path / "leak.cif").exists()
    os.symlink(outside, ws.root / "link.xyz")  # a symlink inside the workspace that points out of it
    with pytest.raises(ToolInputError, match="outside the workspace"):
        call("import_structure", path="link.xyz")


def test_store_rejects_bad_atoms_directly(ws):
    with pytest.raises(ToolInputError, match="no atoms"):
        ws.add(Atoms())
    with pytest.raises(ToolInputError, match="NaN"):
        ws.add(Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(ToolInputError, match="zero volume"):
        ws.add(Atoms("Cu", cell=[0, 0, 0], pbc=True))
    assert ws.count() == 0


def test_non_converging_scf_is_a_clear_error(seeded, call):
    with pytest.raises(CalculationError, match="did not converge"):
        call(
            "single_point",
            structure_id="st2",
            calculator={"method": "dft", "basis": "sto-3g", "max_scf_cycles": 1},
        )
    with pytest.raises(CalculationError, match="did not converge"):
        call(
            "orbital_energies",
            structure_id="st2",
            calculator={"method": "dft", "basis": "sto-3g", "max_scf_cycles": 1},
        )


def test_errors_are_logged_and_are_tool_errors(seeded, call):
    with pytest.raises(ToolError):
        call("single_point", structure_id="st99")
    last = list(seeded.calls())[-1]
    assert last["tool"] == "single_point" and last["status"] == "error" and "st99" in last["error"]


def test_md_of_a_single_atom_is_a_clear_error(seeded, call):
    one = call("build_bulk", name="Al", cubic=False)  # primitive fcc: one atom, 3N - 3 = 0 degrees of freedom
    assert one.n_atoms == 1
    with pytest.raises(ToolInputError, match="at least 2 atoms.*make_supercell"):
        call("molecular_dynamics", structure_id=one.structure_id, calculator="emt", steps=5)


# --------------------------------------------------------------------------- limits before work, sane structures

_TINY_CELL = 'Lattice="0.01 0 0 0 0.01 0 0 0 0.01" Properties=species:S:1:pos:R:3 pbc="T T T"'
_ZERO_CIF = """data_zero
_cell_length_a 0
_cell_length_b 0
_cell_length_c 0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cu1 Cu 0 0 0
Cu2 Cu 0.5 0.5 0
"""

FILE_CASES = {
    # name: (file name, contents, extra args, error class, regex)
    "1-atom cell of 0.01 Å": ("tiny.xyz", f"1\n{_TINY_CELL}\nCu 0 0 0\n", {}, ToolInputError, "cell is far too small"),
    "CIF with a zero cell": ("zero.cif", _ZERO_CIF, {}, ToolInputError, r"no usable 3D unit cell \(a, b, c = 0, 0, 0"),
    "frame -1000 of 2": ("two.xyz", "1\n\nH 0 0 0\n1\n\nH 1 0 0\n", {"index": -1000}, ToolInputError, "index -1000"),
    "frame 2 of 2": ("two.xyz", "1\n\nH 0 0 0\n1\n\nH 1 0 0\n", {"index": 2}, ToolInputError, "has 2 frames"),
    "coincident atoms": ("same.xyz", "2\n\nH 0 0 0\nH 0 0 0\n", {}, ToolInputError, "Atoms overlap.*0.000 Å"),
    "atoms 1e12 Å apart": ("far.xyz", "2\n\nH 0 0 0\nH 1e12 0 0\n", {}, ToolInputError, "out of range.*1e\\+12"),
    "near-singular cell": (
        "flat.xyz",
        '1\nLattice="3 0 0 0 3 0 3 3 0.2" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n',
        {},
        ToolInputError,
        "nearly singular",
    ),
    "linearly dependent cell": (
        "dep.xyz",
        '1\nLattice="3 0 0 0 3 0 3 3 0" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n',
        {},
        ToolInputError,
        "zero volume",
    ),
    "CIF read in a worker, tiny cell": (
        "tiny.cif",
        _ZERO_CIF.replace(" 0\n_cell_length_b 0\n_cell_length_c 0", " 0.01\n_cell_length_b 0.01\n_cell_length_c 0.01"),
        {},
        ToolInputError,
        "cell is far too small",
    ),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_import_refuses_unphysical_files(seeded, call, case):
    name, text, extra, err, pattern = FILE_CASES[case]
    _write(seeded, name, text)
    n = seeded.count()
    with pytest.raises(err, match=pattern):
        call("import_structure", path=name, **extra)
    assert seeded.count() == n


def test_import_frame_indices_in_range(seeded, call):
    _write(seeded, "two.xyz", "1\n\nH 0 0 0\n1\n\nH 1 0 0\n")
    for index, x in [(0, 0.0), (1, 1.0), (-1, 1.0), (-2, 0.0)]:
        r = call("import_structure", path="two.xyz", index=index)
        assert seeded.get(r.structure_id).positions[0, 0] == x


def test_import_file_size_checked_before_parsing(seeded, call, monkeypatch):
    from triscale.tools import builders

    _write(seeded, "w.xyz", "3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    monkeypatch.setattr(builders, "MAX_IMPORT_BYTES", 10)
    with pytest.raises(ToolLimitError, match="reads files up to"):
        call("import_structure", path="w.xyz")


BUILD_CASES = {
    "repeat overflowing int64": (
        "build_bulk",
        {"name": "Cu", "repeat": [4294967296, 4294967296, 1]},
        ToolLimitError,
        "18446744073709551616 atoms",
    ),
    "supercell overflowing int64": (
        "make_supercell",
        {"structure_id": "st1", "repeat": [2**40, 2**40, 1]},
        ToolLimitError,
        "limit 20000",
    ),
    "negative repeat": ("build_bulk", {"name": "Cu", "repeat": [-1, 1, 1]}, ToolInputError, "≥ 1"),
    "160-carbon SMILES": ("build_molecule", {"smiles": "C" * 160}, ToolLimitError, "160 heavy atoms.*stops at 100"),
    "SMILES too long": ("build_molecule", {"smiles": "C" * 401}, ToolLimitError, "401 characters"),
    "auto-built big SMILES": ("structure_info", {"structure_id": "C" * 150}, ToolLimitError, "150 heavy atoms"),
    "huge Miller indices": ("build_surface", {"structure_id": "st1", "miller": [99, 1, 1]}, ToolLimitError, "Miller"),
    "cell of 0.4 Å": ("build_bulk", {"name": "Cu", "a_A": 0.6}, ToolInputError, "cell is far too small"),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_builder_limits_before_work(seeded, case):
    tool, args, err, pattern = BUILD_CASES[case]
    n = seeded.count()
    with pytest.raises(err, match=pattern):
        call_tool(tool, args, seeded)
    assert seeded.count() == n


def test_large_smiles_embedding_has_a_wall_time_limit(tmp_path):
    from triscale.tools import ToolTimeoutError, Workspace

    ws = Workspace(tmp_path / "slow", timeout_s=0.2)  # 90 heavy atoms: seconds of embedding, in a worker
    with pytest.raises(ToolTimeoutError, match="RDKit 3D embedding exceeded its 0.2 s"):
        call_tool("build_molecule", {"smiles": "C" * 90}, ws)
    assert ws.count() == 0


def test_sane_structures_still_build(call):
    r = call("build_molecule", smiles="CC(=O)Oc1ccccc1C(=O)O")  # inline: 13 heavy atoms
    assert r.formula == "C9H8O4" and r.min_distance_A > 0.9
    big = call("build_molecule", smiles="C" * 32)  # worker: 32 heavy atoms
    assert big.n_atoms == 98 and big.min_distance_A > 0.9
    slab = call("build_surface", structure_id="Pt", miller=[2, 1, 1], layers=3)
    assert slab.periodic and slab.min_distance_A > 2.0


EXPORT_CASES = {
    "the structure store": ("structures.db", {"format": "extxyz"}, "workspace's own records"),
    "the call log": ("calls.jsonl", {"format": "xyz"}, "workspace's own records"),
    "the store's journal": ("structures.db-journal", {"format": "xyz"}, "workspace's own records"),
    "a job record": ("jobs/job1.json", {"format": "xyz"}, "workspace's own records"),
    "the jobs folder": ("jobs", {"format": "xyz"}, "workspace's own records"),
    "the workspace folder": (".", {"format": "xyz"}, "workspace folder itself"),
    "a folder": ("sub", {"format": "xyz"}, "is a folder"),
    "a user file": ("notes.xyz", {}, "already exists and was not written by export_structure"),
    "internal even with overwrite": ("calls.jsonl", {"format": "xyz", "overwrite": True}, "own records"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_never_overwrites_workspace_records(seeded, call, case):
    ws = seeded
    (ws.root / "sub").mkdir()
    (ws.root / "notes.xyz").write_text("mine")
    (ws.root / "jobs").mkdir(exist_ok=True)
    (ws.root / "jobs" / "job1.json").write_text("{}")
    path, extra, pattern = EXPORT_CASES[case]
    # the call log is appended to and the store's id counters advance (the refused call has a call id); every
    # other file is untouched, and the stored structures are the same
    logs = ("calls.jsonl", "structures.db", "structures.db-journal")
    before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file() and p.name not in logs}
    stored = [ws.get(r["id"]) for r in ws.records()]
    log = (ws.root / "calls.jsonl").read_text()
    with pytest.raises(ToolInputError, match=pattern):
        call("export_structure", structure_id="st2", path=path, **extra)
    assert {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file() and p.name not in logs} == before
    assert (ws.root / "calls.jsonl").read_text().startswith(log)  # only appended to (the refused call)
    assert ws.count() == 2
    assert [ws.get(r["id"]) for r in ws.records()] == stored


def test_export_overwrite_rules(seeded, call):
    ws = seeded
    first = call("export_structure", structure_id="st1", path="out/cu.cif")
    again = call("export_structure", structure_id="st1", path="out/cu.cif")  # its own earlier export: replaced
    assert first.file == again.file == "out/cu.cif"
    (ws.root / "notes.xyz").write_text("mine")
    call("export_structure", structure_id="st2", path="notes.xyz", overwrite=True)
    assert ws.root.joinpath("notes.xyz").read_text().startswith("3\n")


def test_reaction_arrows_and_smiles_double_bonds():
    """'=' inside a SMILES (C=C) is a bond, not an arrow; ' = ' with spaces, '->', '=>', '→' and '<=>' are arrows."""
    from triscale.tools.reactions import parse_reaction

    assert parse_reaction("C=C + H2 -> CC") == ([(1.0, "C=C"), (1.0, "H2")], [(1.0, "CC")])
    assert parse_reaction("2 H2 + O2 = 2 H2O") == ([(2.0, "H2"), (1.0, "O2")], [(2.0, "H2O")])
    for arrow in ("->", "=>", "→", "<=>"):
        assert parse_reaction(f"O=C=O + H2 {arrow} CO + O")[1] == [(1.0, "CO"), (1.0, "O")]
    with pytest.raises(ToolInputError):
        parse_reaction("C=C")  # no arrow at all
