"""The structure-dataset loader: extxyz/ASE db/saved datasets -> Arrow rows -> ase.Atoms, and its errors."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from triscale.foundation.datasets import atoms_to_record, load_structure_dataset, record_to_atoms


def _molecule(seed: int, group: str = "O", split: str = "train") -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = molecule("H2O")
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.info.update(
        REF_energy=-137.9 + rng.normal(),
        REF_dipole=rng.normal(size=3),
        domain="molecule",
        group=group,
        split=split,
        method="GFN2-xTB",
        seed=seed,
        config_type="rattle",
    )
    atoms.arrays["REF_forces"] = rng.normal(size=(3, 3))
    atoms.arrays["REF_charges"] = rng.normal(size=3)
    return atoms


def _material(seed: int, group: str = "fcc:Cu", split: str = "test") -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.info.update(
        REF_energy=-14.2 + rng.normal(),
        REF_stress=rng.normal(size=6) * 1e-2,
        domain="material",
        group=group,
        split=split,
        method="CHGNet-0.3.0",
        prototype="fcc",
    )
    atoms.arrays["REF_forces"] = rng.normal(size=(4, 3))
    return atoms


def _assert_same(a: Atoms, b: Atoms) -> None:
    assert np.array_equal(a.numbers, b.numbers)
    assert np.array_equal(a.positions, b.positions)  # exact, not approximately
    assert np.array_equal(a.cell.array, b.cell.array) and np.array_equal(a.pbc, b.pbc)
    for key in ("REF_forces", "REF_charges"):
        assert (key in a.arrays) == (key in b.arrays)
        if key in a.arrays:
            assert np.array_equal(a.arrays[key], b.arrays[key])
    assert a.info.keys() == b.info.keys()
    for key, value in a.info.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, b.info[key]), key
        else:
            assert value == b.info[key], key


@pytest.fixture
def frames():
    return [
        _molecule(0),
        _material(1),
        _molecule(2, group="CCO", split="val"),
        _material(3, group="rocksalt:NaCl"),
    ]


def test_extxyz_round_trips_exactly(tmp_path, frames):
    path = tmp_path / "data.extxyz"
    write(path, frames, format="extxyz")
    ds = load_structure_dataset(path, cache_dir=tmp_path / "cache")
    assert ds.num_rows == 4
    for column in (
        "numbers",
        "positions",
        "cell",
        "pbc",
        "REF_energy",
        "REF_forces",
        "REF_stress",
        "REF_dipole",
        "domain",
        "group",
        "split",
        "method",
        "seed",
        "prototype",
        "config_type",
    ):
        assert column in ds.column_names
    assert ds.features["positions"].feature.feature.dtype == "float64"
    assert ds[0]["REF_stress"] is None and ds[1]["REF_dipole"] is None and ds[1]["REF_charges"] is None
    assert len(ds[1]["REF_stress"]) == 6 and ds[1]["prototype"] == "fcc" and ds[0]["prototype"] is None
    from_file = read(path, index=":", format="extxyz")
    for i, expected in enumerate(from_file):
        _assert_same(record_to_atoms(ds[i]), expected)
        assert record_to_atoms(ds[i]).calc is None
    # in memory, the record functions are inverse to each other too
    for atoms in frames:
        _assert_same(record_to_atoms(atoms_to_record(atoms)), atoms)


def test_dataset_is_memory_mapped_and_cached(tmp_path, frames):
    path = tmp_path / "data.extxyz"
    write(path, frames, format="extxyz")
    first = load_structure_dataset(path, cache_dir=tmp_path / "cache")
    assert first.cache_files and first.cache_files[0]["filename"].startswith(str(tmp_path / "cache"))
    again = load_structure_dataset(path, cache_dir=tmp_path / "cache")
    assert again.cache_files == first.cache_files
    write(path, frames + [_molecule(9)], format="extxyz")  # changed file -> new cache entry, new row
    assert load_structure_dataset(path, cache_dir=tmp_path / "cache").num_rows == 5


def test_directory_glob_list_and_empty_shards(tmp_path, frames):
    shards = tmp_path / "out" / "molecule"
    shards.mkdir(parents=True)
    write(shards / "shard-00000.extxyz", frames[:2], format="extxyz")
    write(shards / "shard-00001.extxyz", frames[2:], format="extxyz")
    (shards / "shard-00002.extxyz").write_text("")  # every frame of this shard was skipped
    (shards / "shard-00000.json").write_text("{}")  # sidecars are ignored
    cache = tmp_path / "cache"
    by_dir = load_structure_dataset(tmp_path / "out", cache_dir=cache)
    by_glob = load_structure_dataset(str(shards / "shard-*.extxyz"), cache_dir=cache)
    by_list = load_structure_dataset([shards / "shard-00000.extxyz", shards / "shard-00001.extxyz"], cache_dir=cache)
    assert by_dir.num_rows == by_glob.num_rows == by_list.num_rows == 4
    assert by_dir["group"] == ["O", "fcc:Cu", "CCO", "rocksalt:NaCl"]


def test_ase_db_and_saved_dataset(tmp_path, frames):
    from ase.db import connect

    db_path = tmp_path / "data.db"
    with connect(db_path) as db:
        for atoms in frames:
            kvp = {k: v for k, v in atoms.info.items() if not isinstance(v, np.ndarray)}
            data = {k: v for k, v in atoms.info.items() if isinstance(v, np.ndarray)}
            data.update({k: atoms.arrays[k] for k in ("REF_forces", "REF_charges") if k in atoms.arrays})
            plain = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            db.write(plain, key_value_pairs=kvp, data=data)
    ds = load_structure_dataset(db_path, cache_dir=tmp_path / "cache")
    assert ds.num_rows == 4
    for i, atoms in enumerate(frames):
        back = record_to_atoms(ds[i])
        assert np.array_equal(back.positions, atoms.positions)
        assert np.array_equal(back.arrays["REF_forces"], atoms.arrays["REF_forces"])
        assert back.info["REF_energy"] == atoms.info["REF_energy"] and back.info["group"] == atoms.info["group"]
    saved = tmp_path / "saved"
    ds.save_to_disk(saved)
    reloaded = load_structure_dataset(saved)
    assert reloaded.num_rows == 4 and reloaded[3]["REF_stress"] == ds[3]["REF_stress"]
    both = load_structure_dataset([saved, db_path], cache_dir=tmp_path / "cache")
    assert both.num_rows == 8


def test_plain_extxyz_with_calculator_results_loads(tmp_path):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=1)
    forces = np.random.default_rng(0).normal(size=(2, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-10.8, forces=forces, stress=np.arange(6) * 1e-3)
    mol = molecule("CH4")
    mol.calc = SinglePointCalculator(mol, energy=-113.6, forces=np.zeros((5, 3)))
    path = tmp_path / "other_code.extxyz"
    write(path, [atoms, mol], format="extxyz")
    ds = load_structure_dataset(path, cache_dir=tmp_path / "cache")
    assert ds["REF_energy"] == [-10.8, -113.6]
    assert np.allclose(ds[0]["REF_forces"], forces, atol=1e-8) and np.allclose(ds[0]["REF_stress"], np.arange(6) * 1e-3)
    assert ds["domain"] == ["material", "molecule"]  # by periodicity
    assert ds["group"] == ["other_code:0", "other_code:1"] and set(ds["split"]) <= {"train", "val", "test"}


def _bad(tmp_path, atoms: Atoms, name: str = "bad.extxyz"):
    path = tmp_path / name
    write(path, [_molecule(0), atoms], format="extxyz")
    return path


def test_missing_forces_names_file_and_frame(tmp_path):
    atoms = _molecule(1)
    del atoms.arrays["REF_forces"]
    path = _bad(tmp_path, atoms)
    with pytest.raises(ValueError, match=r"bad\.extxyz frame 1: missing REF_forces"):
        load_structure_dataset(path, cache_dir=tmp_path / "cache")
    assert load_structure_dataset(path, cache_dir=tmp_path / "cache", require_forces=False)[1]["REF_forces"] is None


def test_bad_values_give_clear_errors(tmp_path):
    cases = {
        "stress.extxyz": (
            "REF_stress",
            np.arange(5.0),
            r"stress\.extxyz frame 1: REF_stress has shape \(5,\)",
        ),
        "energy.extxyz": ("REF_energy", float("nan"), r"energy\.extxyz frame 1: REF_energy has non-finite"),
        "domain.extxyz": ("domain", "plasma", r"domain\.extxyz frame 1: unknown domain 'plasma'"),
        "split.extxyz": ("split", "holdout", r"split\.extxyz frame 1: unknown split 'holdout'"),
        "dipole.extxyz": ("REF_dipole", np.ones(2), r"dipole\.extxyz frame 1: REF_dipole has shape"),
    }
    for name, (key, value, message) in cases.items():
        atoms = _molecule(1)
        atoms.info[key] = value
        with pytest.raises(ValueError, match=message):
            load_structure_dataset(_bad(tmp_path, atoms, name), cache_dir=tmp_path / "cache")
    atoms = _molecule(1)
    atoms.arrays["REF_forces"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"inf\.extxyz frame 1: REF_forces has non-finite"):
        load_structure_dataset(_bad(tmp_path, atoms, "inf.extxyz"), cache_dir=tmp_path / "cache")


def test_mismatched_lengths_and_broken_files(tmp_path):
    from ase.db import connect

    db_path = tmp_path / "short.db"
    with connect(db_path) as db:
        db.write(molecule("H2O"), key_value_pairs={"REF_energy": -1.0}, data={"REF_forces": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"short\.db row id 1: REF_forces has shape \(2, 3\), expected \(3, 3\)"):
        load_structure_dataset(db_path, cache_dir=tmp_path / "cache")
    good = tmp_path / "trunc.extxyz"
    write(good, [_molecule(0), _molecule(1)], format="extxyz")
    lines = good.read_text().splitlines()
    good.write_text("\n".join(lines[:-1]) + "\n")  # the last atom line of frame 1 is missing
    with pytest.raises(ValueError, match=r"trunc\.extxyz frame 1"):
        load_structure_dataset(good, cache_dir=tmp_path / "cache")
    (tmp_path / "x.cif").write_text("data_x\n")
    with pytest.raises(ValueError, match=r"x\.cif: unsupported file type"):
        load_structure_dataset(tmp_path / "x.cif")
    with pytest.raises(ValueError, match="no such file"):
        load_structure_dataset(tmp_path / "missing.extxyz")
    with pytest.raises(ValueError, match="no .extxyz/.xyz/.db files"):
        load_structure_dataset(str(tmp_path / "nothing-*.extxyz"))
