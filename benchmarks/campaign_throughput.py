"""Campaign throughput on Dask: GFN2-xTB single points of N small molecules (<= 9 heavy atoms) with 1 and 2 local
workers, then a 2-worker run in which one worker is killed mid-run (SIGKILL) to count what that costs.

    OMP_NUM_THREADS=1 python benchmarks/campaign_throughput.py --n 520 --out /tmp/campaign-bench

Molecules: a seeded random growth of C/N/O skeletons (RDKit-valid, canonical, unique). Throughput is taken from
the first item's start to the last item's finish (cluster start-up excluded; it is printed separately)."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from pathlib import Path


def small_molecules(n: int, max_heavy: int = 9, seed: int = 0) -> list[str]:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    rng = random.Random(seed)
    valence = {"C": 4, "N": 3, "O": 2}
    seen: dict[str, None] = {}
    while len(seen) < n:
        mol = Chem.RWMol()
        mol.AddAtom(Chem.Atom("C"))
        for _ in range(rng.randint(0, max_heavy - 1)):
            free = [a.GetIdx() for a in mol.GetAtoms() if a.GetDegree() < valence[a.GetSymbol()]]
            if not free:
                break
            el = rng.choices(["C", "N", "O"], weights=[6, 2, 2])[0]
            j = mol.AddAtom(Chem.Atom(el))
            mol.AddBond(rng.choice(free), j, Chem.BondType.SINGLE)
        try:
            Chem.SanitizeMol(mol)
        except Exception:
            continue
        seen[Chem.MolToSmiles(mol)] = None
    return list(seen)


def run(out: Path, items: Path, cluster: str, kill_after: int | None = None) -> dict:
    from triscale.tools.campaigns import run_campaign

    wf = {
        "name": "xtb-sp",
        "for_each": {"as": "mol", "retries": 2},
        "steps": [
            {"id": "build", "tool": "build_molecule", "args": {"smiles": "${mol}"}},
            {
                "id": "sp",
                "tool": "single_point",
                "args": {"structure_id": "${build.structure_id}", "calculator": "gfn2-xtb"},
            },
        ],
    }
    done = []
    killed = {}

    def on_item(rec):
        done.append(rec)
        if kill_after is not None and len(done) == kill_after and not killed:
            # kill the worker that is running some unfinished item right now
            idir = out / "campaigns" / "xtb-sp" / "items"
            for a in idir.glob("*.attempts"):
                i = a.name.split(".")[0]
                if not (idir / f"{i}.json").exists():
                    pid = int(a.read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, item=int(i), at=time.time())
                    break

    t0 = time.time()
    s = run_campaign(wf, str(out), cluster=cluster, items=str(items), on_item=on_item)
    idir = out / "campaigns" / "xtb-sp" / "items"
    starts = [float(line.split()[2]) for a in idir.glob("*.attempts") for line in a.read_text().splitlines()]
    ends = [p.stat().st_mtime for p in idir.glob("*.json") if "partial" not in p.name]
    span = max(ends) - min(starts)
    row = {
        "cluster": cluster,
        "total": s.total,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "retried": s.retried,
        "wall_s": round(time.time() - t0, 1),
        "span_s": round(span, 1),
        "items_per_s": round(s.succeeded / span, 3),
        "killed": killed,
        "startup_s": round(min(starts) - t0, 1),
    }
    n_calls = sum(1 for _ in open(out / "calls.jsonl"))
    row["tool_calls"] = n_calls
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=520)
    ap.add_argument("--out", default="/tmp/campaign-bench")
    ap.add_argument("--runs", default="local:1,local:2,kill")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    items = out / "smiles.txt"
    smi = small_molecules(a.n)
    items.write_text("\n".join(smi) + "\n")
    print(f"{len(smi)} molecules, heavy atoms <= 9, e.g. {smi[:5]}", flush=True)
    rows = []
    for r in a.runs.split(","):
        if r == "kill":
            rows.append(run(out / "kill", items, "local:2", kill_after=a.n // 3))
        else:
            rows.append(run(out / r.replace(":", "-"), items, r))
    json.dump(rows, open(out / "results.json", "w"), indent=1)
    _ = threading  # noqa


if __name__ == "__main__":
    main()
