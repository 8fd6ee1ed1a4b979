"""The group of a molecule (its unit of splitting): canonical SMILES without stereo, safe to store in extxyz."""

from __future__ import annotations

__all__ = ["group_smiles"]


def _extxyz_safe(text: str) -> bool:
    """False for strings extxyz would read back as a bool or a number (e.g. the SMILES of HF, ``F``)."""
    from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

    try:
        back = key_val_str_to_dict(key_val_dict_to_str({"k": text}))["k"]
        return isinstance(back, str) and back == text
    except Exception:  # pragma: no cover - defensive
        return False


def group_smiles(mol) -> str:
    """Canonical SMILES without stereo: the group. Hs made explicit where extxyz would misread it."""
    from rdkit import Chem

    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
    if not _extxyz_safe(smiles):
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False, allHsExplicit=True)
    return smiles
