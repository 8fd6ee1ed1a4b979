"""``triscale finetune``: flags and/or a YAML recipe -> a validated :class:`FinetuneRecipe` -> a run."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def build_recipe(config: Path | None = None, **flags):
    """Recipe from YAML (if given) with CLI flags on top; nested options (rank, replay, property) merged."""
    import yaml

    from triscale.finetune.recipe import FinetuneRecipe

    data = yaml.safe_load(Path(config).read_text()) if config else {}
    data = data or {}
    if flags.get("rank") is not None:
        data.setdefault("lora", {})["rank"] = flags.pop("rank")
    flags.pop("rank", None)
    if flags.get("replay") is not None:
        data.setdefault("replay", {})["enabled"] = flags.pop("replay")
    flags.pop("replay", None)
    if flags.get("property_key") is not None:
        data.setdefault("property", {})["key"] = flags.pop("property_key")
    flags.pop("property_key", None)
    data.update({k: v for k, v in flags.items() if v is not None})
    missing = [k for k in ("data", "out") if not data.get(k)]
    if missing:
        raise ValueError(f"missing {' and '.join('--' + m for m in missing)} (give them as flags or in --config)")
    return FinetuneRecipe(**data)


def run_finetune(config=None, fresh: bool = False, quiet: bool = False, **flags) -> None:
    import typer
    from pydantic import ValidationError

    from triscale.finetune.data import DatasetError
    from triscale.finetune.loop import LaunchError, ResumeError, TrainingDiverged

    try:
        recipe = build_recipe(config, **flags)
    except (ValidationError, ValueError) as err:
        typer.echo(f"error: invalid fine-tuning recipe:\n{err}", err=True)
        raise typer.Exit(2) from None
    if quiet:
        recipe = recipe.model_copy(update={"progress": False})
    from triscale.finetune.trainer import finetune

    try:
        metrics = finetune(recipe, resume=not fresh)
    except (DatasetError, FileNotFoundError, LaunchError, ResumeError, TrainingDiverged) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if "rank" in metrics:  # another process of an accelerate launch: the main one prints the summary
        return
    summary = {k: v for k, v in metrics.items() if k != "members"}
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    typer.echo(f"adapter written to {recipe.out}", err=True)
