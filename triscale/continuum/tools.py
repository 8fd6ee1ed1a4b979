"""Continuum tools: ``simulate_pde`` (reference solver) and ``predict_pde`` (neural-operator surrogate, optionally
checked against the solver). Plain typed functions with pydantic input/result models; each call writes the
fields to an ``.npz`` file and a PNG snapshot into ``out_dir`` and returns summary statistics.

Units: the PDEs are non-dimensional (domain length 1, time in units of the domain's diffusive/advective scale),
so field names say what a value *is* (``vorticity``, ``t_final``, ``viscosity``) rather than carrying SI units.

Errors: bad arguments raise :class:`ContinuumInputError` (a ``ValueError``) with a message that says what is
allowed; a solver failure raises :class:`ContinuumComputationError` (a ``RuntimeError``).
"""

from __future__ import annotations

import difflib
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "PDES",
    "ContinuumInputError",
    "ContinuumComputationError",
    "FieldStats",
    "SimulatePDEInput",
    "SimulatePDEResult",
    "PredictPDEInput",
    "PredictPDEResult",
    "simulate_pde",
    "predict_pde",
    "run_simulate_pde",
    "run_predict_pde",
]


class ContinuumInputError(ValueError):
    """The arguments are invalid; the message says what is allowed."""


class ContinuumComputationError(RuntimeError):
    """The solver or the surrogate failed (divergence, non-finite values)."""


# name -> (description, field name, dims, resolution limits, default resolution)
PDES: dict[str, dict[str, Any]] = {
    "navier_stokes_2d": {
        "description": "2D incompressible Navier-Stokes (vorticity form), periodic unit square, pseudo-spectral",
        "field": "vorticity",
        "dim": 2,
        "resolution": (16, 256),
        "default_resolution": 64,
        "initial_conditions": ("random", "taylor_green"),
    },
    "burgers_1d": {
        "description": "1D viscous Burgers, periodic unit interval, pseudo-spectral",
        "field": "velocity",
        "dim": 1,
        "resolution": (16, 4096),
        "default_resolution": 512,
        "initial_conditions": ("random", "cole_hopf"),
    },
    "heat": {
        "description": "heat equation, periodic unit box (1D or 2D), exact Fourier propagator",
        "field": "temperature",
        "dim": 2,
        "resolution": (16, 512),
        "default_resolution": 64,
        "initial_conditions": ("gaussian", "random"),
    },
    "advection_diffusion": {
        "description": "advection-diffusion with a constant velocity, periodic unit box, exact Fourier propagator",
        "field": "concentration",
        "dim": 2,
        "resolution": (16, 512),
        "default_resolution": 64,
        "initial_conditions": ("gaussian", "random"),
    },
    "darcy_2d": {
        "description": "steady Darcy flow -div(a grad u) = f on the unit square, u = 0 on the boundary, "
        "finite differences + sparse LU",
        "field": "pressure",
        "dim": 2,
        "resolution": (9, 257),
        "default_resolution": 65,
        "initial_conditions": ("random", "manufactured"),
    },
}
MAX_T_FINAL = 100.0
MAX_1D_RESOLUTION = 4096


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldStats(_Model):
    min: float
    max: float
    mean: float
    std: float
    l2_norm: float = Field(description="Root-mean-square over the grid (discrete L2 norm of the unit box).")

    @classmethod
    def of(cls, a: np.ndarray) -> FieldStats:
        a = np.asarray(a, dtype=np.float64)
        return cls(
            min=float(a.min()),
            max=float(a.max()),
            mean=float(a.mean()),
            std=float(a.std()),
            l2_norm=float(np.sqrt(np.mean(a**2))),
        )


class SimulatePDEInput(_Model):
    pde: str = Field(description="One of: " + ", ".join(PDES) + ".")
    resolution: int | None = Field(None, description="Grid points per axis (default depends on the PDE).")
    t_final: float = Field(1.0, description="Final time (non-dimensional; ignored by the steady darcy_2d).")
    viscosity: float | None = Field(
        None, description="Kinematic viscosity nu (navier_stokes_2d: default 1e-3; burgers_1d: default 0.01)."
    )
    diffusivity: float | None = Field(None, description="Diffusivity kappa (heat, advection_diffusion; default 0.01).")
    velocity: list[float] | None = Field(
        None,
        description="Constant advection velocity, one component per "
        "dimension (advection_diffusion; default [0.5, 0.25]).",
    )
    dim: int | None = Field(None, description="1 or 2 for heat/advection_diffusion (default 2).")
    forcing: Literal["symmetric", "fno", "none"] = Field(
        "symmetric",
        description="navier_stokes_2d forcing: 'symmetric' = A(cos 4pi x + cos 4pi y), "
        "'fno' = A(sin 2pi(x+y) + cos 2pi(x+y)), 'none'.",
    )
    forcing_amplitude: float = Field(0.1, description="Amplitude A of the navier_stokes_2d forcing.")
    source: float = Field(1.0, description="Constant source f of darcy_2d.")
    initial_condition: str | None = Field(
        None,
        description="navier_stokes_2d: random | taylor_green; burgers_1d: random | cole_hopf; "
        "heat/advection_diffusion: gaussian | random; darcy_2d (permeability): random | manufactured. "
        "Analytic choices also report the error against the exact solution.",
    )
    seed: int = Field(0, description="Seed of the random initial condition / permeability.")
    n_snapshots: int = Field(5, ge=1, le=50, description="Number of saved time points (evenly spaced, incl. t_final).")
    out_dir: str | None = Field(None, description="Directory for the .npz and .png files.")

    @field_validator("pde")
    @classmethod
    def _known_pde(cls, v: str) -> str:
        key = v.strip().lower().replace("-", "_").replace(" ", "_")
        aliases = {
            "navier_stokes": "navier_stokes_2d",
            "ns": "navier_stokes_2d",
            "ns2d": "navier_stokes_2d",
            "burgers": "burgers_1d",
            "darcy": "darcy_2d",
            "diffusion": "heat",
            "advection": "advection_diffusion",
        }
        key = aliases.get(key, key)
        if key not in PDES:
            close = difflib.get_close_matches(key, list(PDES), n=2, cutoff=0.5)
            raise ValueError(
                f"unknown PDE {v!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; available: {', '.join(PDES)}"
            )
        return key

    @model_validator(mode="after")
    def _check(self) -> SimulatePDEInput:
        spec = PDES[self.pde]
        dim = self.dim if self.dim is not None else spec["dim"]
        if self.pde in ("heat", "advection_diffusion"):
            if dim not in (1, 2):
                raise ValueError(f"dim must be 1 or 2, got {dim}")
        elif self.dim is not None and self.dim != spec["dim"]:
            raise ValueError(f"{self.pde} is {spec['dim']}-dimensional; leave dim unset")
        lo, hi = spec["resolution"]
        if dim == 1 and self.pde in ("heat", "advection_diffusion"):
            hi = MAX_1D_RESOLUTION
        if self.resolution is not None and not lo <= self.resolution <= hi:
            raise ValueError(f"resolution {self.resolution} is outside [{lo}, {hi}] for {self.pde}")
        if self.pde != "darcy_2d" and not (0 < self.t_final <= MAX_T_FINAL and math.isfinite(self.t_final)):
            raise ValueError(f"t_final must be in (0, {MAX_T_FINAL}], got {self.t_final}")
        for name in ("viscosity", "diffusivity"):
            val = getattr(self, name)
            if val is not None and not (val > 0 and math.isfinite(val)):
                raise ValueError(f"{name} must be positive, got {val}")
        if self.viscosity is not None and self.pde not in ("navier_stokes_2d", "burgers_1d"):
            raise ValueError(
                f"viscosity applies to navier_stokes_2d and burgers_1d, not {self.pde}; "
                "use diffusivity for heat/advection_diffusion"
            )
        if self.diffusivity is not None and self.pde not in ("heat", "advection_diffusion"):
            raise ValueError(f"diffusivity applies to heat and advection_diffusion, not {self.pde}")
        if self.velocity is not None:
            if self.pde != "advection_diffusion":
                raise ValueError("velocity applies to advection_diffusion only")
            if len(self.velocity) != dim:
                raise ValueError(f"velocity needs {dim} components, got {len(self.velocity)}")
        if self.initial_condition is not None and self.initial_condition not in spec["initial_conditions"]:
            raise ValueError(
                f"initial_condition {self.initial_condition!r} is not available for {self.pde}; "
                f"use one of {', '.join(spec['initial_conditions'])}"
            )
        return self


class SimulatePDEResult(_Model):
    pde: str
    description: str
    field_name: str = Field(description="What the saved field is (vorticity, velocity, temperature, ...).")
    resolution: int
    dim: int
    grid_spacing: float
    parameters: dict[str, Any] = Field(description="The PDE parameters actually used (defaults filled in).")
    initial_condition: str
    times: list[float] = Field(description="Times of the saved snapshots (non-dimensional).")
    initial_stats: FieldStats
    final_stats: FieldStats
    n_time_steps: int = 0
    solver_wall_time_s: float
    analytic_max_abs_error: float | None = Field(
        None, description="Max |numerical - exact| at t_final, for analytic initial conditions."
    )
    analytic_rel_l2_error: float | None = None
    npz_path: str = Field(description="Arrays: 'fields' (n_snapshots, grid...), 'times', 'input', 'x'.")
    png_path: str
    notes: list[str] = Field(default_factory=list)


def _as_input(model: type[BaseModel], kwargs: dict[str, Any]) -> Any:
    try:
        return model.model_validate(kwargs)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise ContinuumInputError("; ".join(parts)) from None


def simulate_pde(
    pde: str,
    *,
    resolution: int | None = None,
    t_final: float = 1.0,
    viscosity: float | None = None,
    diffusivity: float | None = None,
    velocity: list[float] | None = None,
    dim: int | None = None,
    forcing: str = "symmetric",
    forcing_amplitude: float = 0.1,
    source: float = 1.0,
    initial_condition: str | None = None,
    seed: int = 0,
    n_snapshots: int = 5,
    out_dir: str | Path = "continuum_runs",
) -> SimulatePDEResult:
    """Run a reference solver and save its fields (npz), a PNG snapshot and summary statistics in ``out_dir``."""
    args = {k: v for k, v in locals().items() if v is not None}
    args["out_dir"] = str(out_dir)
    return run_simulate_pde(_as_input(SimulatePDEInput, args))


def _new_path(out_dir: Path, stem: str, suffix: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    i = 0
    while True:
        p = out_dir / f"{stem}{'_' + str(i) if i else ''}{suffix}"
        if not p.exists() and not p.with_suffix(".png").exists():
            return p
        i += 1


def run_simulate_pde(a: SimulatePDEInput) -> SimulatePDEResult:
    """:func:`simulate_pde` on a validated input model (the entry point for worker processes)."""
    import torch

    from triscale.continuum import analytic, grf, solvers

    spec = PDES[a.pde]
    n = a.resolution or spec["default_resolution"]
    dim = a.dim or spec["dim"]
    ic = a.initial_condition or spec["initial_conditions"][0]
    times = [a.t_final * (i + 1) / a.n_snapshots for i in range(a.n_snapshots)]
    params: dict[str, Any] = {}
    exact = None
    notes: list[str] = []
    info: dict[str, Any] = {"n_steps": 0}
    t0 = time.perf_counter()
    try:
        if a.pde == "navier_stokes_2d":
            nu = a.viscosity if a.viscosity is not None else 1e-3
            params = {
                "viscosity": nu,
                "forcing": a.forcing,
                "forcing_amplitude": a.forcing_amplitude,
                "t_final": a.t_final,
            }
            if ic == "taylor_green":
                u0 = analytic.taylor_green_vorticity(n, 0.0, nu, k=1)
                forcing = torch.zeros(n, n, dtype=torch.float64)
                params["forcing"] = "none (Taylor-Green)"
                exact = analytic.taylor_green_vorticity(n, a.t_final, nu, k=1)
            else:
                u0 = 3.0 * grf.periodic_grf(1, n, 2, alpha=2.5, tau=7.0, seed=a.seed)[0]
                forcing = solvers.ns_forcing(n, a.forcing, a.forcing_amplitude)
            fields, info = solvers.navier_stokes_2d(u0, a.t_final, nu, forcing, times=times, return_info=True)
        elif a.pde == "burgers_1d":
            nu = a.viscosity if a.viscosity is not None else 0.01
            params = {"viscosity": nu, "t_final": a.t_final}
            if ic == "cole_hopf":
                u0 = analytic.cole_hopf_burgers(n, 0.0, nu)
                exact = analytic.cole_hopf_burgers(n, a.t_final, nu)
            else:
                u0 = grf.periodic_grf(1, n, 1, alpha=2.0, tau=5.0, sigma=25.0, seed=a.seed)[0]
            fields, info = solvers.burgers_1d(u0, a.t_final, nu, times=times, return_info=True)
        elif a.pde in ("heat", "advection_diffusion"):
            kappa = a.diffusivity if a.diffusivity is not None else 0.01
            vel = (
                a.velocity
                if a.velocity is not None
                else ([0.5, 0.25][:dim] if a.pde == "advection_diffusion" else [0.0] * dim)
            )
            params = {"diffusivity": kappa, "velocity": vel, "dim": dim, "t_final": a.t_final}
            if ic == "gaussian":
                u0 = analytic.gaussian_diffusion(n, 0.0, kappa, dim=dim)
                exact = analytic.gaussian_diffusion(n, a.t_final, kappa, dim=dim, velocity=vel)
            else:
                u0 = grf.periodic_grf(1, n, dim, alpha=2.0, tau=5.0, seed=a.seed)[0]
            fields, info = solvers.advection_diffusion(
                u0, a.t_final, kappa, vel, dim=dim, times=times, return_info=True
            )
        else:  # darcy_2d
            params = {"source": a.source}
            if ic == "manufactured":
                u0, f, exact = analytic.darcy_manufactured(n)
                params["source"] = "manufactured f(x, y)"
            else:
                u0 = grf.darcy_coefficient(1, n, seed=a.seed)[0]
                f = a.source
            fields = solvers.darcy_2d(u0, f).unsqueeze(0)
            times = [0.0]
            notes.append("darcy_2d is steady: 'input' is the permeability a, 'fields' the pressure u.")
    except solvers.SolverDiverged as e:
        raise ContinuumComputationError(
            f"{a.pde} solver failed: {e}. Try a smaller t_final, a larger viscosity/diffusivity or a finer resolution."
        ) from None
    wall = time.perf_counter() - t0
    fields_np = fields.cpu().numpy()
    u0_np = u0.cpu().numpy()
    if not np.isfinite(fields_np).all():
        raise ContinuumComputationError(f"{a.pde} produced non-finite values")
    err_max = err_rel = None
    if exact is not None:
        diff = fields_np[-1] - exact.numpy()
        err_max = float(np.abs(diff).max())
        err_rel = float(np.linalg.norm(diff) / max(np.linalg.norm(exact.numpy()), 1e-300))
    if a.pde == "darcy_2d":
        x = np.linspace(0.0, 1.0, n)
        h = 1.0 / (n - 1)
    else:
        x = (np.arange(n) + 0.5) / n
        h = 1.0 / n
    out = _new_path(Path(a.out_dir or "continuum_runs"), f"{a.pde}_n{n}_seed{a.seed}", ".npz")
    meta = {"pde": a.pde, "parameters": params, "initial_condition": ic, "resolution": n, "dim": dim}
    np.savez_compressed(
        out, fields=fields_np, times=np.asarray(times), input=u0_np, x=x, metadata=np.asarray(json.dumps(meta))
    )
    png = out.with_suffix(".png")
    in_label = "permeability a" if a.pde == "darcy_2d" else f"{spec['field']} t=0"
    _snapshot_png(png, u0_np, fields_np, times, dim, in_label, spec["field"], a.pde)
    return SimulatePDEResult(
        pde=a.pde,
        description=spec["description"],
        field_name=spec["field"],
        resolution=n,
        dim=dim,
        grid_spacing=h,
        parameters=params,
        initial_condition=ic,
        times=times,
        initial_stats=FieldStats.of(u0_np),
        final_stats=FieldStats.of(fields_np[-1]),
        n_time_steps=int(info.get("n_steps", 0)),
        solver_wall_time_s=wall,
        analytic_max_abs_error=err_max,
        analytic_rel_l2_error=err_rel,
        npz_path=str(out),
        png_path=str(png),
        notes=notes,
    )


def _snapshot_png(
    path: Path,
    first: np.ndarray,
    fields: np.ndarray,
    times: list[float],
    dim: int,
    first_label: str,
    field: str,
    title: str,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if dim == 1:
        fig = Figure(figsize=(6, 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        x = (np.arange(first.shape[-1]) + 0.5) / first.shape[-1]
        ax.plot(x, first, "k--", lw=1, label=first_label)
        for f, t in zip(fields, times, strict=True):
            ax.plot(x, f, lw=1.2, label=f"t={t:.3g}")
        for name, arr in (extra or {}).items():
            ax.plot(x, arr, lw=1.2, ls=":", label=name)
        ax.set_xlabel("x")
        ax.set_ylabel(field)
        ax.legend(fontsize=7)
        ax.set_title(title)
    else:
        panels = [(first_label, first), (f"{field} t={times[-1]:.3g}", fields[-1])]
        if len(fields) > 2:
            panels.insert(1, (f"{field} t={times[len(times) // 2 - 1]:.3g}", fields[len(times) // 2 - 1]))
        panels += list((extra or {}).items())
        fig = Figure(figsize=(3.2 * len(panels), 3.0))
        FigureCanvasAgg(fig)
        for i, (label, arr) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            im = ax.imshow(np.asarray(arr).T, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


# ------------------------------------------------------------------------------------------------ predict_pde


class PredictPDEInput(_Model):
    model_name: str = Field(
        description="A shipped neural operator (ns2d-fno, ns2d-gfno, burgers1d-fno, "
        "darcy2d-fno, ...) or a checkpoint directory."
    )
    input_npz: str | None = Field(
        None,
        description="An .npz with the input field under 'input_key' on the "
        "operator's grid; if omitted a random input is drawn from the training law.",
    )
    input_key: str = Field("input", description="Array name in input_npz.")
    seed: int = Field(0, description="Seed of the random input (when input_npz is not given).")
    rotate_quarter_turns: int = Field(
        0,
        description="Rotate the (2D) input by this many 90° turns first "
        "(an out-of-distribution test for non-equivariant models).",
    )
    check_with_solver: bool = Field(
        False,
        description="Also run the reference solver on the same input and "
        "report the surrogate's relative L2 error and speed-up.",
    )
    confidence: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="Level of the split-conformal error bound and band (calibrated on held-out solver data).",
    )
    out_dir: str | None = Field(None, description="Directory for the .npz and .png files.")


class PredictPDEResult(_Model):
    model_name: str
    task: str = Field(description="The operator's task (what it maps).")
    task_description: str
    field_name: str
    resolution: int
    input_stats: FieldStats
    prediction_stats: FieldStats
    surrogate_wall_time_s: float
    model_validation_rel_l2: float | None = Field(
        None, description="The operator's relative L2 error on its held-out validation set (from its card)."
    )
    solver_wall_time_s: float | None = None
    speedup_over_solver: float | None = None
    rel_l2_error_vs_solver: float | None = Field(None, description="||prediction - solver|| / ||solver||.")
    confidence: float | None = Field(None, description="Level of the conformal bound and band below.")
    conformal_error_bound_rel_l2: float | None = Field(
        None,
        description="Split-conformal bound: for inputs like the training inputs the relative L2 error is below this "
        "with probability >= confidence (calibrated on held-out solver data; null if the model has no calibration).",
    )
    conformal_band_half_width: float | None = Field(
        None,
        description="Half-width of a simultaneous band prediction ± w that contains the whole true field with "
        "probability >= confidence (in distribution); saved as 'lower'/'upper' in the npz.",
    )
    input_pvalue: float | None = Field(
        None,
        description="Conformal p-value of the input against the calibration inputs (small, e.g. < 0.01: the input "
        "is unlike the training inputs and the bound may not hold; run the solver).",
    )
    within_conformal_bound: bool | None = Field(
        None, description="With check_with_solver: is the actual error below the conformal bound?"
    )
    npz_path: str = Field(description="Arrays: 'input', 'prediction', 'lower', 'upper' and, if checked, 'reference'.")
    png_path: str
    notes: list[str] = Field(default_factory=list)


TASK_FIELDS = {
    "ns2d": ("vorticity t=0", "vorticity"),
    "burgers1d": ("velocity t=0", "velocity"),
    "darcy2d": ("permeability a", "pressure"),
}


def predict_pde(
    model_name: str,
    *,
    input_npz: str | None = None,
    input_key: str = "input",
    seed: int = 0,
    rotate_quarter_turns: int = 0,
    check_with_solver: bool = False,
    confidence: float = 0.9,
    out_dir: str | Path = "continuum_runs",
) -> PredictPDEResult:
    """Predict a field with a neural operator; optionally check it against the reference solver."""
    args = {k: v for k, v in locals().items() if v is not None}
    args["out_dir"] = str(out_dir)
    return run_predict_pde(_as_input(PredictPDEInput, args))


def reference_solve(task: str, x: Any) -> Any:
    """The reference output of a task for inputs ``(B, 1, *grid)`` on the operator's grid, computed at the task's
    solver resolution where the input can be resampled exactly (periodic tasks, Fourier interpolation) and on the
    operator's own grid for Darcy (a coarse check)."""
    from triscale.continuum import solvers
    from triscale.continuum.data import TASKS, fourier_resample

    spec = TASKS[task]
    p = spec.params
    u = x[:, 0].double()
    if task == "ns2d":
        fine = fourier_resample(u, spec.solver_resolution, 2)
        f = solvers.ns_forcing(spec.solver_resolution, p["forcing"], p["forcing_amplitude"])
        y = fourier_resample(solvers.navier_stokes_2d(fine, p["t_final"], p["viscosity"], f), spec.resolution, 2)
    elif task == "burgers1d":
        fine = fourier_resample(u, spec.solver_resolution, 1)
        y = fourier_resample(solvers.burgers_1d(fine, p["t_final"], p["viscosity"]), spec.resolution, 1)
    elif task == "darcy2d":
        y = solvers.darcy_2d(u, p["source"])
    else:
        raise ContinuumInputError(f"no reference solver for task {task!r}")
    return y.unsqueeze(1)


def run_predict_pde(a: PredictPDEInput) -> PredictPDEResult:
    """:func:`predict_pde` on a validated input model (the entry point for worker processes)."""
    import torch

    from triscale.continuum.data import TASKS, relative_l2, sample_inputs
    from triscale.continuum.operators import load_operator, shipped_operators, transform_field

    try:
        model = load_operator(a.model_name, dtype=torch.float32)
    except FileNotFoundError:
        names = shipped_operators()
        close = difflib.get_close_matches(a.model_name, names, n=2, cutoff=0.4)
        raise ContinuumInputError(
            f"unknown model {a.model_name!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f"; shipped operators: {', '.join(names)}"
        ) from None
    cfg = model.cfg
    task = cfg.task.get("name", "")
    if task not in TASKS:
        raise ContinuumInputError(f"model {a.model_name!r} has no known task ({task!r})")
    spec = TASKS[task]
    n = spec.resolution
    notes: list[str] = []
    if a.input_npz:
        p = Path(a.input_npz)
        if not p.is_file():
            raise ContinuumInputError(f"input_npz {a.input_npz!r} does not exist")
        with np.load(p) as z:
            if a.input_key not in z:
                raise ContinuumInputError(f"{p.name} has no array {a.input_key!r}; it has {', '.join(z.files)}")
            arr = np.asarray(z[a.input_key], dtype=np.float64)
        want = (n,) * spec.dim
        if arr.shape != want:
            raise ContinuumInputError(
                f"{a.model_name} expects an input of shape {want} (the operator's grid), got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ContinuumInputError("the input field contains non-finite values")
        x = torch.from_numpy(arr)[None, None]
    else:
        x = sample_inputs(task, 1, a.seed)
        notes.append(f"Random input from the {task} training distribution (seed {a.seed}).")
    if a.rotate_quarter_turns % 4:
        if spec.dim != 2:
            raise ContinuumInputError("rotate_quarter_turns needs a 2D task")
        x = transform_field(x, a.rotate_quarter_turns)
        notes.append(f"Input rotated by {90 * (a.rotate_quarter_turns % 4)}°.")
    t0 = time.perf_counter()
    with torch.no_grad():
        pred = model(x.float()).double()
    t_model = time.perf_counter() - t0
    if not torch.isfinite(pred).all():
        raise ContinuumComputationError("the surrogate produced non-finite values")
    ref = None
    t_solver = err = None
    if a.check_with_solver:
        t0 = time.perf_counter()
        ref = reference_solve(task, x)
        t_solver = time.perf_counter() - t0
        err = float(relative_l2(pred, ref)[0])
        if task == "darcy2d":
            notes.append(
                "The Darcy check solves on the operator's 33x33 grid (the training data were solved on "
                "97x97 and subsampled), so a few per cent of the difference is discretisation."
            )
    val = cfg.training.get("best_val_rel_l2")
    bound = half = pval = within = None
    from triscale.continuum.conformal import load_calibration

    cal = load_calibration(a.model_name)
    arrays = {"input": x[0, 0].numpy(), "prediction": pred[0, 0].numpy()}
    if cal is not None:
        bound = cal.error_bound(a.confidence)
        if math.isfinite(bound):
            half = float(cal.band_half_width(pred.numpy(), a.confidence)[0])
            arrays["lower"], arrays["upper"] = arrays["prediction"] - half, arrays["prediction"] + half
        else:
            notes.append(
                f"{cal.rel_l2.n} calibration samples are too few for a finite bound at {a.confidence:.1%}; "
                "lower the confidence."
            )
            bound = None
        pval = float(cal.input_pvalue(x.numpy())[0])
        if pval < 0.01:
            notes.append(
                f"Input p-value {pval:.3g}: this input is unlike the operator's training/calibration inputs, so the "
                "error bound may not hold (e.g. a rotated input for a non-equivariant model). Check with the "
                "solver (check_with_solver=true) before relying on the prediction."
            )
    else:
        notes.append("This operator has no conformal calibration (conformal.json); no error bound.")
    if err is not None and bound is not None:
        within = err <= bound
        if not within:
            notes.append(
                f"The surrogate's error ({err:.1%}) exceeds its {a.confidence:.0%} conformal bound ({bound:.1%}); "
                "trust the solver here."
            )
    elif err is not None and val is not None and err > 3 * max(val, 0.01):
        notes.append(
            f"The surrogate's error ({err:.1%}) is well above its validation error ({val:.1%}): the "
            "input is probably out of its training distribution; trust the solver here."
        )
    out = _new_path(Path(a.out_dir or "continuum_runs"), f"predict_{cfg.name or 'operator'}_seed{a.seed}", ".npz")
    if ref is not None:
        arrays["reference"] = ref[0, 0].numpy()
    np.savez_compressed(out, **arrays, metadata=np.asarray(json.dumps({"model": a.model_name, "task": task})))
    in_label, field = TASK_FIELDS.get(task, ("input", "output"))
    extra = {"solver": arrays["reference"]} if ref is not None else None
    if ref is not None and spec.dim == 2:
        extra["|error|"] = np.abs(arrays["prediction"] - arrays["reference"])
    _snapshot_png(
        out.with_suffix(".png"),
        arrays["input"],
        arrays["prediction"][None],
        [float(spec.params.get("t_final", 0.0))],
        spec.dim,
        in_label,
        f"{field} (surrogate)",
        cfg.name,
        extra,
    )
    return PredictPDEResult(
        model_name=a.model_name,
        task=task,
        task_description=spec.description,
        field_name=field,
        resolution=n,
        input_stats=FieldStats.of(arrays["input"]),
        prediction_stats=FieldStats.of(arrays["prediction"]),
        surrogate_wall_time_s=t_model,
        model_validation_rel_l2=val,
        solver_wall_time_s=t_solver,
        speedup_over_solver=(t_solver / t_model) if t_solver else None,
        rel_l2_error_vs_solver=err,
        confidence=a.confidence if bound is not None else None,
        conformal_error_bound_rel_l2=bound,
        conformal_band_half_width=half,
        input_pvalue=pval,
        within_conformal_bound=within,
        npz_path=str(out),
        png_path=str(out.with_suffix(".png")),
        notes=notes,
    )
