"""The committed pretraining data archives match their manifests (sha256 of the archive, byte count)."""

import hashlib
import json
from pathlib import Path

import pytest

ARCHIVES = Path(__file__).resolve().parents[2] / "datasets" / "pretrain-v2"


@pytest.mark.parametrize("manifest", sorted(ARCHIVES.glob("MANIFEST*.json")), ids=lambda p: p.name)
def test_archive_matches_its_manifest(manifest):
    m = json.loads(manifest.read_text())
    archive = ARCHIVES / m["archive"]
    data = archive.read_bytes()
    assert len(data) == m["bytes"] and hashlib.sha256(data).hexdigest() == m["sha256"]
    assert m["files_sha256"] and all(name.startswith(Path(m["unpacks_to"]).name + "/") for name in m["files_sha256"])
