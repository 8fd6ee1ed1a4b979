"""Atomic-orbital layouts of the codes we learn from, and the change of basis between them and Cartesian p.

A layout says, per element, the angular momenta of its shells in the code's AO order and the order of the three
p components. The Hamiltonian head works in a *canonical* per-atom block: ``n_s`` s functions, then ``n_p`` p
shells of three Cartesian components (x, y, z) each, padded to the largest element. :meth:`BasisLayout.canonical`
maps every AO of a molecule to its place in that block, so the head's Cartesian output lands in the code's order;
:meth:`BasisLayout.rotation` is the matrix U with ``F(R·x) = U F(x) Uᵀ`` in the code's own order.

Only s and p shells are supported (H, C, N, O in GFN2-xTB; s/p Gaussian bases such as STO-3G and 6-31G in PySCF).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from triscale.quantum.electronic import P_ORDER, QuantumInputError, xtb_shells

__all__ = ["BasisLayout", "basis_layout"]


@dataclass(frozen=True)
class BasisLayout:
    """Shells per element (code order) and the p-component order of one AO basis."""

    name: str  # "gfn2-xtb" or "pyscf:<basis>"
    shells: tuple[tuple[int, tuple[int, ...]], ...]  # ((Z, (l, l, ...)), ...)
    p_order: tuple[int, int, int]  # Cartesian index (x=0, y=1, z=2) of each p component in code order

    @property
    def shell_map(self) -> dict[int, tuple[int, ...]]:
        return dict(self.shells)

    @property
    def elements(self) -> list[int]:
        return [z for z, _ in self.shells]

    @property
    def n_s(self) -> int:
        return max(sum(1 for ll in ls if ll == 0) for _, ls in self.shells)

    @property
    def n_p(self) -> int:
        return max(sum(1 for ll in ls if ll == 1) for _, ls in self.shells)

    @property
    def block_size(self) -> int:
        """Size of the canonical per-atom block: n_s + 3 n_p."""
        return self.n_s + 3 * self.n_p

    def n_ao(self, z: int) -> int:
        return sum(2 * ll + 1 for ll in self.shell_map[int(z)])

    def check(self, numbers) -> None:
        bad = sorted(set(int(z) for z in numbers) - set(self.elements))
        if bad:
            from ase.data import chemical_symbols

            raise QuantumInputError(
                f"The {self.name} Hamiltonian model covers {' '.join(chemical_symbols[z] for z in self.elements)} "
                f"only; this molecule has {' '.join(chemical_symbols[z] for z in bad)}."
            )

    def atom_canonical(self, z: int) -> np.ndarray:
        """For each AO of element ``z`` (code order), its index in the canonical block."""
        out, n_s, n_p = [], 0, 0
        for ll in self.shell_map[int(z)]:
            if ll == 0:
                out.append(n_s)
                n_s += 1
            else:
                out.extend(self.n_s + 3 * n_p + c for c in self.p_order)
                n_p += 1
        return np.asarray(out, dtype=np.int64)

    def canonical(self, numbers) -> tuple[np.ndarray, np.ndarray]:
        """``(ao_atom, ao_canonical)`` for a molecule: the atom of each AO and its canonical block index."""
        self.check(numbers)
        ao_atom = np.concatenate([np.full(self.n_ao(z), i) for i, z in enumerate(numbers)])
        ao_can = np.concatenate([self.atom_canonical(z) for z in numbers])
        return ao_atom, ao_can

    def rotation(self, numbers, rot: np.ndarray) -> np.ndarray:
        """U with F(x Rᵀ) = U F(x) Uᵀ for positions rotated as ``x -> x @ rot.T`` (code AO order)."""
        rot = np.asarray(rot, dtype=float)
        d = rot[np.ix_(self.p_order, self.p_order)]  # p components in code order
        blocks = []
        for z in numbers:
            for ll in self.shell_map[int(z)]:
                blocks.append(np.ones((1, 1)) if ll == 0 else d)
        n = sum(b.shape[0] for b in blocks)
        u = np.zeros((n, n))
        k = 0
        for b in blocks:
            m = b.shape[0]
            u[k : k + m, k : k + m] = b
            k += m
        return u


def basis_layout(name: str, elements=(1, 6, 7, 8)) -> BasisLayout:
    """``'gfn2-xtb'`` (tblite) or ``'pyscf:<basis>'`` (e.g. ``'pyscf:6-31g'``) for the given elements."""
    return _layout(str(name).lower(), tuple(sorted(int(z) for z in elements)))


@lru_cache(maxsize=16)
def _layout(name: str, elements: tuple[int, ...]) -> BasisLayout:
    if name in ("gfn2-xtb", "gfn1-xtb"):
        shells = tuple((z, xtb_shells(name, z)) for z in elements)
        p_order = P_ORDER["tblite"]
    elif name.startswith("pyscf:"):
        from pyscf import gto

        basis = name.split(":", 1)[1]
        out = []
        for z in elements:
            mol = gto.M(atom=[(z, (0.0, 0.0, 0.0))], basis=basis, spin=z % 2, verbose=0)
            ls = []
            for b in range(mol.nbas):
                ls.extend([mol.bas_angular(b)] * mol.bas_nctr(b))
            out.append((z, tuple(ls)))
        shells = tuple(out)
        p_order = P_ORDER["pyscf"]
    else:
        raise QuantumInputError(f"Unknown basis layout {name!r}; use 'gfn2-xtb' or 'pyscf:<basis>'.")
    for z, ls in shells:
        if any(ll > 1 for ll in ls):
            raise QuantumInputError(
                f"The Hamiltonian head handles s and p shells only; {name} has l={max(ls)} shells for Z={z}."
            )
    return BasisLayout(name, shells, p_order)
