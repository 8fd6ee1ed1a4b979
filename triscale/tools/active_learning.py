"""The active-learning campaign engine: score a candidate pool, pick a batch, label it, fine-tune, repeat.

A campaign has a candidate pool (SMILES, structure files or ``ase.Atoms``), an objective (a scalar a reference method
computes: ``gap_eV``, ``energy_per_atom_eV``, ``dipole_e_A``), a reference method for the labels (GFN2/GFN1-xTB,
HF/DFT through PySCF, CHGNet, EMT, or a Python callable), a label budget, a batch size and an acquisition function
(:func:`acquisition_scores`, shared with ``plan_experiments``: ``ucb``, ``ei``, ``max_variance``, ``greedy``;
plus ``random``).

The model is a committee of property heads on the frozen foundation encoder (``triscale-base``): each pool member is
encoded once (its per-atom scalar features are cached), so a round costs the heads only. Each round:

1. score the pool with the current committee: mean and calibrated standard deviation (the committee spread times a
   factor fitted on every earlier round's new labels *before* they were trained on, so that ``z = err / sigma`` has
   unit RMS);
2. pick ``batch_size`` unlabelled candidates by the acquisition function (the first batch of a committee with no
   warm start is random: untrained heads rank nothing);
3. label them with the reference method, each label appended to ``labels.jsonl`` (fsync'd) as it finishes;
4. record the model's error and calibration on the new labels (before training on them);
5. fine-tune every member warm-started from its previous weights on a bootstrap sample of all labels so far;
6. checkpoint the heads and the round state (``state.json``, atomic) and the round log (``rounds.jsonl``).

A killed campaign resumes from ``state.json``: a batch already chosen is kept, labels already in ``labels.jsonl``
are never recomputed, and a round whose training did not finish is trained again from the saved heads.
``report.json``/``report.md``/``progress.png`` summarise it: the best candidates found with their reference values,
the per-round error and calibration, and a ranked proposal of the unlabelled candidates.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from triscale.common import atomic_write_json, atomic_write_text
from triscale.common.files import read_jsonl

__all__ = [
    "acquisition_scores",
    "ACQUISITIONS",
    "OBJECTIVES",
    "Campaign",
    "CampaignRecipe",
    "PoolFeatures",
    "PoolSpec",
    "encode_pool",
    "load_pool",
    "reference_value",
    "settings_conflict",
]

#: objective -> (unit, what computes it)
OBJECTIVES = {
    "gap_eV": ("eV", "HOMO-LUMO gap of the reference electronic structure"),
    "energy_per_atom_eV": ("eV/atom", "reference potential energy per atom"),
    "dipole_e_A": ("e·Å", "norm of the reference dipole moment"),
}
ACQUISITIONS = ("ucb", "ei", "max_variance", "greedy", "random")
Objective = Literal["gap_eV", "energy_per_atom_eV", "dipole_e_A"]
Acquisition = Literal["ucb", "ei", "max_variance", "greedy", "random"]


def acquisition_scores(
    mean: np.ndarray, std: np.ndarray, kind: str, goal: str = "minimize", kappa: float = 2.0, xi: float = 0.0
) -> np.ndarray:
    """Higher is better. ``mean``/``std`` are per candidate; ``goal`` is ``minimize`` or ``maximize``."""
    mu = np.asarray(mean, dtype=float)
    sd = np.maximum(np.asarray(std, dtype=float), 0.0)
    if goal == "maximize":
        mu = -mu  # maximising f is minimising -f; sigma is unchanged
    if kind == "greedy":
        return -mu
    if kind == "ucb":
        return -(mu - kappa * sd)
    if kind == "max_variance":
        return sd
    if kind == "ei":
        best = float(mu.min())
        imp = best - mu - xi
        out = np.where(imp > 0, imp, 0.0)
        mask = sd > 1e-12
        z = np.where(mask, imp / np.where(mask, sd, 1.0), 0.0)
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
        return np.where(mask, imp * cdf + sd * pdf, out)
    raise ValueError(f"Unknown acquisition {kind!r}.")


class PoolSpec(BaseModel):
    """The candidates: exactly one of an inline SMILES list, a SMILES file (one per line, an optional name after
    whitespace, lines starting with ``#`` are comments) or structure files ASE reads (every frame is a candidate)."""

    model_config = ConfigDict(extra="forbid")

    smiles: list[str] | None = Field(None, min_length=2, max_length=20000)
    smiles_file: str | None = None
    structure_files: list[str] | None = Field(None, min_length=1, max_length=1000)
    max_candidates: int = Field(5000, ge=2, le=20000, description="Refuse pools larger than this.")

    @model_validator(mode="after")
    def _one_source(self) -> PoolSpec:
        given = [k for k in ("smiles", "smiles_file", "structure_files") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of smiles, smiles_file, structure_files (got {given or 'none'})")
        return self


class CampaignRecipe(BaseModel):
    """An active-learning campaign (``triscale plan CONFIG.yaml``; example: ``configs/plan/gap_screen.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("campaign", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    out: str = Field("runs/plan", description="Campaign directory (labels, state, heads, report).")
    pool: PoolSpec | None = Field(None, description="The candidates (the Python API may pass structures instead).")
    objective: Objective = "gap_eV"
    goal: Literal["minimize", "maximize"] = "maximize"
    reference: str = Field("gfn2-xtb", description="Label method: gfn2-xtb, gfn1-xtb, hf, dft/b3lyp, chgnet, emt.")
    budget: int = Field(20, ge=1, le=5000, description="Reference labels to spend in all.")
    batch_size: int = Field(5, ge=1, le=500)
    acquisition: Acquisition = "ucb"
    kappa: float = Field(2.0, ge=0, le=10, description="UCB exploration weight (calibrated sigmas).")
    committee: int = Field(4, ge=2, le=16, description="Property heads in the committee.")
    warm_start: str | None = Field(
        None, description="Property committee to start from: a shipped name (gfn2-gap) or a directory; None: new heads."
    )
    base: str = Field("triscale-base", description="Foundation checkpoint whose frozen encoder the heads read.")
    hidden: int = Field(64, ge=4, le=512, description="Hidden width of new heads (ignored with warm_start).")
    pooling: Literal["mean", "attention"] = "attention"
    steps: int = Field(150, ge=1, le=5000, description="Adam steps per member per round (full batch).")
    lr: float = Field(2e-3, gt=0, le=0.1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    top_k: int = Field(10, ge=1, le=100, description="Candidates listed in the report and proposal.")

    @model_validator(mode="after")
    def _budget(self) -> CampaignRecipe:
        if self.batch_size > self.budget:
            raise ValueError(f"batch_size {self.batch_size} exceeds the budget {self.budget}")
        return self


# ------------------------------------------------------------------------------------------------ pool and labels


def load_pool(spec: PoolSpec, base_dir: str | Path | None = None) -> tuple[list, list[str]]:
    """(structures, names) of a pool; relative paths are read from ``base_dir``. SMILES are embedded with RDKit
    (ETKDG + MMFF where parameterised, seed 0)."""
    from triscale.common.chem import SmilesError, embed_smiles

    root = Path(base_dir) if base_dir is not None else Path.cwd()
    entries: list[tuple[str, str]] = []
    if spec.smiles:
        entries = [(s.strip(), s.strip()) for s in spec.smiles]
    elif spec.smiles_file:
        path = root / spec.smiles_file
        if not path.is_file():
            raise FileNotFoundError(f"SMILES file {spec.smiles_file!r} not found under {root}")
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):  # only whole-line comments: '#' is a SMILES triple bond
                parts = line.split()
                entries.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    structures, names = [], []
    if entries:
        if len(entries) > spec.max_candidates:
            raise ValueError(f"the pool has {len(entries)} candidates; max_candidates is {spec.max_candidates}")
        for smi, name in entries:
            try:
                atoms = embed_smiles(smi, seed=0, relax="auto")[0]
            except SmilesError as e:
                raise ValueError(f"pool candidate {smi!r}: {e}") from None
            structures.append(atoms)
            names.append(name)
    else:
        from ase.io import read

        for f in spec.structure_files or []:
            path = root / f
            if not path.is_file():
                raise FileNotFoundError(f"structure file {f!r} not found under {root}")
            frames = read(str(path), index=":")
            for k, atoms in enumerate(frames):
                structures.append(atoms)
                names.append(f"{Path(f).name}:{k}" if len(frames) > 1 else Path(f).name)
        if len(structures) > spec.max_candidates:
            raise ValueError(f"the pool has {len(structures)} candidates; max_candidates is {spec.max_candidates}")
    if len(set(names)) < len(names):
        raise ValueError("the pool names a candidate twice; give each once")
    return structures, names


def reference_value(atoms, objective: str, reference: str) -> float:
    """The objective of ``atoms`` computed with the reference method (eV, eV/atom or e·Å)."""
    from triscale.quantum.methods import ELECTRONIC
    from triscale.tools.calculators import CalculatorSpec, canonical_method, make_calculator

    method = canonical_method(reference)
    if objective in ("gap_eV", "dipole_e_A"):
        if method not in ELECTRONIC:
            raise ValueError(
                f"{objective} needs an electronic-structure reference ({', '.join(sorted(ELECTRONIC))}), "
                f"not {reference!r}"
            )
        from triscale.quantum.electronic import electronic_structure

        es = electronic_structure(
            atoms, reference, charge=int(atoms.info.get("charge", 0)), spin=int(atoms.info.get("spin", 0))
        )
        if objective == "dipole_e_A":
            return float(np.linalg.norm(es.dipole_e_A))
        if es.gap_eV is None:
            raise ValueError("the reference calculation has no LUMO")
        return float(es.gap_eV)
    if objective == "energy_per_atom_eV":
        a = atoms.copy()
        a.calc = make_calculator(CalculatorSpec(method=reference), a)
        return float(a.get_potential_energy()) / len(a)
    raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")


# ---------------------------------------------------------------------------------------------- cached features


class PoolFeatures:
    """Per-atom scalar features of the frozen encoder for every pool member, concatenated (``s`` (sum N, F)),
    with ``offsets`` (P+1,) into it. Cheap to slice for any subset."""

    def __init__(self, s: np.ndarray, offsets: np.ndarray):
        import torch

        self.s = torch.as_tensor(np.asarray(s, dtype=np.float32))
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.num_atoms = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def subset(self, indices: Sequence[int]):
        """(s, batch, num_atoms) tensors for ``indices`` (in that order)."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == len(self) and np.array_equal(idx, np.arange(len(self))):
            s = self.s
        else:
            s = torch.cat([self.s[self.offsets[i] : self.offsets[i + 1]] for i in idx])
        n = torch.as_tensor(self.num_atoms[idx])
        batch = torch.repeat_interleave(torch.arange(len(idx)), n)
        return s, batch, n

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, s=self.s.numpy(), offsets=self.offsets)
        from triscale.common import atomic_write_bytes

        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> PoolFeatures:
        with np.load(path) as z:
            return cls(z["s"], z["offsets"])


def encode_pool(structures: Sequence, base: str = "triscale-base", batch_size: int = 64) -> PoolFeatures:
    """Encode every structure once with the frozen encoder of ``base`` (molecule domain)."""
    import torch

    from triscale.finetune import adapters as A
    from triscale.finetune.property import PropertyModel, structure_batches

    model, _ = A.load_base(base)
    d = model.config.domain_index("molecule")
    probe = PropertyModel(model, d)
    chunks = []
    with torch.no_grad():
        for batch in structure_batches(structures, model.config, d, batch_size):
            chunks.append(probe.features(batch).float().numpy())
    counts = [len(a) for a in structures]
    return PoolFeatures(np.concatenate(chunks), np.concatenate([[0], np.cumsum(counts)]))


# -------------------------------------------------------------------------------------------------- the committee


class HeadCommittee:
    """K property heads (:class:`triscale.finetune.property.PropertyModel`) sharing one frozen encoder, run on
    cached features."""

    def __init__(self, recipe: CampaignRecipe):
        import copy

        import torch

        from triscale.finetune import adapters as A
        from triscale.finetune.property import PropertyCommittee, PropertyModel, load_property_model

        self.recipe = recipe
        base, _ = A.load_base(recipe.base)
        self.encoder = base
        d = base.config.domain_index("molecule")
        self.trained_on = 0  # labels the heads have seen (0: untrained new heads)
        if recipe.warm_start:
            loaded = load_property_model(recipe.warm_start, base=base)
            start = loaded.members if isinstance(loaded, PropertyCommittee) else [loaded]
            self.members = []
            for k in range(recipe.committee):
                src = start[k % len(start)]
                m = PropertyModel(base, d, recipe.hidden, src.pooling)
                m.head = copy.deepcopy(src.head)  # its own width, from the loaded committee
                m.target_mean.copy_(src.target_mean)
                m.target_std.copy_(src.target_std)
                self.members.append(m)
            self.warm = True
        else:
            self.members = []
            for k in range(recipe.committee):
                with torch.random.fork_rng():
                    torch.manual_seed(recipe.seed * 7919 + k)
                    self.members.append(PropertyModel(base, d, recipe.hidden, recipe.pooling))
            self.warm = False
        for m in self.members:
            for p in m.model.parameters():
                p.requires_grad_(False)

    @property
    def informed(self) -> bool:
        """Whether the heads know anything (warm-started or trained on labels)."""
        return self.warm or self.trained_on > 0

    def predict(self, feats: PoolFeatures, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Committee mean and standard deviation (uncalibrated) for ``indices`` (default: the whole pool)."""
        import torch

        idx = list(range(len(feats))) if indices is None else list(indices)
        s, batch, n = feats.subset(idx)
        with torch.no_grad():
            k = np.stack([m.denormalize(m.head_output(s, batch, n), n).numpy() for m in self.members])
        return k.mean(0), k.std(0)

    def fit(self, feats: PoolFeatures, indices: Sequence[int], values: Sequence[float], round_: int) -> None:
        """Fine-tune every member, warm-started from its current weights, on a bootstrap sample of the labels."""
        import torch

        r = self.recipe
        y_all = np.asarray(values, dtype=float)
        idx_all = np.asarray(indices, dtype=np.int64)
        for k, m in enumerate(self.members):
            rng = np.random.default_rng([r.seed, round_, k])
            pick = rng.integers(0, len(idx_all), len(idx_all)) if len(idx_all) > 2 else np.arange(len(idx_all))
            s, batch, n = feats.subset(idx_all[pick])
            y = torch.as_tensor(y_all[pick], dtype=torch.float64)
            if not self.warm and self.trained_on == 0:  # new heads: standardise on the first labels
                m.target_mean.fill_(float(y_all.mean()))
                m.target_std.fill_(float(y_all.std()) if len(y_all) > 1 and y_all.std() > 1e-9 else 1.0)
            target = (y - m.target_mean) / m.target_std
            params = [p for p in m.head.parameters()]
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=r.lr)
            m.train()
            with torch.random.fork_rng():
                torch.manual_seed(r.seed * 1009 + round_ * 31 + k)
                for _ in range(r.steps):
                    opt.zero_grad()
                    z = m.head_output(s, batch, n)
                    loss = torch.mean((z - target) ** 2)
                    loss.backward()
                    opt.step()
            m.eval()
            for p in params:
                p.requires_grad_(False)
        self.trained_on = len(idx_all)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(self.members):
            t = {f"head.{n}": v.detach().contiguous() for n, v in m.head.state_dict().items()}
            t["target_mean"] = m.target_mean.reshape(1).clone()
            t["target_std"] = m.target_std.reshape(1).clone()
            save_file(t, str(directory / f"member-{k}.safetensors"))

    def load(self, directory: Path, trained_on: int) -> None:
        from safetensors.torch import load_file

        for k, m in enumerate(self.members):
            t = load_file(str(directory / f"member-{k}.safetensors"))
            m.head.load_state_dict({n[5:]: v for n, v in t.items() if n.startswith("head.")})
            m.target_mean.fill_(float(t["target_mean"][0]))
            m.target_std.fill_(float(t["target_std"][0]))
        self.trained_on = trained_on


# ----------------------------------------------------------------------------------------------------- the engine


def settings_conflict(out: str | Path, recipe: CampaignRecipe) -> list[str]:
    """Settings of ``recipe`` that differ from the campaign already in ``out`` (empty: none there, or the same
    campaign; the budget, pool source and directory may differ)."""
    path = Path(out) / "state.json"
    if not path.is_file():
        return []
    old = json.loads(path.read_text()).get("recipe", {})
    new = json.loads(recipe.model_dump_json())
    skip = ("budget", "pool", "out")
    return sorted(k for k in new if k not in skip and old.get(k) != new.get(k))


def _pool_sha(names: Sequence[str], structures: Sequence) -> str:
    h = hashlib.sha256()
    for name, a in zip(names, structures, strict=True):
        h.update(name.encode())
        h.update(np.asarray(a.numbers, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(a.positions, dtype=float), 6).tobytes())
    return h.hexdigest()


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line and make it durable before returning (a kill after this loses nothing)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Campaign:
    """One campaign in ``recipe.out``. ``structures``/``names`` override ``recipe.pool``; ``labeller(i, atoms)``
    replaces the reference method (e.g. a lookup of precomputed values); ``features`` skips encoding."""

    def __init__(
        self,
        recipe: CampaignRecipe,
        structures: Sequence | None = None,
        names: Sequence[str] | None = None,
        labeller: Callable[[int, Any], float] | None = None,
        features: PoolFeatures | None = None,
        base_dir: str | Path | None = None,
        log: Callable[[str], None] | None = None,
        client: Any = None,
    ):
        self.recipe = recipe
        self.log = log or (lambda msg: None)
        self.client = client  # a Dask client (campaigns.cluster_client): a round's labels run as its tasks
        if structures is None:
            if recipe.pool is None:
                raise ValueError("the recipe has no pool and no structures were given")
            structures, names = load_pool(recipe.pool, base_dir)
        self.structures = list(structures)
        self.names = list(names) if names is not None else [f"c{i}" for i in range(len(self.structures))]
        if len(self.names) != len(self.structures):
            raise ValueError("names and structures differ in length")
        if len(self.structures) < 2:
            raise ValueError("a pool needs at least two candidates")
        if recipe.budget > len(self.structures):
            raise ValueError(f"the budget {recipe.budget} exceeds the pool ({len(self.structures)} candidates)")
        if labeller is None:
            from triscale.tools.calculators import canonical_method

            canonical_method(recipe.reference)  # unknown names refused before anything runs

            def labeller(i: int, atoms) -> float:
                return reference_value(atoms, recipe.objective, recipe.reference)

        self.labeller = labeller
        self.out = Path(recipe.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sha = _pool_sha(self.names, self.structures)
        self.state = self._load_state()
        fpath = self.out / "features.npz"
        if features is None and fpath.is_file() and self.state.get("features_sha") == self.sha:
            features = PoolFeatures.load(fpath)
        if features is None:
            t0 = time.perf_counter()
            features = encode_pool(self.structures, recipe.base)
            features.save(fpath)
            self.log(f"encoded {len(self.structures)} candidates in {time.perf_counter() - t0:.1f} s")
        if len(features) != len(self.structures):
            raise ValueError("the cached features do not match the pool")
        self.features = features
        self.state["features_sha"] = self.sha
        self._save_state()

    # ------------------------------------------------------------------ persistence
    def _load_state(self) -> dict:
        path = self.out / "state.json"
        recipe = json.loads(self.recipe.model_dump_json())
        if not path.is_file():
            return {"recipe": recipe, "pool_sha256": self.sha, "round": 0, "pending": [], "before": {}, "history": []}
        state = json.loads(path.read_text())
        if state.get("pool_sha256") != self.sha:
            raise ValueError(f"{self.out} holds a campaign on another pool; use a new out directory")
        diff = settings_conflict(self.out, self.recipe)
        if diff:
            raise ValueError(f"{self.out} holds a campaign with other settings ({', '.join(diff)}); use a new out")
        state["recipe"] = recipe  # a larger budget extends a finished campaign
        return state

    def _save_state(self) -> None:
        atomic_write_json(self.out / "state.json", self.state, indent=1)

    def labels(self) -> dict[int, float]:
        """Labels so far, pool index -> reference value (the first record of an index wins)."""
        out: dict[int, float] = {}
        for rec in read_jsonl(self.out / "labels.jsonl"):  # a torn line (a kill mid-write) is labelled again
            out.setdefault(int(rec["index"]), float(rec["value"]))
        return out

    # ------------------------------------------------------------------ rounds
    def _committee(self) -> HeadCommittee:
        c = HeadCommittee(self.recipe)
        done = self.state["history"]
        if done:
            c.load(self.out / "heads" / f"round-{len(done) - 1}", done[-1]["labels_spent"])
        return c

    def _calibration(self) -> float:
        """sigma scale: RMS of err/sigma over the latest 50 of the earlier rounds' new labels, each taken before it
        was trained on (1 with fewer than 3)."""
        z = [x for r in self.state["history"] for x in r.get("z", [])][-50:]
        return float(np.sqrt(np.mean(np.square(z)))) if len(z) >= 3 else 1.0

    def _choose(self, committee: HeadCommittee, labelled: dict[int, float], n: int, round_: int) -> list[int]:
        r = self.recipe
        free = np.array([i for i in range(len(self.structures)) if i not in labelled])
        rng = np.random.default_rng([r.seed, round_, 99])
        if r.acquisition == "random" or not committee.informed:
            return [int(i) for i in rng.choice(free, size=n, replace=False)]
        mu, sd = committee.predict(self.features, free)
        sd = sd * self._calibration()
        kind = r.acquisition
        if kind == "ei":  # expected improvement over the best label so far (not over the best mean)
            from scipy.stats import norm

            y = np.array(list(labelled.values())) if labelled else mu
            best = float(y.max() if r.goal == "maximize" else y.min())
            m = -mu if r.goal == "maximize" else mu  # minimise m
            b = -best if r.goal == "maximize" else best
            zz = np.where(sd > 1e-12, (b - m) / np.maximum(sd, 1e-12), 0.0)
            scores = np.where(sd > 1e-12, (b - m) * norm.cdf(zz) + sd * norm.pdf(zz), np.maximum(b - m, 0.0))
        else:
            scores = acquisition_scores(mu, sd, kind, r.goal, r.kappa)
        # ties (e.g. EI = 0 far from the best) are broken by the mean, then at random
        tiebreak = -mu if r.goal == "minimize" else mu
        order = np.lexsort((rng.random(len(free)), -tiebreak, -scores))
        return [int(free[j]) for j in order[:n]]

    def run(self, max_rounds: int | None = None) -> dict:
        """Run rounds until the budget is spent (or ``max_rounds`` more rounds); write and return the report."""
        r = self.recipe
        done_rounds = 0
        while max_rounds is None or done_rounds < max_rounds:
            labelled = self.labels()
            round_ = len(self.state["history"])
            if not self.state["pending"]:
                if len(labelled) >= r.budget:
                    break
                committee = self._committee()
                n = min(r.batch_size, r.budget - len(labelled))
                batch = self._choose(committee, labelled, n, round_)
                before = {}
                if committee.informed:
                    mu, sd = committee.predict(self.features, batch)
                    cal = self._calibration()
                    before = {str(i): [float(a), float(b), float(b * cal)] for i, a, b in zip(batch, mu, sd)}
                self.state.update(pending=batch, before=before)
                self._save_state()
            batch = [int(i) for i in self.state["pending"]]
            self.log(f"round {round_}: labelling {len(batch)} ({', '.join(self.names[i] for i in batch[:5])}...)")
            t0 = time.perf_counter()
            for i, value, seconds in self._label(i for i in batch if i not in labelled):
                rec = {"index": i, "name": self.names[i], "value": value, "round": round_}
                _append_line(self.out / "labels.jsonl", {**rec, "seconds": round(seconds, 4)})
                labelled[i] = value
            t_label = time.perf_counter() - t0
            record = self._round_record(round_, batch, labelled)
            t0 = time.perf_counter()
            committee = self._committee()
            idx = sorted(labelled)
            committee.fit(self.features, idx, [labelled[i] for i in idx], round_)
            committee.save(self.out / "heads" / f"round-{round_}")
            record.update(label_seconds=round(t_label, 3), train_seconds=round(time.perf_counter() - t0, 3))
            self.state["history"].append(record)
            self.state.update(pending=[], before={})
            self._save_state()
            atomic_write_text(self.out / "rounds.jsonl", "".join(json.dumps(h) + "\n" for h in self.state["history"]))
            mae = record.get("mae_before")
            self.log(
                f"round {round_}: {record['labels_spent']} labels, best {record['best_value']:.4g} "
                f"({record['best_name']})" + ("" if mae is None else f", MAE before training {mae:.3g}")
            )
            done_rounds += 1
        return self.report()

    def _label(self, indices) -> Iterator[tuple[int, float, float]]:
        """(index, value, seconds) for each index as its label is done: in this process one after another, or as
        tasks of ``self.client`` in the order they finish (each is persisted by the caller as it arrives, so a kill
        loses only the labels in flight)."""
        if self.client is None:
            for i in indices:
                yield i, *_timed_label(self.labeller, i, self.structures[i], self.names[i], self.recipe.reference)
            return
        from distributed import as_completed

        futures = {
            self.client.submit(
                _timed_label, self.labeller, i, self.structures[i], self.names[i], self.recipe.reference, pure=False
            ): i
            for i in indices
        }
        for future in as_completed(futures):
            yield futures[future], *future.result()

    def _round_record(self, round_: int, batch: list[int], labelled: dict[int, float]) -> dict:
        r = self.recipe
        sign = 1.0 if r.goal == "maximize" else -1.0
        best = max(labelled, key=lambda i: sign * labelled[i])
        rec: dict[str, Any] = {
            "round": round_,
            "labels_spent": len(labelled),
            "batch": [self.names[i] for i in batch],
            "values": [labelled[i] for i in batch],
            "best_value": labelled[best],
            "best_name": self.names[best],
        }
        before = self.state.get("before") or {}
        if before:
            y = np.array([labelled[i] for i in batch])
            mu = np.array([before[str(i)][0] for i in batch])
            sd_raw = np.array([before[str(i)][1] for i in batch])
            sd = np.array([before[str(i)][2] for i in batch])
            err = mu - y
            rec.update(
                predicted=mu.round(6).tolist(),
                sigma=sd.round(6).tolist(),
                mae_before=float(np.abs(err).mean()),
                rmse_before=float(np.sqrt((err**2).mean())),
                mean_sigma=float(sd.mean()),
                coverage90_before=float(np.mean(np.abs(err) <= 1.645 * sd)) if (sd > 0).all() else None,
                z=[float(e / s) for e, s in zip(err, sd_raw) if s > 1e-12],
            )
        return rec

    # ------------------------------------------------------------------ report
    def report(self, plot: bool = True) -> dict:
        r = self.recipe
        labelled = self.labels()
        sign = 1.0 if r.goal == "maximize" else -1.0
        best = sorted(labelled, key=lambda i: -sign * labelled[i])[: r.top_k]
        unit = OBJECTIVES[r.objective][0]
        proposal = []
        committee = self._committee()
        if committee.informed:
            free = [i for i in range(len(self.structures)) if i not in labelled]
            if free:
                mu, sd = committee.predict(self.features, free)
                sd = sd * self._calibration()
                for j in np.argsort(-sign * mu, kind="stable")[: r.top_k]:
                    proposal.append({"name": self.names[free[j]], "predicted": float(mu[j]), "sigma": float(sd[j])})
        rounds = [{k: v for k, v in h.items() if k != "z"} for h in self.state["history"]]
        report = {
            "name": r.name,
            "objective": r.objective,
            "unit": unit,
            "goal": r.goal,
            "reference": r.reference,
            "acquisition": r.acquisition,
            "pool_size": len(self.structures),
            "budget": r.budget,
            "labels_spent": len(labelled),
            "best": [{"name": self.names[i], "value": labelled[i]} for i in best],
            "proposal": proposal,
            "calibration_scale": self._calibration(),
            "rounds": rounds,
            "complete": len(labelled) >= r.budget and not self.state["pending"],
        }
        atomic_write_json(self.out / "report.json", report, indent=1)
        atomic_write_text(self.out / "report.md", _markdown(report))
        if plot and rounds:
            progress_plot(rounds, self.out / "progress.png", r.objective, unit)
            report["plot"] = str(self.out / "progress.png")
        return report


def _timed_label(labeller, i: int, atoms, name: str, reference: str) -> tuple[float, float]:
    """One label and the seconds it took; a failure names the candidate and the method."""
    t = time.perf_counter()
    try:
        value = float(labeller(i, atoms))
    except (ValueError, RuntimeError, ArithmeticError) as e:
        raise type(e)(f"labelling {name!r} with {reference} failed: {e}") from e
    if not math.isfinite(value):
        raise ValueError(f"the reference gave {value} for {name}")
    return value, time.perf_counter() - t


def _markdown(rep: dict) -> str:
    u = rep["unit"]
    lines = [
        f"# Campaign {rep['name']}",
        "",
        f"{rep['goal']} {rep['objective']} ({u}) over {rep['pool_size']} candidates; reference {rep['reference']}; "
        f"acquisition {rep['acquisition']}; {rep['labels_spent']}/{rep['budget']} labels spent.",
        "",
        "## Best candidates (reference values)",
        "",
        "| rank | candidate | value |",
        "|---:|---|---:|",
    ]
    lines += [f"| {k} | {b['name']} | {b['value']:.4f} |" for k, b in enumerate(rep["best"], 1)]
    lines += [
        "",
        "## Rounds (errors on each round's new labels before training on them)",
        "",
        "| round | labels | best | MAE | RMSE | mean sigma | 90% coverage |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(x):
        return "–" if x is None else f"{x:.3g}"

    for h in rep["rounds"]:
        lines.append(
            f"| {h['round']} | {h['labels_spent']} | {h['best_value']:.4f} | {f(h.get('mae_before'))} | "
            f"{f(h.get('rmse_before'))} | {f(h.get('mean_sigma'))} | {f(h.get('coverage90_before'))} |"
        )
    if rep["proposal"]:
        lines += ["", "## Proposal (unlabelled, by the final committee; calibrated sigma)", ""]
        lines += [f"- {p['name']}: {p['predicted']:.4f} ± {p['sigma']:.4f} {u}" for p in rep["proposal"]]
    return "\n".join(lines) + "\n"


def progress_plot(rounds: list[dict], path: Path, objective: str, unit: str) -> Path:
    """Best value found and the model's error on new labels (before training) against labels spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [h["labels_spent"] for h in rounds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(n, [h["best_value"] for h in rounds], "o-")
    a1.set_xlabel("labels spent")
    a1.set_ylabel(f"best {objective} found ({unit})")
    pts = [(h["labels_spent"], h["mae_before"]) for h in rounds if h.get("mae_before") is not None]
    if pts:
        a2.plot(*zip(*pts), "s-", color="C3", label="MAE on new labels (before training)")
        sig = [(h["labels_spent"], h["mean_sigma"]) for h in rounds if h.get("mean_sigma") is not None]
        a2.plot(*zip(*sig), "^--", color="C2", label="mean calibrated sigma")
        a2.legend(fontsize=7)
    a2.set_xlabel("labels spent")
    a2.set_ylabel(f"error ({unit})")
    fig.tight_layout()
    from io import BytesIO

    from triscale.common import atomic_write_bytes

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
