"""The user's data: reading, validation with clear errors, unit conversion, splits, E0 refit and replay sets.

Records are dicts with the columns of :mod:`triscale.foundation.datasets` (``numbers``, ``positions``, ``cell``,
``pbc``, ``REF_energy``, ``REF_forces``, ``REF_stress``, ``split``...); a property run adds ``REF_property``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from triscale.common import file_sha256 as common_sha256
from triscale.foundation import keys as K

PROPERTY = "REF_property"  # (B,) float64, the user's scalar, in the recipe's unit
MAX_LISTED = 8  # problems listed in one DatasetError


class DatasetError(ValueError):
    """The user's data cannot be used for fine-tuning; the message lists every problem found (first few)."""


# ---------------------------------------------------------------------------------------------------------------
# reading
def read_records(source: str | Path, property_key: str | None = None) -> list[dict]:
    """Rows of the user's data as plain dicts (lists and floats), nothing converted or checked yet.

    ``source``: an extxyz (or any ASE-readable trajectory) / ASE db / saved HF dataset for energies and forces;
    for a property, additionally a CSV with a structure-file column (``file``/``structure``/``path``) and a value
    column named ``property_key`` (or ``value``).
    """
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{source}: no such file or directory")
    if property_key is not None:
        if path.suffix.lower() == ".csv":
            return _read_property_csv(path, property_key)
        return _read_with_ase(path, property_key)
    from triscale.foundation.datasets import load_structure_dataset

    try:
        # forces are checked here, all frames at once, so the user sees every problem in one message
        dataset = load_structure_dataset(str(path), require_forces=False)
    except ValueError as err:  # the loader names the file and frame of the first unusable structure
        raise DatasetError(f"{source}: {err}") from err
    except (KeyError, OSError) as err:
        raise DatasetError(f"{source}: could not be read as a structure dataset: {err}") from err
    return [dict(row) for row in dataset]


def _label(atoms, names: Sequence[str], per_atom: bool):
    """First of ``names`` found in the frame's arrays/info, else in its attached (single point) calculator."""
    store = atoms.arrays if per_atom else atoms.info
    for name in names:
        if name in store:
            return np.asarray(store[name], dtype=np.float64)
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", {}) if calc is not None else {}
    for name in names:
        key = name.replace("REF_", "")
        if key in results:
            return np.asarray(results[key], dtype=np.float64)
    return None


def _read_with_ase(path: Path, property_key: str | None) -> list[dict]:
    from ase.io import read

    try:
        frames = read(str(path), index=":")
    except Exception as err:  # ASE raises many types for unreadable files
        raise DatasetError(f"{path}: ASE could not read it ({type(err).__name__}: {err})") from err
    return records_from_atoms(frames, property_key)


def records_from_atoms(frames: Sequence, property_key: str | None = None) -> list[dict]:
    """Records (unchecked) from ASE ``Atoms`` with REF_ labels or calculator results; ``property_key`` from info."""
    records = []
    for atoms in frames:
        energy = _label(atoms, ["REF_energy", "energy"], per_atom=False)
        forces = _label(atoms, ["REF_forces", "forces"], per_atom=True)
        stress = _label(atoms, ["REF_stress", "stress"], per_atom=False)
        row = {
            "numbers": atoms.numbers.tolist(),
            "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(),
            "pbc": [bool(p) for p in atoms.pbc],
            K.REF_ENERGY: float(energy) if energy is not None else None,
            K.REF_FORCES: forces.tolist() if forces is not None else None,
            K.REF_STRESS: stress.tolist() if stress is not None else None,
            "split": atoms.info.get("split"),
        }
        if property_key is not None:
            value = atoms.info.get(property_key)
            row[PROPERTY] = float(value) if value is not None else None
        records.append(row)
    return records


def _read_property_csv(path: Path, key: str) -> list[dict]:
    """CSV rows ``file,<key>`` (file relative to the CSV); each file's first frame is the structure."""
    from ase.io import read

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{path}: the CSV has no rows")
    columns = rows[0].keys()
    file_col = next((c for c in ("file", "structure", "path") if c in columns), None)
    value_col = key if key in columns else ("value" if "value" in columns else None)
    if file_col is None or value_col is None:
        raise DatasetError(f"{path}: needs a 'file' column and a {key!r} (or 'value') column; has {list(columns)}")
    records, problems = [], []
    for i, row in enumerate(rows):
        file = (path.parent / row[file_col]).resolve()
        try:
            atoms = read(str(file), index=0)
        except Exception as err:
            problems.append(f"row {i}: cannot read {row[file_col]!r} ({type(err).__name__})")
            continue
        try:
            value = float(row[value_col])
        except (TypeError, ValueError):
            value = None
        records.append(
            {
                "numbers": atoms.numbers.tolist(),
                "positions": atoms.positions.tolist(),
                "cell": atoms.cell.array.tolist(),
                "pbc": [bool(p) for p in atoms.pbc],
                K.REF_ENERGY: None,
                K.REF_FORCES: None,
                K.REF_STRESS: None,
                PROPERTY: value,
                "split": row.get("split"),
            }
        )
    if problems:
        raise DatasetError(_format_problems(path, problems))
    return records


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a data file, or None when ``path`` is not a file (an HF dataset directory)."""
    path = Path(path)
    return common_sha256(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------
# validation and units
def _format_problems(source, problems: list[str]) -> str:
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{source}: {len(problems)} problem(s) with the data:\n  " + "\n  ".join(shown) + more


def validate_records(
    records: Sequence[dict],
    supported_elements: Sequence[int],
    source: str = "data",
    need_energy: bool = True,
    need_forces: bool = True,
    property_key: str | None = None,
    min_structures: int = 10,
) -> None:
    """Raise :class:`DatasetError` listing every problem (structure index and what is wrong) before training."""
    from ase.data import chemical_symbols

    problems: list[str] = []
    if len(records) < min_structures:
        problems.append(
            f"too few structures: {len(records)} (at least {min_structures} are needed to train and validate)"
        )
    supported = set(int(z) for z in supported_elements)
    unknown: Counter = Counter()
    for i, row in enumerate(records):
        numbers = np.asarray(row.get("numbers") if row.get("numbers") is not None else [], dtype=np.int64).ravel()
        n = len(numbers)
        if n == 0:
            problems.append(f"structure {i}: has no atoms")
            continue
        try:
            positions = np.asarray(row.get("positions"), dtype=np.float64)
        except (TypeError, ValueError):
            positions = np.zeros(0)
        if positions.shape != (n, 3):
            problems.append(f"structure {i}: positions have shape {positions.shape}, expected ({n}, 3) for {n} atoms")
        elif not np.isfinite(positions).all():
            problems.append(f"structure {i}: non-finite (NaN or inf) positions")
        bad = sorted(set(numbers.tolist()) - supported)
        for z in bad:
            unknown[int(z)] += 1
        if bad:
            names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in bad)
            problems.append(f"structure {i}: element(s) {names} unknown to the base model")
        pbc = np.asarray(row.get("pbc", [False] * 3), dtype=bool)
        if pbc.any():
            cell = np.asarray(row.get("cell"), dtype=np.float64)
            if cell.shape != (3, 3) or not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-6:
                problems.append(f"structure {i}: periodic but the cell is missing, non-finite or degenerate")
        if need_energy:
            energy = row.get(K.REF_ENERGY)
            if energy is None:
                problems.append(f"structure {i}: missing energy (REF_energy / energy)")
            elif not np.isfinite(float(energy)):
                problems.append(f"structure {i}: non-finite energy {energy}")
        try:
            f = None if row.get(K.REF_FORCES) is None else np.asarray(row[K.REF_FORCES], dtype=np.float64)
        except (TypeError, ValueError):
            problems.append(f"structure {i}: forces are not an (N, 3) array of numbers")
            f = np.zeros((n, 3))
        if f is None or (f.size > 0 and np.isnan(f).all()):
            if need_forces:
                problems.append(f"structure {i}: missing forces (REF_forces / forces)")
        elif f.size != 3 * n:
            rows = f.size // 3 if f.size % 3 == 0 else f"{f.size} values,"
            problems.append(f"structure {i}: forces have {rows} rows, expected {n} (one per atom)")
        elif not np.isfinite(f).all():
            problems.append(f"structure {i}: non-finite (NaN or inf) forces")
        stress = row.get(K.REF_STRESS)
        if stress is not None:
            s = np.asarray(stress, dtype=np.float64)
            if s.size not in (6, 9):
                problems.append(f"structure {i}: stress has {s.size} entries, expected 6 (Voigt) or 9")
            elif not pbc.all() and np.isfinite(s).any():
                problems.append(f"structure {i}: stress given for a structure that is not periodic in 3D")
        if property_key is not None:
            value = row.get(PROPERTY)
            if value is None:
                problems.append(f"structure {i}: missing property value {property_key!r}")
            elif not np.isfinite(float(value)):
                problems.append(f"structure {i}: non-finite {property_key!r} value {value}")
    if unknown:
        names = ", ".join(
            f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else z} ({c} structures)"
            for z, c in sorted(unknown.items())
        )
        covered = " ".join(chemical_symbols[z] for z in sorted(supported) if z < len(chemical_symbols))
        problems.insert(0, f"elements unknown to the base model: {names}; it covers {covered}")
    if problems:
        raise DatasetError(_format_problems(source, problems))


def unit_factors(energy_unit: str, length_unit: str) -> tuple[float, float]:
    """Factors that turn the user's energies into eV and lengths into Å."""
    from ase import units

    energy = {
        "eV": 1.0,
        "meV": 1e-3,
        "kcal/mol": units.kcal / units.mol,
        "kJ/mol": units.kJ / units.mol,
        "Hartree": units.Hartree,
        "Ry": units.Rydberg,
    }[energy_unit]
    length = {"Angstrom": 1.0, "Bohr": units.Bohr, "nm": 10.0}[length_unit]
    return energy, length


def convert_units(records: list[dict], energy_unit: str, length_unit: str) -> list[dict]:
    """Records in eV, Å, eV/Å, eV/Å³ (stress as 6 Voigt entries); NaN for absent forces/stress."""
    e, length = unit_factors(energy_unit, length_unit)
    out = []
    for row in records:
        n = len(row["numbers"])
        new = dict(row)
        new["positions"] = (np.asarray(row["positions"], dtype=np.float64) * length).tolist()
        new["cell"] = (np.asarray(row["cell"], dtype=np.float64).reshape(3, 3) * length).tolist()
        if row.get(K.REF_ENERGY) is not None:
            new[K.REF_ENERGY] = float(row[K.REF_ENERGY]) * e
        else:
            new[K.REF_ENERGY] = float("nan")
        forces = row.get(K.REF_FORCES)
        new[K.REF_FORCES] = (
            (np.asarray(forces, dtype=np.float64).reshape(n, 3) * e / length).tolist() if forces is not None else None
        )
        stress = row.get(K.REF_STRESS)
        if stress is not None:
            s = np.asarray(stress, dtype=np.float64).ravel()
            if s.size == 9:
                m = s.reshape(3, 3)
                s = np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])
            new[K.REF_STRESS] = (s * e / length**3).tolist()
        out.append(new)
    return out


def summarize(records: Sequence[dict], source: str) -> dict:
    """Data summary for the adapter metadata: counts, elements, compositions, label ranges, file hash."""
    from ase.data import chemical_symbols

    comps = Counter()
    for row in records:
        counts = Counter(int(z) for z in row["numbers"])
        comps["".join(f"{chemical_symbols[z]}{c if c > 1 else ''}" for z, c in sorted(counts.items()))] += 1
    energies = np.array([row[K.REF_ENERGY] for row in records], dtype=np.float64)
    forces = [np.asarray(row[K.REF_FORCES]) for row in records if row.get(K.REF_FORCES) is not None]
    summary = {
        "source": str(source),
        "sha256": file_sha256(source),
        "n_structures": len(records),
        "n_atoms": int(sum(len(r["numbers"]) for r in records)),
        "elements": sorted({chemical_symbols[int(z)] for r in records for z in r["numbers"]}),
        "compositions": dict(comps.most_common(20)),
        "n_compositions": len(comps),
        "periodic": int(sum(bool(np.any(r["pbc"])) for r in records)),
    }
    if np.isfinite(energies).any():
        summary["energy_range_eV"] = [float(np.nanmin(energies)), float(np.nanmax(energies))]
    if forces:
        f = np.concatenate([x.ravel() for x in forces])
        summary["force_rms_eV_per_A"] = float(np.sqrt(np.mean(f**2)))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# splits
def split_indices(
    records: Sequence[dict], val_fraction: float, seed: int, use_data_split: bool = False
) -> dict[str, list[int]]:
    """Train/val/test indices. ``use_data_split``: the data's own ``split`` column (the dataset loader fills it
    with a seeded hash of each frame's group where the file gives none); a random ``val_fraction`` of the non-test
    rows is used when that leaves no validation structure. Otherwise a seeded random ``val_fraction`` of all
    structures (at least one) and no test set."""
    labels = [str(r.get("split") or "train") if use_data_split else "train" for r in records]
    test = [i for i, s in enumerate(labels) if s == "test"]
    if any(s == "val" for s in labels):
        return {
            "train": [i for i, s in enumerate(labels) if s not in ("val", "test")],
            "val": [i for i, s in enumerate(labels) if s == "val"],
            "test": test,
        }
    rest = [i for i, s in enumerate(labels) if s != "test"]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(rest))
    n_val = max(1, int(round(val_fraction * len(rest)))) if val_fraction > 0 else 0
    val = sorted(rest[j] for j in perm[:n_val])
    train = sorted(rest[j] for j in perm[n_val:])
    return {"train": train, "val": val, "test": test}


def bootstrap(indices: Sequence[int], seed: int) -> list[int]:
    """A bootstrap sample (with replacement, same size) of ``indices``."""
    rng = np.random.default_rng(seed)
    return [int(indices[j]) for j in rng.integers(0, len(indices), size=len(indices))]


# ---------------------------------------------------------------------------------------------------------------
# reference energies for the user's level of theory
def refit_reference_energies(model, graphs: Sequence[dict], domain_index: int, batch_size: int = 32) -> tuple:
    """New E0 row for ``domain_index``: base E0 plus the least-squares per-element change that best explains
    (user energy - base prediction).

    Only combinations of E0 that the data's compositions determine are changed (minimum-norm solution); the other
    directions, and elements absent from the data, keep the base model's values. With a single composition only
    the total offset is determined: it is split evenly over the atoms (the same per-atom shift for every element
    present), exact for that composition and a guess for any other. Returns ``(e0 row (Zmax+1,), info dict)``.
    """
    from ase.data import chemical_symbols

    from triscale.foundation.graph import graph_to
    from triscale.foundation.training import batches, composition_matrix

    labelled = [g for g in graphs if torch.isfinite(g[K.REF_ENERGY]).all()]
    if not labelled:
        raise DatasetError("no structure has an energy: E0 cannot be re-fitted (use e0: keep)")
    dtype = next(model.parameters()).dtype
    predicted = []
    for batch in batches(labelled, batch_size, None, shuffle=False):
        out = model(graph_to(batch, dtype), compute_forces=False, compute_stress=False, create_graph=False)
        predicted.append(out[K.ENERGY].detach().to(torch.float64))
    predicted = torch.cat(predicted).numpy()
    reference = np.array([float(g[K.REF_ENERGY][0]) for g in labelled])
    residual = reference - predicted
    max_z = model.config.max_atomic_number
    counts = composition_matrix(labelled, max_z)
    present = np.flatnonzero(counts.sum(0) > 0)
    a = counts[:, present]
    n_atoms = counts.sum(1)
    distinct = np.unique(a, axis=0)
    rank = int(np.linalg.matrix_rank(a))
    if len(distinct) == 1:
        mode = "single_composition"
        delta = np.full(len(present), residual.mean() / n_atoms[0])
        note = (
            "one composition: only the total energy offset is determined; it is applied as the same "
            "per-atom shift to every element present (exact for this composition, a guess for others)"
        )
    else:
        mode = "least_squares"
        delta, *_ = np.linalg.lstsq(a, residual, rcond=None)
        note = f"{len(distinct)} compositions, rank {rank} of {len(present)} elements" + (
            "" if rank == len(present) else ": undetermined combinations keep the base values (minimum norm)"
        )
    e0 = model.atomic_energies[domain_index].detach().cpu().numpy().astype(np.float64).copy()
    e0[present] += delta
    after = residual - a @ delta
    info = {
        "mode": mode,
        "note": note,
        "rank": rank,
        "n_compositions": int(len(distinct)),
        "delta_e0_eV": {chemical_symbols[int(z)]: float(d) for z, d in zip(present, delta, strict=False)},
        "e0_eV": {chemical_symbols[int(z)]: float(e0[z]) for z in present},
        "mae_before_eV_per_atom": float(np.mean(np.abs(residual / n_atoms))),
        "mae_after_eV_per_atom": float(np.mean(np.abs(after / n_atoms))),
    }
    return e0, info


# ---------------------------------------------------------------------------------------------------------------
# replay
def _builtin_replay_structures(supported: set[int], rng: np.random.Generator) -> list:
    """Rattled g2 molecules (closed shell) and small rattled bulk cells made of supported elements."""
    from ase.build import bulk
    from ase.collections import g2

    structures = []
    for name in g2.names:
        atoms = g2[name]
        if len(atoms) < 2 or abs(atoms.get_initial_magnetic_moments().sum()) > 1e-6:
            continue
        if not set(atoms.numbers.tolist()) <= supported:
            continue
        for _ in range(2):
            a = atoms.copy()
            a.set_initial_magnetic_moments(None)
            a.positions += rng.normal(scale=0.05, size=a.positions.shape)
            structures.append(a)
    crystals = [
        ("Cu", "fcc", 3.61),
        ("Al", "fcc", 4.05),
        ("Ni", "fcc", 3.52),
        ("Si", "diamond", 5.43),
        ("C", "diamond", 3.57),
        ("Fe", "bcc", 2.87),
        ("NaCl", "rocksalt", 5.64),
        ("MgO", "rocksalt", 4.21),
    ]
    from ase.symbols import string2symbols

    for formula, kind, a0 in crystals:
        from ase.data import atomic_numbers

        if not {atomic_numbers[s] for s in string2symbols(formula)} <= supported:
            continue
        for scale in (0.98, 1.02):
            cell = bulk(formula, kind, a=a0 * scale, cubic=True)
            cell.positions += rng.normal(scale=0.05, size=cell.positions.shape)
            structures.append(cell)
    return structures


def _replay_candidates(source: str | None, supported: set[int], n: int, seed: int) -> list:
    """Candidate structures (ASE Atoms) for replay, from a source, a datagen output under data/, or built in."""
    import glob

    from ase import Atoms

    rng = np.random.default_rng(seed)
    if source == "builtin":
        sources: list[str] = []
    elif source:
        sources = [source]
    else:  # the largest datagen output under data/ (by number of shards), if any
        found = [Path(p).parent for p in glob.glob("data/pretrain*/manifest.json")]
        found.sort(key=lambda p: len(list(p.rglob("*.extxyz"))), reverse=True)
        sources = [str(p) for p in found[:1]]
    atoms_list: list = []
    for src in sources:
        try:
            records = read_records(src)
        except DatasetError:
            if source:
                raise
            continue
        picked = rng.permutation(len(records))[: 4 * n]
        for j in picked:
            r = records[int(j)]
            if set(int(z) for z in r["numbers"]) <= supported:
                atoms_list.append(Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"]))
    if len(atoms_list) < 8 and not (source and source != "builtin"):
        atoms_list += _builtin_replay_structures(supported, rng)
    order = rng.permutation(len(atoms_list))[:n]
    return [atoms_list[int(i)] for i in order]


def farthest_point_sampling(features: np.ndarray, k: int, start: int = 0) -> list[int]:
    """Indices of ``k`` rows of ``features`` chosen greedily to maximise the minimum Euclidean distance."""
    n = len(features)
    k = min(k, n)
    chosen = [start]
    dist = np.linalg.norm(features - features[start], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
    return chosen


@torch.no_grad()
def _descriptor(model, graph: dict) -> np.ndarray:
    """Invariant structure descriptor: mean of the encoder's scalar features over atoms (base model)."""
    dtype = next(model.parameters()).dtype
    g = {k: (v.to(dtype) if v.is_floating_point() and not k.startswith("REF_") else v) for k, v in graph.items()}
    s, _ = model.encode(g, g[K.POSITIONS], g[K.CELL])
    return s.mean(0).to(torch.float64).numpy()


def build_replay(model, options, domain_names: Sequence[str], seed: int) -> tuple[list[dict], dict]:
    """Labelled replay graphs: ``options.n_structures`` farthest-point-sampled structures with the model's own
    energies, forces (and stress for 3D-periodic cells) as labels. ``model`` should already carry the refitted E0
    so that replay labels and user labels agree on the reference energies."""
    from triscale.foundation.graph import atoms_to_graph, graph_to

    cfg = model.config
    supported = set(cfg.supported_elements)
    candidates = _replay_candidates(options.source, supported, options.candidates, seed)
    graphs = []
    for atoms in candidates:
        domain = "material" if np.any(atoms.pbc) and "material" in domain_names else domain_names[0]
        if "molecule" in domain_names and not np.any(atoms.pbc):
            domain = "molecule"
        graphs.append(atoms_to_graph(atoms, cfg.cutoff, list(domain_names).index(domain)))
    if not graphs:
        return [], {"n_structures": 0}
    # farthest point sampling within each domain, slots shared in proportion to the candidates (at least one each)
    domains = np.array([int(g[K.DOMAIN][0]) for g in graphs])
    present = sorted(set(domains.tolist()))
    n_total = min(options.n_structures, len(graphs))
    slots = {d: max(1, round(n_total * float(np.mean(domains == d)))) for d in present}
    chosen: list[int] = []
    for d in present:
        members = np.flatnonzero(domains == d)
        features = np.stack([_descriptor(model, graphs[i]) for i in members])
        features = (features - features.mean(0)) / (features.std(0) + 1e-12)
        chosen.extend(int(members[j]) for j in farthest_point_sampling(features, slots[d]))
    dtype = next(model.parameters()).dtype
    labelled = []
    for i in chosen:
        g = graphs[i]
        periodic = bool(g[K.PBC].all())
        out = model(graph_to(g, dtype), compute_forces=True, compute_stress=periodic, create_graph=False)
        g = dict(g)
        g[K.REF_ENERGY] = out[K.ENERGY].detach().to(torch.float64)
        g[K.REF_FORCES] = out[K.FORCES].detach().to(torch.float64)
        if periodic:
            s = out[K.STRESS].detach().to(torch.float64)[0]
            g[K.REF_STRESS] = torch.stack([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]).unsqueeze(0)
        else:
            g[K.REF_STRESS] = torch.full((1, 6), float("nan"), dtype=torch.float64)
        g[K.REF_DIPOLE] = torch.full((1, 3), float("nan"), dtype=torch.float64)
        labelled.append(g)
    info = {
        "n_structures": len(labelled),
        "source": options.source or "data/pretrain* or built-in",
        "n_candidates": len(graphs),
    }
    return labelled, info
