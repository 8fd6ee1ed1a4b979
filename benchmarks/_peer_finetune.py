"""Fine-tune (or train) one peer under a CPU-time budget, score it on the test frames, time its inference.

    python _peer_finetune.py CONTENDER TRAIN.extxyz TEST.extxyz BUDGET_S TIMING_THREADS OUT.json

CONTENDER: ``chgnet`` (run with the project's python: chgnet, with the CHGNet 0.3.0 weights, is installed there),
``sevennet`` or ``mace-scratch`` (run with the peer venv's python: mace-torch pins e3nn 0.4.4 and disables torch's
safe loading).
This file imports nothing from triscale, so it runs in either environment. Frames carry ``REF_energy`` (eV) and
``REF_forces`` (eV/Å).

One recipe for every peer, what a careful user would do: per-element energy offsets fitted by least squares to the
training residuals (label minus the model's energy before training) and added to the model's energy, so that the
pretrained weights start from the right reference; then Adam on ``10 * MSE(E/atom) + MSE(F)`` (TriScale's loss
weights), batch 8, one thread, until the budget runs out, checked after every optimiser step; the weights at the end
of the budget are scored. Learning rates: 1e-3 when fine-tuning all weights of a pretrained model, 1e-2 with
AMSGrad from scratch (MACE's defaults).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
from _timing import time_energy_forces  # noqa: E402

BATCH = 8
W_ENERGY = 10.0
SEED = 0
N_TIMING = 8
REPEATS = 5
MOLECULE_BOX = 30.0  # Å: CHGNet needs a cell; far beyond every cutoff here


def read_frames(path: str):
    from ase.io import read

    return read(path, index=":", format="extxyz")


def labels(frames):
    energies = np.array([float(a.info["REF_energy"]) for a in frames])
    forces = [np.asarray(a.arrays["REF_forces"], dtype=float) for a in frames]
    return energies, forces


def fit_offsets(frames, residuals: np.ndarray) -> dict[int, float]:
    """Per-element energies (eV) by least squares (minimum norm: one composition gives its mean residual)."""
    zs = sorted({int(z) for a in frames for z in a.numbers})
    counts = np.array([[np.sum(a.numbers == z) for z in zs] for a in frames], dtype=float)
    coef, *_ = np.linalg.lstsq(counts, residuals, rcond=None)
    return {z: float(c) for z, c in zip(zs, coef, strict=True)}


def offset_energy(atoms, offsets: dict[int, float]) -> float:
    return float(sum(offsets.get(int(z), 0.0) for z in atoms.numbers))


def for_calc(atoms, needs_cell: bool):
    """Molecules in a 30 Å periodic box for a model that needs a cell (CHGNet); other atoms unchanged."""
    if not needs_cell or atoms.pbc.any():
        return atoms
    a = atoms.copy()
    a.set_cell([MOLECULE_BOX] * 3)
    a.center()
    a.pbc = True
    return a


# ---------------------------------------------------------------------------------------------------------------
# peers: each gives (model, trainable parameters, batches -> loss, calculator factory, needs_cell)
class CHGNetPeer:
    name = "CHGNet 0.3.0 fine-tuned"
    lr = 1e-3
    needs_cell = True

    def __init__(self):
        from chgnet.model import CHGNet

        self.model = CHGNet.load(verbose=False)
        self.amsgrad = False

    def calculator(self):
        from chgnet.model.dynamics import CHGNetCalculator

        self.model.eval()
        return CHGNetCalculator(model=self.model, use_device="cpu")

    def prepare(self, frames, target_e, target_f):
        from pymatgen.io.ase import AseAtomsAdaptor

        items = []
        for a, e, f in zip(frames, target_e, target_f, strict=True):
            graph = self.model.graph_converter(AseAtomsAdaptor.get_structure(for_calc(a, True)))
            items.append((graph, e / len(a), f))
        return items

    def loss(self, batch):
        import torch

        graphs = [g for g, _, _ in batch]
        pred = self.model(graphs, task="ef")
        e_ref = torch.tensor([e for _, e, _ in batch], dtype=pred["e"].dtype)
        f_ref = torch.tensor(np.concatenate([f for _, _, f in batch]), dtype=pred["e"].dtype)
        f_pred = torch.cat(pred["f"])
        return W_ENERGY * torch.mean((pred["e"] - e_ref) ** 2) + torch.mean((f_pred - f_ref) ** 2)


class SevenNetPeer:
    name = "SevenNet-0 fine-tuned"
    lr = 1e-3
    needs_cell = False

    def __init__(self):
        from sevenn import util

        self.model, config = util.model_from_checkpoint(util.pretrained_name_to_path("7net-0"))
        self.cutoff = config["cutoff"]
        self.amsgrad = False

    def calculator(self):
        from sevenn.calculator import SevenNetCalculator

        self.model.eval()
        return SevenNetCalculator(self.model, file_type="model_instance", device="cpu")

    def prepare(self, frames, target_e, target_f):
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import atoms_to_graph

        items = []
        for a, e, f in zip(frames, target_e, target_f, strict=True):
            b = a.copy()
            b.info = {"y_energy": float(e)}
            b.arrays["y_force"] = np.asarray(f, dtype=float)
            items.append(AtomGraphData.from_numpy_dict(atoms_to_graph(b, self.cutoff, transfer_info=False)))
        return items

    def loss(self, batch):
        import torch
        from sevenn import _keys as KEY
        from torch_geometric.loader.dataloader import Collater

        data = Collater(batch)(batch)
        self.model.set_is_batch_data(True)
        out = self.model(data)
        n = torch.bincount(data[KEY.BATCH]).to(out[KEY.PRED_TOTAL_ENERGY].dtype)
        e_err = (out[KEY.PRED_TOTAL_ENERGY] - data[KEY.ENERGY]) / n
        f_err = out[KEY.PRED_FORCE] - data[KEY.FORCE]
        return W_ENERGY * torch.mean(e_err**2) + torch.mean(f_err**2)


class MACEScratchPeer:
    """MACE with MACE-MP-0 "small"'s hyperparameters (hidden 128x0e, L = 0, r_max 6 Å, correlation 3), random
    weights; E0s are the least-squares offsets (zero here), the interaction energy scaled by the training set's RMS
    force (MACE's rms_forces_scaling)."""

    name = "MACE small from scratch"
    lr = 1e-2
    needs_cell = False

    def __init__(self, train_frames):
        import torch
        from _peer_e3nn import mace_small
        from mace.tools import AtomicNumberTable

        zs = sorted({int(z) for a in train_frames for z in a.numbers})
        self.z_table = AtomicNumberTable(zs)
        self.r_max = 6.0
        _, forces = labels(train_frames)
        rms_f = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
        # the average neighbour count within r_max over the training frames, as MACE computes it
        from ase.neighborlist import neighbor_list

        avg_nb = float(np.mean([len(neighbor_list("i", a, self.r_max)) / len(a) for a in train_frames]))
        torch.manual_seed(SEED)
        self.model = mace_small(
            zs,
            np.zeros(len(zs)),
            max(avg_nb, 1.0),
            r_max=self.r_max,
            num_bessel=8,
            atomic_inter_scale=rms_f,
            atomic_inter_shift=0.0,
        )
        self.amsgrad = True

    def calculator(self):
        import tempfile

        import torch
        from mace.calculators import MACECalculator

        self.model.eval()
        path = tempfile.mktemp(suffix=".model")
        torch.save(self.model, path)
        return MACECalculator(model_paths=path, device="cpu", default_dtype="float32")

    def prepare(self, frames, target_e, target_f):
        from mace.data import AtomicData, config_from_atoms
        from mace.data.utils import KeySpecification

        keys = KeySpecification(info_keys={"energy": "y_energy"}, arrays_keys={"forces": "y_force"})
        items = []
        for a, e, f in zip(frames, target_e, target_f, strict=True):
            b = a.copy()
            b.info = {"y_energy": float(e)}
            b.arrays["y_force"] = np.asarray(f, dtype=float)
            config = config_from_atoms(b, key_specification=keys)
            items.append(AtomicData.from_config(config, z_table=self.z_table, cutoff=self.r_max))
        return items

    def loss(self, batch):
        import torch
        from mace.tools.torch_geometric import Batch

        data = Batch.from_data_list(batch)
        out = self.model(data.to_dict(), training=True, compute_force=True)
        n = data.ptr[1:] - data.ptr[:-1]
        e_err = (out["energy"] - data.energy) / n
        return W_ENERGY * torch.mean(e_err**2) + torch.mean((out["forces"] - data.forces) ** 2)


def make_peer(contender: str, train_frames):
    if contender == "chgnet":
        return CHGNetPeer()
    if contender == "sevennet":
        return SevenNetPeer()
    if contender == "mace-scratch":
        return MACEScratchPeer(train_frames)
    raise SystemExit(f"unknown peer {contender!r}; accepted: chgnet, sevennet, mace-scratch")


def predict(calc, frames, needs_cell: bool, offsets: dict[int, float]):
    energies, forces = [], []
    for a in frames:
        b = for_calc(a, needs_cell).copy()
        b.calc = calc
        energies.append(float(b.get_potential_energy()) + offset_energy(a, offsets))
        forces.append(np.asarray(b.get_forces()))
    return np.array(energies), forces


def maes(frames, energies, forces) -> dict:
    e_ref, f_ref = labels(frames)
    n = np.array([len(a) for a in frames])
    return {
        "energy_mae_meV_per_atom": float(1000 * np.mean(np.abs((energies - e_ref) / n))),
        "forces_mae_meV_per_A": float(1000 * np.mean(np.abs(np.concatenate(forces) - np.concatenate(f_ref)))),
    }


def run(contender: str, train_path: str, test_path: str, budget_s: float, timing_threads: int) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    train, test = read_frames(train_path), read_frames(test_path)
    t_setup = time.perf_counter()
    peer = make_peer(contender, train)
    e_ref, f_ref = labels(train)
    if contender == "mace-scratch":
        base_e = np.zeros(len(train))
    else:
        base_e, _ = predict(peer.calculator(), train, peer.needs_cell, {})
    offsets = fit_offsets(train, e_ref - base_e)
    target_e = e_ref - np.array([offset_energy(a, offsets) for a in train])
    items = peer.prepare(train, target_e, f_ref)
    setup_s = time.perf_counter() - t_setup

    params = [p for p in peer.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=peer.lr, amsgrad=peer.amsgrad)
    rng = np.random.default_rng(SEED)
    peer.model.train()
    steps, epochs, losses = 0, 0, []
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = c0 + budget_s  # CPU seconds of this one-thread process: the machine is shared
    while time.process_time() < deadline:
        order = rng.permutation(len(items))
        for start in range(0, len(items), BATCH):
            batch = [items[i] for i in order[start : start + BATCH]]
            opt.zero_grad(set_to_none=True)
            loss = peer.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            steps += 1
            losses.append(float(loss.detach()))
            if time.process_time() >= deadline:
                break
        else:
            epochs += 1
    train_cpu_s, train_wall_s = time.process_time() - c0, time.perf_counter() - t0

    calc = peer.calculator()
    energies, forces = predict(calc, test, peer.needs_cell, offsets)
    result = {
        "contender": contender,
        "model": peer.name,
        **maes(test, energies, forces),
        "train_cpu_seconds": train_cpu_s,
        "train_wall_seconds": train_wall_s,
        "setup_wall_seconds": setup_s,
        "budget_seconds": budget_s,
        "steps": steps,
        "epochs": epochs,
        "final_loss": float(np.mean(losses[-10:])) if losses else None,
        "lr": peer.lr,
    }
    torch.set_num_threads(timing_threads)
    timed = [for_calc(a, peer.needs_cell) for a in test[:N_TIMING]]
    c0 = time.process_time()
    seconds = [time_energy_forces(calc, a, REPEATS) for a in timed]
    cpu = (time.process_time() - c0) / (REPEATS + 1)  # every repeat and the warm-up call
    n_atoms = sum(len(a) for a in timed)
    result["inference_atoms_per_s"] = float(n_atoms / sum(seconds))
    result["inference_atoms_per_cpu_s"] = float(n_atoms / cpu)
    result["timing_threads"] = timing_threads
    return result


def main() -> None:
    contender, train_path, test_path = sys.argv[1], sys.argv[2], sys.argv[3]
    budget_s, threads, out = float(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])
    if contender != "chgnet":  # this process only loads SevenNet's shipped checkpoint and MACE files it wrote
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    result = run(contender, train_path, test_path, budget_s, threads)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
