"""Pretraining for v2: an energy-only domain (QM9 B3LYP) is masked in the loss, init_from adds a domain to a
checkpoint, and a run's small progress copy continues on a machine that has nothing else of the run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from typer.testing import CliRunner

from triscale.cli import app
from triscale.foundation import keys as K
from triscale.foundation.calculator import TriScaleCalculator
from triscale.foundation.config import FoundationConfig
from triscale.foundation.datagen import DFT_DOMAIN, DatagenConfig, generate, qm9
from triscale.foundation.datasets import load_structure_dataset
from triscale.foundation.graph import collate
from triscale.foundation.model import FoundationModel
from triscale.foundation.pretrain import LossWeights, PretrainRecipe, _weighted_loss, pretrain
from triscale.foundation.training import record_to_graph

FIXTURE = Path(__file__).resolve().parent / "data" / "qm9_fixture.csv"
TINY = dict(hidden_channels=8, num_layers=1, num_radial=4, cutoff=4.0, head_hidden_channels=8)


def _emt(path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        symbol, a = (("Cu", 3.6), ("Al", 4.05))[i % 2]
        atoms = bulk(symbol, "fcc", a=a * (1 + rng.uniform(-0.03, 0.03)), cubic=True)
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        atoms.info.update(
            REF_energy=atoms.get_potential_energy(),
            REF_stress=atoms.get_stress(voigt=True),
            domain="material",
            group=f"fcc:{symbol}",
            split="val" if i % 4 == 3 else "train",
        )
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return path


@pytest.fixture
def dft_dir(tmp_path, monkeypatch):
    """Energy-only molecule-dft frames written by datagen from twelve real QM9 rows."""
    folder = tmp_path / "qm9data"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "qm9_part1.csv")
    monkeypatch.setattr(qm9, "qm9_folder", lambda: folder)
    qm9.qm9_table.cache_clear()
    config = DatagenConfig(
        molecule={"enabled": False}, material={"enabled": False}, molecule_dft={"enabled": True, "molecules": 12}
    )
    generate(config, out=tmp_path / "dft", progress=False)
    qm9.qm9_table.cache_clear()
    return tmp_path / "dft" / DFT_DOMAIN


def _recipe(data, out_dir, **overrides) -> PretrainRecipe:
    settings = dict(
        data=[str(d) for d in data],
        out_dir=str(out_dir),
        model=dict(TINY),
        batch_size=4,
        max_steps=20,
        lr=5e-3,
        warmup_steps=2,
        eval_every=10,
        checkpoint_every=10,
        max_eval_structures=8,
    )
    settings.update(overrides)
    return PretrainRecipe(**settings)


def test_energy_only_frames_contribute_energy_and_no_forces(dft_dir, tmp_path):
    domains = ["material", DFT_DOMAIN]
    model = FoundationModel(FoundationConfig(**TINY, domains=domains))
    records = list(
        load_structure_dataset(
            [str(dft_dir), str(_emt(tmp_path / "emt.extxyz", 4))], domains=domains, require_forces=False
        )
    )
    graphs = [record_to_graph(r, 4.0, domains.index(r["domain"])) for r in records]
    dft = [g for g in graphs if int(g[K.DOMAIN][0]) == 1]
    assert len(dft) == 12 and all(torch.isnan(g[K.REF_FORCES]).all() for g in dft)
    batch = collate(graphs)
    out = model(batch, compute_forces=True, compute_stress=True, create_graph=False)
    with_forces = {0: LossWeights(), 1: LossWeights(forces=1.0)}
    no_forces = {0: LossWeights(), 1: LossWeights(forces=0.0)}
    loss, logs = _weighted_loss(out, batch, with_forces, 2)
    loss0, _ = _weighted_loss(out, batch, no_forces, 2)
    assert torch.isfinite(loss) and float(loss) == float(loss0)  # NaN forces masked, not counted
    assert "d1_mae_energy" in logs and "d1_mae_forces" not in logs and "d0_mae_forces" in logs
    heavier = {0: LossWeights(), 1: LossWeights(energy=20.0)}
    assert float(_weighted_loss(out, batch, heavier, 2)[0]) > float(loss)  # the DFT energies do count


def test_init_from_adds_a_domain_the_checkpoint_lacks(dft_dir, tmp_path):
    emt = _emt(tmp_path / "emt.extxyz")
    first = pretrain(_recipe([emt], tmp_path / "a"))  # domains: molecule, material
    a = FoundationModel.from_pretrained(str(first))
    model = dict(TINY, domains=["material", DFT_DOMAIN, "molecule"])  # reordered, one new
    second = pretrain(
        _recipe(
            [emt, dft_dir],
            tmp_path / "b",
            model=model,
            max_steps=1,
            lr=1e-12,
            init_from=str(first),
            init_new_domains_from={DFT_DOMAIN: "molecule"},
        )
    )
    b = FoundationModel.from_pretrained(str(second))
    assert b.config.domains == ["material", DFT_DOMAIN, "molecule"]
    sa, sb = a.state_dict(), b.state_dict()
    per_domain = ("domain_embedding.weight", "atomic_energies", "energy_scale", "energy_shift")
    for key, value in sa.items():
        if key.startswith("energy_heads.") or key in per_domain:
            continue
        torch.testing.assert_close(sb[key], value, rtol=0, atol=1e-8, msg=key)
    for new_index, old_index in ((0, 1), (1, 0), (2, 0)):  # material <- material, dft <- molecule, molecule
        head = [k for k in sa if k.startswith(f"energy_heads.{old_index}.")]
        for k in head:
            torch.testing.assert_close(sb[k.replace(f".{old_index}.", f".{new_index}.", 1)], sa[k], rtol=0, atol=1e-8)
        torch.testing.assert_close(sb["domain_embedding.weight"][new_index], sa["domain_embedding.weight"][old_index])
    # the checkpoint's function is kept: its neighbour normalisation and energy scales are not refitted on the new
    # data, so it predicts the same forces (E0, refitted, only shifts energies by per-element constants)
    assert b.config.avg_num_neighbors == a.config.avg_num_neighbors
    assert b.energy_scale.tolist() == [a.energy_scale[1].item(), a.energy_scale[0].item(), a.energy_scale[0].item()]
    probe = bulk("Cu", "fcc", a=3.7, cubic=True)
    probe.rattle(0.1, seed=5)
    forces = []
    for m in (a, b):
        probe.calc = TriScaleCalculator(m, domain="material", dtype="float64")
        forces.append(probe.get_forces())
    np.testing.assert_allclose(forces[1], forces[0], atol=1e-6)
    # E0 of the new domain fitted on its B3LYP energies: hydrogen near -0.5 Ha, far from the EMT material's
    assert b.atomic_energies[1, 1].item() == pytest.approx(-0.5 * 27.211, abs=3.0)
    metrics = json.loads((tmp_path / "b" / "test_metrics.json").read_text())
    assert "forces_mae_meV_per_A" not in metrics.get(f"val/{DFT_DOMAIN}", {})

    without_copy = _recipe([emt, dft_dir], tmp_path / "c", model=model, max_steps=1, lr=1e-12, init_from=str(first))
    c = FoundationModel.from_pretrained(str(pretrain(without_copy))).state_dict()
    assert not torch.allclose(c["energy_heads.1.0.weight"], sa["energy_heads.0.0.weight"])

    dropped = _recipe([emt], tmp_path / "d", model=dict(TINY, domains=["material"]), init_from=str(first))
    with pytest.raises(ValueError, match=r"domain\(s\) \['molecule'\] that the recipe's model lacks"):
        pretrain(dropped)
    wrong = _recipe([emt], tmp_path / "e", init_from=str(first), init_new_domains_from={"material": "molecule"})
    with pytest.raises(ValueError, match="needs a new domain"):
        pretrain(wrong)


def test_progress_copy_continues_a_run_on_a_new_machine(tmp_path):
    emt = _emt(tmp_path / "emt.extxyz")
    progress = tmp_path / "repo" / "checkpoints" / "progress" / "run"
    recipe = _recipe([emt], tmp_path / "machine1" / "run")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["pretrain", "--config", str(recipe_path), "--export-progress", str(progress)])
    assert result.exit_code == 0, result.output
    state = json.loads((progress / "progress.json").read_text())
    assert state["step"] == 20 and state["weights"] == "EMA" and state["trained_seconds"] > 0
    assert {p.name for p in progress.iterdir()} == {
        "config.json",
        "model.safetensors",
        "progress.json",
        "statistics.json",
    }
    saved = FoundationModel.from_pretrained(str(progress)).state_dict()
    exported = FoundationModel.from_pretrained(str(tmp_path / "machine1" / "run" / "final")).state_dict()
    for key, value in exported.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)

    # machine 2: only the committed copy (and the data); no out_dir state. max_steps reached: nothing to train,
    # the exported model is the committed one
    same = pretrain(_recipe([emt], tmp_path / "machine2" / "run", progress_dir=str(progress)))
    for key, value in FoundationModel.from_pretrained(str(same)).state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    # ... and a longer budget goes on from step 20
    longer = pretrain(_recipe([emt], tmp_path / "machine3" / "run", progress_dir=str(progress), max_steps=30))
    assert FoundationModel.from_pretrained(str(longer)).config.pretraining["steps"] == 30
    assert json.loads((progress / "progress.json").read_text())["step"] == 30
    rows = [json.loads(x) for x in (tmp_path / "machine3" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 21


def test_warm_start_on_partial_data_keeps_the_checkpoints_elements(tmp_path):
    # the first v2 run started while datagen was still writing material shards: its refit dropped elements the
    # checkpoint knew (their test frames became unscorable) and set their E0 to 0
    from ase.io import read

    emt = _emt(tmp_path / "emt.extxyz")
    cu_only = tmp_path / "cu.extxyz"
    write(cu_only, [f for f in read(emt, index=":") if set(f.get_chemical_symbols()) == {"Cu"}], format="extxyz")
    first = FoundationModel.from_pretrained(str(pretrain(_recipe([emt], tmp_path / "a"))))
    warm = dict(max_steps=1, lr=1e-12, init_from=str(tmp_path / "a" / "final"))
    second = pretrain(_recipe([cu_only], tmp_path / "b", **warm))
    b = FoundationModel.from_pretrained(str(second))
    al, m = 13, b.config.domains.index("material")
    assert al in b.config.elements and al in b.config.domain_elements["material"]
    assert b.atomic_energies[m, al].item() == first.atomic_energies[first.config.domains.index("material"), al].item()
    assert b.atomic_energies[m, al].item() != 0.0
