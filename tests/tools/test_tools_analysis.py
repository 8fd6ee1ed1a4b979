"""analyze_structure: geometry measured against ASE's own Atoms methods (minimum image in periodic cells)."""

import itertools

import numpy as np
import pytest
from ase.build import bulk, molecule

from triscale.tools import ToolInputError, Workspace, call_tool, get_tool


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws", isolate=False)
    yield w
    w.close()


def _analyze(ws, atoms, **kwargs):
    sid = ws.add(atoms, label="test")
    return call_tool("analyze_structure", {"structure_id": sid, **kwargs}, ws)


def test_water_distances_angle_bonds(ws):
    w = molecule("H2O")  # O, H, H
    r = _analyze(ws, w, distances=[[0, 1], [0, 2], [1, 2]], angles=[[1, 0, 2]])
    for item in r.distances:
        i, j = item.atoms
        assert item.distance_A == pytest.approx(w.get_distance(i, j), abs=1e-6)
    assert [d.symbols for d in r.distances] == ["O-H", "O-H", "H-H"]
    assert r.angles[0].angle_deg == pytest.approx(w.get_angle(1, 0, 2), abs=1e-4)
    assert 100 < r.angles[0].angle_deg < 110
    assert r.n_bonds == 2 and r.coordination_numbers == [2, 1, 1]  # no H-H bond
    (oh,) = r.bond_lengths
    assert oh.pair == "H-O" and oh.n_bonds == 2 and oh.bond_length_mean_A == pytest.approx(w.get_distance(0, 1))
    assert r.formula == "H2O" and r.volume_A3 is None and r.density_g_per_cm3 is None and not r.minimum_image
    assert r.mass_amu == pytest.approx(w.get_masses().sum())


def test_ethanol_every_bonded_angle_and_dihedral(ws):
    e = molecule("CH3CH2OH")
    r0 = _analyze(ws, e)
    assert r0.n_bonds == 8 and r0.formula == "C2H6O"
    assert r0.coordination_numbers == [4, 4, 2, 1, 1, 1, 1, 1, 1]
    nb = {i: set() for i in range(len(e))}
    for b in r0.bonds:
        i, j = b.atoms
        nb[i].add(j)
        nb[j].add(i)
    angles = [[i, j, k] for j in nb for i, k in itertools.permutations(nb[j], 2)]
    dihedrals = [[i, j, k, m] for j in nb for k in nb[j] for i in nb[j] - {k} for m in nb[k] - {j, i}]
    assert len(dihedrals) >= 12
    r = _analyze(ws, e, angles=angles, dihedrals=dihedrals)
    for a in r.angles:
        assert a.angle_deg == pytest.approx(e.get_angle(*a.atoms), abs=1e-4)
    for d in r.dihedrals:
        want = e.get_dihedral(*d.atoms)
        assert min(abs(d.dihedral_deg - want), 360 - abs(d.dihedral_deg - want)) < 1e-4, d


def test_periodic_copper_minimum_image_volume_density(ws):
    a = 3.6
    cu = bulk("Cu", "fcc", a=a, cubic=True)
    cu.positions[0] += [0.05, -0.03, 0.02]  # break the symmetry a little
    pairs = [list(p) for p in itertools.combinations(range(4), 2)]
    r = _analyze(ws, cu, distances=pairs, angles=[[1, 0, 2], [0, 1, 3]], dihedrals=[[0, 1, 2, 3]])
    for d in r.distances:
        assert d.distance_A == pytest.approx(cu.get_distance(*d.atoms, mic=True), abs=1e-6)
    for x in r.angles:
        assert x.angle_deg == pytest.approx(cu.get_angle(*x.atoms, mic=True), abs=1e-4)
    want = cu.get_dihedral(0, 1, 2, 3, mic=True)
    assert min(abs(r.dihedrals[0].dihedral_deg - want), 360 - abs(r.dihedrals[0].dihedral_deg - want)) < 1e-4
    assert r.minimum_image and r.coordination_numbers == [12, 12, 12, 12] and r.n_bonds == 24
    assert r.volume_A3 == pytest.approx(cu.get_volume(), rel=1e-9)
    assert r.density_g_per_cm3 == pytest.approx(4 * 63.546 / a**3 * 1.66053906660, rel=1e-4)  # 9.05 g/cm3
    # without minimum image the raw in-cell distance comes back
    raw = _analyze(ws, cu, distances=[[0, 1]], mic=False)
    assert raw.distances[0].distance_A == pytest.approx(cu.get_distance(0, 1, mic=False), abs=1e-6)


def test_nacl_primitive_cell_minimum_image_across_a_skewed_cell(ws):
    nacl = bulk("NaCl", "rocksalt", a=5.64) * (2, 2, 1)  # fcc primitive vectors: a non-orthogonal cell
    nacl.rattle(0.05, seed=1)
    n = len(nacl)
    pairs = [list(p) for p in itertools.combinations(range(n), 2)]
    r = _analyze(ws, nacl, distances=pairs, angles=[[0, 1, 2], [3, 0, 5]], dihedrals=[[0, 1, 2, 3], [4, 5, 6, 7]])
    got = np.array([d.distance_A for d in r.distances])
    want = np.array([nacl.get_distance(i, j, mic=True) for i, j in pairs])
    assert np.abs(got - want).max() < 1e-6
    assert (want < np.array([nacl.get_distance(i, j) for i, j in pairs]) - 1e-3).any()  # images matter here
    for x in r.angles:
        assert x.angle_deg == pytest.approx(nacl.get_angle(*x.atoms, mic=True), abs=1e-4)
    for d in r.dihedrals:
        want_d = nacl.get_dihedral(*d.atoms, mic=True)
        assert min(abs(d.dihedral_deg - want_d), 360 - abs(d.dihedral_deg - want_d)) < 1e-4
    assert r.mean_coordination_by_element == {"Cl": 6.0, "Na": 6.0}
    (pair,) = r.bond_lengths
    assert pair.pair == "Cl-Na" and 2.6 < pair.bond_length_mean_A < 3.0
    assert r.volume_A3 == pytest.approx(nacl.get_volume(), rel=1e-9)
    assert r.density_g_per_cm3 == pytest.approx(2.165, rel=0.01)  # rock salt


def test_a_flat_group_is_read_as_one_measurement(ws):
    r = _analyze(ws, molecule("H2O"), distances=[0, 1], angles=[1, 0, 2])
    assert [d.atoms for d in r.distances] == [[0, 1]] and [a.atoms for a in r.angles] == [[1, 0, 2]]


def test_one_atom_cell_bonds_to_its_own_images(ws):
    r = _analyze(ws, bulk("Cu"))  # primitive fcc: every neighbour is an image of atom 0
    assert r.coordination_numbers == [12] and r.n_bonds == 6 and all(b.atoms == [0, 0] for b in r.bonds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distances": [[0, 3]]}, "out of range: the structure has 3 atoms"),
        ({"distances": [[-1, 0]]}, "out of range"),
        ({"distances": [[0, 1, 2]]}, "takes 2 atom indices"),
        ({"angles": [[0, 1]]}, "takes 3 atom indices"),
        ({"angles": [[1, 0, 1]]}, "repeats an atom"),
        ({"dihedrals": [[0, 1, 2, 9]]}, "out of range"),
        ({"distances": "0,1"}, "takes 2 atom indices or 2 element symbols"),
    ],
)
def test_bad_indices_are_refused_clearly(ws, kwargs, message):
    with pytest.raises(ToolInputError, match=message) as err:
        _analyze(ws, molecule("H2O"), **kwargs)
    if "out of range" in message:
        assert "0-based" in err.value.hint


def test_collinear_dihedral_and_unknown_structure_are_refused(ws):
    co2 = molecule("CO2")
    co2.append("H")
    co2.positions[3] = [1.0, 1.0, 0.0]
    with pytest.raises(ToolInputError, match="collinear"):
        _analyze(ws, co2, dihedrals=[[1, 0, 2, 3]])  # O-C-O is a straight line
    with pytest.raises(ToolInputError, match="Unknown structure"):
        call_tool("analyze_structure", {"structure_id": "st99"}, ws)


def test_registered_for_agents():
    t = get_tool("analyze_structure")
    assert t.compact and not t.makes_structures_only and t.needs_approval is None
    assert {"distances", "volume_A3", "density_g_per_cm3"} <= set(t.answer_fields)


def test_measurements_named_by_elements(ws):
    """'H-O-H' measures every bonded H-O-H chain (each once), whatever the atom order of the structure."""
    w = molecule("H2O")  # O, H, H
    r = _analyze(ws, w, angles="H-O-H", distances=[["O", "H"]])
    assert [a.atoms for a in r.angles] == [[1, 0, 2]] and r.angles[0].angle_deg == pytest.approx(w.get_angle(1, 0, 2))
    assert sorted(tuple(d.atoms) for d in r.distances) == [(0, 1), (0, 2)]
    r = _analyze(ws, molecule("C2H6"), dihedrals=["H-C-C-H"])
    assert len(r.dihedrals) == 9  # 3 x 3 H-C-C-H, each once
    with pytest.raises(ToolInputError, match="No bonded H-H-H chain"):
        _analyze(ws, w, angles="H-H-H")
    with pytest.raises(ToolInputError, match="3 atom indices or 3 element symbols"):
        _analyze(ws, w, angles=[["H", "Xx", "H"]])
