"""Helpers shared by every unit, below all of them in the layering: atomic file writes, file hashes, lazy
package exports and shipped-checkpoint lookup. Import-light (standard library only)."""

from triscale.common.files import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256
from triscale.common.lazy import lazy_exports
from triscale.common.shipped import CheckpointNotFound, find_checkpoint, shipped_names

VERSION = "0.1.0"

__all__ = [
    "VERSION",
    "CheckpointNotFound",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "find_checkpoint",
    "lazy_exports",
    "shipped_names",
]
