"""The one table of calculation methods, shared by the tools and :mod:`triscale.quantum`.

A method name (what a user or an LLM types: ``"hf"``, ``"pbe"``, ``"xtb"``, ``"dft"``...) resolves to a
:class:`MethodChoice` — the canonical method (``gfn2-xtb``, ``gfn1-xtb``, ``hf``, ``dft``, ``emt``, ``chgnet``,
``triscale`` or ``auto``) and, for DFT, the exchange-correlation functional — or is refused with the accepted
names. Functionals are validated with PySCF's libxc parser and basis sets against PySCF's basis-name table;
charge and spin are checked here, once, for every method (:func:`check_charge_spin`).

Cheap to import: PySCF is imported only when a functional or basis name has to be checked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "QuantumInputError",
    "MethodChoice",
    "CANONICAL",
    "ELECTRONIC",
    "PYSCF_METHODS",
    "XTB_METHODS",
    "MAX_ATOMS",
    "DEFAULT_FUNCTIONAL",
    "DEFAULT_BASIS",
    "canonical_method",
    "canonical_functional",
    "canonical_basis",
    "with_functional",
    "check_charge_spin",
    "method_label",
    "is_dft",
]


class QuantumInputError(ValueError):
    """The request is invalid (method, functional, basis, charge/spin, size); the message says what is allowed."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


#: every canonical method name, cheapest first ('auto' picks one of them per structure)
CANONICAL = ("emt", "triscale", "chgnet", "gfn1-xtb", "gfn2-xtb", "hf", "dft")
XTB_METHODS = ("gfn2-xtb", "gfn1-xtb")
PYSCF_METHODS = ("hf", "dft")
#: methods that take a net charge and a spin (2S); the others refuse a non-zero charge or spin
ELECTRONIC = XTB_METHODS + PYSCF_METHODS
#: atom limits of the electronic-structure methods (PySCF grows ~N^3-N^4: 30 atoms of B3LYP/def2-SVP take minutes)
MAX_ATOMS = {"gfn2-xtb": 300, "gfn1-xtb": 300, "hf": 30, "dft": 30}
DEFAULT_FUNCTIONAL = "b3lyp"
DEFAULT_BASIS = "def2-svp"
#: named in hints (any functional libxc knows, and any basis in PySCF's table, is accepted)
COMMON_FUNCTIONALS = ("hf", "b3lyp", "pbe", "pbe0", "blyp", "bp86", "tpss", "scan", "r2scan", "m06-2x", "wb97x")
COMMON_BASES = ("sto-3g", "3-21g", "6-31g", "6-31g*", "6-311g**", "def2-svp", "def2-tzvp", "cc-pvdz", "cc-pvtz")

_ALIASES: dict[str, tuple[str, str | None]] = {
    "auto": ("auto", None),
    "xtb": ("gfn2-xtb", None),
    "gfn2": ("gfn2-xtb", None),
    "gfn2xtb": ("gfn2-xtb", None),
    "gfn2-xtb": ("gfn2-xtb", None),
    "tblite": ("gfn2-xtb", None),
    "gfn1": ("gfn1-xtb", None),
    "gfn1xtb": ("gfn1-xtb", None),
    "gfn1-xtb": ("gfn1-xtb", None),
    "hf": ("hf", None),
    "rhf": ("hf", None),
    "uhf": ("hf", None),
    "hartree-fock": ("hf", None),
    "scf": ("hf", None),
    "dft": ("dft", None),
    "pyscf": ("dft", None),
    "ks": ("dft", None),
    "emt": ("emt", None),
    "chgnet": ("chgnet", None),
    "triscale": ("triscale", None),
    "foundation": ("triscale", None),
    "triscale-base": ("triscale", None),
    "mlip": ("triscale", None),
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9+\-]*$")


@dataclass(frozen=True)
class MethodChoice:
    """A resolved method: ``method`` is canonical; ``functional`` is set for ``dft`` once known (``None`` means
    the default, :data:`DEFAULT_FUNCTIONAL`)."""

    method: str
    functional: str | None = None
    restricted: bool | None = None  # set by the names 'rhf' (True) and 'uhf' (False)

    @property
    def code(self) -> str | None:
        return "tblite" if self.method in XTB_METHODS else "pyscf" if self.method in PYSCF_METHODS else None


def _key(name: Any) -> str:
    return str(name).strip().lower().replace("_", "-").replace(" ", "")


def canonical_method(name: str, noun: str = "method") -> MethodChoice:
    """``"hf"`` -> HF, ``"pbe"``/``"b3lyp"``/``"pbe0"``/any libxc functional -> DFT with that functional,
    ``"xtb"`` -> GFN2-xTB, ...; anything else raises :class:`QuantumInputError` naming the accepted methods
    (``noun`` names the argument in that message: "method", or "calculator" in the tools)."""
    key = _key(name)
    if key in _ALIASES:
        return MethodChoice(*_ALIASES[key], restricted={"rhf": True, "uhf": False}.get(key))
    if _NAME.match(key):
        try:
            xc = canonical_functional(key)
        except QuantumInputError:
            pass
        else:
            return MethodChoice("hf") if xc == "hf" else MethodChoice("dft", xc)
    close = difflib.get_close_matches(key, [*_ALIASES, *COMMON_FUNCTIONALS], n=3, cutoff=0.5)
    suggest = list(dict.fromkeys(_ALIASES[c][0] if c in _ALIASES else c for c in close))
    raise QuantumInputError(
        f"Unknown {noun} {name!r}.",
        hint=f"Choose one of: auto, {', '.join(CANONICAL)}, or a DFT functional name "
        f"({', '.join(COMMON_FUNCTIONALS[1:])}, ...)"
        + (f" (did you mean {', '.join(repr(m) for m in suggest)}?)" if suggest else "."),
    )


def canonical_functional(name: str) -> str:
    """The lower-case functional name if PySCF's libxc parser accepts it (``"hf"`` for Hartree-Fock)."""
    key = str(name).strip().lower()
    if key in ("hf", "rhf", "uhf", "hartree-fock"):
        return "hf"
    if not key or not re.match(r"^[a-z0-9][a-z0-9+\-,.*_ ]*$", key):
        raise QuantumInputError(f"Unknown functional {name!r}.", hint=_functional_hint(key))
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(key)
    except Exception as e:  # noqa: BLE001 - libxc raises KeyError/ValueError/... for unknown names
        raise QuantumInputError(f"Unknown functional {name!r}.", hint=_functional_hint(key)) from e
    return key


def _functional_hint(key: str) -> str:
    try:
        from pyscf.dft import libxc

        names = [n.lower() for n in (*libxc.XC_ALIAS, *libxc.XC_CODES)]
    except ImportError:  # pragma: no cover - pyscf is a dependency
        names = list(COMMON_FUNCTIONALS)
    close = difflib.get_close_matches(key, list(dict.fromkeys([*COMMON_FUNCTIONALS, *names])), n=3, cutoff=0.6)
    return f"Accepted: any functional PySCF's libxc knows, e.g. {', '.join(COMMON_FUNCTIONALS)}" + (
        f" (did you mean {', '.join(close)}?)" if close else "."
    )


def canonical_basis(name: str) -> str:
    """The lower-case basis-set name if it is in PySCF's basis table. A basis is a NAME: anything with a path
    separator, or that exists as a file, is refused (so that no file outside the workspace is read)."""
    text = str(name).strip()
    if not text or "/" in text or "\\" in text or Path(text).expanduser().exists():
        raise QuantumInputError(
            f"basis must be a basis-set name, not a path: {name!r}.", hint=f"Accepted, e.g.: {', '.join(COMMON_BASES)}."
        )
    from pyscf.gto import basis as pyscf_basis

    fmt = getattr(pyscf_basis, "_format_basis_name", lambda s: s.lower().replace("-", "").replace("_", ""))
    if fmt(text) not in pyscf_basis.ALIAS:
        table = sorted(pyscf_basis.ALIAS)
        close = difflib.get_close_matches(fmt(text), table, n=3, cutoff=0.6)
        raise QuantumInputError(
            f"Unknown basis {name!r}.",
            hint=f"Accepted: the {len(table)} names of PySCF's basis table, e.g. {', '.join(COMMON_BASES)}"
            + (f" (did you mean {', '.join(close)}?)" if close else "."),
        )
    return text.lower()


def with_functional(choice: MethodChoice, functional: str | None) -> MethodChoice:
    """Merge an explicit ``functional`` into a method choice: ``dft`` + ``"pbe"`` -> DFT/PBE, ``dft`` + ``"hf"``
    -> HF. A functional that contradicts the method (``"pbe"`` + ``"b3lyp"``, ``"hf"`` + ``"pbe"``) or a
    functional for a method that has none (xTB, EMT, ...) raises :class:`QuantumInputError`."""
    if functional is None:
        return choice
    xc = canonical_functional(functional)
    if choice.method == "dft" and choice.functional is None:
        return MethodChoice("hf") if xc == "hf" else MethodChoice("dft", xc)
    if choice.method == "dft" and choice.functional == xc or choice.method == "hf" and xc == "hf":
        return choice
    if choice.method in PYSCF_METHODS:
        ran = "hf" if choice.method == "hf" else choice.functional
        raise QuantumInputError(
            f"The method names {ran!r} but functional={functional!r} was also given.",
            hint=f"Give one of them: method 'dft' with functional {functional!r}, or method {ran!r} alone.",
        )
    raise QuantumInputError(
        f"{choice.method} has no exchange-correlation functional (functional={functional!r}).",
        hint="functional applies to method 'dft' (or a functional name as the method); leave it out otherwise.",
    )


def check_charge_spin(numbers: Any, charge: int, spin: int, method: str | None = None) -> int:
    """Refuse impossible electron counts and spin parities; return the electron count.

    ``spin`` is 2S, the number of unpaired electrons. Electrons = sum(Z) - charge must be > 0, spin <= electrons
    and (electrons - spin) even. Methods without charge/spin (EMT, CHGNet, TriScale) refuse any non-zero value.
    """
    charge, spin = int(charge), int(spin)
    if method is not None and method not in ELECTRONIC:
        if charge or spin:
            raise QuantumInputError(
                f"{method} takes no net charge or spin, but charge={charge}, spin={spin} was asked for.",
                hint=f"Use one of {', '.join(ELECTRONIC)} for charged or open-shell systems.",
            )
        return int(np.asarray(numbers, dtype=np.int64).sum())
    n_el = int(np.asarray(numbers, dtype=np.int64).sum()) - charge
    if n_el <= 0:
        raise QuantumInputError(
            f"Charge {charge} leaves {n_el} electrons (the nuclei carry {n_el + charge}).",
            hint="Give a charge smaller than the total nuclear charge.",
        )
    if spin < 0 or spin > n_el:
        raise QuantumInputError(
            f"{n_el} electrons cannot have {spin} unpaired electrons (spin is 2S, at most the electron count).",
            hint="spin is the number of unpaired electrons: 0 for closed shells, 1 for a radical, 2 for a triplet.",
        )
    if (n_el - spin) % 2:
        raise QuantumInputError(
            f"{n_el} electrons cannot have {spin} unpaired electrons.",
            hint="Set spin (2S) odd for an odd electron count and even otherwise.",
        )
    return n_el


def method_label(method: str, functional: str | None = None, basis: str | None = None) -> str:
    """What ran: ``hf/sto-3g``, ``dft/pbe/def2-svp``, ``gfn2-xtb``."""
    if method == "hf":
        return f"hf/{(basis or DEFAULT_BASIS).lower()}"
    if method == "dft":
        return f"dft/{(functional or DEFAULT_FUNCTIONAL).lower()}/{(basis or DEFAULT_BASIS).lower()}"
    return method


def is_dft(calculator: Any) -> bool:
    """True when a calculator argument (a name such as ``"pbe"``, a mapping with ``method``, or an object with a
    ``method`` attribute) asks for a PySCF calculation: Hartree-Fock or Kohn-Sham DFT, the expensive methods.
    Unknown names give False (the tool refuses them itself)."""
    if isinstance(calculator, Mapping):
        method, functional = calculator.get("method"), calculator.get("functional")
    else:
        method = getattr(calculator, "method", calculator)
        functional = getattr(calculator, "functional", None)
    if method is None or method == "":
        return False
    try:
        choice = canonical_method(str(method))
    except QuantumInputError:
        return False
    return choice.method in PYSCF_METHODS or (choice.method == "dft" and functional is not None)
