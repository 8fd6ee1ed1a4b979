"""Electronic structure behind one interface: GFN2/GFN1-xTB (tblite) and HF/DFT (PySCF) — the one place that
drives tblite and PySCF (the tools' ASE calculators come from :func:`ase_calculator`; method names from
:mod:`triscale.quantum.methods`).

:func:`electronic_structure` returns an :class:`ElectronicStructure` with orbital energies, occupations, HOMO-LUMO
gap, partial charges, dipole and the AO-basis matrices (converged Fock/Hamiltonian, overlap, density, orbital
coefficients). Results are cached per (geometry, charge, spin, method options) in memory; :func:`save_npz` /
:func:`load_npz` persist them (the tool keeps one file per structure and method in the workspace).

Units: energies in eV in the summary fields (``*_eV``), dipole in e·Å, charges in e; the AO matrices stay in the
codes' atomic units (Hartree, dimensionless overlap) and their keys say so (``fock_Eh``).

AO order: tblite orders the AOs of an atom by shell and the three p functions of a shell as (p_y, p_z, p_x)
(real spherical harmonics m = -1, 0, 1); PySCF orders p as (p_x, p_y, p_z). :data:`P_ORDER` records this and
:mod:`triscale.quantum.basis` builds the rotation matrices from it.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

from triscale.common import atomic_write_bytes
from triscale.quantum.methods import (
    DEFAULT_BASIS,
    DEFAULT_FUNCTIONAL,
    MAX_ATOMS,
    PYSCF_METHODS,
    XTB_METHODS,
    MethodChoice,
    QuantumInputError,
    canonical_basis,
    canonical_method,
    check_charge_spin,
    method_label,
    with_functional,
)

__all__ = [
    "ElectronicStructure",
    "QuantumInputError",
    "QuantumComputationError",
    "METHODS",
    "MAX_ATOMS",
    "P_ORDER",
    "electronic_structure",
    "resolve_method",
    "check_quantum_input",
    "ase_calculator",
    "build_pyscf_mol",
    "make_pyscf_mf",
    "cache_key",
    "save_npz",
    "load_npz",
    "xtb_shells",
    "density_cube",
    "density_slice_png",
    "clear_cache",
]

METHODS = ("gfn2-xtb", "gfn1-xtb", "dft", "hf")  # canonical names; aliases and functionals: quantum.methods
#: Cartesian index (x=0, y=1, z=2) of each p component, in each code's AO order
P_ORDER = {"tblite": (1, 2, 0), "pyscf": (0, 1, 2)}


class QuantumComputationError(RuntimeError):
    """The calculation itself failed (SCF not converged, library error)."""


# AO shells per element in tblite, measured with single-atom runs of tblite 0.4 (norbitals: 1 -> s, 2 -> s s,
# 4 -> s p, 9 -> s p d). Elements not listed below have 9 AOs (s, p and d shells).
_XTB_NAO = {
    "gfn2-xtb": {1: 1, **{z: 4 for z in (2, 3, 4, 5, 6, 7, 8, 9, 11, 19, 30, 37, 48, 55, 80, 81, 82, 83, 84)}},
    "gfn1-xtb": {1: 2, 2: 1, **{z: 4 for z in (3, 4, 5, 6, 7, 8, 9, 11, 12, 19, 30, 37, 48, 55, 80, 81, 82, 83)}},
}


def xtb_shells(method: str, z: int) -> tuple[int, ...]:
    """Angular momenta of the shells of element ``z`` in tblite's basis for ``method`` (``'gfn2-xtb'``...).

    The s/p layout (H, C, N, O, ...) is exact; for 9-AO atoms only the AO count is certain (the shell order of
    d elements is 3d 4s 4p in GFN2), so callers use it for counting only.
    """
    n = _XTB_NAO[method].get(int(z), 9)
    return {1: (0,), 2: (0, 0), 4: (0, 1), 9: (0, 1, 2)}[n]


@dataclass
class ElectronicStructure:
    """The result of one electronic-structure calculation (see the module docstring for units and AO order)."""

    method: str  # e.g. "gfn2-xtb", "dft/b3lyp/def2-svp", "hf/sto-3g"
    code: str  # "tblite" | "pyscf"
    numbers: np.ndarray  # (N,)
    positions: np.ndarray  # (N, 3) Å
    charge: int
    spin: int
    energy_eV: float
    orbital_energies_eV: np.ndarray  # (n_ao,) ascending; unrestricted: alpha and beta merged and sorted
    occupations: np.ndarray  # (n_ao,) electrons per orbital (0..2)
    homo_index: int
    charges_e: np.ndarray  # (N,) partial charges (tblite: GFN2/GFN1 Mulliken-type; PySCF: Mulliken)
    dipole_e_A: np.ndarray  # (3,)
    fock_Eh: np.ndarray  # (n_ao, n_ao) converged Fock/Kohn-Sham matrix (restricted; alpha for unrestricted)
    overlap: np.ndarray  # (n_ao, n_ao)
    density_matrix: np.ndarray  # (n_ao, n_ao) total density matrix, electrons
    coefficients: np.ndarray  # (n_ao, n_mo) orbital coefficients, columns are MOs (alpha for unrestricted)
    ao_atom: np.ndarray  # (n_ao,) atom of each AO
    ao_l: np.ndarray  # (n_ao,) angular momentum of each AO (-1 where unknown)
    core_hamiltonian_Eh: np.ndarray | None = None  # (n_ao, n_ao) tblite: the non-SCF H0; PySCF: T + V_nuc
    converged: bool = True
    n_scf_cycles: int | None = None
    basis: str | None = None  # PySCF basis name
    functional: str | None = None
    cell: np.ndarray | None = None  # (3, 3) Å, periodic xTB only (orbitals at the Gamma point)
    pbc: np.ndarray | None = None  # (3,) bool, periodic xTB only
    notes: list[str] = field(default_factory=list)

    @property
    def n_ao(self) -> int:
        return int(self.overlap.shape[0])

    @property
    def homo_eV(self) -> float:
        return float(self.orbital_energies_eV[self.homo_index])

    @property
    def lumo_eV(self) -> float | None:
        i = self.homo_index + 1
        return float(self.orbital_energies_eV[i]) if i < len(self.orbital_energies_eV) else None

    @property
    def gap_eV(self) -> float | None:
        lumo = self.lumo_eV
        return None if lumo is None else lumo - self.homo_eV

    def atoms(self) -> Atoms:
        if self.cell is not None:
            return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        return Atoms(numbers=self.numbers, positions=self.positions)


# --------------------------------------------------------------------------------------------- the calculation


def resolve_method(
    method: str, functional: str | None = None, basis: str | None = None
) -> tuple[str, str | None, str | None]:
    """``(method, functional, basis)`` in canonical form: ``"pbe"`` -> ``("dft", "pbe", "def2-svp")``, ``"hf"`` ->
    ``("hf", None, "def2-svp")``, ``"xtb"`` -> ``("gfn2-xtb", None, None)``. ``functional`` applies to DFT only
    (for HF and xTB it is not used); a functional contradicting the method name, an unknown functional or basis,
    or a method without orbitals raises :class:`QuantumInputError` with the accepted names."""
    choice = canonical_method(method)
    if choice.method == "dft":
        choice = with_functional(choice, functional)
    if choice.method not in METHODS:
        raise QuantumInputError(
            f"{choice.method} gives no electronic structure (orbitals).",
            hint=f"Choose one of: {', '.join(METHODS)}, or a DFT functional name.",
        )
    if choice.method in XTB_METHODS:
        return choice.method, None, None
    basis = canonical_basis(basis or DEFAULT_BASIS)
    if choice.method == "hf":
        return "hf", None, basis
    return "dft", choice.functional or DEFAULT_FUNCTIONAL, basis


def check_quantum_input(atoms: Atoms, method: str, charge: int, spin: int) -> None:
    """Size, periodicity, coordinates and the charge/spin of ``atoms`` for a canonical ``method``."""
    n = len(atoms)
    if n == 0:
        raise QuantumInputError("The structure has no atoms.")
    if atoms.pbc.any() and method not in XTB_METHODS:
        raise QuantumInputError(
            f"{method} here handles molecules only (the structure is periodic).",
            hint="Use a molecule, or gfn1-xtb/gfn2-xtb for periodic systems (orbitals at the Gamma point).",
        )
    if not np.all(np.isfinite(atoms.positions)):
        raise QuantumInputError("The structure has non-finite coordinates.")
    if n > MAX_ATOMS[method]:
        cheaper = " Use method 'gfn2-xtb' (≤300 atoms)." if method in PYSCF_METHODS else ""
        raise QuantumInputError(f"{method} is limited to {MAX_ATOMS[method]} atoms; this structure has {n}.{cheaper}")
    check_charge_spin(atoms.numbers, charge, spin, method)


def cache_key(
    atoms: Atoms,
    method: str,
    charge: int = 0,
    spin: int = 0,
    functional: str | None = None,
    basis: str | None = None,
    restricted: bool | None = None,
) -> str:
    """A stable hash of what determines the result: elements, positions (to 1e-8 Å), cell, charge, spin, method
    (with its functional and basis), restricted."""
    method, functional, basis = resolve_method(method, functional, basis)
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), 8).tobytes())
    if atoms.pbc.any():
        h.update(np.round(np.asarray(atoms.cell.array, dtype=np.float64), 8).tobytes() + atoms.pbc.tobytes())
    opts: tuple = (method, int(charge), int(spin))
    if method == "dft":
        opts += (functional, basis)
    elif method == "hf":
        opts += (basis,)
    if restricted is not None and method in PYSCF_METHODS:
        opts += (bool(restricted),)
    h.update(repr(opts).encode())
    return h.hexdigest()[:16]


_CACHE: OrderedDict[str, ElectronicStructure] = OrderedDict()
_CACHE_SIZE = 64
_LOCK = threading.Lock()


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def electronic_structure(
    atoms: Atoms,
    method: str = "gfn2-xtb",
    *,
    charge: int | None = None,
    spin: int | None = None,
    functional: str | None = None,
    basis: str | None = None,
    restricted: bool | None = None,
    max_scf_cycles: int = 200,
    use_cache: bool = True,
) -> ElectronicStructure:
    """Run (or fetch from the cache) one electronic-structure calculation of a molecule (xTB: also periodic,
    orbitals at the Gamma point).

    ``method``: ``gfn2-xtb`` (default), ``gfn1-xtb``, ``hf`` (``basis``), ``dft`` (``functional``, default
    B3LYP, and ``basis``, default def2-SVP) or a functional name such as ``pbe`` (DFT with it); see
    :func:`resolve_method`. ``charge``/``spin`` (2S) default to ``atoms.info`` or 0. Unrestricted when
    ``spin > 0`` unless ``restricted`` says otherwise (PySCF only).
    """
    if restricted is None:
        restricted = canonical_method(method).restricted  # 'rhf' / 'uhf'
    method, functional, basis = resolve_method(method, functional, basis)
    charge = int(atoms.info.get("charge", 0) if charge is None else charge)
    spin = int(atoms.info.get("spin", 0) if spin is None else spin)
    check_quantum_input(atoms, method, charge, spin)
    key = cache_key(atoms, method, charge, spin, functional, basis, restricted)
    if use_cache:
        with _LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    if method in ("gfn2-xtb", "gfn1-xtb"):
        es = _run_tblite(atoms, method, charge, spin, max_scf_cycles)
    else:
        es = _run_pyscf(atoms, method, charge, spin, functional, basis, max_scf_cycles, restricted)
    if use_cache:
        with _LOCK:
            _CACHE[key] = es
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return es


def _homo(occ: np.ndarray) -> int:
    occupied = np.where(occ > 1e-3)[0]
    if len(occupied) == 0:
        raise QuantumComputationError("No occupied orbitals found.")
    return int(occupied.max())


_TBLITE_NAMES = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


def _run_tblite(atoms: Atoms, method: str, charge: int, spin: int, max_scf_cycles: int) -> ElectronicStructure:
    from tblite.interface import Calculator

    periodic = bool(atoms.pbc.any())
    calc = Calculator(
        _TBLITE_NAMES[method],
        np.asarray(atoms.numbers),
        np.asarray(atoms.positions, dtype=float) / units.Bohr,
        charge=float(charge),
        uhf=int(spin),
        lattice=np.asarray(atoms.cell.array, dtype=float) / units.Bohr if periodic else None,
        periodic=np.asarray(atoms.pbc) if periodic else None,
    )
    calc.set("verbosity", 0)
    calc.set("max-iter", int(max_scf_cycles))
    calc.set("save-integrals", 1)
    try:
        res = calc.singlepoint()
    except Exception as e:  # noqa: BLE001 - tblite raises TBLiteRuntimeError for SCF failures
        raise QuantumComputationError(f"{method} failed: {e}") from e
    eps = np.asarray(res.get("orbital-energies"), dtype=float)
    occ = np.asarray(res.get("orbital-occupations"), dtype=float)
    coeff = np.asarray(res.get("orbital-coefficients"), dtype=float)
    density = np.asarray(res.get("density-matrix"), dtype=float)
    if eps.ndim == 2:  # spin-polarised: merge for the summary, keep alpha for the Fock matrix
        coeff = coeff[0]
        density = density.sum(axis=0) if density.ndim == 3 else density
        order = np.argsort(eps.ravel())
        eps_a = eps[0]
        eps, occ = eps.ravel()[order], occ.ravel()[order]
    else:
        eps_a = eps
    overlap = np.asarray(res.get("overlap-matrix"), dtype=float)
    # tblite's "hamiltonian-matrix" is the core H0; the converged Fock matrix is S C diag(eps) C^T S (exact for
    # the full, square C that tblite returns).
    sc = overlap @ coeff
    fock = (sc * eps_a) @ sc.T
    fock = 0.5 * (fock + fock.T)
    n_ao = overlap.shape[0]
    counts = [len(_ao_ls(method, z)) for z in atoms.numbers]
    if sum(counts) != n_ao:  # pragma: no cover - the table is measured; guard against a tblite change
        ao_atom, ao_l = np.full(n_ao, -1), np.full(n_ao, -1)
    else:
        ao_atom = np.repeat(np.arange(len(atoms)), counts)
        ao_l = np.concatenate([_ao_ls(method, z) for z in atoms.numbers])
    return ElectronicStructure(
        method=method,
        code="tblite",
        numbers=np.asarray(atoms.numbers).copy(),
        positions=np.asarray(atoms.positions, dtype=float).copy(),
        charge=charge,
        spin=spin,
        energy_eV=float(res.get("energy")) * units.Hartree,
        orbital_energies_eV=eps * units.Hartree,
        occupations=occ,
        homo_index=_homo(occ),
        charges_e=np.asarray(res.get("charges"), dtype=float),
        dipole_e_A=np.asarray(res.get("dipole"), dtype=float) * units.Bohr,
        fock_Eh=fock,
        overlap=overlap,
        density_matrix=density,
        coefficients=coeff,
        ao_atom=ao_atom,
        ao_l=ao_l,
        core_hamiltonian_Eh=np.asarray(res.get("hamiltonian-matrix"), dtype=float),
        cell=np.asarray(atoms.cell.array, dtype=float).copy() if periodic else None,
        pbc=np.asarray(atoms.pbc, dtype=bool).copy() if periodic else None,
        notes=["periodic: orbital energies and matrices at the Gamma point only"] if periodic else [],
    )


def _ao_ls(method: str, z: int) -> np.ndarray:
    shells = xtb_shells(method, z)
    if shells == (0, 1, 2):  # only the count is certain for d elements
        return np.full(9, -1)
    return np.concatenate([np.full(2 * ll + 1, ll) for ll in shells])


def build_pyscf_mol(atoms: Atoms, basis: str, charge: int = 0, spin: int = 0):
    """A PySCF ``Mole`` for ``atoms`` (Å); ``basis`` must be a name in PySCF's basis table."""
    from pyscf import gto

    basis = canonical_basis(basis)
    try:
        return gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)],
            unit="Angstrom",
            basis=basis,
            charge=charge,
            spin=spin,
            verbose=0,
        )
    except Exception as e:  # noqa: BLE001 - PySCF raises bare Exceptions/KeyErrors for unknown basis sets
        raise QuantumInputError(
            f"PySCF could not build the molecule with basis {basis!r}: {e}.",
            hint="Is the basis defined for every element here? Try 'def2-svp', 'sto-3g' or '6-31g'.",
        ) from e


def make_pyscf_mf(
    mol,
    method: str,
    functional: str | None,
    spin: int,
    max_scf_cycles: int = 200,
    restricted: bool | None = None,
):
    """The PySCF mean-field object: RHF/UHF for ``hf`` (or functional ``"hf"``), RKS/UKS with ``functional``
    for ``dft``; restricted by default when ``spin == 0``."""
    from pyscf import dft, scf

    choice = with_functional(MethodChoice(method), functional) if method == "dft" else canonical_method(method)
    if choice.method not in PYSCF_METHODS:
        raise QuantumInputError(f"{method!r} is not a PySCF method.", hint="Use 'hf' or 'dft' (with a functional).")
    restricted = spin == 0 if restricted is None else bool(restricted)
    if restricted and spin:
        raise QuantumInputError(
            f"A restricted calculation cannot have {spin} unpaired electrons.",
            hint="Leave restricted unset (or false) for open shells.",
        )
    if choice.method == "hf":
        mf = scf.RHF(mol) if restricted else scf.UHF(mol)
    else:
        mf = dft.RKS(mol) if restricted else dft.UKS(mol)
        mf.xc = choice.functional or DEFAULT_FUNCTIONAL
    mf.max_cycle = int(max_scf_cycles)
    mf.verbose = 0
    return mf


def ase_calculator(
    atoms: Atoms,
    method: str,
    *,
    charge: int = 0,
    spin: int = 0,
    functional: str | None = None,
    basis: str | None = None,
    restricted: bool | None = None,
    max_scf_cycles: int = 200,
):
    """The ASE calculator (energy, forces, stress for periodic xTB, dipole) for an xTB or PySCF method, set up
    exactly as :func:`electronic_structure` runs it. Call in a worker process: the imports are heavy."""
    method, functional, basis = resolve_method(method, functional, basis)
    check_quantum_input(atoms, method, charge, spin)
    if method in XTB_METHODS:
        from tblite.ase import TBLite

        return TBLite(
            method=_TBLITE_NAMES[method],
            charge=charge,
            multiplicity=spin + 1,
            max_iterations=max_scf_cycles,
            verbosity=0,
        )
    from pyscf.pbc.tools.pyscf_ase import PySCF

    mol = build_pyscf_mol(atoms, basis, charge, spin)
    return PySCF(method=make_pyscf_mf(mol, method, functional, spin, max_scf_cycles, restricted))


def _run_pyscf(
    atoms: Atoms,
    method: str,
    charge: int,
    spin: int,
    functional: str | None,
    basis: str,
    max_scf_cycles: int,
    restricted: bool | None = None,
) -> ElectronicStructure:
    mol = build_pyscf_mol(atoms, basis, charge, spin)
    mf = make_pyscf_mf(mol, method, functional, spin, max_scf_cycles, restricted)
    cycles = {"n": 0}

    def _count(envs: dict[str, Any]) -> None:
        cycles["n"] = int(envs.get("cycle", cycles["n"])) + 1

    mf.callback = _count
    try:
        e_tot = mf.kernel()
    except Exception as e:  # noqa: BLE001
        raise QuantumComputationError(f"PySCF {method} failed: {type(e).__name__}: {e}") from e
    if not mf.converged:
        raise QuantumComputationError(
            f"The SCF of {method_label(method, functional, basis)} did not converge in {max_scf_cycles} cycles; "
            "raise max_scf_cycles or check charge/spin."
        )
    overlap = np.asarray(mf.get_ovlp())
    dm = np.asarray(mf.make_rdm1())
    fock = np.asarray(mf.get_fock(dm=dm))
    mo_e, mo_occ, mo_c = np.asarray(mf.mo_energy), np.asarray(mf.mo_occ), np.asarray(mf.mo_coeff)
    if mo_e.ndim == 2:  # unrestricted
        dm_total = dm.sum(axis=0)
        fock, mo_c = fock[0], mo_c[0]
        order = np.argsort(mo_e.ravel())
        eps, occ = mo_e.ravel()[order], mo_occ.ravel()[order]
    else:
        dm_total, eps, occ = dm, mo_e, mo_occ
    _, chg = mf.mulliken_pop(verbose=0)
    dip = np.asarray(mf.dip_moment(unit="AU", verbose=0)) * units.Bohr
    ao_l = np.asarray([mol.bas_angular(b) for b in range(mol.nbas) for _ in range(2 * mol.bas_angular(b) + 1)])
    ao_atom = np.asarray([mol.bas_atom(b) for b in range(mol.nbas) for _ in range(2 * mol.bas_angular(b) + 1)])
    return ElectronicStructure(
        method=method_label(method, functional, basis),
        code="pyscf",
        numbers=np.asarray(atoms.numbers).copy(),
        positions=np.asarray(atoms.positions, dtype=float).copy(),
        charge=charge,
        spin=spin,
        energy_eV=float(e_tot) * units.Hartree,
        orbital_energies_eV=eps * units.Hartree,
        occupations=occ,
        homo_index=_homo(occ),
        charges_e=np.asarray(chg, dtype=float),
        dipole_e_A=dip,
        fock_Eh=0.5 * (fock + fock.T),
        overlap=overlap,
        density_matrix=dm_total,
        coefficients=mo_c,
        ao_atom=ao_atom,
        ao_l=ao_l,
        core_hamiltonian_Eh=np.asarray(mf.get_hcore()),
        converged=bool(mf.converged),
        n_scf_cycles=cycles["n"],
        basis=basis,
        functional=functional if method == "dft" else None,
    )


# --------------------------------------------------------------------------------------------- persistence

_ARRAYS = (
    "numbers",
    "positions",
    "orbital_energies_eV",
    "occupations",
    "charges_e",
    "dipole_e_A",
    "fock_Eh",
    "overlap",
    "density_matrix",
    "coefficients",
    "ao_atom",
    "ao_l",
    "core_hamiltonian_Eh",
    "cell",
    "pbc",
)


def save_npz(es: ElectronicStructure, path: str | Path) -> Path:
    """Write every array and scalar of ``es`` to a compressed ``.npz`` (no pickles; strings as 0-d arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = asdict(es)
    arrays = {k: np.asarray(d[k]) for k in _ARRAYS if d[k] is not None}
    scalars = {k: np.asarray(v) for k, v in d.items() if k not in _ARRAYS and k != "notes" and v is not None}
    buffer = io.BytesIO()
    gap = np.nan if es.gap_eV is None else es.gap_eV
    np.savez_compressed(buffer, **arrays, **scalars, homo_eV=es.homo_eV, gap_eV=gap)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_npz(path: str | Path) -> ElectronicStructure:
    with np.load(path, allow_pickle=False) as z:
        kw: dict[str, Any] = {}
        for name in ElectronicStructure.__dataclass_fields__:
            if name == "notes":
                continue
            if name in z.files:
                v = z[name]
                kw[name] = v if name in _ARRAYS else v.item()
        return ElectronicStructure(**kw)


# --------------------------------------------------------------------------------------------- density

# GFN2-xTB's basis for H, C, N, O as contracted Gaussians, so that PySCF can evaluate it on a grid: Slater exponents
# and primitive counts of tblite's GFN2 parametrisation (H 1s: STO-3G; C/N/O 2s, 2p: STO-4G) with Stewart's
# expansions (J. Chem. Phys. 52, 431 (1970)). The overlap this gives matches tblite's to ~1e-9 and is checked on
# every use, so a parameter change in tblite makes the density refuse rather than silently differ.
_STO3G_1S = ((2.227660584, 0.1543289673), (0.4057711562, 0.5353281423), (0.1098175104, 0.4446345422))
_STO4G_2S = (
    (11.61525551, -0.01198411747),
    (2.000243111, -0.05472052539),
    (0.1607280687, 0.5805587176),
    (0.06125744532, 0.4770079976),
)
_STO4G_2P = (
    (1.798260992, 0.05713170255),
    (0.4662622228, 0.2857455515),
    (0.1643718620, 0.5517873105),
    (0.06543927065, 0.2632314924),
)
_GFN2_ZETA = {1: (1.230000,), 6: (2.096432, 1.800000), 7: (2.339881, 2.014332), 8: (2.439742, 2.137023)}


def _gfn2_basis() -> dict[str, list]:
    def shell(ll, prims, zeta):
        return [ll] + [[a * zeta * zeta, c] for a, c in prims]

    out = {"H": [shell(0, _STO3G_1S, _GFN2_ZETA[1][0])]}
    for z, sym in ((6, "C"), (7, "N"), (8, "O")):
        out[sym] = [shell(0, _STO4G_2S, _GFN2_ZETA[z][0]), shell(1, _STO4G_2P, _GFN2_ZETA[z][1])]
    return out


def _density_mol(es: ElectronicStructure):
    """(PySCF Mole, density matrix in its AO order, label) for evaluating the density of ``es`` on a grid."""
    from pyscf import gto

    if es.code == "pyscf":
        return build_pyscf_mol(es.atoms(), es.basis or DEFAULT_BASIS, es.charge, es.spin), es.density_matrix, "total"
    if es.cell is not None:
        raise QuantumInputError("A density grid is available for molecules only (this result is periodic).")
    if es.method != "gfn2-xtb" or not set(int(z) for z in es.numbers) <= set(_GFN2_ZETA):
        raise QuantumInputError(
            "A density grid for xTB is available for GFN2-xTB molecules of H, C, N, O only (tblite does not expose "
            "its basis functions; those four are rebuilt here); use method 'dft' or 'hf' otherwise."
        )
    atoms = es.atoms()
    mol = gto.Mole()
    mol.atom = [(sym, tuple(p)) for sym, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    mol.basis, mol.unit, mol.verbose = _gfn2_basis(), "Angstrom", 0
    mol.spin = int(sum(1 if z == 1 else {6: 4, 7: 5, 8: 6}[int(z)] for z in es.numbers) - es.charge) % 2
    mol.build()
    perm, off = [], 0  # tblite AO k -> PySCF AO perm[k]: tblite p is (y, z, x), PySCF's (x, y, z)
    for z in es.numbers:
        if z == 1:
            perm.append(off)
            off += 1
        else:
            perm += [off, off + 2, off + 3, off + 1]
            off += 4
    perm = np.asarray(perm)
    s_pyscf = mol.intor("int1e_ovlp")[np.ix_(perm, perm)]
    if np.abs(s_pyscf - es.overlap).max() > 1e-6:  # pragma: no cover - only if tblite's GFN2 basis changed
        raise QuantumComputationError("The rebuilt GFN2-xTB basis no longer matches tblite's overlap matrix.")
    dm = np.zeros_like(es.density_matrix)
    dm[np.ix_(perm, perm)] = es.density_matrix
    return mol, dm, "valence"


def density_cube(es: ElectronicStructure, path: str | Path, resolution_A: float = 0.2, margin_A: float = 3.0):
    """Electron density (e/Bohr³) on a regular grid written as a Gaussian cube file.

    PySCF results give the total density; GFN2-xTB results (H, C, N, O) the valence density that xTB treats.
    Returns ``(path, grid_shape, integrated_electrons)``; the integral over the box is a check that the grid and
    margin are fine enough.
    """
    from pyscf.tools import cubegen

    mol, dm, _ = _density_mol(es)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res_bohr = resolution_A / units.Bohr
    cube = cubegen.Cube(mol, resolution=res_bohr, margin=margin_A / units.Bohr)
    rho = cubegen.density(mol, str(path), dm, resolution=res_bohr, margin=margin_A / units.Bohr)
    voxel = abs(np.linalg.det(cube.box)) / (cube.nx * cube.ny * cube.nz)
    return path, tuple(int(x) for x in rho.shape), float(rho.sum() * voxel)


def _principal_plane(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    center = positions.mean(axis=0)
    x = positions - center
    if len(positions) < 3:
        e1 = x[-1] / max(np.linalg.norm(x[-1]), 1e-12) if len(positions) == 2 else np.array([1.0, 0, 0])
        e2 = np.cross(e1, [0.0, 0.0, 1.0])
        if np.linalg.norm(e2) < 1e-6:
            e2 = np.cross(e1, [0.0, 1.0, 0.0])
        return center, e1, e2 / np.linalg.norm(e2)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return center, vt[0], vt[1]


def density_slice_png(
    es: ElectronicStructure, path: str | Path, n_points: int = 160, margin_A: float = 2.5
) -> tuple[Path, float]:
    """A PNG of log10 density in the molecule's best-fit plane (two largest principal axes), atoms marked.

    Returns ``(path, max_density_e_per_bohr3)``. PySCF results, or GFN2-xTB for H/C/N/O (see :func:`density_cube`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import chemical_symbols
    from pyscf.dft import numint

    mol, dm, kind = _density_mol(es)
    center, e1, e2 = _principal_plane(es.positions)
    rel = es.positions - center
    a, b = rel @ e1, rel @ e2
    ua = np.linspace(a.min() - margin_A, a.max() + margin_A, n_points)
    ub = np.linspace(b.min() - margin_A, b.max() + margin_A, n_points)
    ga, gb = np.meshgrid(ua, ub, indexing="xy")
    pts = center + ga.reshape(-1, 1) * e1 + gb.reshape(-1, 1) * e2
    ao = mol.eval_gto("GTOval", pts / units.Bohr)
    rho = numint.eval_rho(mol, ao, dm).reshape(ga.shape)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=110)
    im = ax.pcolormesh(ga, gb, np.log10(np.maximum(rho, 1e-6)), shading="auto", cmap="viridis", vmin=-4)
    fig.colorbar(im, ax=ax, label="log10 density (e/Bohr³)")
    ax.scatter(a, b, c="w", s=18, edgecolors="k", linewidths=0.5)
    for s, x, y in zip((chemical_symbols[z] for z in es.numbers), a, b):
        ax.annotate(s, (x, y), color="w", fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_aspect("equal")
    ax.set_xlabel("principal axis 1 (Å)")
    ax.set_ylabel("principal axis 2 (Å)")
    ax.set_title(f"{es.atoms().get_chemical_formula()} {es.method}: {kind} density, molecular plane", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path, float(rho.max())
