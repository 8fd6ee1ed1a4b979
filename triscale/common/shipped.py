"""Shipped checkpoints: one lookup for every unit's ``checkpoints/`` folder (foundation models, Hamiltonian
heads, property heads, neural operators). A name is looked up among the shipped ones; anything else must be an
existing directory; an unknown name gets an error that lists what ships."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CheckpointNotFound", "find_checkpoint", "shipped_names"]


class CheckpointNotFound(FileNotFoundError):
    """Neither a shipped checkpoint name nor a checkpoint directory."""


def shipped_names(folder: str | Path, marker: str = "config.json") -> list[str]:
    """Names of the checkpoints shipped in ``folder`` (subdirectories holding ``marker``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / marker).is_file())


def find_checkpoint(
    name_or_path: str | Path, folder: str | Path, marker: str = "config.json", kind: str = "checkpoint"
) -> Path:
    """The directory of a saved checkpoint (a path) or of a shipped one (by name, from
    ``folder``); a path wins, as a directory the user points at should."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if (path / marker).is_file():
        return path
    shipped = Path(folder) / text
    if "/" not in text and "\\" not in text and (shipped / marker).is_file():
        return shipped
    names = shipped_names(folder, marker)
    raise CheckpointNotFound(
        f"No {kind} {text!r}: not a shipped name ({', '.join(names) or 'none shipped'}) and not a directory "
        f"containing {marker}."
    )
