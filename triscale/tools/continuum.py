"""Continuum-scale tools in the registry: ``simulate_pde`` (reference PDE solvers) and ``predict_pde``
(neural-operator surrogates), thin wrappers over :mod:`triscale.continuum.tools` that write into the workspace
and run the computation in a worker process."""

from __future__ import annotations

from typing import Any

from triscale.continuum.tools import (
    ContinuumComputationError,
    ContinuumInputError,
    PredictPDEInput,
    PredictPDEResult,
    SimulatePDEInput,
    SimulatePDEResult,
    run_predict_pde,
    run_simulate_pde,
)
from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.errors import CalculationError, ToolInputError

__all__: list[str] = []


class SimulatePDEToolInput(ToolInput, SimulatePDEInput):
    pass


class SimulatePDEToolResult(ToolResult, SimulatePDEResult):
    pass


class PredictPDEToolInput(ToolInput, PredictPDEInput):
    pass


class PredictPDEToolResult(ToolResult, PredictPDEResult):
    pass


def _guarded(fn, inp: Any) -> Any:
    """Run in the worker; continuum errors become the tool errors the caller understands."""
    try:
        return fn(inp)
    except ContinuumInputError as e:
        raise ToolInputError(str(e)) from None
    except ContinuumComputationError as e:
        raise CalculationError(str(e)) from None


def _outputs(ctx: ToolContext, r: Any) -> dict[str, Any]:
    d = r.model_dump()
    for key in ("npz_path", "png_path"):
        d[key] = ctx.workspace.relpath(d[key])
    return d


@register(
    "simulate_pde",
    input=SimulatePDEToolInput,
    result=SimulatePDEToolResult,
    cost="heavy",
    timeout_s=600,
    category="continuum",
    answer_fields=("analytic_rel_l2_error", "n_time_steps"),
)
def simulate_pde_tool(ctx: ToolContext, a: SimulatePDEToolInput) -> SimulatePDEToolResult:
    """Solve a PDE with a reference solver on a grid: navier_stokes_2d (vorticity), burgers_1d, heat,
    advection_diffusion (periodic, spectral) or darcy_2d (finite differences). Saves the fields (npz) and a PNG
    snapshot in the workspace and returns summary statistics; analytic initial conditions (taylor_green,
    cole_hopf, gaussian, manufactured) also report the error against the exact solution."""
    out_dir = ctx.workspace.path(a.out_dir or "fields")
    inp = SimulatePDEInput.model_validate({**a.model_dump(), "out_dir": str(out_dir)})
    r = ctx.compute(_guarded, run_simulate_pde, inp, label=f"{a.pde} solver")
    return SimulatePDEToolResult(**_outputs(ctx, r))


@register(
    "predict_pde",
    input=PredictPDEToolInput,
    result=PredictPDEToolResult,
    cost="light",
    timeout_s=300,
    category="continuum",
    answer_fields=("rel_l2_error_vs_solver", "conformal_error_bound_rel_l2", "speedup_over_solver"),
)
def predict_pde_tool(ctx: ToolContext, a: PredictPDEToolInput) -> PredictPDEToolResult:
    """Predict a PDE solution with a shipped neural operator (ns2d-fno, ns2d-gfno, burgers1d-fno, darcy2d-fno,
    ...) from an input field (npz in the workspace) or a random input; with check_with_solver=true also runs the
    reference solver and reports the surrogate's relative L2 error and speed-up. Saves npz + PNG. Returns a
    split-conformal error bound (relative L2, at `confidence`) and an input p-value: if input_pvalue < 0.01 or
    within_conformal_bound is false, the surrogate is out of its domain; use simulate_pde instead."""
    out_dir = ctx.workspace.path(a.out_dir or "fields")
    upd: dict[str, Any] = {"out_dir": str(out_dir)}
    if a.input_npz:
        upd["input_npz"] = str(ctx.workspace.path(a.input_npz, must_exist=True))
    inp = PredictPDEInput.model_validate({**a.model_dump(), **upd})
    r = ctx.compute(_guarded, run_predict_pde, inp, label=f"{a.model_name} surrogate")
    return PredictPDEToolResult(**_outputs(ctx, r))
