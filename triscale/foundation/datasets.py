"""Labelled structures as Hugging Face ``datasets`` (Arrow, memory-mapped), for pretraining and users' data.

``load_structure_dataset(source)`` reads any of

* an extxyz file, a directory of ``*.extxyz``/``*.xyz`` shards (searched recursively), or a glob;
* an ASE database (``*.db``; labels in key-value pairs/``data`` or in the stored calculator results);
* a directory written by ``Dataset.save_to_disk``;
* a list of any of these,

and returns one :class:`datasets.Dataset` with the columns

==============  ==============================  =============================================================
column          type                            meaning
==============  ==============================  =============================================================
``numbers``     list[int32]                     atomic numbers
``positions``   list[[float64, 3]]              Å
``cell``        [[float64, 3], 3]               Å, rows are lattice vectors (zeros for a molecule)
``pbc``         [bool, 3]
``REF_energy``  float64                         eV, total
``REF_forces``  list[[float64, 3]]              eV/Å
``REF_stress``  [float64, 6] or None            eV/Å³, Voigt xx yy zz yz xz xy, ASE sign convention
``REF_dipole``  [float64, 3] or None            e·Å
``REF_charges`` list[float64] or None           e (partial charges)
``domain``      str                             ``molecule`` | ``material`` (default: by periodicity)
``group``       str                             unit of splitting (default: ``<file stem>:<frame>``)
``split``       str                             ``train`` | ``val`` | ``test`` (default: seeded hash of group)
...             str/int/float/bool or None      every other scalar ``info``/key-value entry of the frames
==============  ==============================  =============================================================

Labels are read from ``REF_``-prefixed keys (``info``/``arrays`` of extxyz, key-value pairs/``data`` of a
db); where a frame has none, the calculator results stored with it (``energy``, ``forces``, ``stress``,
``dipole``, ``charges``) are used, so plain extxyz files written by other codes load too. A frame that
cannot be used raises a ``ValueError`` that names the file and the frame.

The Arrow file is built once with ``Dataset.from_generator`` into ``cache_dir`` (default: the Hugging Face
cache), keyed by the files' paths, sizes and modification times, and memory-mapped from then on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DOMAINS",
    "SPLITS",
    "atoms_to_record",
    "load_structure_dataset",
    "record_to_atoms",
    "structure_features",
]

DOMAINS = ("molecule", "material")
SPLITS = ("train", "val", "test")
CORE_COLUMNS = (
    "numbers",
    "positions",
    "cell",
    "pbc",
    "REF_energy",
    "REF_forces",
    "REF_stress",
    "REF_dipole",
    "REF_charges",
    "domain",
    "group",
    "split",
)
_STRING_COLUMNS = ("domain", "group", "split")
_LABELS_FROM_CALC = {
    "REF_energy": "energy",
    "REF_forces": "forces",
    "REF_stress": "stress",
    "REF_dipole": "dipole",
    "REF_charges": "charges",
}
# info keys that are not data columns (extxyz bookkeeping, calculator results ASE moves to a calculator)
_RESERVED = {"pbc", "Lattice", "Properties", "cell", "numbers", "positions"}
_LOADER_VERSION = "1"


# ------------------------------------------------------------------------------------------------ records
def _where(where: str) -> str:
    return where or "structure"


def _as_str(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):  # extxyz reads a bare T/F as a bool
        return "T" if value else "F"
    return str(value)


def _float_array(value: Any, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{_where(where)}: {name} is not numeric ({value!r:.60})") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{_where(where)}: {name} has non-finite values")
    return arr


def _label(atoms, key: str, per_atom: bool):
    """A label from REF_ info/arrays, else from the attached calculator's results; None if absent."""
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    if per_atom and key in atoms.info:  # a per-atom label stored in info (e.g. an ASE db data entry)
        return atoms.info[key]
    calc = atoms.calc
    name = _LABELS_FROM_CALC.get(key)
    if calc is not None and name is not None and name in getattr(calc, "results", {}):
        return calc.results[name]
    return None


def _scalar(value: Any) -> Any:
    """A plain Python scalar, or None when ``value`` is not one (arrays, dicts...)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    return None


def atoms_to_record(
    atoms,
    where: str = "",
    *,
    default_group: str | None = None,
    domains: Sequence[str] = DOMAINS,
    require_forces: bool = True,
    split_seed: int = 0,
) -> dict[str, Any]:
    """One dataset row from an ``ase.Atoms`` with REF_ labels (or calculator results); validated.

    ``where`` (e.g. ``"data.extxyz frame 3"``) prefixes every error message.
    """
    from triscale.foundation.datagen import split_of

    n = len(atoms)
    if n == 0:
        raise ValueError(f"{_where(where)}: no atoms")
    positions = _float_array(atoms.positions, "positions", where)
    cell = _float_array(atoms.cell.array, "cell", where)
    energy = _label(atoms, "REF_energy", per_atom=False)
    if energy is None:
        raise ValueError(f"{_where(where)}: missing REF_energy (no REF_energy info and no stored energy)")
    energy_arr = _float_array(energy, "REF_energy", where)
    if energy_arr.size != 1:
        raise ValueError(f"{_where(where)}: REF_energy must be one number, got shape {energy_arr.shape}")
    forces = _label(atoms, "REF_forces", per_atom=True)
    if forces is None:
        if require_forces:
            raise ValueError(f"{_where(where)}: missing REF_forces (no REF_forces array and no stored forces)")
    else:
        forces = _float_array(forces, "REF_forces", where)
        if forces.shape != (n, 3):
            raise ValueError(f"{_where(where)}: REF_forces has shape {forces.shape}, expected ({n}, 3)")
    stress = _label(atoms, "REF_stress", per_atom=False)
    if stress is not None:
        stress = _float_array(stress, "REF_stress", where)
        if stress.shape == (3, 3):
            from ase.stress import full_3x3_to_voigt_6_stress

            stress = full_3x3_to_voigt_6_stress(stress)
        if stress.shape != (6,):
            raise ValueError(f"{_where(where)}: REF_stress has shape {stress.shape}, expected (6,) or (3, 3)")
    dipole = _label(atoms, "REF_dipole", per_atom=False)
    if dipole is not None:
        dipole = _float_array(dipole, "REF_dipole", where)
        if dipole.shape != (3,):
            raise ValueError(f"{_where(where)}: REF_dipole has shape {dipole.shape}, expected (3,)")
    charges = _label(atoms, "REF_charges", per_atom=True)
    if charges is not None:
        charges = _float_array(charges, "REF_charges", where)
        if charges.shape not in ((n,), (n, 1)):
            raise ValueError(f"{_where(where)}: REF_charges has shape {charges.shape}, expected ({n},)")
        charges = charges.reshape(n)

    pbc = np.asarray(atoms.pbc, dtype=bool)
    domain = _as_str(atoms.info["domain"]) if "domain" in atoms.info else ("material" if pbc.any() else "molecule")
    if domain not in domains:
        raise ValueError(f"{_where(where)}: unknown domain {domain!r}; expected one of {list(domains)}")
    if pbc.any() and np.linalg.matrix_rank(cell[pbc]) < int(pbc.sum()):
        raise ValueError(f"{_where(where)}: periodic along {pbc.tolist()} but the cell is degenerate")
    if "group" in atoms.info:
        group = _as_str(atoms.info["group"])
    elif default_group is not None:
        group = default_group
    else:
        raise ValueError(f"{_where(where)}: no group (and no default)")
    if "split" in atoms.info:
        split = _as_str(atoms.info["split"])
        if split not in SPLITS:
            raise ValueError(f"{_where(where)}: unknown split {split!r}; expected one of {list(SPLITS)}")
    else:
        split = split_of(group, split_seed)

    record: dict[str, Any] = {
        "numbers": np.asarray(atoms.numbers, dtype=np.int32),
        "positions": positions,
        "cell": cell,
        "pbc": pbc,
        "REF_energy": float(energy_arr.reshape(())),
        "REF_forces": forces,
        "REF_stress": stress,
        "REF_dipole": dipole,
        "REF_charges": charges,
        "domain": domain,
        "group": group,
        "split": split,
    }
    for key, value in atoms.info.items():
        if key in record or key in _RESERVED or key.startswith("REF_"):
            continue
        scalar = _scalar(value)
        if scalar is not None:
            record[key] = scalar
    return record


def record_to_atoms(record: dict[str, Any]):
    """An ``ase.Atoms`` from a dataset row: labels under REF_ keys in ``info``/``arrays``, no calculator."""
    from ase import Atoms

    atoms = Atoms(
        numbers=np.asarray(record["numbers"], dtype=int),
        positions=np.asarray(record["positions"], dtype=np.float64).reshape(-1, 3),
        cell=np.asarray(record["cell"], dtype=np.float64).reshape(3, 3),
        pbc=np.asarray(record["pbc"], dtype=bool),
    )
    n = len(atoms)
    for key in ("REF_forces", "REF_charges"):
        if record.get(key) is not None:
            value = np.asarray(record[key], dtype=np.float64)
            atoms.arrays[key] = value.reshape(n, 3) if key == "REF_forces" else value.reshape(n)
    for key, value in record.items():
        if key in ("numbers", "positions", "cell", "pbc", "REF_forces", "REF_charges") or value is None:
            continue
        if key in ("REF_stress", "REF_dipole"):
            atoms.info[key] = np.asarray(value, dtype=np.float64)
        else:
            atoms.info[key] = value
    return atoms


# -------------------------------------------------------------------------------------------------- schema
def structure_features(extra: dict[str, str] | None = None):
    """The ``datasets.Features`` of a structure dataset; ``extra`` maps column -> Value dtype."""
    from datasets import Features, List, Value

    vec3 = List(Value("float64"), length=3)
    columns = {
        "numbers": List(Value("int32")),
        "positions": List(vec3),
        "cell": List(vec3, length=3),
        "pbc": List(Value("bool"), length=3),
        "REF_energy": Value("float64"),
        "REF_forces": List(vec3),
        "REF_stress": List(Value("float64"), length=6),
        "REF_dipole": vec3,
        "REF_charges": List(Value("float64")),
        "domain": Value("string"),
        "group": Value("string"),
        "split": Value("string"),
    }
    for key, dtype in sorted((extra or {}).items()):
        columns[key] = Value(dtype)
    return Features(columns)


def _dtype_of(values: set[type]) -> str:
    if values <= {bool}:
        return "bool"
    if values <= {int}:
        return "int64"
    if values <= {int, float}:
        return "float64"
    return "string"


def _coerce(value: Any, dtype: str) -> Any:
    if value is None:
        return None
    if dtype == "string":
        return _as_str(value)
    if dtype == "float64":
        return float(value)
    return value


# ------------------------------------------------------------------------------------------------- sources
def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists())


def _expand(source: str | os.PathLike) -> list[Path]:
    """Structure files of one source (a file, a directory searched recursively, or a glob), sorted."""
    text = str(source)
    path = Path(text)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".extxyz", ".xyz", ".db"))
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{text}: no such file or directory")
    if not files:
        raise ValueError(f"{text}: no .extxyz/.xyz/.db files found")
    for f in files:
        if f.suffix not in (".extxyz", ".xyz", ".db"):
            raise ValueError(f"{f}: unsupported file type {f.suffix!r} (expected .extxyz, .xyz or .db)")
    return files


def _iter_extxyz(path: Path) -> Iterator[tuple[str, Any]]:
    from ase.io import iread

    if path.stat().st_size == 0:  # an empty shard (every frame of it skipped)
        return
    index = 0
    try:
        for atoms in iread(str(path), index=":", format="extxyz"):
            yield f"{path} frame {index}", atoms
            index += 1
    except Exception as exc:  # ase raises XYZError, ValueError, IndexError, KeyError... on broken files
        raise ValueError(f"{path} frame {index}: cannot parse extxyz ({type(exc).__name__}: {exc})") from None


def _iter_db(path: Path) -> Iterator[tuple[str, Any]]:
    from ase.db import connect

    with connect(str(path)) as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            n = len(atoms)
            for key, value in (row.data or {}).items():
                if not key.startswith("REF_"):
                    continue
                arr = np.asarray(value)
                per_atom = key not in ("REF_energy", "REF_stress", "REF_dipole") and arr.shape[:1] == (n,)
                # a per-atom label of the wrong length stays in info; atoms_to_record reports its shape
                (atoms.arrays if per_atom else atoms.info)[key] = arr
            yield f"{path} row id {row.id}", atoms


def _iter_file(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix == ".db":
        yield from _iter_db(path)
    else:
        yield from _iter_extxyz(path)


def _scan_info_types(path: Path) -> dict[str, set[type]]:
    """Types of the scalar info keys of every frame, from the extxyz comment lines only (fast)."""
    from ase.calculators.calculator import all_properties

    types: dict[str, set[type]] = {}

    def add(info: dict) -> None:
        for key, value in info.items():
            if key in _RESERVED or key in CORE_COLUMNS or key.startswith("REF_") or key in all_properties:
                continue
            scalar = _scalar(value)
            if scalar is not None:
                types.setdefault(key, set()).add(type(scalar))

    if path.suffix == ".db":
        from ase.db import connect

        with connect(str(path)) as db:
            for row in db.select():
                add(row.key_value_pairs)
        return types
    from ase.io.extxyz import key_val_str_to_dict

    with open(path) as fh:
        frame = 0
        while True:
            line = fh.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                natoms = int(line.split()[0])
            except ValueError:
                raise ValueError(f"{path} frame {frame}: expected an atom count, got {line.strip()[:40]!r}") from None
            comment = fh.readline()
            try:
                add(key_val_str_to_dict(comment))
            except Exception as exc:
                raise ValueError(f"{path} frame {frame}: cannot parse the comment line ({exc})") from None
            for _ in range(natoms):
                fh.readline()
            frame += 1
    return types


def _generate(
    files: list[str],
    extra: dict[str, str],
    domains: tuple[str, ...],
    require_forces: bool,
    split_seed: int,
    stamp: str,
) -> Iterator[dict[str, Any]]:
    del stamp  # part of gen_kwargs only so that the cache key changes with the files
    for name in files:
        path = Path(name)
        for index, (where, atoms) in enumerate(_iter_file(path)):
            record = atoms_to_record(
                atoms,
                where,
                default_group=f"{path.stem}:{index}",
                domains=domains,
                require_forces=require_forces,
                split_seed=split_seed,
            )
            row = {key: record.get(key) for key in CORE_COLUMNS}
            for key, dtype in extra.items():
                row[key] = _coerce(record.get(key), dtype)
            yield row


def load_structure_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
    *,
    domains: Iterable[str] = DOMAINS,
    require_forces: bool = True,
    split_seed: int = 0,
):
    """A memory-mapped ``datasets.Dataset`` of labelled structures (see the module docstring for columns).

    ``source``: an extxyz/xyz file, a directory of them (recursive), a glob, an ASE ``.db``, a directory saved
    with ``Dataset.save_to_disk``, or a list of these. ``split_seed`` seeds the split of frames that carry
    none. Raises ``ValueError`` naming the file and frame of the first unusable structure.
    """
    import datasets

    domains = list(domains)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("no data source given")
    parts = []
    files: list[Path] = []
    for src in sources:
        if _is_saved_dataset(Path(src)):
            parts.append(_load_saved(Path(src), domains))
        else:
            files.extend(_expand(src))
    if files:
        types: dict[str, set[type]] = {}
        for f in files:
            for key, seen in _scan_info_types(f).items():
                types.setdefault(key, set()).update(seen)
        extra = {key: _dtype_of(seen) for key, seen in types.items()}
        names = [str(f.resolve()) for f in files]
        stamp = json.dumps([[n, os.stat(n).st_size, os.stat(n).st_mtime_ns] for n in names])
        key = json.dumps([_LOADER_VERSION, stamp, extra, domains, require_forces, split_seed], sort_keys=True)
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
        try:
            with _quiet_datasets():
                dataset = datasets.Dataset.from_generator(
                    _generate,
                    features=structure_features(extra),
                    gen_kwargs={
                        "files": names,  # the only list: datasets would shard over it with num_proc
                        "extra": extra,
                        "domains": tuple(domains),
                        "require_forces": require_forces,
                        "split_seed": split_seed,
                        "stamp": stamp,
                    },
                    cache_dir=str(cache_dir) if cache_dir is not None else None,
                    fingerprint=fingerprint,
                )
        except datasets.exceptions.DatasetGenerationError as exc:
            if isinstance(exc.__cause__, ValueError):  # our validation message, naming file and frame
                raise ValueError(str(exc.__cause__)) from None
            raise
        parts.append(dataset)
    if len(parts) == 1:
        return parts[0]
    return _concatenate(parts)


def _load_saved(path: Path, domains: list[str]):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"{path}: a DatasetDict; save one Dataset (with a split column) instead")
    missing = [c for c in ("numbers", "positions", "cell", "pbc", "REF_energy", "domain") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: saved dataset lacks the columns {missing}")
    unknown = sorted(set(ds.unique("domain")) - set(domains))
    if unknown:
        raise ValueError(f"{path}: unknown domain(s) {unknown}; expected one of {domains}")
    return ds


def _concatenate(parts: list):
    """Concatenate datasets whose extra columns differ (missing columns filled with None)."""
    import datasets

    columns: dict[str, Any] = {}
    for part in parts:
        for name, feature in part.features.items():
            columns.setdefault(name, feature)
    aligned = []
    for part in parts:
        for name, feature in columns.items():
            if name not in part.column_names:
                part = part.add_column(name, [None] * len(part), feature=feature)
        aligned.append(part.select_columns(list(columns)).cast(datasets.Features(columns)))
    return datasets.concatenate_datasets(aligned)


class _quiet_datasets:
    """Hide the 'Generating train split' progress bar of datasets (restored afterwards)."""

    def __enter__(self):
        from datasets.utils import logging as ds_logging

        self._was_enabled = ds_logging.is_progress_bar_enabled()
        ds_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        from datasets.utils import logging as ds_logging

        if self._was_enabled:
            ds_logging.enable_progress_bar()
        return False
