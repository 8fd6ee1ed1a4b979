"""The active-learning campaign: the engine on a 20-molecule pool with GFN2-xTB labels, kill-and-resume without
recomputing a label, the run_campaign tool and `triscale plan`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from triscale.tools.errors import ToolInputError

SMILES = [
    "C", "CC", "CCC", "CO", "CCO", "C=O", "CC=O", "CN", "CCN", "C#N",
    "C=C", "C#C", "c1ccccc1", "OCCO", "C1CC1", "O=C=O", "CC#N", "NC=O", "CF", "COC",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def _recipe(out, **kw):
    from triscale.tools.active_learning import CampaignRecipe

    base = dict(out=str(out), pool={"smiles": SMILES}, budget=6, batch_size=2, committee=2, steps=20)
    return CampaignRecipe(**{**base, **kw})


def _labels(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~8 s of CPU; 30 s wall on the shared 2 cores
def test_campaign_gfn2_gap(tmp_path):
    from triscale.quantum.electronic import electronic_structure
    from triscale.tools.active_learning import Campaign

    out = tmp_path / "c"
    camp = Campaign(_recipe(out, warm_start="gfn2-gap", acquisition="ucb"))
    rep = camp.run()
    labels = _labels(out)
    assert len(labels) == 6 and len({r["index"] for r in labels}) == 6
    assert [h["labels_spent"] for h in rep["rounds"]] == [2, 4, 6]
    assert rep["complete"] and rep["labels_spent"] == 6
    # the labels are GFN2-xTB gaps of the pool's structures, and the best list is sorted by them
    i = labels[0]["index"]
    assert labels[0]["value"] == pytest.approx(electronic_structure(camp.structures[i], "gfn2-xtb").gap_eV, abs=1e-8)
    values = [b["value"] for b in rep["best"]]
    assert values == sorted(values, reverse=True) and values[0] == max(r["value"] for r in labels)
    # errors on each round's new labels were measured before training on them (warm start: from round 0)
    for h in rep["rounds"]:
        err = np.abs(np.array(h["predicted"]) - np.array(h["values"]))
        assert h["mae_before"] == pytest.approx(err.mean())
    # the proposal ranks only unlabelled candidates
    labelled = {r["name"] for r in labels}
    assert rep["proposal"] and not labelled & {p["name"] for p in rep["proposal"]}
    assert (out / "progress.png").stat().st_size > 1000 and "Best candidates" in (out / "report.md").read_text()
    # finished: running again computes nothing; a larger budget extends it
    calls = []
    again = Campaign(_recipe(out, warm_start="gfn2-gap", budget=8), labeller=lambda i, a: calls.append(i) or 5.0)
    again.run()
    assert len(calls) == 2 and not set(calls) & {r["index"] for r in labels}


@pytest.mark.slow  # a subprocess (imports, encoding): ~8 s of CPU, 27 s wall on the shared 2 cores
def test_kill_and_resume_computes_no_label_twice(tmp_path):
    """A campaign SIGKILLed in its second round, then one whose training fails, resume with every label
    computed exactly once (labels are looked up from a table so a call log can count them)."""
    from triscale.tools.active_learning import Campaign, HeadCommittee

    out = tmp_path / "c"
    calls = tmp_path / "calls.txt"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from triscale.tools.active_learning import Campaign, CampaignRecipe
        recipe = CampaignRecipe(out={str(out)!r}, pool={{"smiles": {SMILES!r}}}, budget=6, batch_size=2,
                                committee=2, steps=20)
        def label(i, atoms):
            with open({str(calls)!r}) as f:
                n = len(f.read().split())
            if n == 3:  # the 4th label: die without warning
                os.kill(os.getpid(), signal.SIGKILL)
            with open({str(calls)!r}, "a") as f:
                f.write(f"{{i}}\\n")
            return float(len(atoms)) + 0.1 * i
        Campaign(recipe, labeller=label).run()
        """
    )
    calls.write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(_labels(out)) == 3  # round 0's two and one of round 1's, each durable before the kill
    state = json.loads((out / "state.json").read_text())
    assert len(state["pending"]) == 2 and len(state["history"]) == 1

    def label(i, atoms):
        with open(calls, "a") as f:
            f.write(f"{i}\n")
        return float(len(atoms)) + 0.1 * i

    real_fit = HeadCommittee.fit
    failed = []

    def failing_fit(self, *a, **k):
        if not failed:
            failed.append(1)
            raise RuntimeError("training crashed")
        return real_fit(self, *a, **k)

    HeadCommittee.fit = failing_fit
    try:
        with pytest.raises(RuntimeError, match="training crashed"):
            Campaign(_recipe(out), labeller=label).run()
    finally:
        HeadCommittee.fit = real_fit
    rep = Campaign(_recipe(out), labeller=label).run()
    done = [int(x) for x in calls.read_text().split()]
    assert len(done) == 6 and len(set(done)) == 6  # every label computed once, across three processes' worth
    assert sorted(done) == sorted(r["index"] for r in _labels(out))
    assert [h["labels_spent"] for h in rep["rounds"]] == [2, 4, 6] and rep["complete"]


def test_recipe_refuses_unknown_keys_and_bad_settings(tmp_path):
    from pydantic import ValidationError

    from triscale.tools.active_learning import CampaignRecipe

    with pytest.raises(ValidationError, match="extra"):
        CampaignRecipe(out=str(tmp_path), pool={"smiles": SMILES}, budjet=5)
    with pytest.raises(ValidationError, match="exactly one"):
        CampaignRecipe(pool={"smiles": SMILES, "smiles_file": "x.smi"})
    with pytest.raises(ValidationError, match="exceeds the budget"):
        CampaignRecipe(pool={"smiles": SMILES}, budget=2, batch_size=3)


POOL = ["methane", "ethane", "methanol", "formaldehyde", "acetylene", "water"]


def test_run_campaign_tool(call, ws):
    rep = call(
        "run_campaign",
        name="gaps",
        candidates=POOL,
        budget=4,
        batch_size=2,
        committee=2,
        steps=10,
    )
    assert rep.labels_spent == 4 and rep.complete and len(rep.rounds) == 2
    assert rep.best[0]["value"] >= rep.best[-1]["value"]
    assert (ws.root / rep.campaign_dir / "labels.jsonl").is_file()
    # bad inputs: clear errors, nothing run
    with pytest.raises(ToolInputError, match="electronic-structure reference"):
        call("run_campaign", candidates=["C", "CC"], reference="emt", budget=1, batch_size=1)
    with pytest.raises(ToolInputError, match="exactly one way"):
        call("run_campaign", candidates=["C", "CC"], smiles_file="pool.smi", budget=1, batch_size=1)
    with pytest.raises(ToolInputError):
        call("run_campaign", candidates=["C", "CC"], reference="gfn9-xtb", budget=1, batch_size=1)
    with pytest.raises(ToolInputError, match="outside the workspace"):
        call("run_campaign", smiles_file="../pool.smi", budget=1, batch_size=1)
    # same name, other settings: refused rather than mixing two campaigns
    with pytest.raises(ToolInputError, match="other settings"):
        call(
            "run_campaign",
            name="gaps",
            candidates=POOL,
            budget=4,
            batch_size=2,
            committee=2,
            steps=10,
            acquisition="ei",
        )
    from triscale.tools.registry import REGISTRY

    tool = REGISTRY["run_campaign"]
    assert tool.compact and tool.answer_fields == ("best", "proposal")
    assert tool.approval_needed({"candidates": ["C", "CC"], "reference": "b3lyp"})
    assert not tool.approval_needed({"candidates": ["C", "CC"]})


def test_plan_cli_refuses_bad_config(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pool: {smiles: [C, CC]}\nbudget: 2\nbatch_size: 1\nacquisiton: ucb\n")
    res = CliRunner().invoke(app, ["plan", str(cfg)])
    assert res.exit_code != 0 and "acquisiton" in res.output


def test_example_config_is_valid():
    import yaml

    from triscale.tools.active_learning import CampaignRecipe, load_pool

    recipe = CampaignRecipe.model_validate(yaml.safe_load((REPO / "configs/plan/gap_screen.yaml").read_text()))
    structures, names = load_pool(recipe.pool, REPO)
    assert len(structures) == 30 and "acetylene" in names and recipe.budget < len(structures)


@pytest.mark.slow  # starts a 2-worker LocalCluster (~20-40 s wall here)
def test_campaign_labels_on_dask_match_in_process(tmp_path):
    """Labels computed as Dask tasks on two local workers are the in-process labels, each persisted once, and the
    rounds choose the same candidates."""
    pytest.importorskip("distributed")
    from triscale.tools.active_learning import Campaign
    from triscale.tools.campaigns import cluster_client

    here = Campaign(_recipe(tmp_path / "here", budget=4)).run()
    with cluster_client("local:2") as client:
        there = Campaign(_recipe(tmp_path / "dask", budget=4), client=client).run()
    a, b = _labels(tmp_path / "here"), _labels(tmp_path / "dask")
    assert len(b) == 4 and len({r["index"] for r in b}) == 4
    assert {r["index"]: r["value"] for r in a} == pytest.approx({r["index"]: r["value"] for r in b}, abs=1e-8)
    assert [r["labels_spent"] for r in here["rounds"]] == [r["labels_spent"] for r in there["rounds"]]


def test_plan_refuses_a_bad_cluster(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"out: {tmp_path / 'c'}\npool: {{smiles: [C, CC, CCC]}}\nbudget: 2\nbatch_size: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "triscale.cli", "plan", str(recipe), "--cluster", "nowhere:3"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "cluster" in proc.stderr.lower(), proc.stderr
