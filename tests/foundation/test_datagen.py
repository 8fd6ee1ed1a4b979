"""`triscale datagen` with the smoke recipe: real GFN2-xTB and CHGNet labels, resumability, splits."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from triscale.foundation import datagen
from triscale.foundation.datagen import DatagenConfig, generate, load_config, make_plan, split_of

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "datagen" / "smoke.yaml"
BASE = SMOKE.with_name("base.yaml")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("datagen") / "smoke"
    config = load_config(SMOKE)
    manifest = generate(config, out=out, progress=False)
    return config, out, manifest


def _frames(out: Path, domain: str) -> list:
    frames = []
    for path in sorted((out / domain).glob("shard-*.extxyz")):
        if path.stat().st_size:
            frames.extend(read(path, index=":", format="extxyz"))
    return frames


def test_smoke_produces_labelled_frames_with_keys_shapes_and_units(smoke):
    config, out, manifest = smoke
    assert manifest["complete"] and manifest["shards_done"] == manifest["shards"] == len(make_plan(config))
    molecules, materials = _frames(out, "molecule"), _frames(out, "material")
    assert len(molecules) >= 8 and len(materials) >= 12
    assert manifest["domains"]["molecule"]["frames"] == len(molecules)
    assert manifest["domains"]["material"]["frames"] == len(materials)
    for frames, domain in ((molecules, "molecule"), (materials, "material")):
        for atoms in frames:
            n = len(atoms)
            info = atoms.info
            assert atoms.calc is None  # labels live under REF_ keys only, never as calculator results
            assert info["domain"] == domain and info["split"] in ("train", "val", "test")
            assert info["units"] == "eV,Angstrom" and isinstance(info["group"], str) and info["group"]
            assert atoms.arrays["REF_forces"].shape == (n, 3)
            assert np.isfinite(atoms.arrays["REF_forces"]).all()
            assert np.abs(atoms.arrays["REF_forces"]).max() <= 20.0
            versions = json.loads(info["code_versions"])
            e_per_atom = info["REF_energy"] / n
            if domain == "molecule":
                assert info["method"] == "GFN2-xTB" and "tblite" in versions
                assert not atoms.pbc.any() and "REF_stress" not in info
                assert info["REF_dipole"].shape == (3,) and atoms.arrays["REF_charges"].shape == (n,)
                assert abs(atoms.arrays["REF_charges"].sum()) < 1e-3  # neutral molecules
                assert -200 < e_per_atom < -5  # GFN2-xTB total energies in eV (not Hartree)
            else:
                assert info["method"] == "CHGNet-0.3.0" and "chgnet" in versions
                assert "CHGNet" in info["distilled_from"]
                assert atoms.pbc.all() and "REF_dipole" not in info
                assert info["REF_stress"].shape == (6,)
                assert -12 < e_per_atom < -1  # eV/atom
    stresses = np.array([a.info["REF_stress"] for a in materials])
    # eV/Å³, not GPa: strained cells are a few GPa (0.01-0.1 eV/Å³), nothing near 1 eV/Å³ (160 GPa)
    assert np.abs(stresses).max() < 0.5 and np.abs(stresses).max() > 1e-3
    types = {a.info["config_type"] for a in molecules + materials}
    assert {"etkdg", "rattle", "md", "relaxed", "strain", "vacancy"} <= types


def test_xtb_forces_are_minus_energy_gradient(smoke):
    from tblite.ase import TBLite

    _, out, _ = smoke
    frame = next(a for a in _frames(out, "molecule") if a.info["config_type"] == "rattle")

    def energy(positions):
        atoms = frame.copy()
        atoms.info = {}
        atoms.positions = positions
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=0.01)
        return atoms.get_potential_energy()

    assert energy(frame.positions.copy()) == pytest.approx(frame.info["REF_energy"], abs=1e-4)
    h = 1e-4
    for i, k in [(0, 0), (1, 2), (len(frame) - 1, 1)]:
        plus, minus = frame.positions.copy(), frame.positions.copy()
        plus[i, k] += h
        minus[i, k] -= h
        numeric = -(energy(plus) - energy(minus)) / (2 * h)
        assert numeric == pytest.approx(frame.arrays["REF_forces"][i, k], abs=2e-3)


def test_chgnet_stress_is_strain_derivative_in_ev_per_a3(smoke):
    config, out, _ = smoke
    frame = min((a for a in _frames(out, "material") if a.info["config_type"] == "strain"), key=len)
    calc = datagen.chgnet_calculator(config.material)
    volume = frame.get_volume()
    h = 2e-3
    numeric = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[i, j] += sign * h / 2
                eps[j, i] += sign * h / 2
                atoms = frame.copy()
                atoms.info = {}
                atoms.set_cell(frame.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                atoms.calc = calc
                energies.append(atoms.get_potential_energy())
            numeric[i, j] = numeric[j, i] = (energies[0] - energies[1]) / (2 * h) / volume
    voigt = numeric[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    np.testing.assert_allclose(frame.info["REF_stress"], voigt, atol=2e-4)


def test_second_run_does_no_new_work_and_changes_nothing(smoke, monkeypatch):
    config, out, _ = smoke
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished shard was generated again")

    monkeypatch.setattr(datagen.driver, "run_shard", forbidden)
    generate(config, out=out, progress=False)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}
    assert after.keys() == before.keys()
    for path, (data, mtime) in before.items():
        assert after[path][0] == data, path
        if path.suffix == ".extxyz":
            assert after[path][1] == mtime, f"{path} was rewritten"


def test_killed_run_resumes_with_identical_output(smoke, tmp_path):
    config, out, _ = smoke
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    plan = make_plan(config)
    lost = [plan[0], plan[1]]  # one molecule and one material shard
    assert {s["domain"] for s in lost} == {"molecule", "material"}
    xyz0 = copy / lost[0]["domain"] / f"shard-{lost[0]['index']:05d}.extxyz"
    xyz1 = copy / lost[1]["domain"] / f"shard-{lost[1]['index']:05d}.extxyz"
    xyz0.unlink()  # killed before the shard was written
    xyz1.with_suffix(".json").unlink()  # killed between the two writes
    (xyz0.parent / f"{xyz0.name}.tmp-12345").write_text("partial")  # a temporary file left behind
    manifest = generate(config, out=copy, progress=False)
    assert manifest["complete"]
    for xyz in (xyz0, xyz1):
        original = out / xyz.relative_to(copy)
        assert xyz.read_bytes() == original.read_bytes()  # deterministic given the seed
    assert not list(copy.rglob("*.tmp-*"))


def test_split_is_by_group(smoke):
    _, out, manifest = smoke
    seen: dict[str, str] = {}
    for domain in ("molecule", "material"):
        for atoms in _frames(out, domain):
            group, split = atoms.info["group"], atoms.info["split"]
            assert seen.setdefault(group, split) == split, f"group {group} is in two splits"
    assert sum(v["groups"] for d in manifest["domains"].values() for v in d["splits"].values()) == len(seen)


def test_split_hash_is_seeded_and_keeps_test_elements_in_train():
    groups = [f"g{i}" for i in range(20000)]
    counts = {s: sum(split_of(g, 1) == s for g in groups) for s in ("train", "val", "test")}
    assert counts["train"] / len(groups) == pytest.approx(0.8, abs=0.02)
    assert counts["test"] / len(groups) == pytest.approx(0.1, abs=0.02)
    assert [split_of(g, 1) for g in groups[:50]] == [split_of(g, 1) for g in groups[:50]]
    assert [split_of(g, 1) for g in groups[:50]] != [split_of(g, 2) for g in groups[:50]]
    elements = {f"g{i}": {"H", "C", f"X{i % 40}"} for i in range(100)}
    split, moved = datagen.assign_splits(elements, seed=3, fractions=(0.8, 0.1, 0.1))
    train = set().union(*(elements[g] for g in elements if split[g] == "train"))
    for g, s in split.items():
        if s != "train":
            assert elements[g] <= train
    assert moved > 0 and set(split.values()) == {"train", "val", "test"}


def test_plan_interleaves_domains_and_base_recipe_is_sized():
    plan = make_plan(load_config(SMOKE))
    domains = [s["domain"] for s in plan]
    assert domains[:2] != ["molecule", "molecule"] and "material" in domains[:2]
    base = load_config(BASE)
    assert base.model_dump(exclude={"out"}) == DatagenConfig().model_dump(exclude={"out"})
    assert len(datagen.material_specs(base.material)) >= 25
    elements = [e for s in datagen.MATERIAL_PROTOTYPES for e in s.elements]
    assert min(elements.count(e) for e in set(elements)) >= 2  # no element lives in a single group


def test_other_recipe_in_same_directory_is_refused(smoke):
    config, out, _ = smoke
    with pytest.raises(ValueError, match="different recipe"):
        generate(config.model_copy(update={"seed": config.seed + 1}), out=out, progress=False)


def test_cli_datagen_plans_and_writes_manifest(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    result = CliRunner().invoke(app, ["datagen", "--config", str(SMOKE), "--out", str(tmp_path), "--limit", "0"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["shards_done"] == 0 and not manifest["complete"] and manifest["seed"] == 7
    assert "run again to continue" in result.output


def test_combinatorial_catalogue_is_balanced_disjoint_and_seeded():
    wide = load_config(Path(BASE).parent / "materials-wide.yaml")
    specs = datagen.material_specs(wide.material, wide.seed)
    assert len(specs) == wide.material.n_combinatorial == len({s.id for s in specs})
    assert not {s.id for s in specs} & {s.id for s in datagen.MATERIAL_PROTOTYPES}
    kinds = Counter(s.kind for s in specs)
    assert len(kinds) >= 8 and max(kinds.values()) - min(kinds.values()) <= 3  # round-robin over prototypes
    assert [s.id for s in datagen.material_specs(wide.material, wide.seed)] == [s.id for s in specs]
    assert [s.id for s in datagen.material_specs(wide.material, wide.seed + 1)] != [s.id for s in specs]
    # every spec builds (lattice parameters from radii are positive and give sensible cells)
    for spec in specs[:40]:
        cell = datagen.build_bases(spec)[0]
        assert cell.get_volume() / len(cell) > 5.0
    # adding the field left the base recipe's hash (and so its generated data) valid
    assert load_config(BASE).recipe_hash() == "e62328e1bf236a76"


def test_package_exports_its_public_names_and_conformers_are_seeded():
    import triscale.foundation.datagen as package

    assert sorted(package.__all__) == sorted(set(package.__all__))
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    entry = {"source": "NCI", "smiles": "CCCCO", "group": "CCCCO", "name": "butanol"}
    a, kind = datagen.molecule_conformers(entry, 3, datagen.derive_seed(7, "etkdg", entry["group"]))
    b, _ = datagen.molecule_conformers(entry, 3, datagen.derive_seed(7, "etkdg", entry["group"]))
    assert kind == "etkdg" and 1 <= len(a) <= 3 and all(x.info == {} for x in a)  # bare frames, no charge/spin
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b, strict=True))


@pytest.mark.slow  # the smoke recipe again on a 2-worker Dask LocalCluster: ~1 min of CPU
def test_cluster_run_writes_the_same_shards_as_one_process(smoke, tmp_path):
    """``triscale datagen --cluster local:2``: the shards as Dask tasks give byte-identical files (seeded)."""
    pytest.importorskip("distributed")
    from typer.testing import CliRunner

    from triscale.cli import app

    _, out, manifest = smoke
    dask_out = tmp_path / "dask"
    args = ["datagen", "--config", str(SMOKE), "--out", str(dask_out), "--cluster", "local:2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    again = json.loads((dask_out / "manifest.json").read_text())
    assert again["complete"] and again["shards_done"] == manifest["shards_done"] == again["shards"]
    shards = sorted(out.rglob("shard-*.extxyz"))
    assert shards and sorted(dask_out.rglob("shard-*.extxyz")) == [dask_out / p.relative_to(out) for p in shards]
    for path in shards:
        assert (dask_out / path.relative_to(out)).read_bytes() == path.read_bytes(), path.name


def test_cli_datagen_refuses_a_bad_cluster_and_workers_with_a_cluster(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    base = ["datagen", "--config", str(SMOKE), "--out", str(tmp_path / "x")]
    bad = CliRunner().invoke(app, [*base, "--cluster", "yarn:3"])
    assert bad.exit_code == 2 and "Unknown cluster 'yarn:3'" in bad.output
    both = CliRunner().invoke(app, [*base, "--cluster", "local:2", "--workers", "2"])
    assert both.exit_code == 2 and "not both" in both.output
    assert not (tmp_path / "x").exists()  # nothing planned or written
