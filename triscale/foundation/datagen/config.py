"""Data-generation recipes (``configs/datagen/*.yaml``): the molecule and material domains and their seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FORMAT_VERSION",
    "MOLECULE_ELEMENTS",
    "SPLITS",
    "UNITS",
    "DatagenConfig",
    "MaterialConfig",
    "MoleculeConfig",
    "MoleculeDFTConfig",
    "load_config",
]

MOLECULE_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br")
UNITS = "eV,Angstrom"
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------- configuration
class MoleculeConfig(BaseModel):
    """Recipe of the molecule domain (GFN2-xTB labels)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    nci_molecules: int = Field(1650, ge=0, description="sampled (seeded) from the filtered NCI set")
    nci_skip: int = Field(
        0,
        ge=0,
        description="pass over the first N of the seeded NCI sample order: the molecules a recipe with the same seed "
        "and nci_molecules = N uses (so a second recipe adds only molecules the first one lacks)",
    )
    qm9_molecules: int = Field(
        0, ge=0, description="QM9 molecules (seeded sample of qm9pack) from their B3LYP geometry, GFN2-xTB labels"
    )
    include_g2: bool = True
    g2_open_shell: bool = Field(False, description="include g2 radicals (uhf from their magnetic moments)")
    max_heavy_atoms: int = Field(30, ge=1)
    elements: list[str] = Field(default_factory=lambda: list(MOLECULE_ELEMENTS))
    n_conformers: int = Field(2, ge=1, description="ETKDG conformers per molecule, each stored as a frame")
    n_rattles: int = Field(2, ge=0, description="Gaussian rattles of the conformers")
    rattle_sigma: tuple[float, float] = Field((0.02, 0.07), description="Å, sigma drawn uniformly per frame")
    relax_fraction: float = Field(0.4, ge=0, le=1, description="share of NCI molecules relaxed (g2: all)")
    relax_steps: int = Field(20, ge=1, description="BFGS steps of the GFN2-xTB relaxation at most")
    relax_frames: int = Field(2, ge=1, description="frames along the relaxation, the last included")
    md_fraction: float = Field(0.4, ge=0, le=1, description="share of molecules with a short MD run")
    md_temperature_K: tuple[float, float] = (500.0, 1200.0)
    md_steps: int = Field(20, ge=1)
    md_timestep_fs: float = Field(1.0, gt=0)
    md_frames: int = Field(2, ge=1)
    max_force: float = Field(20.0, gt=0, description="eV/Å; frames with a larger force component are skipped")
    molecules_per_shard: int = Field(20, ge=1)
    accuracy: float = Field(1.0, gt=0, description="tblite accuracy")


class MaterialConfig(BaseModel):
    """Recipe of the material domain (CHGNet labels)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    groups: list[str] | None = Field(None, description="ids from MATERIAL_PROTOTYPES; None: all of them")
    n_combinatorial: int = Field(
        0, ge=0, description="extra groups sampled (seeded) from combinatorial_material_specs(): chemical breadth"
    )
    model: Literal["0.3.0"] = "0.3.0"
    max_atoms: int = Field(64, ge=2)
    size_exponent: float = Field(0.5, description="supercell sizes N are drawn with weight N**-size_exponent")
    relax_steps: int = Field(100, ge=0)
    relax_fmax: float = Field(0.01, gt=0)
    n_strain: int = Field(10, ge=0, description="strained small cells (tiny rattle): E(V) and stress")
    strain_max_atoms: int = Field(16, ge=1)
    strain_max: float = Field(0.05, ge=0, description="largest isotropic strain")
    n_rattle: int = Field(36, ge=0, description="strained and rattled supercells")
    rattle_sigma: tuple[float, float] = Field((0.02, 0.12), description="Å")
    n_vacancy: int = Field(6, ge=0, description="supercells with one atom removed, rattled")
    md_runs: int = Field(1, ge=0)
    md_steps: int = Field(30, ge=1)
    md_frames: int = Field(3, ge=1, description="snapshots per MD run, evenly spaced")
    md_max_atoms: int = Field(32, ge=2)
    md_temperature_K: tuple[float, float] = (300.0, 1500.0)
    vacuum: float = Field(7.5, gt=0, description="Å of vacuum on each side of a slab (full pbc)")
    max_force: float = Field(20.0, gt=0)


class MoleculeDFTConfig(BaseModel):
    """Recipe of the energy-only ``molecule-dft`` domain: QM9 molecules with their B3LYP energies, no forces."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    molecules: int = Field(20_000, ge=1, description="seeded sample of QM9's 130,831 molecules")
    molecules_per_shard: int = Field(1000, ge=1)


class DatagenConfig(BaseModel):
    """A data-generation recipe, read from YAML (``configs/datagen/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 20261124
    out: str = "data/pretrain"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    molecule: MoleculeConfig = Field(default_factory=MoleculeConfig)
    material: MaterialConfig = Field(default_factory=MaterialConfig)
    molecule_dft: MoleculeDFTConfig = Field(default_factory=MoleculeDFTConfig)

    def recipe_hash(self) -> str:
        """Hash of everything that changes the data (not ``out``)."""
        payload = self.model_dump(mode="json", exclude={"out"})
        if not payload["material"]["n_combinatorial"]:  # added later: recipes without it keep their hash
            del payload["material"]["n_combinatorial"]
        for key in ("nci_skip", "qm9_molecules"):  # the same for these: at 0 they change nothing
            if not payload["molecule"][key]:
                del payload["molecule"][key]
        if not payload["molecule_dft"]["enabled"]:
            del payload["molecule_dft"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path) -> DatagenConfig:
    import yaml

    with open(path) as fh:
        return DatagenConfig(**(yaml.safe_load(fh) or {}))
