"""Server-side plots for the workbench (matplotlib's object API, SVG; no pyplot state, so threads are safe).

* :func:`eos_svg`: the energy-volume points of an ``equation_of_state`` result and the fitted curve (refitted
  from the points with the same ``ase.eos`` form the tool used), the equilibrium volume marked.
* :func:`md_svg`: potential/total energy and temperature along an MD trajectory, read from the trajectory
  file the ``molecular_dynamics`` tool wrote (the result itself carries only means and spreads).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["eos_svg", "md_svg", "md_traces"]


def _figure(rows: int = 1, height: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, height * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _svg(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def eos_svg(result: dict[str, Any]) -> bytes:
    """The E(V) scan and its fit as SVG, from an ``equation_of_state`` result dict."""
    from ase.eos import EquationOfState

    v = np.asarray(result["volumes_A3"], dtype=float)
    e = np.asarray(result["energies_eV"], dtype=float)
    if v.size < 3 or v.size != e.size:
        raise ValueError("the result holds no energy-volume points to plot")
    fig, (ax,) = _figure()
    ax.plot(v, e, "o", color="#1f5fa8", label="computed")
    try:
        fit = EquationOfState(v, e, eos=result.get("eos", "birchmurnaghan"))
        fit.fit()
        vv = np.linspace(v.min(), v.max(), 200)
        ax.plot(vv, fit.func(vv, *fit.eos_parameters), "-", color="#d0612b", label=f"{result.get('eos', '')} fit")
    except Exception:  # noqa: BLE001 - the points are still worth showing
        pass
    v0 = result.get("equilibrium_volume_A3")
    if v0 is not None:
        ax.axvline(v0, color="0.5", ls=":", lw=1)
    b = result.get("bulk_modulus_GPa")
    title = f"{result.get('formula', '')} · {result.get('method', '')}"
    if v0 is not None and b is not None:
        title += f"\nV0 = {v0:.3f} Å³, B = {b:.1f} GPa"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("volume (Å³)")
    ax.set_ylabel("energy (eV)")
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


def md_traces(frames: list[Any], timestep_fs: float, interval: int) -> dict[str, list[float]]:
    """Time (ps), potential and total energy (eV) and temperature (K) of trajectory frames with energies."""
    from ase import units

    t, ep, et, temp = [], [], [], []
    for i, atoms in enumerate(frames):
        try:
            pot = float(atoms.get_potential_energy())
        except Exception:  # noqa: BLE001 - a frame without energy (no calculator stored)
            continue
        kin = float(atoms.get_kinetic_energy())
        t.append(i * interval * timestep_fs / 1000.0)
        ep.append(pot)
        et.append(pot + kin)
        temp.append(kin / (1.5 * units.kB * len(atoms)))
    return {"time_ps": t, "potential_eV": ep, "total_eV": et, "temperature_K": temp}


def md_svg(traces: dict[str, list[float]], title: str = "") -> bytes:
    """Energy and temperature traces as SVG."""
    if len(traces["time_ps"]) < 2:
        raise ValueError("the trajectory holds fewer than two frames with energies")
    fig, (a1, a2) = _figure(2, 2.2)
    a1.plot(traces["time_ps"], traces["potential_eV"], color="#1f5fa8", label="potential")
    a1.plot(traces["time_ps"], traces["total_eV"], color="#d0612b", label="total")
    a1.set_ylabel("energy (eV)")
    a1.legend(fontsize=8, frameon=False)
    a1.set_title(title, fontsize=9)
    a2.plot(traces["time_ps"], traces["temperature_K"], color="#3a8a3a")
    a2.set_ylabel("T (K)")
    a2.set_xlabel("time (ps)")
    return _svg(fig)


def spectrum_svg(result: dict[str, Any]) -> bytes:
    """The vibrational spectrum of a ``vibrational_analysis`` result: IR sticks (intensity) when the result has
    them, else one stick per mode, with a Lorentzian-broadened envelope (FWHM 20 cm-1); imaginary modes are drawn
    at negative wavenumbers in red."""
    freqs = np.asarray(result.get("vibrational_frequencies_cm1") or [], dtype=float)
    if freqs.size == 0:
        raise ValueError("the result holds no vibrational frequencies to plot")
    ir = result.get("ir_intensities_D2_per_A2_amu")
    heights = np.asarray(ir, dtype=float) if ir is not None and len(ir) == freqs.size else np.ones_like(freqs)
    fig, (ax,) = _figure()
    real = freqs >= 0
    ax.vlines(freqs[real], 0, heights[real], color="#1f5fa8", lw=1.5)
    if (~real).any():
        ax.vlines(freqs[~real], 0, heights[~real], color="#c0392b", lw=1.5, label="imaginary")
    grid = np.linspace(min(0.0, freqs.min()) - 100, freqs.max() + 200, 2000)
    gamma = 10.0  # half width at half maximum, cm-1
    envelope = (heights[:, None] * gamma**2 / ((grid[None, :] - freqs[:, None]) ** 2 + gamma**2)).sum(0)
    ax.plot(grid, envelope, "-", color="#d0612b", lw=1, label="broadened (FWHM 20 cm⁻¹)")
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("IR intensity (D²/Å²/amu)" if ir is not None else "modes")
    title = f"{result.get('formula', '')} · {result.get('method', '')}"
    zpe = result.get("zero_point_energy_eV")
    if zpe is not None:
        title += f"\nZPE = {zpe:.4f} eV, {freqs.size} modes"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


def levels_svg(result: dict[str, Any]) -> bytes:
    """The orbital level diagram of an ``orbital_energies`` / ``electronic_structure`` result: the window of
    levels around the gap, occupied in blue, virtual in grey, HOMO and LUMO marked with the gap between them."""
    levels = np.asarray(result.get("orbital_energies_eV") or [], dtype=float)
    occ = np.asarray(result.get("occupations") or [], dtype=float)
    if levels.size == 0 or occ.size != levels.size:
        raise ValueError("the result holds no orbital energies to plot")
    fig, (ax,) = _figure(height=3.6)
    occupied = occ > 1e-6
    for e, o in zip(levels, occupied):
        ax.hlines(e, 0.2, 0.8, color="#1f5fa8" if o else "0.55", lw=2)
    homo, lumo = result.get("homo_eV"), result.get("lumo_eV")
    if homo is not None:
        ax.annotate("HOMO", (0.82, homo), fontsize=8, va="center")
    if lumo is not None:
        ax.annotate("LUMO", (0.82, lumo), fontsize=8, va="center")
    if homo is not None and lumo is not None:
        ax.annotate("", xy=(0.5, lumo), xytext=(0.5, homo), arrowprops={"arrowstyle": "<->", "color": "#d0612b"})
        ax.text(0.52, (homo + lumo) / 2, f"gap {lumo - homo:.2f} eV", fontsize=8, color="#d0612b", va="center")
    ax.set_xlim(0, 1.2)
    ax.set_xticks([])
    ax.set_ylabel("orbital energy (eV)")
    ax.set_title(f"{result.get('formula', '')} · {result.get('method', '')}", fontsize=9)
    return _svg(fig)
