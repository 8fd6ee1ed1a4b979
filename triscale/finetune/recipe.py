"""The fine-tuning recipe: one pydantic model, read from YAML (``configs/finetune/*.yaml``) or built by the CLI."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Method = Literal["lora", "heads", "full"]

# Learning rates when the recipe gives none: lora from benchmarks/finetune_defaults.py (1e-2 made the first epochs
# erratic and left the test force error of a 80-frame task worse than the base model; 3e-3 halved it), heads and full
# from benchmarks/finetune_curve.py.
DEFAULT_LR = {"lora": 3e-3, "heads": 1e-2, "full": 3e-3}


class LoraOptions(BaseModel):
    """HF PEFT ``LoraConfig`` options.

    ``target_modules``: ``"encoder"`` (every ``nn.Linear`` of the interaction and update blocks), ``"encoder+head"``
    (those plus the fine-tuned domain's energy head; the default), ``"all"`` (every ``nn.Linear``), or an explicit
    list of module names as printed by ``FoundationModel.linear_module_names()``.
    """

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Literal["encoder", "encoder+head", "all"] | list[str] = "encoder+head"


class ReplayOptions(BaseModel):
    """Replay of the base model's own predictions on pretraining-like structures, against forgetting.

    ``source``: a datagen output directory / extxyz / dataset to sample from; ``builtin``: a built-in set of rattled
    g2 molecules and bulk cells; ``None``: the largest ``data/pretrain*`` datagen output if present, else built-in.
    ``n_structures`` are picked by farthest
    point sampling in the base model's invariant feature space; ``per_batch`` of them join every batch, their
    loss multiplied by ``weight``.
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    source: str | None = None
    n_structures: int = Field(32, ge=1)
    per_batch: int = Field(2, ge=1)
    weight: float = Field(0.2, ge=0)
    candidates: int = Field(400, ge=1, description="structures read from the source before sampling")


class LossOptions(BaseModel):
    """Weights of the squared errors: energy per atom (eV/atom), forces (eV/Å), stress (eV/Å³)."""

    model_config = ConfigDict(extra="forbid")
    energy: float = Field(10.0, ge=0)
    forces: float = Field(1.0, ge=0)
    stress: float = Field(100.0, ge=0)


class PropertyOptions(BaseModel):
    """A new scalar head (e.g. a HOMO-LUMO gap) trained on the frozen (``encoder: frozen``) or LoRA-adapted encoder.

    ``key``: the extxyz ``info`` key (or CSV column) holding the value; ``pooling``: ``sum`` for extensive
    properties, ``mean`` for intensive ones, ``attention`` for intensive ones set by part of the structure (a
    learned softmax weight per atom, e.g. a HOMO-LUMO gap); ``unit`` is recorded, never converted.
    """

    model_config = ConfigDict(extra="forbid")
    key: str
    pooling: Literal["mean", "sum", "attention"] = "mean"
    encoder: Literal["frozen", "lora"] = "frozen"
    unit: str = ""
    hidden: int = Field(64, ge=1)


class FinetuneRecipe(BaseModel):
    """Everything a fine-tuning run needs; ``triscale finetune`` flags override these fields."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="extxyz / ASE db / saved HF dataset; or a CSV (file,value) for a property")
    out: str = Field(description="output directory (adapter, metadata, metrics, plots, checkpoints)")
    base: str = Field("triscale-base", description="shipped checkpoint name or save_pretrained directory")
    method: Method = "lora"
    domain: str | None = Field(None, description="model domain; default: material if periodic, else molecule")
    energy_unit: Literal["eV", "meV", "kcal/mol", "kJ/mol", "Hartree", "Ry"] = "eV"
    length_unit: Literal["Angstrom", "Bohr", "nm"] = "Angstrom"
    e0: Literal["refit", "keep"] = "refit"
    lora: LoraOptions = Field(default_factory=LoraOptions)
    replay: ReplayOptions = Field(default_factory=ReplayOptions)
    loss: LossOptions = Field(default_factory=LossOptions)
    property: PropertyOptions | None = None
    epochs: int = Field(200, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps in total")
    batch_size: int = Field(8, ge=1)
    lr: float | None = Field(None, gt=0, description="default per method: lora 3e-3, heads 1e-2, full 3e-3")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule (short warmup)")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(10.0, gt=0)
    patience: int | None = Field(
        30, ge=1, description="epochs without validation improvement before stopping; None: no early stopping"
    )
    select_on: Literal["forces", "energy", "loss"] = Field(
        "forces",
        description="what picks the exported epoch on validation: the force MAE (the energy MAE where the data "
        "have no forces), the energy-per-atom MAE, or the weighted loss (loss weights times squared RMSEs)",
    )
    ema_decay: float | None = Field(
        None, ge=0, lt=1, description="EMA of the trainable weights (evaluated, selected and exported); None: off"
    )
    split: Literal["random", "data"] = Field(
        "random", description="random: val_fraction of the data, no test set; data: the data's split column"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="validation share of a random split")
    min_val: int = Field(
        0,
        ge=0,
        description="a random split keeps at least this many validation structures (never more than a quarter "
        "of the data); 0: val_fraction alone",
    )
    min_structures: int = Field(10, ge=2)
    committee: int = Field(1, ge=1, description="K > 1: K adapters (seeds, bootstrap samples) for uncertainty")
    bootstrap: bool = True
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints (state/ in the output)")
    seed: int = 0
    num_threads: int = Field(1, ge=1)
    progress: bool = True
    plots: bool = True

    @builtins.property  # the field `property` shadows the builtin in this class body
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


def load_recipe(path: str | Path, **overrides) -> FinetuneRecipe:
    """A recipe from YAML with keyword overrides (``None`` values are ignored); validated by pydantic."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return FinetuneRecipe(**data)
