"""Seeds and train/val/test splits from hashes: stable across processes, Python versions and worker counts."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["assign_splits", "derive_seed", "hash_unit", "split_of"]


# -------------------------------------------------------------------------------------- seeds & splits
def hash_unit(*parts: Any) -> float:
    """A number in [0, 1) from a hash of ``parts``: stable across processes and Python versions."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF  # RDKit wants a non-negative int32


def split_of(group: str, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """train/val/test of a group from a seeded hash (the same group always lands in the same split)."""
    total = sum(fractions)
    u = hash_unit("split", seed, group) * total
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def assign_splits(
    groups: dict[str, set[str]], seed: int, fractions: tuple[float, float, float]
) -> tuple[dict[str, str], int]:
    """Split per group; a val/test group with an element no train group has is moved to train.

    ``groups`` maps group -> its elements (one domain). Returns (group -> split, number of groups moved).
    """
    split = {g: split_of(g, seed, fractions) for g in groups}
    covered = set().union(*(groups[g] for g in groups if split[g] == "train")) if groups else set()
    moved = 0
    # deterministic order: by hash, so the groups moved are the same ones every time
    for g in sorted((g for g in groups if split[g] != "train"), key=lambda g: hash_unit("order", seed, g)):
        if not groups[g] <= covered:
            split[g] = "train"
            covered |= groups[g]
            moved += 1
    return split, moved
