"""The harness of benchmarks/finetune_peers.py that needs no peer venv: the stored frames, the energy offsets every
peer gets, the error metrics, the TriScale contender at a tiny budget and the table with the issue's target. The
peers themselves (CHGNet, SevenNet-0, MACE) are benchmark-only; one MACE smoke run is marked slow and skipped
without the peer venv."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fp = _load("finetune_peers")
peer = _load("_peer_finetune")


@pytest.mark.parametrize("case", ["ethanol", "cu3au"])
def test_stored_cases_load_as_disjoint_labelled_splits(case):
    train, test = fp.load_case(case)
    assert (len(train), len(test)) == (fp.N_TRAIN, fp.N_TEST)
    for a in train + test:
        assert np.isfinite(a.info["REF_energy"])
        assert a.arrays["REF_forces"].shape == (len(a), 3)
    # no test structure is also a training structure
    train_pos = {a.positions.round(6).tobytes() for a in train}
    assert not any(a.positions.round(6).tobytes() in train_pos for a in test)
    if case == "ethanol":
        assert sorted(train[0].get_chemical_symbols()) == sorted("CCHHHHHHO")
        assert not train[0].pbc.any()
    else:
        assert train[0].pbc.all() and sorted(train[0].get_chemical_symbols()) == ["Au", "Cu", "Cu", "Cu"]


def test_unknown_case_is_refused_with_the_accepted_list():
    with pytest.raises(SystemExit, match="ethanol, cu3au"):
        fp.load_case("benzene")


def test_offsets_recover_per_element_energies():
    from ase import Atoms

    frames = [Atoms("H2O"), Atoms("H4O2"), Atoms("HO"), Atoms("H3O")]
    truth = {1: -13.6, 8: -2041.0}
    e = np.array([sum(truth[int(z)] for z in a.numbers) for a in frames])
    got = peer.fit_offsets(frames, e)
    assert got == pytest.approx(truth, abs=1e-9)
    # one composition only: the minimum-norm fit still reproduces every frame's energy
    same = [Atoms("CH4")] * 3
    off = peer.fit_offsets(same, np.array([-5.0, -5.0, -5.0]))
    assert peer.offset_energy(same[0], off) == pytest.approx(-5.0)


def test_errors_in_the_stated_units():
    train, _ = fp.load_case("cu3au")
    frames = train[:5]
    e_ref = np.array([a.info["REF_energy"] for a in frames])
    n = np.array([len(a) for a in frames])
    forces = [a.arrays["REF_forces"] + 0.002 for a in frames]
    errs = fp.test_errors(frames, e_ref + 0.010 * n, forces)
    assert errs["energy_mae_meV_per_atom"] == pytest.approx(10.0)
    assert errs["forces_mae_meV_per_A"] == pytest.approx(2.0)
    # the peers' worker computes the same numbers
    assert peer.maes(frames, e_ref + 0.010 * n, forces) == pytest.approx(errs)


def _row(case, contender, f_mae, speed):
    return {
        "case": case,
        "contender": contender,
        "model": fp.CONTENDERS[contender][0],
        "energy_mae_meV_per_atom": 1.0,
        "forces_mae_meV_per_A": f_mae,
        "inference_atoms_per_cpu_s": speed,
        "inference_atoms_per_s": speed / 10,
        "train_cpu_seconds": 90.0,
        "epochs": 10,
        "steps": 30,
    }


def test_table_states_the_target_per_case():
    rows = [
        _row("ethanol", "triscale-lora", 105.0, 12000.0),
        _row("ethanol", "triscale-full", 120.0, 12000.0),
        _row("ethanol", "chgnet", 100.0, 1000.0),
        _row("ethanol", "mace-scratch", 300.0, 100.0),
        _row("cu3au", "triscale-lora", 20.0, 5000.0),
        _row("cu3au", "sevennet", 10.0, 100.0),
    ]
    text = fp.table(rows)
    assert text.count("| ethanol |") == 4 and text.count("| cu3au |") == 2
    assert "ethanol: best TriScale (TriScale LoRA) force MAE 1.05x the best peer's (CHGNet 0.3.0 fine-tuned)" in text
    assert "at 12.0x its inference speed: target met" in text
    assert "cu3au: best TriScale (TriScale LoRA) force MAE 2.00x" in text and "target NOT met" in text


def test_missing_peer_venv_skips_only_the_peers(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "DEFAULT_PEER_PYTHON", str(tmp_path / "absent" / "python"))
    monkeypatch.delenv(fp.PEER_PYTHON_ENV, raising=False)
    assert fp.peer_python(None) is None
    monkeypatch.setattr(fp, "RUNS", tmp_path / "runs")
    result = fp.run_contender("cu3au", "mace-scratch", 1.0, 1, None)
    assert result["skipped"] == "no peer venv"
    assert not (tmp_path / "runs" / "cu3au" / "mace-scratch.json").exists()


@pytest.mark.slow  # ~25 s: a real one-epoch fine-tuning and its evaluation
def test_triscale_contender_at_a_tiny_budget(tmp_path):
    """The project's own finetune path end to end on 12 Cu3Au frames (one epoch, no calibration): the shipped recipe,
    test errors, speed."""
    from ase.io import write

    train, test = fp.load_case("cu3au")
    train_path, test_path = tmp_path / "train.extxyz", tmp_path / "test.extxyz"
    write(train_path, train[:12], format="extxyz")
    write(test_path, test[:4], format="extxyz")
    r = fp.run_triscale("lora", train_path, test_path, 0.01, 1, tmp_path, epochs=1)
    assert (r["epochs"], r["epochs_run"]) == (1, 1)
    assert r["model"] == "TriScale LoRA" and r["lr"] == pytest.approx(3e-3)
    assert 0 < r["forces_mae_meV_per_A"] < 2000 and 0 <= r["energy_mae_meV_per_atom"] < 1000
    assert r["inference_atoms_per_s"] > 0
    assert (tmp_path / "triscale-lora" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(fp.peer_python(None) is None, reason="no peer venv (MACE, SevenNet): see docs/finetuning.md")
def test_mace_scratch_in_the_peer_venv(tmp_path):
    from ase.io import write

    train, test = fp.load_case("cu3au")
    write(tmp_path / "train.extxyz", train[:8], format="extxyz")
    write(tmp_path / "test.extxyz", test[:2], format="extxyz")
    r = fp.run_peer(
        "mace-scratch", tmp_path / "train.extxyz", tmp_path / "test.extxyz", 1.0, 1, tmp_path, fp.peer_python(None)
    )
    assert "error" not in r, r.get("error")
    assert r["steps"] >= 1 and np.isfinite(r["forces_mae_meV_per_A"])
