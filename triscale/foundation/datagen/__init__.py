"""Reference data for pretraining: ``triscale datagen``.

Two domains, each labelled by a real simulator, and an energy-only third:

* ``molecule`` - molecules from RDKit's shipped NCI set (``Data/NCI/first_5K.smi``) and
  ``ase.collections.g2``; 3D conformers by RDKit ETKDG; off-equilibrium frames (ETKDG geometries, rattles,
  a few steps along a GFN2-xTB relaxation, short high-temperature GFN2-xTB Langevin MD); labelled with
  GFN2-xTB through tblite's ASE calculator: energy (eV), forces (eV/Å), dipole (e·Å: tblite multiplies its
  atomic-unit dipole by Bohr, so despite its docstring the value is e·Å, not Debye) and Mulliken charges (e).
* ``material`` - periodic prototypes built with ``ase.build`` (elemental, binary, perovskite, random alloys,
  fcc(111)/(100) slabs with vacuum, vacancies), relaxed with CHGNet, then strained, rattled, with a vacancy,
  or sampled by short CHGNet Langevin MD; labelled by CHGNet (model 0.3.0 weights): energy (eV), forces
  (eV/Å) and stress (eV/Å³, ASE sign convention, Voigt xx yy zz yz xz xy; CHGNet's calculator converts its
  GPa). This domain is *distilled from CHGNet*; every frame says so in ``method`` and ``distilled_from``.
* ``molecule-dft`` (off unless the recipe enables ``molecule_dft``) - QM9 molecules (``qm9pack``) at their
  B3LYP/6-31G(2df,p) minima with the electronic energy U0 - ZPVE (eV): *energy-only* frames, no forces, which the
  pretraining loss masks. QM9 molecules can also join the ``molecule`` domain (``molecule.qm9_molecules``: the
  B3LYP geometry and rattles of it, GFN2-xTB labels).

Every stored frame was labelled by one fresh single point at exactly the positions written to disk
(positions are rounded to the 1e-8 Å that extxyz stores *before* labelling), so the forces are -dE/dR of
the stored geometry.

Layout of the output directory::

    DIR/plan.json                      the recipe (and its hash) the shards were made with
    DIR/molecule/shard-00012.extxyz    frames: per-atom REF_forces, REF_charges; info REF_energy, REF_dipole
    DIR/molecule/shard-00012.json      what the shard holds, what was skipped and why, seconds spent
    DIR/material/shard-00003.extxyz    frames: per-atom REF_forces; info REF_energy, REF_stress
    DIR/manifest.json                  counts per domain/split, elements, versions, config, seeds

Work is cut into deterministic shards (a shard holds several molecules, or one material group). A shard
whose ``.extxyz`` and ``.json`` are both on disk (each written to a temporary file, then renamed) is
skipped, so a killed run continues where it stopped and a finished run does nothing the second time.
Results depend only on the recipe and its seed, not on the number of workers or the order shards finish in.

The split (train/val/test) is by ``group`` - the canonical SMILES of a molecule (stereo dropped) or the
``prototype:composition`` id of a material - from a seeded hash, so whole molecules/compositions are held
out. A val/test group containing an element that no training group of its domain has is moved to train,
so that no element is seen only at test time.

Modules: ``config`` (the recipe), ``seeds`` (seeds and splits), ``molecules`` / ``materials`` (the two samplers
and their shards), ``groups`` (the group of a molecule), ``qm9`` (QM9 molecules and the energy-only DFT domain),
``labelling`` (single points, calculators, worker threads), ``plan`` (the shard plan),
``shards`` (one shard on disk, the manifest), ``driver`` (``generate`` and the ``triscale datagen`` entry).
Everything others use is re-exported here.
"""

from triscale.foundation.datagen.config import (
    FORMAT_VERSION,
    MOLECULE_ELEMENTS,
    SPLITS,
    UNITS,
    DatagenConfig,
    MaterialConfig,
    MoleculeConfig,
    MoleculeDFTConfig,
    load_config,
)
from triscale.foundation.datagen.driver import generate, run_datagen_cli
from triscale.foundation.datagen.labelling import (
    FrameSkipped,
    chgnet_calculator,
    code_versions,
    init_labelling_worker,
    label_material,
    label_molecule,
    xtb_calculator,
)
from triscale.foundation.datagen.materials import (
    MATERIAL_PROTOTYPES,
    MaterialSpec,
    build_bases,
    combinatorial_material_specs,
    material_specs,
)
from triscale.foundation.datagen.molecules import (
    g2_molecules,
    group_smiles,
    molecule_conformers,
    molecule_entries,
    nci_molecules,
)
from triscale.foundation.datagen.plan import make_plan, shard_paths
from triscale.foundation.datagen.qm9 import DFT_DOMAIN, DFT_METHOD, dft_entries, qm9_folder, qm9_molecules
from triscale.foundation.datagen.seeds import assign_splits, derive_seed, hash_unit, split_of
from triscale.foundation.datagen.shards import run_shard, write_manifest

__all__ = [
    "DFT_DOMAIN",
    "DFT_METHOD",
    "FORMAT_VERSION",
    "MATERIAL_PROTOTYPES",
    "MOLECULE_ELEMENTS",
    "SPLITS",
    "UNITS",
    "DatagenConfig",
    "FrameSkipped",
    "MaterialConfig",
    "MaterialSpec",
    "MoleculeConfig",
    "MoleculeDFTConfig",
    "assign_splits",
    "build_bases",
    "chgnet_calculator",
    "code_versions",
    "combinatorial_material_specs",
    "derive_seed",
    "dft_entries",
    "g2_molecules",
    "generate",
    "group_smiles",
    "hash_unit",
    "init_labelling_worker",
    "label_material",
    "label_molecule",
    "load_config",
    "make_plan",
    "material_specs",
    "molecule_conformers",
    "molecule_entries",
    "nci_molecules",
    "qm9_folder",
    "qm9_molecules",
    "run_datagen_cli",
    "run_shard",
    "shard_paths",
    "split_of",
    "write_manifest",
    "xtb_calculator",
]
