"""Peer measurements that need e3nn 0.4.4 (MACE, SevenNet): run with the separate benchmark venv's python.

Usage: python _peer_e3nn.py STRUCTURES.extxyz REPEATS THREADS  ->  prints one JSON line per (model, structure).
mace-torch disables torch's safe loading process-wide and pins e3nn 0.4.4, hence its own process and venv.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings

import numpy as np

# This process only loads a model file it just wrote and SevenNet's shipped checkpoint, both pickles.
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
import torch  # noqa: E402
from _timing import time_energy_forces  # noqa: E402
from ase.io import read

warnings.filterwarnings("ignore")


def mace_small(
    atomic_numbers,
    atomic_energies,
    avg_num_neighbors,
    *,
    r_max=6.0,
    num_bessel=10,
    hidden_irreps="128x0e",
    **scale_shift,
):
    """A ScaleShiftMACE with MACE-MP-0's hyperparameters ("small" = hidden 128x0e, L = 0): the one constructor of
    the peer scripts, which differ only in these arguments (``scale_shift``: atomic_inter_scale/_shift, heads)."""
    from e3nn import o3
    from mace.modules import ScaleShiftMACE, interaction_classes
    from mace.modules.blocks import RealAgnosticResidualInteractionBlock

    return ScaleShiftMACE(
        r_max=r_max,
        num_bessel=num_bessel,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=RealAgnosticResidualInteractionBlock,
        interaction_cls_first=interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(atomic_numbers),
        hidden_irreps=o3.Irreps(hidden_irreps),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=atomic_energies,
        avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=atomic_numbers,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        **scale_shift,
    )


def mace_random(hidden_irreps: str):
    """A randomly initialised MACE with MACE-MP-0's hyperparameters (small: 128x0e, medium: 128x0e+128x1o)."""
    from mace.calculators import MACECalculator

    z_table = list(range(1, 90))
    model = mace_small(
        z_table,
        np.zeros(len(z_table)),
        30.0,
        hidden_irreps=hidden_irreps,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    path = tempfile.mktemp(suffix=".model")
    torch.save(model, path)
    return MACECalculator(model_paths=path, device="cpu", default_dtype="float32")


def sevennet():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def main() -> None:
    path, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    frames = read(path, index=":")
    peers = {
        "MACE small (L0, random)": lambda: mace_random("128x0e"),
        "MACE medium (L1, random)": lambda: mace_random("128x0e+128x1o"),
        "SevenNet-0": sevennet,
    }
    for name, make in peers.items():
        try:
            calc = make()
        except Exception as err:  # report, do not crash the whole benchmark
            print(json.dumps({"model": name, "error": f"{type(err).__name__}: {err}"}), flush=True)
            continue
        for atoms in frames:
            label = atoms.info.get("label", atoms.get_chemical_formula())
            try:
                seconds = time_energy_forces(calc, atoms, repeats)
                print(
                    json.dumps({"model": name, "structure": label, "n_atoms": len(atoms), "seconds": seconds}),
                    flush=True,
                )
            except Exception as err:
                print(
                    json.dumps({"model": name, "structure": label, "error": f"{type(err).__name__}: {err}"}), flush=True
                )


if __name__ == "__main__":
    main()
