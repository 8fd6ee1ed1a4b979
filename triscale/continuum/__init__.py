"""Continuum scale: reference PDE solvers, Gaussian-random-field inputs, neural operators (FNO and a
p4/p4m group-equivariant FNO) trained on our own solver data, and the ``simulate_pde`` / ``predict_pde`` tools.

>>> from triscale.continuum import navier_stokes_2d, load_operator, simulate_pde
>>> model = load_operator("ns2d-gfno")            # shipped checkpoint, offline

This package imports nothing from ``triscale.tools`` or ``triscale.agents``. Attributes are resolved lazily so
that importing it (e.g. from the tool registry) does not import torch.
"""

from __future__ import annotations

from triscale.common import lazy_exports

_EXPORTS = {
    # solvers
    "navier_stokes_2d": "solvers",
    "burgers_1d": "solvers",
    "advection_diffusion": "solvers",
    "darcy_2d": "solvers",
    "ns_forcing": "solvers",
    "periodic_grid": "solvers",
    "node_grid": "solvers",
    "SolverDiverged": "solvers",
    # analytic solutions
    "taylor_green_vorticity": "analytic",
    "gaussian_diffusion": "analytic",
    "cole_hopf_burgers": "analytic",
    "darcy_manufactured": "analytic",
    # random inputs
    "periodic_grf": "grf",
    "cosine_grf": "grf",
    "darcy_coefficient": "grf",
    # operators
    "OperatorConfig": "operators",
    "FNO": "operators",
    "GFNO": "operators",
    "Group": "operators",
    "build_operator": "operators",
    "load_operator": "operators",
    "save_operator": "operators",
    "shipped_operators": "operators",
    "transform_field": "operators",
    # conformal uncertainty
    "OperatorCalibration": "conformal",
    "calibrate_operator": "conformal",
    "load_calibration": "conformal",
    # tasks and training
    "TASKS": "data",
    "generate": "data",
    "relative_l2": "data",
    "train_operator": "train",
    # tools
    "simulate_pde": "tools",
    "predict_pde": "tools",
    "SimulatePDEInput": "tools",
    "SimulatePDEResult": "tools",
    "PredictPDEInput": "tools",
    "PredictPDEResult": "tools",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
