"""One shard generated, labelled and written atomically; the manifest summarising the shards on disk."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from triscale.common import atomic_write_text
from triscale.foundation.datagen.config import FORMAT_VERSION, SPLITS, UNITS, DatagenConfig
from triscale.foundation.datagen.labelling import code_versions
from triscale.foundation.datagen.materials import run_material_shard
from triscale.foundation.datagen.molecules import run_molecule_shard
from triscale.foundation.datagen.plan import shard_paths
from triscale.foundation.datagen.qm9 import DFT_DOMAIN, DFT_METHOD, run_dft_shard

__all__ = ["run_shard", "write_manifest"]


# ---------------------------------------------------------------------------------------------- shards
def _summarise(frames: list) -> dict:
    splits: dict[str, dict[str, Any]] = {}
    elements: set[str] = set()
    config_types: Counter = Counter()
    for f in frames:
        s = splits.setdefault(f.info["split"], {"frames": 0, "groups": set(), "atoms": 0})
        s["frames"] += 1
        s["atoms"] += len(f)
        s["groups"].add(f.info["group"])
        elements.update(f.get_chemical_symbols())
        config_types[f.info["config_type"]] += 1
    return {
        "splits": {
            k: {"frames": v["frames"], "atoms": v["atoms"], "groups": sorted(v["groups"])}
            for k, v in sorted(splits.items())
        },
        "elements": sorted(elements),
        "config_types": dict(sorted(config_types.items())),
    }


def run_shard(shard: dict, config_json: str, out: str) -> dict:
    """Generate, label and write one shard (atomically). Returns its summary."""
    from ase.io import write

    config = DatagenConfig.model_validate_json(config_json)
    out_path = Path(out)
    xyz, meta = shard_paths(out_path, shard)
    xyz.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = {"molecule": run_molecule_shard, "material": run_material_shard, DFT_DOMAIN: run_dft_shard}[shard["domain"]]
    frames, skipped = run(shard, config)
    seconds = time.perf_counter() - start
    buffer = io.StringIO()
    if frames:
        write(buffer, frames, format="extxyz")
    atomic_write_text(xyz, buffer.getvalue())
    summary = {
        "domain": shard["domain"],
        "index": shard["index"],
        "file": xyz.name,
        "frames": len(frames),
        "groups": [e["group"] for e in shard["entries"]],
        **_summarise(frames),
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "recipe_hash": config.recipe_hash(),
    }
    atomic_write_text(meta, json.dumps(summary, indent=1))
    return summary


# -------------------------------------------------------------------------------------------- manifest
def _versions() -> dict[str, str]:
    merged = json.loads(code_versions("molecule"))
    merged.update(json.loads(code_versions("material")))
    return merged


def write_manifest(out: Path, config: DatagenConfig, plan: list[dict]) -> dict:
    """Summarise the shards on disk into ``out/manifest.json`` (no timestamps: reruns give the same file)."""
    domains: dict[str, Any] = {}
    done = 0
    for shard in plan:
        xyz, meta = shard_paths(out, shard)
        d = domains.setdefault(
            shard["domain"],
            {
                "shards": 0,
                "shards_done": 0,
                "frames": 0,
                "atoms": 0,
                "seconds": 0.0,
                "elements": set(),
                "splits": {s: {"frames": 0, "atoms": 0, "groups": set()} for s in SPLITS},
                "config_types": Counter(),
                "skipped": Counter(),
            },
        )
        d["shards"] += 1
        if not (xyz.exists() and meta.exists()):
            continue
        summary = json.loads(meta.read_text())
        done += 1
        d["shards_done"] += 1
        d["frames"] += summary["frames"]
        d["seconds"] += summary["seconds"]
        d["elements"].update(summary["elements"])
        d["config_types"].update(summary["config_types"])
        for split, s in summary["splits"].items():
            d["splits"][split]["frames"] += s["frames"]
            d["splits"][split]["atoms"] += s["atoms"]
            d["atoms"] += s["atoms"]
            d["splits"][split]["groups"].update(s["groups"])
        for skip in summary["skipped"]:
            d["skipped"][skip["reason"].split(" (")[0]] += 1
    for d in domains.values():
        d["seconds"] = round(d["seconds"], 1)
        d["elements"] = sorted(d["elements"], key=_atomic_number)
        for s in d["splits"].values():
            s["groups"] = len(s["groups"])
        d["config_types"] = dict(sorted(d["config_types"].items()))
        d["skipped"] = dict(sorted(d["skipped"].items()))
    manifest = {
        "format_version": FORMAT_VERSION,
        "complete": done == len(plan),
        "shards": len(plan),
        "shards_done": done,
        "domains": domains,
        "methods": {
            "molecule": "GFN2-xTB (tblite ASE calculator): energy eV, forces eV/A, dipole e*A, Mulliken charges e",
            "material": f"CHGNet {config.material.model} (distilled from CHGNet, a model trained on "
            "Materials Project PBE/PBE+U data; not DFT): energy eV, forces eV/A, stress eV/A^3 "
            "(ASE sign, Voigt xx yy zz yz "
            "xz xy)",
        },
        "units": UNITS,
        "label_keys": {
            "info": ["REF_energy", "REF_stress", "REF_dipole"],
            "arrays": ["REF_forces", "REF_charges"],
        },
        "split": "by group (canonical SMILES without stereo / prototype:composition), seeded hash, "
        "elements of "
        "val/test groups covered by train",
        "seed": config.seed,
        "recipe_hash": config.recipe_hash(),
        "config": config.model_dump(mode="json"),
        "versions": _versions(),
    }
    if config.molecule_dft.enabled:
        manifest["methods"][DFT_DOMAIN] = (
            f"{DFT_METHOD}: electronic energy U0 - ZPVE in eV at QM9's equilibrium geometry; no forces (energy-only)"
        )
        manifest["versions"].update(json.loads(code_versions(DFT_DOMAIN)))
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]
