"""The deterministic shard plan of a recipe and where each shard lives on disk."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from triscale.foundation.datagen.config import DatagenConfig
from triscale.foundation.datagen.materials import material_specs
from triscale.foundation.datagen.molecules import molecule_entries
from triscale.foundation.datagen.qm9 import DFT_DOMAIN, dft_entries
from triscale.foundation.datagen.seeds import assign_splits

__all__ = ["is_done", "make_plan", "shard_paths"]


# ------------------------------------------------------------------------------------------------ plan
def make_plan(config: DatagenConfig) -> list[dict]:
    """The deterministic list of shards, molecule and material shards interleaved.

    Each shard is ``{"domain", "index", "entries"}``; an entry carries its ``group`` and ``split``.
    """
    seed = config.seed
    molecules = molecule_entries(config.molecule, seed)
    materials = [
        {"group": s.id, "spec": s.model_dump(), "source": "prototype", "elements": s.elements}
        for s in material_specs(config.material, seed)
    ]
    dft = dft_entries(config.molecule_dft, seed)
    # molecules and their DFT energies split together: a molecule has one split whichever labels it carries
    for entries in (molecules + dft, materials):
        groups: dict[str, set[str]] = {}
        for e in entries:
            groups.setdefault(e["group"], set()).update(e["elements"])
        split, _ = assign_splits(groups, seed, config.split_fractions)
        for e in entries:
            e["split"] = split[e["group"]]
    n = config.molecule.molecules_per_shard
    shards = [
        {"domain": "molecule", "index": i, "entries": molecules[k : k + n]}
        for i, k in enumerate(range(0, len(molecules), n))
    ]
    n = config.molecule_dft.molecules_per_shard
    shards += [
        {"domain": DFT_DOMAIN, "index": i, "entries": dft[k : k + n]} for i, k in enumerate(range(0, len(dft), n))
    ]
    shards += [{"domain": "material", "index": i, "entries": [e]} for i, e in enumerate(materials)]
    # interleave: order by the position of each shard within its own domain
    counts = Counter(s["domain"] for s in shards)
    shards.sort(key=lambda s: ((s["index"] + 0.5) / counts[s["domain"]], s["domain"]))
    return shards


def shard_paths(out: Path, shard: dict) -> tuple[Path, Path]:
    base = out / shard["domain"] / f"shard-{shard['index']:05d}"
    return base.with_suffix(".extxyz"), base.with_suffix(".json")


def is_done(out: Path, shard: dict) -> bool:
    xyz, meta = shard_paths(out, shard)
    return xyz.exists() and meta.exists()
