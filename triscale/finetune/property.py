"""Property fine-tuning: a new scalar head (HOMO-LUMO gap, solubility, ...) on the frozen or LoRA-adapted encoder.

The head is an MLP on each atom's invariant (scalar) features, pooled over atoms by mean or attention (intensive)
or sum (extensive), on a standardised target. A property adapter directory holds ``property_head.safetensors`` (head
weights and target statistics), PEFT files when the encoder was LoRA-adapted, and ``triscale_adapter.json``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from triscale.finetune import adapters as A
from triscale.finetune import data as D
from triscale.finetune.loop import LoopSettings, TrainLoop, graphs_sha256
from triscale.foundation import keys as K
from triscale.foundation.layers import MLP, scatter_sum

HEAD_FILE = "property_head.safetensors"
#: ``sum``: extensive; ``mean``: intensive, every atom alike; ``attention``: intensive, a learned softmax weight per
#: atom (a property set by one part of the molecule, such as a HOMO-LUMO gap by its chromophore)
POOLINGS = ("mean", "sum", "attention")


class PropertyModel(nn.Module):
    """A scalar property from a (possibly LoRA-adapted) TriScale encoder and a new pooled MLP head.

    ``forward(graph)`` returns the property per structure (B,) in float64, in the unit of the training data.
    """

    def __init__(
        self,
        model,
        domain_index: int,
        hidden: int = 64,
        pooling: str = "mean",
        name: str = "property",
        unit: str = "",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.model = model
        self.domain_index = int(domain_index)
        self.pooling = pooling
        self.name = name
        self.unit = unit
        # attention pooling: a second output per atom is its (softmax) weight in the structure's average
        self.head = MLP(A.unwrap(model).config.hidden_channels, hidden, 2 if pooling == "attention" else 1)
        self.register_buffer("target_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_std", torch.ones((), dtype=torch.float64))

    @property
    def config(self):
        return A.unwrap(self.model).config

    def features(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom scalar features (N, F) of the encoder."""
        base = A.unwrap(self.model)
        dtype = base.embedding.weight.dtype
        s, _ = base.encode(graph, graph[K.POSITIONS].to(dtype), graph[K.CELL].to(dtype))
        return s

    def head_output(self, s: torch.Tensor, batch: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """Standardised pooled head output (B,) from features ``s``."""
        out = self.head(s).to(torch.float64)
        n_structures = num_atoms.shape[0]
        if self.pooling == "attention":
            value, logit = out[:, 0], out[:, 1]
            top = torch.full((n_structures,), -torch.inf, dtype=logit.dtype, device=logit.device)
            top = top.scatter_reduce(0, batch, logit.detach(), reduce="amax")  # per-structure max, for stability
            weight = torch.exp(logit - top[batch])
            return scatter_sum(weight * value, batch, n_structures) / scatter_sum(weight, batch, n_structures)
        pooled = scatter_sum(out.squeeze(-1), batch, n_structures)
        return pooled / num_atoms.to(torch.float64) if self.pooling == "mean" else pooled

    def denormalize(self, z: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        if self.pooling == "sum":  # extensive: the standardised target is per atom
            return z * self.target_std + self.target_mean * num_atoms.to(torch.float64)
        return z * self.target_std + self.target_mean

    def from_features(self, s: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """The property (B,) in the training data's unit from the encoder features ``s`` of ``graph``."""
        return self.denormalize(self.head_output(s, graph[K.BATCH], graph[K.NUM_ATOMS]), graph[K.NUM_ATOMS])

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.from_features(self.features(graph), graph)

    @torch.no_grad()
    def predict(self, structures: Sequence, batch_size: int = 32) -> np.ndarray:
        """The property of each ASE ``Atoms`` in ``structures`` (float64 array, the training data's unit)."""
        self.eval()
        return np.concatenate(
            [self(batch).numpy() for batch in structure_batches(structures, self.config, self.domain_index, batch_size)]
            or [np.zeros(0)]
        )


def structure_batches(structures: Sequence, config, domain_index: int, batch_size: int):
    """Collated graphs of ASE structures (checked against the model's elements), ``batch_size`` at a time."""
    from triscale.foundation.graph import atoms_to_graph, check_model_input, collate

    structures = list(structures)
    for start in range(0, len(structures), batch_size):
        graphs = []
        for atoms in structures[start : start + batch_size]:
            check_model_input(atoms, config.supported_elements)
            graphs.append(atoms_to_graph(atoms, config.cutoff, domain_index))
        yield collate(graphs)


class PropertyCommittee:
    """K property heads trained on bootstrap samples: the mean is the prediction, the spread its uncertainty.

    Members on a frozen encoder share one copy of it, so the encoder runs once per batch however large K is.
    ``conformal`` (calibrated on the validation split when the committee was trained) turns the committee's
    standard deviation into a split-conformal interval: ``mean ± q (std + eps)``.
    """

    def __init__(
        self,
        members: Sequence[PropertyModel],
        conformal: dict | None = None,
        name: str | None = None,
        elements: Sequence[str] | None = None,
        periodic: bool | None = None,
    ):
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = list(members)
        first = self.members[0]
        self.name = name or first.name
        self.unit = first.unit
        self.config = first.config
        self.domain_index = first.domain_index
        #: elements of the training data (None: unknown); outside them the heads extrapolate blindly
        self.elements = None if elements is None else sorted(elements)
        #: whether periodic structures were in the training data (None: unknown)
        self.periodic = periodic
        # one encoder pass serves every head when all members share the same (frozen) encoder object
        self.shared_encoder = all(m.model is first.model for m in self.members)
        self.conformal = None
        if conformal:
            from triscale.uncertainty import SplitConformal

            self.conformal = SplitConformal.from_dict(conformal)

    def __len__(self) -> int:
        return len(self.members)

    def unsupported(self, atoms) -> str | None:
        """Why the heads should not predict ``atoms`` (None when they may): a periodic cell for heads trained on
        molecules only, or elements absent from the training data."""
        if self.periodic is False and atoms.pbc.any():
            return f"the {self.name} heads were trained on molecules, not periodic cells"
        outside = sorted(set(atoms.get_chemical_symbols()) - set(self.elements or ()))
        if self.elements is not None and outside:
            return f"the {self.name} heads have no training data with {', '.join(outside)}"
        return None

    @torch.no_grad()
    def member_predictions(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """(K, B) predictions of every member for one collated batch."""
        if not self.shared_encoder:
            return np.stack([m(batch).numpy() for m in self.members])
        s = self.members[0].features(batch)
        return np.stack([m.from_features(s, batch).numpy() for m in self.members])

    def predict(self, structures: Sequence, batch_size: int = 32, return_std: bool = False):
        """Committee mean per structure (float64, the training data's unit); with ``return_std`` also the
        members' standard deviation."""
        for m in self.members:
            m.eval()
        batches = structure_batches(structures, self.config, self.domain_index, batch_size)
        preds = [self.member_predictions(b) for b in batches]
        k = np.concatenate(preds, axis=1) if preds else np.zeros((len(self), 0))
        return (k.mean(0), k.std(0)) if return_std else k.mean(0)

    def interval(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibrated conformal interval (``None`` when the committee carries no calibration)."""
        return None if self.conformal is None else self.conformal.interval(mean, std)


def _target_stats(graphs: list[dict], pooling: str) -> tuple[float, float]:
    y = np.array([float(g[D.PROPERTY][0]) for g in graphs])
    if pooling == "sum":
        y = y / np.array([float(g[K.NUM_ATOMS][0]) for g in graphs])
    std = float(y.std())
    return float(y.mean()), std if std > 1e-12 else 1.0


def property_errors(ref: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of predicted scalar properties."""
    err = pred - ref
    ss = float(((ref - ref.mean()) ** 2).sum())
    return {
        "n_structures": int(len(ref)),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1 - (err**2).sum() / ss) if ss > 0 else None,
    }


def _base_record(recipe, base, base_dir) -> dict:
    return {
        "name": recipe.base,
        "path": str(base_dir),
        "sha256": A.checkpoint_sha256(base_dir),
        "fingerprint": A.state_fingerprint(base),
    }


def _property_record(opts) -> dict:
    return {"key": opts.key, "unit": opts.unit, "pooling": opts.pooling, "encoder": opts.encoder, "hidden": opts.hidden}


def train_property(
    recipe,
    base,
    base_dir,
    data: dict,
    console,
    resume: bool,
    out: Path | None = None,
    seed: int | None = None,
    bootstrap: bool = False,
) -> dict:
    """Train a property head (recipe.property) on the frozen or LoRA-adapted encoder into ``out`` (default
    ``recipe.out``); ``bootstrap``: on a bootstrap sample of the training split (a committee member). Returns the
    metrics."""
    from triscale.foundation.graph import collate, graph_to

    opts = recipe.property
    out = Path(recipe.out) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = recipe.seed if seed is None else seed
    d = data["domain_index"]
    graphs = data["graphs"]
    split = dict(data["split"])
    if bootstrap:
        split["train"] = D.bootstrap(split["train"], seed)
    train = [graphs[i] for i in split["train"]]
    val = [graphs[i] for i in split["val"]]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if opts.encoder == "lora":
            lora = (
                recipe.lora.model_copy(update={"target_modules": "encoder"})
                if recipe.lora.target_modules in ("encoder+head", "all")
                else recipe.lora
            )
            encoder = A.prepare_model(base, "lora", d, lora)
        else:
            encoder = copy.deepcopy(base)
            for p in encoder.parameters():
                p.requires_grad_(False)
        model = PropertyModel(encoder, d, opts.hidden, opts.pooling, opts.key, opts.unit)
    mean, std = _target_stats(train, opts.pooling)
    model.target_mean.fill_(mean)
    model.target_std.fill_(std)
    dtype = next(base.parameters()).dtype
    frozen = opts.encoder == "frozen"
    cache: dict[int, torch.Tensor] = {}

    def features(index_graphs: list[tuple[int, dict]]):
        batch = graph_to(collate([g for _, g in index_graphs]), dtype)
        if not frozen:
            return model.features(batch), batch
        missing = [(i, g) for i, g in index_graphs if i not in cache]
        if missing:  # frozen encoder: each structure's features are computed once
            with torch.no_grad():
                mb = graph_to(collate([g for _, g in missing]), dtype)
                s = model.features(mb)
                for j, (i, _) in enumerate(missing):
                    cache[i] = s[mb[K.BATCH] == j]
        return torch.cat([cache[i] for i, _ in index_graphs]), batch

    def predict(indices: list[int]) -> np.ndarray:
        model.eval()
        values = []
        with torch.no_grad():
            for start in range(0, len(indices), 64):
                chunk = [(i, graphs[i]) for i in indices[start : start + 64]]
                s, batch = features(chunk)
                values.append(model.from_features(s, batch).numpy())
        return np.concatenate(values)

    def targets(indices: list[int]) -> np.ndarray:
        return np.array([float(graphs[i][D.PROPERTY][0]) for i in indices])

    loop = TrainLoop(
        model,
        out,
        LoopSettings.from_recipe(recipe),
        seed=seed,
        steps_per_epoch=math.ceil(len(train) / recipe.batch_size),
        data_sha256=graphs_sha256(train, val),
        console=console,
    )
    console.print(
        f"[bold]property[/] {opts.key!r} ({opts.pooling} pooling, {opts.encoder} encoder): "
        f"{sum(p.numel() for p in loop.params):,} trainable parameters, {len(train)} train / {len(val)} val"
    )
    train_idx = split["train"]

    def batches(generator: torch.Generator):
        order = torch.randperm(len(train_idx), generator=generator).tolist()
        for start in range(0, len(order), recipe.batch_size):
            yield [(train_idx[j], graphs[train_idx[j]]) for j in order[start : start + recipe.batch_size]]

    def loss(chunk: list[tuple[int, dict]]):
        s, batch = features(chunk)
        z = model.head_output(s, batch[K.BATCH], batch[K.NUM_ATOMS])
        y = batch[D.PROPERTY]
        if opts.pooling == "sum":
            target = (y / batch[K.NUM_ATOMS].to(torch.float64) - model.target_mean) / model.target_std
            z = z / batch[K.NUM_ATOMS].to(torch.float64)
        else:
            target = (y - model.target_mean) / model.target_std
        return torch.mean((z - target) ** 2), {}

    def evaluate() -> dict | None:
        if not val:
            return None
        vm = property_errors(targets(split["val"]), predict(split["val"]))
        return {"val_property_mae": vm["mae"], "val_loss": vm["rmse"] ** 2}

    def describe(row: dict) -> str:
        return f"val MAE {row['val_property_mae']:.4g} {opts.unit}" if "val_property_mae" in row else ""

    progress = loop.fit(batches, loss, evaluate, resume=resume, evaluate_start=False, describe=describe)
    # errors on the data's splits (for a bootstrap member: the whole training split, not its resample)
    splits = data["split"]
    preds = {s: (targets(splits[s]), predict(splits[s])) for s in ("train", "val", "test") if splits[s]}
    metrics = {
        "property": opts.key,
        "unit": opts.unit,
        "pooling": opts.pooling,
        "encoder": opts.encoder,
        "epochs": progress["epoch"],
        "best_epoch": progress["best_epoch"],
        "stop_reason": progress["stopped"],
        "train_seconds": time.perf_counter() - loop.t0,
        **{s: property_errors(*p) for s, p in preds.items()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_property_model(
        model,
        out,
        {
            "method": "property",
            "domain": data["domain"],
            "base": _base_record(recipe, base, base_dir),
            "property": _property_record(opts),
            "data": data["summary"],
            "metrics": metrics,
            "recipe": recipe.model_dump(),
        },
    )
    if recipe.plots:
        from triscale.finetune.plots import property_parity_plot

        property_parity_plot(preds, out / "parity.png", opts.key, opts.unit)
    console.print(
        f"[green]done[/] {out}: "
        + ", ".join(f"{s} MAE {m['mae']:.4g} {opts.unit}" for s, m in metrics.items() if isinstance(m, dict))
    )
    return metrics


def save_property_model(model: PropertyModel, out_dir: str | Path, metadata: dict) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if A.is_peft(model.model):
        model.model.save_pretrained(str(out))
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    tensors["target_mean"] = model.target_mean.detach().cpu().reshape(1)
    tensors["target_std"] = model.target_std.detach().cpu().reshape(1)
    save_file(tensors, str(out / HEAD_FILE))
    meta = {"format": A.FORMAT, "format_version": A.FORMAT_VERSION, **metadata}
    (out / A.META_FILE).write_text(json.dumps(meta, indent=1))
    return out


def load_property_model(
    adapter_dir: str | Path, base=None, check_base: bool = True
) -> PropertyModel | PropertyCommittee:
    """A :class:`PropertyModel` from a property adapter directory, or a :class:`PropertyCommittee` from a committee
    directory (``committee: K``); a shipped name such as ``gfn2-gap`` also works. ``base`` defaults to the
    checkpoint recorded in the metadata."""
    adapter_dir = resolve_property_dir(adapter_dir)
    meta = A.read_metadata(adapter_dir)
    if not meta.get("property"):
        raise ValueError(f"{adapter_dir} is not a property adapter (method {meta.get('method')!r})")
    if base is None:
        path = meta["base"].get("path")
        base, _ = A.load_base(path if path and Path(path).is_dir() else meta["base"]["name"])
    if check_base:
        A.check_base_matches(base, meta, adapter_dir)
    if not meta.get("committee"):
        return _load_member(adapter_dir, meta, base)
    shared = copy.deepcopy(A.unwrap(base))  # frozen members share one encoder
    members = []
    for name in meta["committee"]:
        member_meta = A.read_metadata(adapter_dir / name)
        frozen = member_meta["property"]["encoder"] == "frozen"
        members.append(_load_member(adapter_dir / name, member_meta, base, shared if frozen else None))
    data = meta.get("data", {})
    return PropertyCommittee(
        members,
        meta.get("conformal"),
        name=meta["property"]["key"],
        elements=data.get("elements"),
        periodic=None if "periodic" not in data else bool(data["periodic"]),
    )


def _load_member(adapter_dir: Path, meta: dict, base, encoder=None) -> PropertyModel:
    from safetensors.torch import load_file

    prop = meta["property"]
    encoder = copy.deepcopy(A.unwrap(base)) if encoder is None else encoder
    if prop["encoder"] == "lora":
        from peft import PeftModel

        encoder = PeftModel.from_pretrained(encoder, str(adapter_dir))
    domain_index = A.unwrap(encoder).config.domain_index(meta["domain"])
    model = PropertyModel(encoder, domain_index, prop["hidden"], prop["pooling"], prop["key"], prop.get("unit", ""))
    tensors = load_file(str(adapter_dir / HEAD_FILE))
    model.head.load_state_dict({k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")})
    with torch.no_grad():
        model.target_mean.fill_(float(tensors["target_mean"][0]))
        model.target_std.fill_(float(tensors["target_std"][0]))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def train_property_committee(recipe, base, base_dir, data: dict, console, resume: bool) -> dict:
    """``committee: K`` property heads, each on a bootstrap sample with its own seed, then the committee's metrics,
    its calibration (Spearman of std vs error) and a split-conformal interval calibrated on the validation split."""
    out = Path(recipe.out)
    members = []
    for k in range(recipe.committee):
        console.print(f"[bold]committee member {k + 1}/{recipe.committee}[/]")
        members.append(
            train_property(
                recipe,
                base,
                base_dir,
                data,
                console,
                resume,
                out=out / f"member-{k}",
                seed=recipe.seed + 1000 * (k + 1),
                bootstrap=recipe.bootstrap,
            )
        )
    return _finish_property_committee(recipe, base, base_dir, data, out, members, console)


def committee_errors(ref: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    """Errors of the committee mean and how well its spread ranks them."""
    from scipy.stats import spearmanr

    err = np.abs(mean - ref)
    return {
        **property_errors(ref, mean),
        "mean_std": float(std.mean()),
        "spearman_std_error": float(spearmanr(std, err).statistic) if len(err) > 2 else None,
    }


def _finish_property_committee(recipe, base, base_dir, data, out: Path, members: list[dict], console) -> dict:
    from triscale.foundation.graph import collate, graph_to
    from triscale.uncertainty import calibrate_committee

    opts = recipe.property
    names = [f"member-{k}" for k in range(len(members))]
    meta = {
        "format": A.FORMAT,
        "format_version": A.FORMAT_VERSION,
        "method": "property",
        "domain": data["domain"],
        "base": _base_record(recipe, base, base_dir),
        "property": _property_record(opts),
        "data": data["summary"],
        "recipe": recipe.model_dump(),
        "committee": names,
    }
    (out / A.META_FILE).write_text(json.dumps(meta, indent=1))
    committee = load_property_model(out, base=base)
    dtype = next(base.parameters()).dtype
    graphs = data["graphs"]

    def predict(indices: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = [
            committee.member_predictions(graph_to(collate([graphs[i] for i in indices[s : s + 64]]), dtype))
            for s in range(0, len(indices), 64)
        ]
        k = np.concatenate(k, axis=1)
        ref = np.array([float(graphs[i][D.PROPERTY][0]) for i in indices])
        return ref, k.mean(0), k.std(0)

    metrics: dict = {"property": opts.key, "unit": opts.unit, "committee": len(members), "members": members}
    preds = {s: predict(data["split"][s]) for s in ("train", "val", "test") if data["split"][s]}
    for split, (ref, mean, std) in preds.items():
        metrics[split] = committee_errors(ref, mean, std)
    if "val" in preds:
        ref, mean, std = preds["val"]
        conformal = calibrate_committee(mean, std, ref, alpha=0.1, meta={"calibrated_on": "val"})
        meta["conformal"] = conformal.to_dict()
        if "test" in preds:
            ref_t, mean_t, std_t = preds["test"]
            metrics["test_conformal"] = {
                **conformal.coverage_report(mean_t, ref_t, std_t),
                "mean_half_width": float(conformal.half_width(std_t).mean()),
            }
    meta["metrics"] = {k: v for k, v in metrics.items() if k != "members"}
    (out / A.META_FILE).write_text(json.dumps(meta, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if recipe.plots:
        from triscale.finetune.plots import property_parity_plot

        property_parity_plot(
            {s: (ref, mean) for s, (ref, mean, _) in preds.items()}, out / "parity.png", opts.key, opts.unit
        )
    console.print(
        f"[green]committee[/] {out}: "
        + ", ".join(
            f"{s} MAE {metrics[s]['mae']:.4g} {opts.unit} (Spearman {metrics[s]['spearman_std_error']})" for s in preds
        )
    )
    return metrics


#: Property heads that ship inside the package (``triscale/finetune/checkpoints/NAME``).
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


def shipped_properties() -> list[str]:
    """Names of the property heads shipped with the package (e.g. ``gfn2-gap``)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / A.META_FILE).is_file())


def resolve_property_dir(name_or_dir: str | Path) -> Path:
    """A property adapter directory from a shipped name (``gfn2-gap``) or a path."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if (SHIPPED_DIR / str(name_or_dir)).is_dir():
        return SHIPPED_DIR / str(name_or_dir)
    raise FileNotFoundError(
        f"no property model {str(name_or_dir)!r}: not a directory, and the shipped ones are "
        f"{', '.join(shipped_properties()) or 'none'}"
    )


def export_property_model(src: str | Path, dest: str | Path) -> Path:
    """Copy a trained property model (single or committee) to ``dest`` without its training state, plots or the
    local path of its base: what is needed to load it elsewhere (the base is then found by its recorded name and
    checked by its fingerprint), e.g. to ship it in ``triscale/finetune/checkpoints``."""
    import shutil

    src, dest = Path(src), Path(dest)
    meta = A.read_metadata(src)
    dest.mkdir(parents=True, exist_ok=True)
    for name in meta.get("committee") or []:
        export_property_model(src / name, dest / name)
    meta["base"] = {**meta["base"], "path": None}
    (dest / A.META_FILE).write_text(json.dumps(meta, indent=1))
    for f in (HEAD_FILE, "adapter_config.json", "adapter_model.safetensors"):
        if (src / f).is_file():
            shutil.copy(src / f, dest / f)
    return dest
