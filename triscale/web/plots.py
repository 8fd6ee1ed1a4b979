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
