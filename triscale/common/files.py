"""Atomic file writes (a reader sees the old file or the new one, never half of one), append-only JSON-lines
logs read back after a kill, and file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "file_sha256", "read_jsonl_by"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file in the same directory and ``os.replace``.

    The temporary name is unique per writer, so concurrent writers never share (and corrupt) one temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, **kwargs) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of an append-only JSON-lines log (a resumable job's labels), in order; a line that does not
    parse (cut by a kill mid-write) is skipped, so its record is computed again. No file: empty."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_jsonl_by(path: str | Path, key: str) -> dict[int, dict[str, Any]]:
    """:func:`read_jsonl` by the records' integer ``key`` (a later record of a key replaces an earlier one)."""
    return {int(row[key]): row for row in read_jsonl(path)}


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (weights and datasets can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
