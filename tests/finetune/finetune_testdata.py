"""Small labelled datasets for the fine-tuning tests."""

import numpy as np


def emt_frames(names, n_each, seed, scale=0.08):
    """Rattled ase g2 molecules labelled by EMT (energy eV, forces eV/Å) under REF_ keys."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for name in names:
        for _ in range(n_each):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
            atoms.calc = EMT()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = None
            atoms.info["REF_energy"] = energy
            atoms.arrays["REF_forces"] = forces
            frames.append(atoms)
    return frames
