"""``triscale predict``: energies, forces and stress of structure files with the foundation model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def run_predict(
    files: list[Path],
    model: str = "triscale-base",
    domain: str | None = None,
    adapters: list[str] | None = None,
    dtype: str = "float32",
    as_json: bool = False,
    properties: Sequence = (),
) -> list[dict]:
    """``properties``: property-head committees (``triscale.finetune.load_property_model``) whose prediction and
    spread join each row the committee supports (``unsupported(atoms)`` is None)."""
    from ase.io import read

    from triscale.sanity import StructureCheckError, check_structure

    # read and check every frame before the model loads: a bad structure is refused in milliseconds, with exit
    # code 1 and one clear line on stderr, instead of a NaN (coincident atoms), a meaningless number (atoms 0.1 Å
    # apart) or a crash inside the neighbour search (atoms 1e12 Å apart, a 0.01 Å cell)
    inputs = []
    for path in files:
        if not Path(path).is_file():
            raise SystemExit(f"error: no such file: {path}")
        try:
            frames = read(str(path), index=":")
        except Exception as err:  # ASE raises many types for malformed files
            raise SystemExit(f"error: cannot read {path}: {err}") from None
        if not frames:
            raise SystemExit(f"error: {path}: no structure found in the file")
        for index, atoms in enumerate(frames):
            try:
                check_structure(atoms)
            except StructureCheckError as err:
                hint = f" Hint: {err.hint}" if err.hint else ""
                raise SystemExit(f"error: {path} frame {index}: {err.message}{hint}") from None
        inputs.append((path, frames))

    from rich.console import Console
    from rich.table import Table
    from transformers.utils import logging as hf_logging

    from triscale.finetune.calculator import calculator_with_adapters

    hf_logging.disable_progress_bar()  # a command-line run: no "Loading weights" bars around the table
    calc = calculator_with_adapters(model, domain=domain, adapters=adapters, dtype=dtype)
    rows = []
    for path, frames in inputs:
        results = calc.predict(frames)
        for index, (atoms, res) in enumerate(zip(frames, results)):
            if not np.isfinite(res["energy"]) or not np.all(np.isfinite(res["forces"])):
                raise SystemExit(f"error: {path} frame {index}: the model returned a non-finite energy or forces")
            forces = np.asarray(res["forces"])
            row = {
                "file": str(path),
                "frame": index,
                "formula": atoms.get_chemical_formula(),
                "n_atoms": len(atoms),
                "domain": calc.domain_of(atoms),
                "energy_eV": res["energy"],
                "energy_per_atom_eV": res["energy"] / len(atoms),
                "max_force_eV_per_A": float(np.linalg.norm(forces, axis=1).max()),
            }
            if "stress" in res:
                row["stress_eV_per_A3"] = [float(x) for x in res["stress"]]
            if "dipole" in res:
                row["dipole_eA"] = [float(x) for x in res["dipole"]]
            if "energy_std" in res:
                row["energy_std_eV"] = res["energy_std"]
            for prop in properties:
                if not prop.unsupported(atoms):
                    mean, std = prop.predict([atoms], return_std=True)
                    unit = f"_{prop.unit}" if prop.unit else ""
                    row[f"{prop.name}{unit}"] = float(mean[0])
                    row[f"{prop.name}_std{unit}"] = float(std[0])
            rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=1))
        return rows
    table = Table(title=f"TriScale predictions ({model}, {dtype})")
    for col in ("file", "frame", "formula", "domain", "energy (eV)", "E/atom (eV)", "max |F| (eV/Å)", "extra"):
        table.add_column(col)
    for r in rows:
        extra = []
        if "energy_std_eV" in r:
            extra.append(f"σE={r['energy_std_eV']:.3f} eV")
        if "dipole_eA" in r:
            extra.append(f"|μ|={np.linalg.norm(r['dipole_eA']):.3f} e·Å")
        for prop in properties:
            unit = f"_{prop.unit}" if prop.unit else ""
            if f"{prop.name}{unit}" in r:
                value, std = r[f"{prop.name}{unit}"], r[f"{prop.name}_std{unit}"]
                extra.append(f"{prop.name}={value:.2f}±{std:.2f} {prop.unit}".rstrip())
        if "stress_eV_per_A3" in r:
            extra.append(f"p={-np.mean(r['stress_eV_per_A3'][:3]) * 160.21766:.2f} GPa")
        table.add_row(
            Path(r["file"]).name,
            str(r["frame"]),
            r["formula"],
            r["domain"],
            f"{r['energy_eV']:.4f}",
            f"{r['energy_per_atom_eV']:.4f}",
            f"{r['max_force_eV_per_A']:.4f}",
            ", ".join(extra),
        )
    Console().print(table)
    return rows
