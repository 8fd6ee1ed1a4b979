"""Self-generated Hamiltonian data: rattled, randomly rotated conformers of small molecules with their converged
Fock and overlap matrices from tblite (GFN2-xTB) or PySCF (HF/DFT in an s/p basis).

A data set is one ``.npz`` (no pickles) with the per-sample arrays concatenated and offset tables:
``numbers``/``positions`` over atoms (``n_atoms``), ``fock``/``overlap`` flattened over AO pairs (``n_ao``),
``orbital_energies`` over AOs, ``name`` per sample (the molecule it came from, for molecule-wise splits).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from triscale.quantum.electronic import electronic_structure

__all__ = [
    "EXTRA_SMILES",
    "HamiltonianData",
    "g2_molecules",
    "smiles_molecules",
    "unique_molecules",
    "rattled_conformers",
    "generate",
    "load_dataset",
    "save_dataset",
]


def g2_molecules(elements=(1, 6, 7, 8), max_atoms: int = 14) -> dict[str, Atoms]:
    """Closed-shell molecules of ASE's g2 set made of ``elements`` only (at least 2 atoms)."""
    from ase.build import molecule
    from ase.collections import g2

    allowed = set(elements)
    out = {}
    for name in sorted(g2.names):
        a = molecule(name)
        if (
            2 <= len(a) <= max_atoms
            and set(a.numbers.tolist()) <= allowed
            and abs(a.get_initial_magnetic_moments()).sum() == 0
            and a.numbers.sum() % 2 == 0
        ):
            out[name] = a
    return out


#: Small closed-shell H/C/N/O molecules (QM9-like, ≤ 9 heavy atoms) beyond g2, for chemical diversity.
EXTRA_SMILES = (
    "CCCO CC(C)O CCCCO OCCO OCC(O)CO C1CCOC1 C1CCCO1 C1COCCO1 CCOC=O COC(C)=O CC(=O)OC=C CCC(=O)O OC(=O)CC(=O)O "
    "O=CC=O CC(=O)C(C)=O O=C1CCC1 O=C1CCCC1 O=C1C=CC(=O)C=C1 OC1=CC=CC=C1 COc1ccccc1 Cc1ccccc1 CC#CC#N "
    "NCCO NCCN CNC CN(C)C CCN(CC)CC NC=O CNC=O CN(C)C=O CC(N)=O NC(N)=O NC(=O)C(N)=O C1CCNC1 C1CCNCC1 C1CNCCN1 "
    "c1ccncc1 c1cnccn1 c1ncncn1 c1cc[nH]c1 c1c[nH]cn1 c1cn[nH]c1 c1ccoc1 c1cocn1 c1conc1 Nc1ccccc1 N#Cc1ccccc1 "
    "O=C1NC=CC(=O)N1 Cc1c[nH]c(=O)[nH]c1=O NC1=NC(=O)C=CN1 O=C1CCCN1 O=C1CCCCN1 C=CC=O C=CC(=O)O C=CC#N "
    "C#CC#C C#CC=C C#CCO C#CCN CC#CC N#CCC#N N#CC(=O)N OCC#N CC(O)C#N CC=NO CON=O C=NO NNC=O NN=C "
    "CC(C)=NO O=NO CN=[N+]=[N-] CC1CC1 C1CC1C C1CC2CC12 C1=CCC=C1 C1=CCCC1 C1=CC=CCC1 C1CCCCC1 CC(C)(C)C "
    "CCC(C)C CCCCC CC=C(C)C CC(=C)C=C C1CC1O C1CC1N OC1CCC1 NC1CCC1 C1OC1C CC1CO1 C1CN1 OC=O CC=CC=O "
    "OCC=O OC(CO)C=O CC(O)C(O)=O NCC(O)=O CC(N)C(O)=O OC(=O)C=CC(O)=O O=C=CC=O CCOCC CCOC COCOC"
).split()


def canonical_smiles(atoms: Atoms) -> str | None:
    """Canonical SMILES of a neutral molecule from its geometry (RDKit bond perception); None if that fails."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import rdDetermineBonds

        RDLogger.DisableLog("rdApp.*")
        xyz = f"{len(atoms)}\n\n" + "\n".join(
            f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
        )
        mol = Chem.MolFromXYZBlock(xyz)
        rdDetermineBonds.DetermineBonds(mol, charge=0)
        return Chem.MolToSmiles(Chem.RemoveHs(mol))
    except Exception:  # noqa: BLE001 - perception fails for odd bonding (e.g. CO, O3): keep the molecule
        return None


def unique_molecules(*sets: dict[str, Atoms]) -> dict[str, Atoms]:
    """Merge molecule sets, dropping later duplicates (same canonical SMILES), so a molecule-wise split cannot
    put one compound in both train and test under two names."""
    out, seen = {}, set()
    for mols in sets:
        for name, atoms in mols.items():
            key = canonical_smiles(atoms)
            if key is not None and key in seen:
                continue
            seen.add(key)
            out[name] = atoms
    return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rattled_conformers(
    atoms: Atoms, n: int, rng: np.random.Generator, sigma_range=(0.02, 0.12), min_distance: float = 0.6
) -> list[Atoms]:
    """``n`` copies with Gaussian displacements (σ drawn per copy from ``sigma_range``, Å), centred and randomly
    rotated; copies with atoms closer than ``min_distance`` Å are redrawn."""
    out = []
    while len(out) < n:
        sigma = rng.uniform(*sigma_range)
        pos = atoms.positions + rng.normal(scale=sigma, size=atoms.positions.shape)
        pos = (pos - pos.mean(axis=0)) @ _random_rotation(rng).T
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 10
        if d.min() < min_distance:
            continue
        out.append(Atoms(numbers=atoms.numbers, positions=pos))
    return out


def smiles_molecules(smiles=EXTRA_SMILES, seed: int = 0, max_atoms: int = 20) -> dict[str, Atoms]:
    """Neutral closed-shell molecules from SMILES (at most ``max_atoms`` atoms with hydrogens): the project's one
    RDKit routine (:func:`triscale.common.chem.embed_smiles`: ETKDGv3, then MMFF94, UFF where MMFF has no
    parameters). SMILES that do not parse, embed or fit are left out."""
    from triscale.common.chem import SmilesError, embed_smiles

    out = {}
    for smi in smiles:
        try:
            atoms = embed_smiles(smi, seed=seed, max_heavy_atoms=None, max_atoms=max_atoms, relax="auto")[0]
        except SmilesError:
            continue
        if atoms.info.pop("charge") != 0 or atoms.info.pop("spin") != 0:
            continue
        out[f"smiles:{smi}"] = atoms
    return out


@dataclass
class HamiltonianData:
    names: list[str]
    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    fock: list[np.ndarray]
    overlap: list[np.ndarray]
    orbital_energies: list[np.ndarray]  # Eh
    n_occ: list[int]
    method: str

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> HamiltonianData:
        idx = list(idx)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return HamiltonianData(
            pick(self.names),
            pick(self.numbers),
            pick(self.positions),
            pick(self.fock),
            pick(self.overlap),
            pick(self.orbital_energies),
            pick(self.n_occ),
            self.method,
        )


def generate(
    molecules: dict[str, Atoms],
    n_conformers: int,
    method: str = "gfn2-xtb",
    seed: int = 0,
    sigma_range=(0.02, 0.12),
    include_equilibrium: bool = True,
    functional: str = "b3lyp",
    basis: str = "6-31g",
    log=print,
) -> HamiltonianData:
    """Label ``n_conformers`` rattled/rotated copies of each molecule (plus the equilibrium one, rotated)."""
    rng = np.random.default_rng(seed)
    data = HamiltonianData([], [], [], [], [], [], [], "")
    t0 = time.monotonic()
    for name, atoms in molecules.items():
        confs = rattled_conformers(atoms, n_conformers, rng, sigma_range)
        if include_equilibrium:
            eq = atoms.copy()
            eq.positions = (eq.positions - eq.positions.mean(axis=0)) @ _random_rotation(rng).T
            confs = [eq, *confs]
        for conf in confs:
            try:
                es = electronic_structure(conf, method, functional=functional, basis=basis, use_cache=False)
            except Exception as e:  # noqa: BLE001 - a distorted conformer whose SCF fails is skipped
                log(f"  skip a conformer of {name}: {e}")
                continue
            data.names.append(name)
            data.numbers.append(conf.numbers.copy())
            data.positions.append(conf.positions.copy())
            data.fock.append(es.fock_Eh.astype(np.float64))
            data.overlap.append(es.overlap.astype(np.float64))
            from ase import units

            data.orbital_energies.append(es.orbital_energies_eV / units.Hartree)
            data.n_occ.append(int(np.sum(es.occupations > 1.0)))
            data.method = es.method
    log(
        f"labelled {len(data)} structures of {len(molecules)} molecules with {data.method} "
        f"in {time.monotonic() - t0:.1f} s"
    )
    return data


def save_dataset(data: HamiltonianData, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        names=np.asarray(data.names),
        method=np.asarray(data.method),
        n_atoms=np.asarray([len(z) for z in data.numbers]),
        n_ao=np.asarray([f.shape[0] for f in data.fock]),
        n_occ=np.asarray(data.n_occ),
        numbers=np.concatenate(data.numbers),
        positions=np.concatenate(data.positions),
        fock=np.concatenate([f.ravel() for f in data.fock]),
        overlap=np.concatenate([s.ravel() for s in data.overlap]),
        orbital_energies=np.concatenate(data.orbital_energies),
    )
    return path


def load_dataset(path: str | Path) -> HamiltonianData:
    with np.load(path, allow_pickle=False) as z:
        n_atoms, n_ao = z["n_atoms"], z["n_ao"]
        a_off = np.concatenate([[0], np.cumsum(n_atoms)])
        m_off = np.concatenate([[0], np.cumsum(n_ao**2)])
        o_off = np.concatenate([[0], np.cumsum(n_ao)])
        numbers, positions, fock, overlap, fock_eps = (
            z["numbers"],
            z["positions"],
            z["fock"],
            z["overlap"],
            z["orbital_energies"],
        )
        k = range(len(n_atoms))
        return HamiltonianData(
            names=[str(x) for x in z["names"]],
            numbers=[numbers[a_off[i] : a_off[i + 1]] for i in k],
            positions=[positions[a_off[i] : a_off[i + 1]] for i in k],
            fock=[fock[m_off[i] : m_off[i + 1]].reshape(n_ao[i], n_ao[i]) for i in k],
            overlap=[overlap[m_off[i] : m_off[i + 1]].reshape(n_ao[i], n_ao[i]) for i in k],
            orbital_energies=[fock_eps[o_off[i] : o_off[i + 1]] for i in k],
            n_occ=[int(x) for x in z["n_occ"]],
            method=str(z["method"]),
        )
