"""MACE-small trained on the Pareto benchmark's frames, for the same CPU budget: run with the MACE venv's python.

Usage (benchmarks/pareto.py calls it; mace-torch pins e3nn 0.4.4 and disables torch's safe loading process-wide, so it
lives in its own venv and process, as _peer_e3nn.py does):

    python _peer_mace_train.py train TRAIN.extxyz HELDOUT.extxyz OUT_DIR MINUTES SEED   ->  OUT_DIR/metrics.json
    python _peer_mace_train.py time MODEL.pt STRUCTURES.extxyz REPEATS THREADS         ->  one JSON line per structure

The model is MACE-MP-0's "small" architecture (as in _peer_e3nn.py: 128x0e, max_ell 3, correlation 3, 2 interactions,
r_max 6 Å), with one readout head per domain (``molecule``/``material``: the two teachers' energies differ in their
zero, as TriScale's per-domain heads do). The recipe is mace_run_train's defaults, run through MACE's own Python API
so that the budget is this process's CPU time, like TriScale's: E0s per head by least squares on the training frames
("average"), a per-head scale from the RMS of the training forces (``rms_forces_scaling``), Adam with AMSGrad,
lr 0.01, batch size 10, weighted energy (1) / forces (100) loss, EMA 0.99. float32 (TriScale trains in float32 too).
Frames carry labels as REF_energy / REF_forces and their domain as ``info["domain"]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# This process loads only the model file it wrote itself (a pickle, as MACE stores models).
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
import torch  # noqa: E402
from _timing import time_energy_forces  # noqa: E402
from ase.io import read  # noqa: E402

warnings.filterwarnings("ignore")
R_MAX = 6.0
BATCH_SIZE = 10


def _configs(frames, heads):
    from mace.data.utils import KeySpecification, config_from_atoms

    keys = KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
    return [config_from_atoms(a, key_specification=keys, head_name=str(a.info["domain"])) for a in frames]


def _data(configs, z_table, heads):
    from mace.data import AtomicData

    return [AtomicData.from_config(c, z_table=z_table, cutoff=R_MAX, heads=heads) for c in configs]


def _model(z_table, heads, e0s, scales, avg_num_neighbors):
    from _peer_e3nn import mace_small

    return mace_small(
        z_table.zs,
        e0s,
        avg_num_neighbors,
        r_max=R_MAX,
        heads=heads,
        atomic_inter_scale=scales,
        atomic_inter_shift=[0.0] * len(heads),
    )


@torch.no_grad()
def _evaluate(model, loader, heads) -> dict:
    """Energy MAE (meV/atom) and force MAE (meV/Å, per component) per head."""
    sums = {h: {"e": 0.0, "ne": 0, "f": 0.0, "nf": 0} for h in heads}
    model.eval()
    for batch in loader:
        with torch.enable_grad():
            out = model(batch.to_dict(), training=False, compute_force=True)
        n_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(torch.float64)
        e_err = ((out["energy"].double() - batch.energy.double()) / n_atoms).abs()
        f_err = (out["forces"].double() - batch.forces.double()).abs()
        atom_head = batch.head[batch.batch]
        for i, h in enumerate(heads):
            gm, am = batch.head == i, atom_head == i
            sums[h]["e"] += float(e_err[gm].sum())
            sums[h]["ne"] += int(gm.sum())
            sums[h]["f"] += float(f_err[am].sum())
            sums[h]["nf"] += int(am.sum()) * 3
    return {
        h: {
            "n_structures": s["ne"],
            "energy_mae_meV_per_atom": 1000 * s["e"] / s["ne"],
            "forces_mae_meV_per_A": 1000 * s["f"] / s["nf"],
        }
        for h, s in sums.items()
        if s["ne"]
    }


def train(train_path: str, heldout_path: str, out_dir: str, minutes: float, seed: int) -> None:
    from mace.data.utils import compute_average_E0s
    from mace.modules.loss import WeightedEnergyForcesLoss
    from mace.modules.utils import compute_avg_num_neighbors
    from mace.tools import AtomicNumberTable
    from mace.tools.torch_geometric import DataLoader
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.set_default_dtype(torch.float32)  # this process only
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    train_frames = read(train_path, index=":")
    heldout_frames = read(heldout_path, index=":")
    heads = sorted({str(a.info["domain"]) for a in train_frames})
    z_table = AtomicNumberTable(sorted({int(z) for a in train_frames for z in a.numbers}))
    train_configs = _configs(train_frames, heads)
    e0s = np.zeros((len(heads), len(z_table)))
    scales = []
    for i, h in enumerate(heads):
        subset = [c for c in train_configs if c.head == h]
        e0 = compute_average_E0s(subset, z_table)
        e0s[i] = [e0[z] for z in z_table.zs]
        forces = np.concatenate([c.properties["forces"] for c in subset])
        scales.append(float(np.sqrt(np.mean(forces**2))))
    train_data = _data(train_configs, z_table, heads)
    heldout_data = _data(_configs(heldout_frames, heads), z_table, heads)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_data, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, generator=generator)
    avg_nn = float(compute_avg_num_neighbors(loader))
    model = _model(z_table, heads, e0s, scales, avg_nn)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    loss_fn = WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)
    setup_cpu = time.process_time() - cpu0

    start = time.process_time()
    step, epochs, last_loss = 0, 0, float("nan")
    done = False
    model.train()
    while not done:
        for batch in loader:
            if time.process_time() - start > 60 * minutes:
                done = True
                break
            optimizer.zero_grad(set_to_none=True)
            pred = model(batch.to_dict(), training=True, compute_force=True)
            loss = loss_fn(pred=pred, ref=batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            last_loss = float(loss.detach())
            if step % 50 == 0:
                print(f"mace step {step} loss {last_loss:.4g} ({time.process_time() - start:.0f} s CPU)", flush=True)
        epochs += 1
    trained_cpu = time.process_time() - start
    final = ema.module
    heldout_loader = DataLoader(heldout_data, batch_size=16, shuffle=False, drop_last=False)
    metrics = {
        "model": "MACE-small (MACE-MP-0 small: 128x0e, max_ell 3, correlation 3, 2 layers, r_max 6 Å)",
        "params": int(sum(p.numel() for p in final.parameters())),
        "steps": step,
        "epochs_started": epochs,
        "batch_size": BATCH_SIZE,
        "final_train_loss": last_loss,
        "budget_cpu_minutes": minutes,
        "trained_cpu_seconds": trained_cpu,
        "setup_cpu_seconds": setup_cpu,
        "n_train": len(train_data),
        "heads": heads,
        "heldout": _evaluate(final, heldout_loader, heads),
    }
    torch.save(final, out / "mace_small.model")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics), flush=True)


def time_model(model_path: str, structures: str, repeats: int, threads: int) -> None:
    from mace.calculators import MACECalculator

    torch.set_num_threads(threads)
    for atoms in read(structures, index=":"):
        label = atoms.info.get("label", atoms.get_chemical_formula())
        head = str(atoms.info.get("domain", "material"))
        try:
            calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype="float32", head=head)
            seconds = time_energy_forces(calc, atoms, repeats)
            print(json.dumps({"structure": label, "n_atoms": len(atoms), "seconds": seconds}), flush=True)
        except Exception as err:  # report, do not crash the benchmark
            print(json.dumps({"structure": label, "error": f"{type(err).__name__}: {err}"}), flush=True)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "train":
        train(args[0], args[1], args[2], float(args[3]), int(args[4]))
    elif mode == "time":
        time_model(args[0], args[1], int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected train or time")


if __name__ == "__main__":
    main()
