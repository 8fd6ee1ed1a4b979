"""SMILES -> 3D: the one RDKit embedding routine of the project (datagen, quantum data, the builder tool).

RDKit and ASE are imported inside :func:`embed_smiles`, so importing this module stays standard-library only.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["EmbeddingError", "MoleculeTooLargeError", "SmilesError", "SmilesParseError", "embed_smiles"]

RELAX_METHODS = ("mmff", "uff", "auto")


class SmilesError(ValueError):
    """A SMILES string that cannot become a 3D structure; the message says why."""


class SmilesParseError(SmilesError):
    """RDKit cannot parse (or sanitize) the SMILES string."""


class MoleculeTooLargeError(SmilesError):
    """The molecule has more atoms than the bound; raised before any embedding is attempted."""


class EmbeddingError(SmilesError):
    """ETKDG found no 3D embedding (also with random starting coordinates), or the force field failed."""


def embed_smiles(
    smiles: str,
    *,
    seed: int = 0,
    n_conformers: int = 1,
    max_heavy_atoms: int | None = 100,
    max_atoms: int | None = None,
    relax: Literal["mmff", "uff", "auto"] | None = None,
    max_iters: int = 500,
    prune_rms: float = 0.1,
    attempt_timeout_s: int | None = None,
) -> list[Any]:
    """3D conformers (``ase.Atoms``, Å, no cell, hydrogens explicit) of ``smiles``: RDKit ETKDGv3, deterministic.

    * ``seed``: ETKDG random seed, ``0 <= seed < 2**31`` (RDKit treats a negative seed as "random"; refused).
      The same SMILES, seed and options give bit-identical coordinates.
    * ``n_conformers``: conformers asked of ETKDG (``EmbedMultipleConfs``, one thread); conformers closer than
      ``prune_rms`` Å RMSD are pruned, so fewer may come back, never zero. With ``n_conformers=1`` the geometry is
      the one ``EmbedMolecule`` gives with the same seed.
    * ``max_heavy_atoms`` / ``max_atoms`` (with hydrogens): size bounds checked *before* embedding
      (:class:`MoleculeTooLargeError`); ``None`` switches a bound off.
    * ``relax``: ``None`` (the ETKDG geometry), ``"mmff"`` (MMFF94; :class:`EmbeddingError` where RDKit has no
      MMFF parameters), ``"uff"``, or ``"auto"`` (MMFF94 where parameterised, else UFF); at most ``max_iters``
      steps per conformer.

    If ETKDG fails from its default start it is retried once with random starting coordinates (same seed).
    Each returned ``Atoms`` has ``info["charge"]`` (formal charge, e) and ``info["spin"]`` (number of unpaired
    electrons RDKit assigns, i.e. radical electrons). Raises :class:`SmilesParseError`,
    :class:`MoleculeTooLargeError` or :class:`EmbeddingError` (all :class:`SmilesError`, a ``ValueError``).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    if not isinstance(n_conformers, int) or n_conformers < 1:
        raise ValueError(f"n_conformers must be a positive integer, got {n_conformers!r}")
    if relax is not None and relax not in RELAX_METHODS:
        raise ValueError(f"relax must be None or one of {RELAX_METHODS}, got {relax!r}")

    from ase import Atoms
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem, Descriptors

    text = smiles.strip() if isinstance(smiles, str) else ""
    with rdBase.BlockLogs():  # RDKit's parse/embedding chatter off, for this call only
        mol = Chem.MolFromSmiles(text) if text else None
        if mol is None:
            raise SmilesParseError(f"{smiles!r} is not a valid SMILES string")
        heavy = mol.GetNumHeavyAtoms()
        if max_heavy_atoms is not None and heavy > max_heavy_atoms:
            raise MoleculeTooLargeError(f"{smiles!r} has {heavy} heavy atoms; the bound is {max_heavy_atoms}")
        mol = Chem.AddHs(mol)
        if max_atoms is not None and mol.GetNumAtoms() > max_atoms:
            raise MoleculeTooLargeError(
                f"{smiles!r} has {mol.GetNumAtoms()} atoms with hydrogens; the bound is {max_atoms}"
            )
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        params.numThreads = 1
        params.pruneRmsThresh = prune_rms
        if attempt_timeout_s is not None:  # RDKit stops one embedding attempt after this many seconds
            params.timeout = int(attempt_timeout_s)
        try:
            ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
            if not ids:
                params.useRandomCoords = True
                ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
        except (RuntimeError, ValueError) as exc:  # RDKit raises these for some pathological inputs
            raise EmbeddingError(f"RDKit could not embed {smiles!r} in 3D: {exc}") from None
        if not ids:
            raise EmbeddingError(f"RDKit could not embed {smiles!r} in 3D")
        if relax is not None:
            use_mmff = relax == "mmff" or (relax == "auto" and AllChem.MMFFHasAllMoleculeParams(mol))
            if use_mmff and not AllChem.MMFFHasAllMoleculeParams(mol):
                raise EmbeddingError(f"MMFF94 has no parameters for {smiles!r}; use relax='uff' or 'auto'")
            optimise = AllChem.MMFFOptimizeMolecule if use_mmff else AllChem.UFFOptimizeMolecule
            for i in ids:
                try:
                    optimise(mol, confId=i, maxIters=max_iters)
                except (RuntimeError, ValueError) as exc:
                    raise EmbeddingError(f"force-field relaxation of {smiles!r} failed: {exc}") from None
        numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
        charge = int(Chem.GetFormalCharge(mol))
        spin = int(Descriptors.NumRadicalElectrons(mol))
    out = []
    for i in ids:
        atoms = Atoms(numbers, positions=mol.GetConformer(i).GetPositions())
        atoms.info["charge"] = charge
        atoms.info["spin"] = spin
        out.append(atoms)
    return out
