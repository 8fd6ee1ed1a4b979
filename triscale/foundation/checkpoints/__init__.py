"""Shipped pretrained checkpoints (directories beside this file), loaded offline by name."""

from __future__ import annotations

from pathlib import Path

from triscale.common import find_checkpoint, shipped_names

CHECKPOINT_DIR = Path(__file__).resolve().parent


def available_checkpoints() -> list[str]:
    """Names of the checkpoints shipped with this installation."""
    return shipped_names(CHECKPOINT_DIR)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint name or a ``save_pretrained`` directory, as a directory path."""
    return find_checkpoint(name_or_path, CHECKPOINT_DIR, kind="TriScale checkpoint")


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
