"""Shipped pretrained checkpoints (directories beside this file), loaded offline by name."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent


def available_checkpoints() -> list[str]:
    """Names of the checkpoints shipped with this installation."""
    return sorted(p.name for p in CHECKPOINT_DIR.iterdir() if (p / "config.json").is_file())


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint name or a ``save_pretrained`` directory, as a directory path."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    shipped = CHECKPOINT_DIR / str(name_or_path)
    if (shipped / "config.json").is_file():
        return shipped
    raise FileNotFoundError(
        f"no TriScale checkpoint {str(name_or_path)!r}: not a directory with config.json and not a shipped "
        f"checkpoint (shipped: {available_checkpoints() or 'none'})"
    )


def load_checkpoint(name_or_path: str | Path = "triscale-base", **kwargs):
    """Load a :class:`~triscale.foundation.FoundationModel` in eval mode; never touches the network."""
    from transformers.utils import logging as hf_logging

    from triscale.foundation.model import FoundationModel

    path = str(resolve_checkpoint(name_or_path))
    # A 54-tensor checkpoint loads in milliseconds: transformers' "Loading weights" bar is noise in CLI output.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = FoundationModel.from_pretrained(path, local_files_only=True, **kwargs)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return model.eval()
