"""GFN2-xTB quantum observables of molecules (HOMO-LUMO gap, HOMO, LUMO, dipole) as a property data set.

The shipped property heads of the foundation model (``triscale/finetune/checkpoints/gfn2-gap``) are trained on it
with the ordinary fine-tuning machinery (``configs/finetune/gfn2-gap.yaml``). Molecules and their train/val/test
split are exactly those of the pretraining recipe (``configs/datagen/base.yaml``), so a test molecule was seen
neither by the encoder nor by the head. NCI molecules that the pretraining sample left out can be added to the
training split (``extra_train``): more chemistry for the head, none of it in the test set.

Frames are ETKDG conformers (the same generator and seeds as pretraining) labelled by one GFN2-xTB calculation each
through :func:`triscale.quantum.electronic.electronic_structure` (the code the ``electronic_structure`` tool runs).
Stored per frame in the extxyz ``info``: ``gap``, ``homo``, ``lumo`` (eV), ``dipole_debye``, ``split``, ``group``
(canonical SMILES without stereo), ``method``.

Work is cut into shards of ``molecules_per_shard``; a finished shard's ``.extxyz`` is never recomputed, so a
killed run resumes where it stopped. ``observables.extxyz`` concatenates the shards in plan order.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from triscale.common import atomic_write_text

__all__ = ["generate_observables", "observable_entries"]

DEBYE_PER_E_A = 4.803204  # 1 e·Å in Debye


def observable_entries(datagen_config: str | Path, extra_train: int = 0) -> list[dict]:
    """Molecule entries (``group``, ``split``, ``smiles``/``name``, ``source``) of the pretraining recipe, plus up to
    ``extra_train`` filtered NCI molecules it did not sample, all in the training split."""
    from triscale.foundation import datagen as G

    config = G.load_config(datagen_config)
    entries = [e for shard in G.make_plan(config) if shard["domain"] == "molecule" for e in shard["entries"]]
    if extra_train:
        used = {e["group"] for e in entries}
        pool = [e for e in G.nci_molecules(config.molecule) if e["group"] not in used]
        rng = np.random.default_rng(G.derive_seed(config.seed, "observables-extra"))
        for i in sorted(rng.permutation(len(pool))[:extra_train]):
            entries.append({**pool[i], "split": "train"})
    return entries


def _label_shard(entries: list[dict], seed: int, conformers: int) -> tuple[list, list[dict]]:
    from triscale.foundation import datagen as G
    from triscale.quantum.electronic import electronic_structure

    frames, skipped = [], []
    for entry in entries:
        try:
            bases, _ = G.molecule_conformers(entry, conformers, G.derive_seed(seed, "etkdg", entry["group"]))
        except Exception as exc:  # noqa: BLE001 - RDKit embedding errors are many types; skip the molecule
            skipped.append({"group": entry["group"], "reason": f"embedding failed: {type(exc).__name__}"})
            continue
        if not bases:
            skipped.append({"group": entry["group"], "reason": "no conformer"})
            continue
        for atoms in bases:
            try:
                es = electronic_structure(atoms, "gfn2-xtb", use_cache=False)
            except Exception as exc:  # noqa: BLE001 - an SCF failure skips the frame, the run goes on
                skipped.append({"group": entry["group"], "reason": f"xtb failed: {str(exc)[:80]}"})
                continue
            if es.gap_eV is None or not es.converged:
                skipped.append({"group": entry["group"], "reason": "no LUMO or not converged"})
                continue
            frame = atoms.copy()
            frame.info.update(
                gap=es.gap_eV,
                homo=es.homo_eV,
                lumo=es.lumo_eV,
                dipole_debye=float(np.linalg.norm(es.dipole_e_A)) * DEBYE_PER_E_A,
                split=entry["split"],
                group=entry["group"],
                method="GFN2-xTB (tblite)",
            )
            frames.append(frame)
    return frames, skipped


def _run_shard(args: tuple) -> dict:
    index, entries, seed, conformers, out = args
    from ase.io import write

    from triscale.foundation.datagen import init_labelling_worker

    init_labelling_worker()
    t0 = time.perf_counter()
    frames, skipped = _label_shard(entries, seed, conformers)
    path = Path(out) / "shards" / f"shard-{index:05d}.extxyz"
    buffer = io.StringIO()
    write(buffer, frames, format="extxyz")
    atomic_write_text(path, buffer.getvalue())  # a shard exists only when complete
    return {"index": index, "frames": len(frames), "skipped": skipped, "seconds": time.perf_counter() - t0}


def generate_observables(
    out: str | Path = "data/observables",
    datagen_config: str | Path = "configs/datagen/base.yaml",
    conformers: int = 2,
    extra_train: int = 2000,
    molecules_per_shard: int = 25,
    workers: int = 1,
    limit: int | None = None,
) -> dict:
    """Generate (or resume) the observables data set; returns a summary (also written to ``OUT/summary.json``)."""
    from ase.io import read, write

    from triscale.foundation.datagen import load_config

    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    seed = load_config(datagen_config).seed
    entries = observable_entries(datagen_config, extra_train)
    if limit is not None:
        entries = entries[:limit]
    shards = [entries[k : k + molecules_per_shard] for k in range(0, len(entries), molecules_per_shard)]
    todo = [
        (i, shard, seed, conformers, str(out))
        for i, shard in enumerate(shards)
        if not (out / "shards" / f"shard-{i:05d}.extxyz").exists()
    ]
    print(f"{len(entries)} molecules in {len(shards)} shards, {len(todo)} to do", flush=True)
    skipped = []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_run_shard, todo):
                skipped += done["skipped"]
                print(f"shard {done['index']}: {done['frames']} frames, {done['seconds']:.1f} s", flush=True)
    else:
        for args in todo:
            done = _run_shard(args)
            skipped += done["skipped"]
            print(f"shard {done['index']}: {done['frames']} frames, {done['seconds']:.1f} s", flush=True)
    frames = [f for i in range(len(shards)) for f in read(str(out / "shards" / f"shard-{i:05d}.extxyz"), ":")]
    write(str(out / "observables.extxyz"), frames, format="extxyz")
    counts = {s: sum(f.info["split"] == s for f in frames) for s in ("train", "val", "test")}
    gaps = np.array([f.info["gap"] for f in frames])
    summary = {
        "frames": len(frames),
        "molecules": len({f.info["group"] for f in frames}),
        "frames_per_split": counts,
        "gap_eV": {
            "mean": float(gaps.mean()),
            "std": float(gaps.std()),
            "min": float(gaps.min()),
            "max": float(gaps.max()),
        },
        "skipped_this_run": skipped,
        "recipe": {"datagen_config": str(datagen_config), "conformers": conformers, "extra_train": extra_train},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    """``python -m triscale.quantum.observables [--out DIR] [--workers N] [--limit M]``"""
    import typer

    def run(
        out: str = "data/observables",
        datagen_config: str = "configs/datagen/base.yaml",
        conformers: int = 2,
        extra_train: int = 2000,
        workers: int = 1,
        limit: int | None = None,
    ) -> None:
        summary = generate_observables(out, datagen_config, conformers, extra_train, workers=workers, limit=limit)
        print(json.dumps({k: v for k, v in summary.items() if k != "skipped_this_run"}, indent=1))

    typer.run(run)


if __name__ == "__main__":
    main()
