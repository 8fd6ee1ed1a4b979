"""One calculator factory for every tool.

Method names come from the one method table (:mod:`triscale.quantum.methods`: ``"hf"`` is Hartree-Fock,
``"pbe"`` DFT with PBE, ...) and are validated against what is installed; per-method limits (atoms, elements,
periodicity) and the charge/spin are checked *before* anything runs, and a refusal names what would work.
``make_calculator`` is called inside the worker process (xTB and PySCF calculators come from
:func:`triscale.quantum.electronic.ase_calculator`, the one tblite/PySCF driver); everything else here is cheap
and runs in the caller.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from triscale.quantum import methods as qm
from triscale.tools.errors import CalculationError, ToolInputError, ToolLimitError

__all__ = [
    "CalculatorSpec",
    "METHODS",
    "MethodInfo",
    "available_methods",
    "resolve_method",
    "check_limits",
    "make_calculator",
    "canonical_method",
    "charge_spin",
    "is_dft",
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
            qm.MAX_ATOMS["gfn1-xtb"],
            "tblite",
            cost_rank=3,
            properties=("energy", "forces", "stress", "dipole", "charges", "orbitals"),
        ),
        MethodInfo(
            "gfn2-xtb",
            "GFN2-xTB tight binding (tblite); best for molecules",
            qm.MAX_ATOMS["gfn2-xtb"],
            "tblite",
            cost_rank=3,
            properties=("energy", "forces", "stress", "dipole", "charges", "orbitals"),
        ),
        MethodInfo(
            "hf",
            "Hartree-Fock with PySCF (molecules only; basis, charge, spin)",
            qm.MAX_ATOMS["hf"],
            "pyscf",
            periodic=False,
            cost_rank=4,
            properties=("energy", "forces", "dipole", "orbitals"),
        ),
        MethodInfo(
            "dft",
            "Kohn-Sham DFT with PySCF (molecules only; functional, basis, charge, spin). A functional name such "
            "as 'pbe' or 'b3lyp' as the method means DFT with it",
            qm.MAX_ATOMS["dft"],
            "pyscf",
            periodic=False,
            cost_rank=5,
            properties=("energy", "forces", "dipole", "orbitals"),
        ),
    ]
}

_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "foundation" / "checkpoints"


class CalculatorSpec(BaseModel):
    """Which calculator to use and its options. A plain string such as ``"gfn2-xtb"`` is accepted wherever a
    spec is expected."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        "auto",
        description="auto | triscale | gfn2-xtb | gfn1-xtb | hf | dft | emt | chgnet, or a DFT functional name "
        "(pbe, b3lyp, pbe0, ...: DFT with it). 'auto' picks the foundation model if shipped (GFN2-xTB for charged "
        "or open-shell molecules), else GFN2-xTB for molecules and EMT/CHGNet for crystals.",
    )
    charge: int | None = Field(
        None, ge=-10, le=10, description="Net charge (xTB, HF, DFT; default: the structure's, 0)."
    )
    spin: int | None = Field(
        None, ge=0, le=20, description="Unpaired electrons 2S (xTB, HF, DFT; default: the structure's, 0)."
    )
    functional: str | None = Field(
        None, description="dft only: exchange-correlation functional (default b3lyp), or 'hf' for Hartree-Fock."
    )
    basis: str | None = Field(None, description="hf/dft only: Gaussian basis-set name (default def2-svp).")
    restricted: bool | None = Field(
        None, description="hf/dft only: restricted (RHF/RKS) or unrestricted; default by spin."
    )
    max_scf_cycles: int = Field(100, ge=1, le=2000, description="DFT/xTB: maximum SCF iterations.")
    model: str | list[str] = Field(
        "triscale-base",
        description="triscale only: checkpoint name or model directory; a list of them is a committee.",
    )
    domain: str | None = Field(None, description="triscale only: molecule | material; default by periodicity.")
    adapters: list[str] | None = Field(None, description="triscale only: adapter directories (2+ = committee).")
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
        """What runs: ``hf/sto-3g``, ``dft/pbe/def2-svp``, ``gfn2-xtb``, ``triscale/...``."""
        m = self.method
        if m in qm.PYSCF_METHODS:
            return qm.method_label(m, self.functional, self.basis)
        if m == "triscale":
            n = len(self.adapters or [])
            models = self.model if isinstance(self.model, list) else [self.model]
            name = Path(models[0]).name + (f"x{len(models)}" if len(models) > 1 else "")
            return f"triscale/{name}" + (f"+{n}adapters" if n else "")
        return m


def _installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def checkpoint_shipped(name: str = "triscale-base") -> bool:
    """Whether the foundation checkpoint ``name`` ships with this install (its config.json is present)."""
    return (_CHECKPOINT_DIR / name / "config.json").exists()


def available_methods() -> dict[str, dict[str, Any]]:
    """Every method with whether it is installed and its limits."""
    out = {}
    for name, m in METHODS.items():
        ok = _installed(m.module)
        note = None
        if name == "triscale" and ok and not checkpoint_shipped():
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


def _tool_error(e: qm.QuantumInputError) -> ToolInputError:
    return ToolInputError(str(e), hint=e.hint)


def canonical_method(method: str) -> str:
    """The canonical method for a name (``"pbe"`` -> ``"dft"``, ``"rhf"`` -> ``"hf"``); unknown names are refused
    with the accepted list. :func:`resolve_method` also keeps the functional a name carries."""
    try:
        return qm.canonical_method(method, "calculator").method
    except qm.QuantumInputError as e:
        raise _tool_error(e) from None


def is_dft(calculator: Any) -> bool:
    """True when a tool's ``calculator`` argument (name, dict or :class:`CalculatorSpec`) asks for PySCF HF or
    DFT, the expensive methods (for approval policies)."""
    return qm.is_dft(calculator)


def charge_spin(spec: CalculatorSpec, atoms: Atoms) -> tuple[int, int]:
    """The net charge and spin (2S) a calculation uses: the spec's, else the structure's (``atoms.info``), else 0.
    A method without charge/spin (emt, chgnet, triscale) uses 0 and 0; :func:`check_limits` refuses an explicit
    non-zero value or a charged structure for it."""
    method = canonical_method(spec.method)
    if method not in qm.ELECTRONIC:
        return 0, 0
    charge = spec.charge if spec.charge is not None else int(atoms.info.get("charge", 0))
    spin = spec.spin if spec.spin is not None else int(atoms.info.get("spin", 0))
    return int(charge), int(spin)


def _pick_auto(spec: CalculatorSpec, atoms: Atoms) -> str:
    symbols = set(atoms.get_chemical_symbols())
    periodic = bool(atoms.pbc.any())
    charged = bool(spec.charge or spec.spin or atoms.info.get("charge", 0) or (not periodic and atoms.info.get("spin")))
    small = len(atoms) <= METHODS["gfn2-xtb"].max_atoms
    if checkpoint_shipped() and _installed("torch") and not charged:
        return "triscale"
    if not periodic and small and _installed("tblite"):
        return "gfn2-xtb"
    if symbols <= EMT_ELEMENTS and periodic and not charged:
        return "emt"
    if _installed("chgnet") and not charged:
        return "chgnet"
    return "gfn1-xtb"


def resolve_method(spec: CalculatorSpec, atoms: Atoms) -> CalculatorSpec:
    """Canonicalise the method (resolving ``auto`` for this structure; a functional name becomes ``dft`` with that
    functional), the functional and the basis, and check that the method is installed. Options that do not apply
    to the method (a functional for xTB, a basis for EMT) and contradictions (method ``pbe`` with functional
    ``b3lyp``) are refused, so that what runs is what was asked for."""
    try:
        choice = qm.canonical_method(spec.method, "calculator")
        if choice.method == "auto":
            choice = qm.MethodChoice(_pick_auto(spec, atoms))
        if choice.method in qm.PYSCF_METHODS:
            choice = qm.with_functional(choice, spec.functional)
        elif spec.functional is not None:
            qm.with_functional(choice, spec.functional)  # raises: this method has no functional
        if choice.method not in qm.PYSCF_METHODS and (spec.basis is not None or spec.restricted is not None):
            raise qm.QuantumInputError(
                f"{choice.method} takes no basis set or restricted flag (basis={spec.basis!r}, "
                f"restricted={spec.restricted!r}).",
                hint="basis and restricted apply to 'hf' and 'dft' (or a functional name); leave them out otherwise.",
            )
        basis = qm.canonical_basis(spec.basis or qm.DEFAULT_BASIS) if choice.method in qm.PYSCF_METHODS else None
    except qm.QuantumInputError as e:
        raise _tool_error(e) from None
    info = METHODS[choice.method]
    if not _installed(info.module):
        raise ToolInputError(
            f"Calculator {choice.method!r} is not installed (missing Python package {info.module!r}).",
            hint=f"Installed: {', '.join(k for k, v in available_methods().items() if v['installed'])}.",
        )
    restricted = spec.restricted
    if choice.restricted is not None:  # 'rhf' / 'uhf'
        if restricted is not None and restricted != choice.restricted:
            raise ToolInputError(
                f"Method {spec.method!r} contradicts restricted={restricted}.", hint="Give one of them, not both."
            )
        restricted = choice.restricted
    update: dict[str, Any] = {"method": choice.method, "basis": basis, "restricted": restricted}
    update["functional"] = (choice.functional or qm.DEFAULT_FUNCTIONAL) if choice.method == "dft" else None
    return spec.model_copy(update=update)


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
        if m.name == "triscale" and not checkpoint_shipped():
            continue
        out.append(f"{m.name} (≤{m.max_atoms} atoms)")
    return out


def check_limits(spec: CalculatorSpec, atoms: Atoms) -> None:
    """Raise before running if the method cannot handle this structure."""
    method = canonical_method(spec.method)
    info = METHODS[method]
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
                f"{info.name} has no parameters for {', '.join(bad)} (supports {', '.join(sorted(info.elements))}).",
                hint=("Use " + ", ".join(alts) + ".") if alts else None,
            )
    _check_charge_spin(spec, atoms, method)


def _check_charge_spin(spec: CalculatorSpec, atoms: Atoms, method: str) -> None:
    """The one charge/spin check for every method (see :func:`triscale.quantum.methods.check_charge_spin`)."""
    try:
        if method in qm.ELECTRONIC:
            charge, spin = charge_spin(spec, atoms)
            qm.check_charge_spin(atoms.numbers, charge, spin, method)
            if spec.restricted and spin:
                raise qm.QuantumInputError(
                    f"A restricted calculation cannot have {spin} unpaired electrons.",
                    hint="Leave restricted unset (or false) for open shells.",
                )
            return
        # no charge or spin here: an explicit non-zero value, or a charged molecule, is refused, not ignored
        qm.check_charge_spin(atoms.numbers, spec.charge or 0, spec.spin or 0, method)
        qm.check_charge_spin(atoms.numbers, int(atoms.info.get("charge", 0)), 0, method)
    except qm.QuantumInputError as e:
        raise _tool_error(e) from None


def make_calculator(spec: CalculatorSpec, atoms: Atoms, workspace_root: str | None = None):
    """Build the ASE calculator for a resolved spec (call inside the worker; imports are heavy)."""
    method = canonical_method(spec.method)
    _check_charge_spin(spec, atoms, method)
    if method == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if method in qm.ELECTRONIC:
        from triscale.quantum.electronic import ase_calculator

        charge, spin = charge_spin(spec, atoms)
        try:
            return ase_calculator(
                atoms,
                spec.method,  # the name as given: "pbe" keeps its functional
                charge=charge,
                spin=spin,
                functional=spec.functional,
                basis=spec.basis,
                restricted=spec.restricted,
                max_scf_cycles=spec.max_scf_cycles,
            )
        except qm.QuantumInputError as e:
            raise _tool_error(e) from None
    if method == "chgnet":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from chgnet.model.dynamics import CHGNetCalculator

            # CHGNet predicts GPa; its default stress_weight (1/160.2) converts to eV/Å^3 as ASE wants.
            return CHGNetCalculator(use_device="cpu")
    if method == "triscale":
        from triscale.finetune.calculator import calculator_with_adapters
        from triscale.foundation.checkpoints import load_checkpoint

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
                return calculator_with_adapters(models[0], domain=spec.domain, adapters=adapters, dtype=spec.dtype)
            # a committee of independently trained models (ensemble): mean and standard deviation
            from triscale.foundation import TriScaleCalculator

            if adapters:
                raise ToolInputError("Use either several models or adapters for a committee, not both.")
            return TriScaleCalculator([load_checkpoint(m) for m in models], domain=spec.domain, dtype=spec.dtype)
        except ToolInputError:
            raise
        except (FileNotFoundError, KeyError, OSError, ValueError, ImportError, ModuleNotFoundError) as e:
            raise CalculationError(
                f"Could not load the foundation model {spec.model!r}: {type(e).__name__}: {e}",
                hint="Pass model=<directory saved with save_pretrained>, or use gfn2-xtb / emt / chgnet.",
            ) from e
    raise ToolInputError(f"Unknown calculator {spec.method!r}.")  # pragma: no cover
