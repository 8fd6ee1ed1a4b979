"""Names of the tensors in a TriScale graph, with shape, dtype and unit beside each.

A *graph* is a plain ``dict[str, torch.Tensor]``. Several structures are batched by concatenating their atoms
(``BATCH`` says which structure each atom belongs to) and their edges (indices offset by the atoms before them).

Edge convention: ``EDGE_INDEX[0]`` is the *receiver* (centre atom i), ``EDGE_INDEX[1]`` the *sender* (neighbour j).
The edge vector points from i to j through the periodic image given by ``CELL_SHIFTS``::

    r_ij = pos[j] - pos[i] + CELL_SHIFTS[e] @ cell[batch[i]]

Messages are summed onto the receiver. Lists are *full* (both i->j and j->i are present).
"""

from __future__ import annotations

# --- inputs -------------------------------------------------------------------------------------------------
POSITIONS = "positions"  # (N, 3) float, Å
ATOMIC_NUMBERS = "atomic_numbers"  # (N,) int64
CELL = "cell"  # (B, 3, 3) float, Å; rows are lattice vectors; zeros for a non-periodic structure
PBC = "pbc"  # (B, 3) bool
EDGE_INDEX = "edge_index"  # (2, E) int64; [0] receiver i, [1] sender j
CELL_SHIFTS = "cell_shifts"  # (E, 3) float, integer multiples of the lattice vectors (unitless)
BATCH = "batch"  # (N,) int64, index of the structure each atom belongs to
NUM_ATOMS = "num_atoms"  # (B,) int64
DOMAIN = "domain"  # (B,) int64, index into FoundationConfig.domains (selects energy head and E0)

# --- outputs (model predictions) ----------------------------------------------------------------------------
ENERGY = "energy"  # (B,) float64, eV, total energy including per-element reference energies
ATOMIC_ENERGIES = "energies"  # (N,) float64, eV, per-atom contributions (sum = ENERGY)
FORCES = "forces"  # (N, 3) eV/Å, -dE/dR
STRESS = "stress"  # (B, 3, 3) eV/Å³, (1/V) dE/dε for a symmetric strain ε (ASE sign convention)
VIRIAL = "virial"  # (B, 3, 3) eV, -dE/dε
DIPOLE = "dipole"  # (B, 3) e·Å, from the dipole property head
CHARGES = "charges"  # (N,) e, partial charges of the dipole head (sum to zero per structure)

# --- training labels: REF_ prefix so they never collide with calculator results -----------------------------
REF_ENERGY = "REF_energy"  # (B,) float64, eV
REF_FORCES = "REF_forces"  # (N, 3) float64, eV/Å
REF_STRESS = "REF_stress"  # (B, 6) float64, eV/Å³, Voigt xx yy zz yz xz xy; NaN where absent
REF_DIPOLE = "REF_dipole"  # (B, 3) float64, e·Å; NaN where absent

INPUT_KEYS = (POSITIONS, ATOMIC_NUMBERS, CELL, PBC, EDGE_INDEX, CELL_SHIFTS, BATCH, NUM_ATOMS, DOMAIN)
LABEL_KEYS = (REF_ENERGY, REF_FORCES, REF_STRESS, REF_DIPOLE)
PER_ATOM_KEYS = (POSITIONS, ATOMIC_NUMBERS, BATCH, REF_FORCES)
