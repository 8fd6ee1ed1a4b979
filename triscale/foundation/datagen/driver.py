"""``triscale datagen``: run or continue a generation (one process, a spawn pool, or the shards as tasks on a Dask
cluster the caller connected: ``triscale datagen --cluster local:N``), then write the manifest."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from triscale.common import atomic_write_text
from triscale.foundation.datagen.config import DatagenConfig, load_config
from triscale.foundation.datagen.labelling import init_labelling_worker, single_thread
from triscale.foundation.datagen.plan import is_done, make_plan
from triscale.foundation.datagen.shards import run_shard, write_manifest

__all__ = ["generate", "run_datagen_cli"]


# ---------------------------------------------------------------------------------------------- driver
def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(time.strftime("%H:%M:%S ") + msg, file=sys.stderr)


def generate(
    config: DatagenConfig,
    out: str | Path | None = None,
    workers: int = 1,
    limit: int | None = None,
    progress: bool = True,
    client=None,
    retries: int = 2,
) -> dict:
    """Run (or continue) a data generation; returns the manifest.

    ``limit``: process at most this many of the shards still to do (a partial run; run again to go on).
    ``client``: a Dask client (``triscale.tools.campaigns.cluster_client``): each shard still to do is one task
    (retried ``retries`` times when it raises; a worker's death is bounded by the cluster's allowed-failures); a
    shard whose task fails is logged and left to the next run (the manifest says the run is incomplete).
    """
    from tqdm import tqdm

    out_path = Path(out if out is not None else config.out)
    out_path.mkdir(parents=True, exist_ok=True)
    plan_file = out_path / "plan.json"
    recipe = config.recipe_hash()
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        if old.get("recipe_hash") != recipe:
            raise ValueError(
                f"{out_path} holds data of a different recipe (hash {old.get('recipe_hash')} != {recipe}); "
                "use another --out or delete it"
            )
    for stale in glob.glob(str(out_path / "*" / "*.tmp-*")):  # left by a killed run
        with contextlib.suppress(OSError):
            os.remove(stale)
    t0 = time.perf_counter()
    plan = make_plan(config)
    atomic_write_text(
        plan_file,
        json.dumps(
            {
                "recipe_hash": recipe,
                "config": config.model_dump(mode="json"),
                "shards": [
                    {"domain": s["domain"], "index": s["index"], "groups": [e["group"] for e in s["entries"]]}
                    for s in plan
                ],
            },
            indent=1,
        ),
    )
    todo = [s for s in plan if not is_done(out_path, s)]
    n_done = len(plan) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    counts = Counter(s["domain"] for s in plan)
    _log(
        f"datagen: {len(plan)} shards ({dict(counts)}), {n_done} done, "
        f"{len(todo)} to do, {workers} worker(s); planned in {time.perf_counter() - t0:.1f} s -> {out_path}"
    )
    config_json = config.model_dump_json()
    bar = tqdm(
        total=len(todo),
        unit="shard",
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 60.0,
        file=sys.stderr,
    )
    frames_done = 0
    finished: list[str] = []

    def report(summary: dict) -> None:
        nonlocal frames_done
        frames_done += summary["frames"]
        bar.update(1)
        finished.append(summary["file"])
        bar.set_postfix(frames=frames_done)
        skipped = f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""
        _log(
            f"{summary['domain']}/{summary['file']}: {summary['frames']} frames{skipped} "
            f"in {summary['seconds']:.1f} s"
            f" ({len(finished)}/{len(todo)})"
        )

    try:
        if client is not None and todo:
            from distributed import as_completed

            futures = {
                client.submit(
                    run_shard_on_worker, s, config_json, str(out_path), retries=retries,
                    key=f"datagen-{recipe[:12]}-{s['domain']}-{s['index']}",
                ): s
                for s in todo
            }  # fmt: skip
            for fut in as_completed(list(futures)):
                if fut.status == "finished":
                    report(fut.result())
                else:
                    s, exc = futures[fut], fut.exception()
                    _log(f"{s['domain']} shard {s['index']} failed: {type(exc).__name__}: {exc}; run again to retry")
                fut.release()
        elif workers <= 1:
            with single_thread():
                for shard in todo:
                    report(run_shard(shard, config_json, str(out_path)))
        else:
            import multiprocessing as mp

            for var, value in (
                ("OMP_NUM_THREADS", "1"),
                ("MKL_NUM_THREADS", "1"),
                ("OMP_WAIT_POLICY", "PASSIVE"),
            ):
                os.environ[var] = value
            ctx = mp.get_context("spawn")  # no fork after RDKit/torch/OpenMP are loaded
            with ctx.Pool(workers, initializer=init_labelling_worker, maxtasksperchild=50) as pool:
                jobs = [(s, config_json, str(out_path)) for s in todo]
                for summary in pool.imap_unordered(_run_shard_star, jobs):
                    report(summary)
    finally:
        bar.close()
    manifest = write_manifest(out_path, config, plan)
    _log(
        f"datagen: {manifest['shards_done']}/{manifest['shards']} shards on disk, "
        + ", ".join(f"{d}: {v['frames']} frames" for d, v in manifest["domains"].items())
        + f"; {time.perf_counter() - t0:.0f} s this run"
    )
    return manifest


def _run_shard_star(args: tuple) -> dict:
    return run_shard(*args)


def run_shard_on_worker(shard: dict, config_json: str, out: str) -> dict:
    """A shard as a Dask task: one quiet thread, as in the process pool."""
    init_labelling_worker()
    with single_thread():
        return run_shard(shard, config_json, out)


def run_datagen_cli(config: Path, out: Path | None, workers: int, limit: int | None, client=None) -> None:
    """Entry point of ``triscale datagen`` (``client``: a Dask client for ``--cluster``)."""
    for var, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
        os.environ.setdefault(var, value)
    cfg = load_config(config)
    manifest = generate(cfg, out=out, workers=workers, limit=limit, client=client)
    for domain, d in manifest["domains"].items():
        splits = ", ".join(f"{s} {v['frames']} frames/{v['groups']} groups" for s, v in d["splits"].items())
        print(f"{domain}: {d['frames']} frames ({splits}); elements {' '.join(d['elements'])}")
    if not manifest["complete"]:
        print(f"{manifest['shards_done']}/{manifest['shards']} shards done; run again to continue")
