"""One calculator factory for every tool.

Method names are validated against what is installed, per-method limits (atoms, elements, periodicity) are
checked *before* anything runs, and a refusal names a cheaper method that would work. ``make_calculator`` is
called inside the worker process; everything else here is cheap and runs in the caller.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from triscale.tools.errors import CalculationError, ToolInputError, ToolLimitError

__all__ = [
    "CalculatorSpec",
    "METHODS",
    "MethodInfo",
    "available_methods",
    "resolve_method",
    "check_limits",
    "make_calculator",
    "EMT_ELEMENTS",
]

EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"})


@dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str
    max_atoms: int
    module: str | None  # the import that must exist
    periodic: bool = True
    molecules: bool = True
    elements: frozenset[str] | None = None
    cost_rank: int = 0  # 0 cheapest
    properties: tuple[str, ...] = field(default=("energy", "forces"))


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo(
            "emt",
            "ASE effective-medium theory (metals Al Cu Ag Au Ni Pd Pt; H C N O only roughly)",
            5000,
            "ase",
            elements=EMT_ELEMENTS,
            cost_rank=0,
            properties=("energy", "forces", "stress"),
        ),
        MethodInfo(
            "triscale",
            "TriScale foundation model (equivariant GNN; molecules and materials; adapters and committees)",
            5000,
            "torch",
            cost_rank=1,
            properties=("energy", "forces", "stress"),
        ),
        MethodInfo(
            "chgnet",
            "CHGNet universal materials potential (periodic crystals)",
            2000,
            "chgnet",
            molecules=True,
            cost_rank=2,
            properties=("energy", "forces", "stress", "magmoms"),
        ),
        MethodInfo(
            "gfn1-xtb",
            "GFN1-xTB tight binding (tblite); molecules and periodic",
            300,
            "tblite",
            cost_rank=3,
            properties=("energy", "forces", "stress", "dipole", "charges", "orbitals"),
        ),
        MethodInfo(
            "gfn2-xtb",
            "GFN2-xTB tight binding (tblite); best for molecules",
            300,
            "tblite",
            cost_rank=3,
            properties=("energy", "forces", "stress", "dipole", "charges", "orbitals"),
        ),
        MethodInfo(
            "dft",
            "Kohn-Sham DFT or Hartree-Fock with PySCF (molecules only; functional, basis, charge, spin)",
            30,
            "pyscf",
            periodic=False,
            cost_rank=5,
            properties=("energy", "forces", "dipole", "orbitals"),
        ),
    ]
}

_ALIASES = {
    "xtb": "gfn2-xtb",
    "gfn2": "gfn2-xtb",
    "gfn2xtb": "gfn2-xtb",
    "gfn2-xtb": "gfn2-xtb",
    "tblite": "gfn2-xtb",
    "gfn1": "gfn1-xtb",
    "gfn1xtb": "gfn1-xtb",
    "gfn1-xtb": "gfn1-xtb",
    "pyscf": "dft",
    "dft": "dft",
    "hf": "dft",
    "b3lyp": "dft",
    "pbe": "dft",
    "emt": "emt",
    "chgnet": "chgnet",
    "triscale": "triscale",
    "foundation": "triscale",
    "triscale-base": "triscale",
    "mlip": "triscale",
    "auto": "auto",
}

_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "foundation" / "checkpoints"


class CalculatorSpec(BaseModel):
    """Which calculator to use and its options. A plain string such as ``"gfn2-xtb"`` is accepted wherever a
    spec is expected."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        "auto",
        description="auto | triscale | gfn2-xtb | gfn1-xtb | dft | emt | chgnet. 'auto' picks the foundation "
        "model if shipped, else GFN2-xTB for molecules and EMT/CHGNet for crystals.",
    )
    charge: int | None = Field(None, ge=-10, le=10, description="Net charge (default: the structure's, 0).")
    spin: int | None = Field(
        None, ge=0, le=20, description="Unpaired electrons 2S (default: the structure's)."
    )
    functional: str = Field("b3lyp", description="DFT only: exchange-correlation functional, or 'hf'.")
    basis: str = Field("def2-svp", description="DFT only: Gaussian basis set.")
    restricted: bool | None = Field(
        None, description="DFT only: restricted (RKS) or unrestricted; default by spin."
    )
    max_scf_cycles: int = Field(100, ge=1, le=2000, description="DFT/xTB: maximum SCF iterations.")
    model: str | list[str] = Field(
        "triscale-base",
        description="triscale only: checkpoint name or model directory; a list of them is a committee.",
    )
    domain: str | None = Field(
        None, description="triscale only: molecule | material; default by periodicity."
    )
    adapters: list[str] | None = Field(
        None, description="triscale only: adapter directories (2+ = committee)."
    )
    dtype: Literal["float32", "float64"] = Field("float64", description="triscale only: compute dtype.")

    @classmethod
    def coerce(cls, value: Any) -> CalculatorSpec:
        if isinstance(value, CalculatorSpec):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(method=value)
        return cls.model_validate(value)

    def label(self) -> str:
        m = self.method
        if m == "dft":
            return f"dft/{self.functional}/{self.basis}"
        if m == "triscale":
            n = len(self.adapters or [])
            models = self.model if isinstance(self.model, list) else [self.model]
            name = Path(models[0]).name + (f"x{len(models)}" if len(models) > 1 else "")
            return f"triscale/{name}" + (f"+{n}adapters" if n else "")
        return m


def _installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def _checkpoint_shipped(name: str = "triscale-base") -> bool:
    return (_CHECKPOINT_DIR / name / "config.json").exists()


def available_methods() -> dict[str, dict[str, Any]]:
    """Every method with whether it is installed and its limits."""
    out = {}
    for name, m in METHODS.items():
        ok = _installed(m.module)
        note = None
        if name == "triscale" and ok and not _checkpoint_shipped():
            note = "no shipped checkpoint yet; pass model=<saved model directory>"
        out[name] = {
            "installed": ok,
            "description": m.description,
            "max_atoms": m.max_atoms,
            "periodic": m.periodic,
            "molecules": m.molecules,
            "properties": list(m.properties),
            **({"note": note} if note else {}),
        }
    return out


def canonical_method(method: str) -> str:
    key = str(method).strip().lower().replace("_", "-").replace(" ", "")
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.5)
    suggest = list(dict.fromkeys(_ALIASES[c] for c in close))  # several aliases share one method
    raise ToolInputError(
        f"Unknown calculator {method!r}.",
        hint=f"Choose one of: {', '.join(['auto', *METHODS])}"
        + (f" (did you mean {', '.join(repr(m) for m in suggest)}?)" if suggest else "."),
    )


def resolve_method(spec: CalculatorSpec, atoms: Atoms) -> CalculatorSpec:
    """Canonicalise the method name (resolving ``auto`` for this structure) and check that it is installed."""
    method = canonical_method(spec.method)
    if method == "auto":
        symbols = set(atoms.get_chemical_symbols())
        periodic = bool(atoms.pbc.any())
        if _checkpoint_shipped() and _installed("torch"):
            method = "triscale"
        elif not periodic and len(atoms) <= METHODS["gfn2-xtb"].max_atoms and _installed("tblite"):
            method = "gfn2-xtb"
        elif symbols <= EMT_ELEMENTS and periodic:
            method = "emt"
        elif _installed("chgnet"):
            method = "chgnet"
        else:
            method = "gfn1-xtb"
    info = METHODS[method]
    if not _installed(info.module):
        raise ToolInputError(
            f"Calculator {method!r} is not installed (missing Python package {info.module!r}).",
            hint=f"Installed: {', '.join(k for k, v in available_methods().items() if v['installed'])}.",
        )
    return spec.model_copy(update={"method": method})


def _cheaper(atoms: Atoms, than: MethodInfo) -> list[str]:
    symbols = set(atoms.get_chemical_symbols())
    periodic = bool(atoms.pbc.any())
    out = []
    for m in sorted(METHODS.values(), key=lambda m: m.cost_rank):
        if m.name == than.name or not _installed(m.module) or len(atoms) > m.max_atoms:
            continue
        if m.elements is not None and not symbols <= m.elements:
            continue
        if periodic and not m.periodic:
            continue
        if m.name == "triscale" and not _checkpoint_shipped():
            continue
        out.append(f"{m.name} (≤{m.max_atoms} atoms)")
    return out


def check_limits(spec: CalculatorSpec, atoms: Atoms) -> None:
    """Raise before running if the method cannot handle this structure."""
    info = METHODS[canonical_method(spec.method)]
    n = len(atoms)
    if n > info.max_atoms:
        alts = _cheaper(atoms, info)
        raise ToolLimitError(
            f"{info.name} is limited to {info.max_atoms} atoms; this structure has {n}.",
            hint=("Use a cheaper method: " + ", ".join(alts) + ".") if alts else "Use a smaller structure.",
        )
    if atoms.pbc.any() and not info.periodic:
        raise ToolInputError(
            f"{info.name} here supports molecules only, but the structure is periodic.",
            hint="Use gfn1-xtb, chgnet, emt or triscale for periodic systems.",
        )
    if info.elements is not None:
        bad = sorted(set(atoms.get_chemical_symbols()) - info.elements)
        if bad:
            alts = _cheaper(atoms, info)
            raise ToolInputError(
                f"{info.name} has no parameters for {', '.join(bad)} "
                f"(supports {', '.join(sorted(info.elements))}).",
                hint=("Use " + ", ".join(alts) + ".") if alts else None,
            )


def _charge_spin(spec: CalculatorSpec, atoms: Atoms) -> tuple[int, int]:
    charge = spec.charge if spec.charge is not None else int(atoms.info.get("charge", 0))
    spin = spec.spin if spec.spin is not None else int(atoms.info.get("spin", 0))
    return charge, spin


def _pyscf_method(spec: CalculatorSpec, atoms: Atoms):
    from pyscf import dft, gto, scf

    charge, spin = _charge_spin(spec, atoms)
    n_electrons = int(atoms.numbers.sum()) - charge
    if (n_electrons - spin) % 2:
        raise ToolInputError(
            f"{n_electrons} electrons cannot have {spin} unpaired electrons.",
            hint="Set spin (2S) to an odd number for an odd electron count and even otherwise.",
        )
    try:
        mol = gto.M(
            atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)],
            unit="Angstrom",
            basis=spec.basis,
            charge=charge,
            spin=spin,
            verbose=0,
        )
    except Exception as e:  # pyscf raises bare Exceptions / KeyErrors for unknown basis sets
        raise ToolInputError(
            f"PySCF could not build the molecule with basis {spec.basis!r}: {e}",
            hint="Try basis 'def2-svp', 'sto-3g' or '6-31g*'.",
        ) from e
    restricted = spec.restricted if spec.restricted is not None else spin == 0
    xc = spec.functional.strip().lower()
    if xc in ("hf", "rhf", "uhf"):
        mf = scf.RHF(mol) if restricted else scf.UHF(mol)
    else:
        mf = dft.RKS(mol) if restricted else dft.UKS(mol)
        mf.xc = xc
        try:
            from pyscf.dft import libxc

            libxc.parse_xc(xc)
        except Exception as e:
            raise ToolInputError(
                f"Unknown functional {spec.functional!r}.",
                hint="Try 'b3lyp', 'pbe', 'pbe0', 'wb97x' or 'hf'.",
            ) from e
    mf.max_cycle = spec.max_scf_cycles
    mf.verbose = 0
    return mf


def make_calculator(spec: CalculatorSpec, atoms: Atoms, workspace_root: str | None = None):
    """Build the ASE calculator for a resolved spec (call inside the worker; imports are heavy)."""
    method = canonical_method(spec.method)
    if method == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if method in ("gfn2-xtb", "gfn1-xtb"):
        from tblite.ase import TBLite

        charge, spin = _charge_spin(spec, atoms)
        return TBLite(
            method="GFN2-xTB" if method == "gfn2-xtb" else "GFN1-xTB",
            charge=charge,
            multiplicity=spin + 1,
            max_iterations=spec.max_scf_cycles,
            verbosity=0,
        )
    if method == "dft":
        from pyscf.pbc.tools.pyscf_ase import PySCF

        return PySCF(method=_pyscf_method(spec, atoms))
    if method == "chgnet":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from chgnet.model.dynamics import CHGNetCalculator

            # CHGNet predicts GPa; its default stress_weight (1/160.2) converts to eV/Å^3 as ASE wants.
            return CHGNetCalculator(use_device="cpu")
    if method == "triscale":
        import triscale

        def _resolve(p: str) -> str:
            q = Path(p).expanduser()
            if not q.is_absolute() and workspace_root is not None and (Path(workspace_root) / q).exists():
                q = Path(workspace_root) / q
            return str(q)

        names = spec.model if isinstance(spec.model, list) else [spec.model]
        if not names:
            raise ToolInputError("model must name at least one checkpoint or directory.")
        adapters = [_resolve(a) for a in spec.adapters] if spec.adapters else None
        try:
            models = [_resolve(m) for m in names]
            if len(models) == 1:
                return triscale.calculator(models[0], domain=spec.domain, adapters=adapters, dtype=spec.dtype)
            # a committee of independently trained models (ensemble): mean and standard deviation
            from triscale.foundation import TriScaleCalculator

            if adapters:
                raise ToolInputError("Use either several models or adapters for a committee, not both.")
            return TriScaleCalculator(
                [triscale.load(m) for m in models], domain=spec.domain, dtype=spec.dtype
            )
        except ToolInputError:
            raise
        except (FileNotFoundError, KeyError, OSError, ValueError, ImportError, ModuleNotFoundError) as e:
            raise CalculationError(
                f"Could not load the foundation model {spec.model!r}: {type(e).__name__}: {e}",
                hint="Pass model=<directory saved with save_pretrained>, or use gfn2-xtb / emt / chgnet.",
            ) from e
    raise ToolInputError(f"Unknown calculator {spec.method!r}.")  # pragma: no cover
