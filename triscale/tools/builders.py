"""Structure tools: builders (molecules, crystals, surfaces, defects), import/export and store queries.

Every limit is checked before any work (supercell sizes in Python integers, SMILES length and heavy-atom count
before RDKit sees them, file size before parsing). The potentially slow parts (RDKit embedding, file parsing)
run through ``ctx.compute`` in a worker process with the tool's wall-time limit; the rest is cheap and runs in
the caller's process.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

from ase import Atoms
from pydantic import AliasChoices, Field

from triscale.tools.base import ToolContext, ToolInput, ToolResult, register, set_structure_resolver
from triscale.tools.errors import ToolInputError, ToolLimitError
from triscale.tools.validation import check_symbol, summarize, validate_atoms

__all__ = ["molecule_from_text", "molecule_from_smiles", "molecule_smiles", "MoleculeResult", "StructureResult"]

MAX_BUILD_ATOMS = 20000
#: SMILES longer than this (characters) are refused before RDKit parses them.
MAX_SMILES_LENGTH = 400
#: Molecules with more heavy atoms than this are refused before 3D embedding (ETKDG + MMFF on a 100-carbon chain
#: takes ~10-20 s on one core; a 160-carbon chain took 106 s).
MAX_SMILES_HEAVY_ATOMS = 100
#: Molecules with more atoms (hydrogens included) than this are refused before embedding.
MAX_SMILES_ATOMS = 500
#: Molecules up to this many heavy atoms embed in the caller's process (~0.2 s for 30 carbons, and RDKit's own
#: per-attempt timeout bounds it); larger ones go to a worker with the tool's limit, whose start costs ~0.5 s
#: because the worker imports RDKit.
INLINE_EMBED_HEAVY_ATOMS = 30
#: RDKit's own limit on one embedding attempt (seconds).
_EMBED_ATTEMPT_TIMEOUT_S = 10
#: Structure files larger than this are refused before parsing.
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: Plain-text files (xyz, extxyz, POSCAR) up to this size parse in the caller's process (a few ms, linear in the
#: size); larger files, CIF (symmetry expansion) and traj go to a worker with the tool's limit (~70 ms to start).
_INLINE_READ_BYTES = 64 * 1024
_INLINE_READ_FORMATS = ("extxyz", "xyz", "vasp")
#: Largest |h|, |k|, |l| accepted by build_surface.
MAX_MILLER_INDEX = 12

# Common names that are not (or not obviously) in ASE's g2 set: name -> g2 key or SMILES.
_EXTRA_NAMES: dict[str, str] = {
    "hydrogen": "H2",
    "dihydrogen": "H2",
    "oxygen": "O2",
    "dioxygen": "O2",
    "nitrogen": "N2",
    "dinitrogen": "N2",
    "chlorine": "Cl2",
    "fluorine": "F2",
    "ozone": "O3",
    "nitrous oxide": "N2O",
    "nitrogen dioxide": "NO2",
    "nitric oxide": "NO",
    "butane": "trans-butane",
    "ethene": "C2H4",
    "ethyne": "C2H2",
    "dmso": "C2H6SO",
    "isopropanol": "C2H6CHOH",
    "hydrogen sulphide": "SH2",
    "formic acid": "HCOOH",
    "acetic acid": "CH3COOH",
    "dimethyl ether": "CH3OCH3",
    "toluene": "smiles:Cc1ccccc1",
    "phenol": "smiles:Oc1ccccc1",
    "aniline": "smiles:Nc1ccccc1",
    "aspirin": "smiles:CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "smiles:Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "glycine": "smiles:NCC(=O)O",
    "alanine": "smiles:C[C@@H](C(=O)O)N",
    "urea": "smiles:NC(N)=O",
    "ethylene glycol": "smiles:OCCO",
    "cyclohexane": "smiles:C1CCCCC1",
    "hexane": "smiles:CCCCCC",
    "pentane": "smiles:CCCCC",
    "octane": "smiles:CCCCCCCC",
    "naphthalene": "smiles:c1ccc2ccccc2c1",
    "glucose": "smiles:OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O",
    "styrene": "smiles:C=Cc1ccccc1",
    "pyrazine": "smiles:c1cnccn1",
    "propanol": "smiles:CCCO",
    "butanol": "smiles:CCCCO",
    "tetrahydrofuran": "smiles:C1CCOC1",
    "thf": "smiles:C1CCOC1",
    "dmf": "smiles:CN(C)C=O",
    "acrylonitrile": "H2CCHCN",
    "vinyl chloride": "H2CCHCl",
    "methyl formate": "HCOOCH3",
    # not in g2 under any name, and no name -> structure source ships in the installed packages (RDKit has none;
    # ASE's pubchem module needs the network): the few asked for by users are listed here with their SMILES
    "carbonic acid": "smiles:OC(=O)O",
}

# Open-shell g2 molecules whose SMILES RDKit's bond perception cannot write (an odd electron count): the usual
# radical SMILES (PubChem's, after RDKit canonicalisation), so a built NO2 still has a SMILES.
_OPEN_SHELL_SMILES: dict[str, str] = {
    "NO2": "[O]N=O",
    "NO": "[N]=O",
    "OH": "[OH]",
    "CH3": "[CH3]",
    "CN": "[C]#N",
}

#: g2 'name' entries' parenthesised synonyms that are not names ("2A" states, "radical" descriptions).
_G2_SYNONYM_SKIP = re.compile(r"\^|\b2a\b|radical|symm|silicon diatomic|\bcs\b")


@lru_cache(maxsize=1)
def _g2_names() -> dict[str, str]:
    from ase.data.g2 import data

    out: dict[str, str] = {}
    for key, entry in data.items():
        name = re.split(r" \(|,|\. ", entry.get("description", ""))[0].strip().lower()
        if name and not name.endswith((" atom", " radical")) and name not in out:
            out[name] = key
    # the synonyms in the 'name' field: "COF_2 (Carbonic difluoride)", "CH_3CN (methyl cyanide)", ...
    for key, entry in data.items():
        for syn in re.findall(r"\(([^()]*)\)", entry.get("name") or ""):
            syn = " ".join(syn.strip().lower().split())
            if len(syn) > 3 and not _G2_SYNONYM_SKIP.search(syn) and syn not in out:
                out[syn] = key
    return out


def _name_target(text: str) -> str | None:
    """What a molecule name resolves to: a g2 key, ``smiles:...`` or None (unknown)."""
    from ase.collections import g2

    t = str(text).strip()
    if t in g2.names:
        return t
    low = " ".join(t.lower().replace("_", " ").split())
    target = _EXTRA_NAMES.get(low) or _g2_names().get(low)
    if target is None:  # case-insensitive g2 key, e.g. 'h2o'
        matches = [n for n in g2.names if n.lower() == t.lower()]
        target = matches[0] if len(matches) == 1 else None
    return target


def _inline(fn: Any, *args: Any, label: str | None = None, **kwargs: Any) -> Any:
    """Run ``fn`` here (the ``compute`` used when no tool context is at hand)."""
    return fn(*args, **kwargs)


def _parse_smiles(smiles: str):
    """Parse and size-check a SMILES string (cheap; nothing is embedded). Returns the RDKit molecule with Hs."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    text = str(smiles).strip()
    if len(text) > MAX_SMILES_LENGTH:
        raise ToolLimitError(
            f"The SMILES string has {len(text)} characters; the builder accepts at most {MAX_SMILES_LENGTH}.",
            hint="Build smaller molecules, or import a structure file (import_structure) for large ones.",
        )
    mol = Chem.MolFromSmiles(text) if text else None
    if mol is None:
        raise ToolInputError(
            f"{smiles!r} is not a valid SMILES string.",
            hint="Examples: 'CCO' (ethanol), 'c1ccccc1' (benzene), 'O=C=O' (CO2).",
        )
    heavy = mol.GetNumHeavyAtoms()
    if heavy > MAX_SMILES_HEAVY_ATOMS:
        raise ToolLimitError(
            f"The molecule has {heavy} heavy atoms; 3D embedding from SMILES stops at {MAX_SMILES_HEAVY_ATOMS}.",
            hint="Import a prepared structure file (import_structure) for larger molecules.",
        )
    mol = Chem.AddHs(mol)
    if mol.GetNumAtoms() > MAX_SMILES_ATOMS:
        raise ToolLimitError(f"The molecule has {mol.GetNumAtoms()} atoms; the builder stops at {MAX_SMILES_ATOMS}.")
    return mol


def _embed_smiles(smiles: str, seed: int) -> Atoms:
    """RDKit ETKDGv3 embedding and MMFF (or UFF) relaxation; runs in a worker under the tool's time limit."""
    from triscale.common.chem import EmbeddingError, MoleculeTooLargeError, SmilesError, embed_smiles

    try:
        (atoms,) = embed_smiles(
            smiles,
            seed=seed,
            max_heavy_atoms=None,
            max_atoms=MAX_SMILES_ATOMS,
            relax="auto",
            attempt_timeout_s=_EMBED_ATTEMPT_TIMEOUT_S,
        )
    except MoleculeTooLargeError as e:
        raise ToolLimitError(f"{e}.") from None
    except EmbeddingError:
        raise ToolInputError(f"RDKit could not embed {smiles!r} in 3D.") from None
    except SmilesError:
        raise ToolInputError(
            f"{smiles!r} is not a valid SMILES string.",
            hint="Examples: 'CCO' (ethanol), 'c1ccccc1' (benzene), 'O=C=O' (CO2).",
        ) from None
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def molecule_from_smiles(smiles: str, seed: int = 0xF00D, *, compute: Any = None) -> Atoms:
    """3D structure from SMILES: RDKit ETKDGv3 embedding, then a quick MMFF (or UFF) relaxation.

    The size limits (:data:`MAX_SMILES_LENGTH` characters, :data:`MAX_SMILES_HEAVY_ATOMS` heavy atoms,
    :data:`MAX_SMILES_ATOMS` atoms) are checked here before any embedding; ``compute`` (a tool's
    ``ctx.compute``) runs the embedding of molecules above :data:`INLINE_EMBED_HEAVY_ATOMS` heavy atoms in a
    worker with the tool's wall-time limit; default: in this process.
    """
    if _parse_smiles(smiles).GetNumHeavyAtoms() <= INLINE_EMBED_HEAVY_ATOMS:
        compute = None
    return (compute or _inline)(_embed_smiles, str(smiles).strip(), seed, label="RDKit 3D embedding")


def molecule_from_text(text: str, *, compute: Any = None) -> tuple[Atoms, str, str]:
    """Build a molecule from a g2 key ('H2O'), a common name ('water', 'aspirin') or SMILES.

    Returns (atoms, label, source). g2 keys win over SMILES ('CO' is carbon monoxide; write 'smiles:CO' or use
    the smiles argument for methanol). ``compute`` as in :func:`molecule_from_smiles`.
    """
    from ase.build import molecule

    t = str(text).strip()
    if not t:
        raise ToolInputError("Empty molecule name.", hint="Give a name ('water'), a formula ('H2O') or SMILES.")
    if t.lower().startswith("smiles:"):
        return molecule_from_smiles(t[7:], compute=compute), t[7:], "SMILES"
    key = _name_target(t)
    if key is not None and key.startswith("smiles:"):
        return molecule_from_smiles(key[7:], compute=compute), " ".join(t.lower().split()), "SMILES"
    if key is not None:
        atoms = molecule(key)
        mag = atoms.get_initial_magnetic_moments()
        atoms.info["spin"] = int(round(abs(float(mag.sum()))))
        atoms.info["charge"] = 0
        return atoms, t if t != key else key, "ASE g2"
    if re.fullmatch(r"[A-Za-z0-9@+\-\[\]\(\)=#$/\\%.:*]+", t):
        try:
            mol_atoms = molecule_from_smiles(t, compute=compute)
        except ToolInputError:
            pass
        else:
            return mol_atoms, t, "SMILES"
    raise ToolInputError(
        f"{text!r} is not a known molecule name, g2 formula or valid SMILES.",
        hint="Use a SMILES string (e.g. 'CCO') or a g2 formula (e.g. 'H2O', 'CH4', 'C6H6').",
    )


def _xyz(atoms: Atoms) -> str:
    rows = [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    return f"{len(atoms)}\n\n" + "\n".join(rows)


def _same_composition(mol: Any, formula: str) -> bool:
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    return CalcMolFormula(Chem.AddHs(mol)).rstrip("+-") == formula


def molecule_smiles(atoms: Atoms | None, label: str | None = None, charge: int = 0) -> str | None:
    """Canonical SMILES (RDKit) of a molecule: its label when that is a SMILES of the same composition (built
    from SMILES) or a name whose SMILES the builder knows, else RDKit's bond perception (``rdDetermineBonds``) of
    the geometry; None when none works (e.g. an open-shell molecule not in :data:`_OPEN_SHELL_SMILES`) or the
    structure is periodic."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    if atoms is None or bool(atoms.pbc.any()):
        return None
    formula = atoms.get_chemical_formula(mode="hill")
    if label:
        target = _name_target(label.removeprefix("smiles:")) if not label.startswith("smiles:") else label
        candidates = [label.removeprefix("smiles:")]
        if target is not None:
            candidates.insert(0, target.removeprefix("smiles:") if target.startswith("smiles:") else "")
            candidates.insert(0, _OPEN_SHELL_SMILES.get(target, ""))
        for text in candidates:
            mol = Chem.MolFromSmiles(text) if text else None
            if mol is not None and _same_composition(mol, formula):
                return Chem.MolToSmiles(mol)
    try:
        mol = Chem.MolFromXYZBlock(_xyz(atoms))
        rdDetermineBonds.DetermineBonds(mol, charge=int(charge or 0))
        return Chem.MolToSmiles(Chem.RemoveHs(_hypervalent(mol)))
    except Exception:
        return None


def _hypervalent(mol: Any) -> Any:
    """Charge-separated single bonds from an atom that can expand its octet (S, P, Se, halogens of period 3+)
    written as double bonds, as chemists and PubChem write them (``O=[S+][O-]`` -> ``O=S=O``); CO stays
    ``[C-]#[O+]``."""
    from rdkit import Chem

    rw = Chem.RWMol(mol)
    changed = False
    for b in rw.GetBonds():
        a, c = b.GetBeginAtom(), b.GetEndAtom()
        for pos, neg in ((a, c), (c, a)):
            if (
                b.GetBondType() == Chem.BondType.SINGLE
                and pos.GetFormalCharge() == 1
                and neg.GetFormalCharge() == -1
                and pos.GetSymbol() in ("S", "P", "Se", "Cl", "Br", "I", "As")
            ):
                b.SetBondType(Chem.BondType.DOUBLE)
                pos.SetFormalCharge(0)
                neg.SetFormalCharge(0)
                changed = True
                break
    if not changed:
        return mol
    try:
        out = rw.GetMol()
        Chem.SanitizeMol(out)
        return out
    except Exception:
        return mol


# --------------------------------------------------------------------------- results


class StructureResult(ToolResult):
    structure_id: str = Field(description="Id of the new (or resolved) structure in the workspace store.")
    formula: str
    n_atoms: int
    periodic: bool
    label: str | None = None
    parent_id: str | None = None
    min_distance_A: float | None = None
    cell_lengths_A: list[float] | None = None
    cell_angles_deg: list[float] | None = None
    volume_A3: float | None = None
    density_g_per_cm3: float | None = None
    energy_eV: float | None = None
    charge_e: int | None = None
    spin_unpaired: int | None = None
    file: str | None = Field(None, description="Workspace-relative path of a written file.")


class MoleculeResult(StructureResult):
    smiles: str | None = Field(
        None, description="Canonical SMILES (RDKit) of the built molecule; null when none can be written."
    )


def _result(ctx: ToolContext, sid: str, result_type: type[StructureResult] = StructureResult, **extra: Any) -> Any:
    ws = ctx.workspace
    rec = ws.record(sid)
    atoms = ws.get(sid)
    return result_type(
        structure_id=sid,
        label=rec["label"],
        parent_id=rec["parent"],
        energy_eV=rec["energy_eV"],
        charge_e=rec["charge"],
        spin_unpaired=rec["spin"],
        **summarize(atoms),
        **extra,
    )


def _structure_field(
    description: str = "Structure id such as 'st3' (a molecule name or SMILES also works).",
) -> Any:
    return Field(validation_alias=AliasChoices("structure_id", "structure"), description=description)


# --------------------------------------------------------------------------- molecules


class BuildMoleculeInput(ToolInput):
    name: str | None = Field(None, description="Molecule name ('water', 'benzene'), g2 formula ('H2O') or SMILES.")
    smiles: str | None = Field(None, description="SMILES string (embedded with RDKit ETKDG + MMFF relaxation).")
    label: str | None = Field(None, description="Optional label to find the structure by later.")


@register(
    "build_molecule",
    input=BuildMoleculeInput,
    result=MoleculeResult,
    cost="instant",
    category="structure",
    compact=True,
    keywords=(r"\b(build|formula|how many atoms|number of atoms|structure of|smiles)\b",),
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
    timeout_s=120.0,
)
def build_molecule(ctx: ToolContext, a: BuildMoleculeInput) -> MoleculeResult:
    """Build a 3D molecule from a name, a g2 formula or a SMILES string and store it; returns its id and
    canonical SMILES."""
    if a.smiles:
        atoms, label, source = molecule_from_smiles(a.smiles, compute=ctx.compute), a.smiles, "SMILES"
    elif a.name:
        atoms, label, source = molecule_from_text(a.name, compute=ctx.compute)
    else:
        raise ToolInputError("Give either name or smiles.", hint="e.g. name='water' or smiles='CCO'.")
    sid = ctx.store(atoms, label=a.label or label)
    smiles = molecule_smiles(atoms, label, int(atoms.info.get("charge", 0) or 0))
    return _result(ctx, sid, MoleculeResult, smiles=smiles, notes=[f"source: {source}"])


# --------------------------------------------------------------------------- crystals


class BuildBulkInput(ToolInput):
    name: str = Field(description="Element or formula, e.g. 'Cu', 'Si', 'NaCl', 'MgO'.")
    crystalstructure: (
        Literal[
            "sc",
            "fcc",
            "bcc",
            "hcp",
            "diamond",
            "zincblende",
            "rocksalt",
            "cesiumchloride",
            "fluorite",
            "wurtzite",
        ]
        | None
    ) = Field(None, description="Lattice type; default: ASE's reference state of the element.")
    a_A: float | None = Field(None, gt=0.5, lt=50, description="Lattice constant a in Å; default: ASE reference.")
    c_A: float | None = Field(None, gt=0.5, lt=80, description="Lattice constant c in Å (hcp, wurtzite).")
    cubic: bool = Field(False, description="Conventional cubic cell instead of the primitive one.")
    repeat: tuple[int, int, int] | None = Field(None, description="Optional supercell repetition, e.g. [2,2,2].")
    label: str | None = None


@register(
    "build_bulk",
    input=BuildBulkInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    compact=True,
    # a crystal word in the question also offers it (triscale.agents.select)
    keywords=(r"\blattice (constant|parameter)|\bequation of state|\beos\b|\bbulk modulus|\bequilibrium volume",),
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
)
def build_bulk(ctx: ToolContext, a: BuildBulkInput) -> StructureResult:
    """Build a bulk crystal with ase.build.bulk (reference lattice constant unless a_A is given)."""
    from ase.build import bulk
    from ase.symbols import string2symbols

    try:
        for s in set(string2symbols(a.name)):
            check_symbol(s)
    except (ValueError, KeyError):
        raise ToolInputError(f"Unknown element or formula {a.name!r}.", hint="e.g. 'Cu', 'Si', 'NaCl'.") from None
    kw: dict[str, Any] = {"cubic": a.cubic}
    if a.crystalstructure:
        kw["crystalstructure"] = a.crystalstructure
    if a.a_A:
        kw["a"] = a.a_A
    if a.c_A:
        kw["c"] = a.c_A
    try:
        atoms = bulk(a.name, **kw)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise ToolInputError(
            f"ase.build.bulk could not build {a.name!r} with {kw}: {e}",
            hint="Compounds need crystalstructure and a_A (e.g. NaCl rocksalt a_A=5.64); elements without a "
            "reference state need crystalstructure and a_A.",
        ) from None
    if a.repeat:
        atoms = _repeat(atoms, a.repeat)
    sid = ctx.store(atoms, label=a.label or f"{a.name} {a.crystalstructure or 'bulk'}")
    return _result(ctx, sid)


def _repeat(atoms: Atoms, rep: tuple[int, int, int]) -> Atoms:
    """``atoms.repeat(rep)`` after checking the size in Python integers (NumPy's int64 product of
    [2**32, 2**32, 1] wraps to 0)."""
    factors = [int(r) for r in rep]
    if any(r < 1 for r in factors):
        raise ToolInputError(f"Repetitions must be ≥ 1, got {factors}.")
    n = len(atoms) * factors[0] * factors[1] * factors[2]
    if n > MAX_BUILD_ATOMS:
        raise ToolLimitError(
            f"The supercell would have {n} atoms (limit {MAX_BUILD_ATOMS}).", hint="Use smaller repetitions."
        )
    return atoms.repeat(factors)


class SupercellInput(ToolInput):
    structure_id: str = _structure_field()
    repeat: tuple[int, int, int] = Field(description="Repetitions along a, b, c, e.g. [2, 2, 2].")


@register(
    "make_supercell",
    input=SupercellInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
)
def make_supercell(ctx: ToolContext, a: SupercellInput) -> StructureResult:
    """Repeat a periodic structure along its cell vectors and store the supercell."""
    sid, atoms = ctx.structure(a.structure_id)
    if not atoms.pbc.any():
        raise ToolInputError(f"{sid} is not periodic; a supercell needs a crystal.")
    new = ctx.store(_repeat(atoms, a.repeat), parent=sid, label=f"{ctx.workspace.record(sid)['label']} x{a.repeat}")
    return _result(ctx, new)


class SurfaceInput(ToolInput):
    structure_id: str = _structure_field("Bulk structure id, or an element symbol such as 'Pt' to build its bulk.")
    miller: tuple[int, int, int] = Field((1, 1, 1), description="Miller indices of the surface.")
    layers: int = Field(4, ge=1, le=30, description="Number of layers.")
    vacuum_A: float = Field(10.0, ge=0, le=50, description="Vacuum on each side in Å.")
    repeat: tuple[int, int, int] = Field((1, 1, 1), description="In-plane repetition, e.g. [2,2,1].")


@register(
    "build_surface",
    input=SurfaceInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
)
def build_surface(ctx: ToolContext, a: SurfaceInput) -> StructureResult:
    """Cut a surface slab (Miller indices, layers, vacuum) from a bulk structure with ase.build.surface."""
    from ase.build import bulk, surface

    ref = a.structure_id.strip()
    ws = ctx.workspace
    if not ws.has(ref) and not ws.find_label(ref) and re.fullmatch(r"[A-Z][a-z]?", ref):
        check_symbol(ref)
        try:
            sid = ctx.store(bulk(ref, cubic=True), label=f"{ref} bulk")
        except (ValueError, KeyError, RuntimeError):
            sid = ctx.store(bulk(ref), label=f"{ref} bulk")
        atoms = ws.get(sid)
    else:
        sid, atoms = ctx.structure(ref)
    if not atoms.pbc.all():
        raise ToolInputError(f"{sid} is not a 3D periodic crystal; cut surfaces from a bulk structure.")
    if a.miller == (0, 0, 0):
        raise ToolInputError("Miller indices cannot all be zero.")
    if max(abs(m) for m in a.miller) > MAX_MILLER_INDEX:
        raise ToolLimitError(
            f"Miller indices {list(a.miller)} are too large (at most {MAX_MILLER_INDEX} in magnitude).",
            hint="Low-index surfaces such as (1,1,1), (1,0,0), (1,1,0) are the usual choice.",
        )
    per_layer = len(atoms)  # a (hkl) slab layer of a primitive/conventional bulk cell: checked after the cut
    if per_layer * a.layers > MAX_BUILD_ATOMS:
        raise ToolLimitError(f"The slab would have at least {per_layer * a.layers} atoms (limit {MAX_BUILD_ATOMS}).")
    slab = surface(atoms, a.miller, a.layers, vacuum=a.vacuum_A, periodic=True)
    if len(slab) > MAX_BUILD_ATOMS:
        raise ToolLimitError(f"The slab has {len(slab)} atoms (limit {MAX_BUILD_ATOMS}).")
    slab = _repeat(slab, a.repeat)
    new = ctx.store(slab, parent=sid, label=f"{atoms.get_chemical_formula()} {''.join(map(str, a.miller))} slab")
    return _result(ctx, new)


class VacancyInput(ToolInput):
    structure_id: str = _structure_field()
    index: int | None = Field(None, ge=0, description="Index of the atom to remove.")
    element: str | None = Field(None, description="Remove the first atom of this element (if no index).")


@register(
    "make_vacancy",
    input=VacancyInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
)
def make_vacancy(ctx: ToolContext, a: VacancyInput) -> StructureResult:
    """Remove one atom (by index, or the first of an element) to create a vacancy."""
    sid, atoms = ctx.structure(a.structure_id)
    idx = _pick_index(atoms, a.index, a.element)
    if len(atoms) == 1:
        raise ToolInputError("Cannot remove the only atom.")
    sym = atoms[idx].symbol
    del atoms[idx]
    new = ctx.store(atoms, parent=sid, label=f"{ctx.workspace.record(sid)['label']} V_{sym}{idx}")
    return _result(ctx, new)


def _pick_index(atoms: Atoms, index: int | None, element: str | None) -> int:
    if index is not None:
        if index >= len(atoms):
            raise ToolInputError(f"Atom index {index} is out of range (structure has {len(atoms)} atoms).")
        return index
    if element:
        sym = check_symbol(element)
        hits = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == sym]
        if not hits:
            raise ToolInputError(f"No {sym} atom in {atoms.get_chemical_formula()}.")
        return hits[0]
    raise ToolInputError("Give index or element.")


class SubstituteInput(ToolInput):
    structure_id: str = _structure_field()
    new_element: str = Field(description="Element to put in.")
    indices: list[int] | None = Field(None, description="Atom indices to replace.")
    old_element: str | None = Field(None, description="Replace atoms of this element (if no indices).")
    count: int = Field(1, ge=1, description="How many old_element atoms to replace (first ones).")


@register(
    "substitute_atoms",
    input=SubstituteInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
)
def substitute_atoms(ctx: ToolContext, a: SubstituteInput) -> StructureResult:
    """Replace atoms (by indices, or the first `count` atoms of old_element) with new_element."""
    sid, atoms = ctx.structure(a.structure_id)
    new_sym = check_symbol(a.new_element)
    if a.indices:
        idx = a.indices
        bad = [i for i in idx if i < 0 or i >= len(atoms)]
        if bad:
            raise ToolInputError(f"Indices {bad} are out of range (structure has {len(atoms)} atoms).")
    elif a.old_element:
        old = check_symbol(a.old_element)
        hits = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == old]
        if len(hits) < a.count:
            raise ToolInputError(f"Only {len(hits)} {old} atoms in {atoms.get_chemical_formula()}.")
        idx = hits[: a.count]
    else:
        raise ToolInputError("Give indices or old_element.")
    syms = atoms.get_chemical_symbols()
    for i in idx:
        syms[i] = new_sym
    atoms.set_chemical_symbols(syms)
    new = ctx.store(atoms, parent=sid, label=f"{ctx.workspace.record(sid)['label']} {new_sym}-substituted")
    return _result(ctx, new)


# --------------------------------------------------------------------------- files

_FORMATS = {"extxyz": "extxyz", "xyz": "xyz", "cif": "cif", "poscar": "vasp", "vasp": "vasp", "traj": "traj"}


def _guess_format(path: str, fmt: str | None) -> str:
    if fmt:
        f = fmt.strip().lower()
        if f not in _FORMATS:
            raise ToolInputError(f"Unsupported format {fmt!r}.", hint=f"Use one of {', '.join(_FORMATS)}.")
        return _FORMATS[f]
    name = path.lower()
    if name.endswith((".extxyz",)):
        return "extxyz"
    if name.endswith(".xyz"):
        return "extxyz"
    if name.endswith(".cif"):
        return "cif"
    if name.endswith(".traj"):
        return "traj"
    if "poscar" in name or "contcar" in name or name.endswith(".vasp"):
        return "vasp"
    raise ToolInputError(f"Cannot tell the format of {path!r}.", hint="Pass format: extxyz, xyz, cif or poscar.")


class ImportInput(ToolInput):
    path: str = Field(description="File inside the workspace (extxyz, xyz, cif, POSCAR, traj).")
    format: str | None = Field(None, description="extxyz | xyz | cif | poscar | traj; default: from the name.")
    index: int = Field(
        -1, description="Frame to read from a multi-frame file: 0 = first, -1 = last (default); must exist."
    )
    label: str | None = None


def _read_frame(path: str, fmt: str, index: int, name: str) -> Atoms:
    """Parse one frame of a structure file and check it (runs in a worker under the tool's time limit)."""
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as e:  # noqa: BLE001 - every parser error becomes one clear message
        raise ToolInputError(
            f"Could not read {name!r} as {fmt}: {type(e).__name__}: {str(e)[:200]}",
            hint="Check the file contents and the format argument.",
        ) from None
    if not isinstance(frames, list):
        frames = [frames]
    n = len(frames)
    if n == 0:
        raise ToolInputError(
            f"{name!r} has no atoms (no structure found in it).", hint="Check the file contents and the format."
        )
    if not -n <= index < n:
        raise ToolInputError(
            f"Frame index {index} is out of range: {name!r} has {n} frame{'s' if n > 1 else ''}.",
            hint=f"Use 0..{n - 1}, or -1..-{n} counting from the end (-1 = last).",
        )
    atoms = frames[index]
    atoms.calc = None
    if len(atoms) > MAX_BUILD_ATOMS:
        raise ToolLimitError(f"{name!r} frame {index} has {len(atoms)} atoms (limit {MAX_BUILD_ATOMS}).")
    if fmt == "cif" and not atoms.pbc.all():
        # ASE turns a CIF whose cell is zero or missing into a molecule (and reads fractional coordinates as Å)
        cellpar = None
        try:
            from ase.io.cif import parse_cif

            blocks = [b for b in parse_cif(path) if b.has_structure()]
            if len(blocks) == n:
                cellpar = blocks[index].get_cellpar()
        except Exception:  # noqa: BLE001 - only used to explain the refusal
            pass
        shown = "" if cellpar is None else f" (a, b, c = {', '.join(f'{float(x):g}' for x in cellpar[:3])} Å)"
        raise ToolInputError(
            f"{name!r} has no usable 3D unit cell{shown}; a CIF must define the cell of a periodic crystal.",
            hint="Fix _cell_length_a/b/c and _cell_angle_* in the file, or write molecules as xyz.",
        )
    validate_atoms(atoms)
    return atoms


@register(
    "import_structure",
    input=ImportInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    answer_fields=("formula", "n_atoms"),
    timeout_s=60.0,
)
def import_structure(ctx: ToolContext, a: ImportInput) -> StructureResult:
    """Read a structure file from the workspace into the store."""
    path = ctx.workspace.path(a.path, must_exist=True)
    fmt = _guess_format(a.path, a.format)
    if not path.is_file():
        raise ToolInputError(f"{a.path!r} is not a file.", hint="Give the path of a structure file.")
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ToolLimitError(
            f"{a.path!r} is {size / 2**20:.1f} MiB; import_structure reads files up to "
            f"{MAX_IMPORT_BYTES // 2**20} MiB.",
            hint="Extract the frame you need into a smaller file.",
        )
    small = size <= _INLINE_READ_BYTES and fmt in _INLINE_READ_FORMATS
    atoms = (_inline if small else ctx.compute)(_read_frame, str(path), fmt, a.index, a.path, label=f"reading {a.path}")
    sid = ctx.store(atoms, label=a.label or path.name)
    return _result(ctx, sid)


#: Workspace-internal files and folders (first path component) that export_structure never writes.
_INTERNAL = ("structures.db", "calls.jsonl", "jobs", "agent_runs", "agent_sessions.sqlite")


class ExportInput(ToolInput):
    structure_id: str = _structure_field()
    path: str = Field(description="Output file inside the workspace, e.g. 'out/relaxed.cif'.")
    format: str | None = Field(None, description="extxyz | xyz | cif | poscar; default: from the name.")
    overwrite: bool = Field(
        False,
        description="Replace an existing file that export_structure did not write earlier (files it wrote are "
        "replaced without asking; the workspace's own store, logs and job records never are).",
    )


def _check_export_target(ctx: ToolContext, path: Any, text: str, overwrite: bool) -> None:
    ws = ctx.workspace
    if path == ws.root:
        raise ToolInputError(f"{text!r} is the workspace folder itself.", hint="Give a file name such as 'out.cif'.")
    rel = path.relative_to(ws.root)
    top = rel.parts[0]
    if any(top == name or top.startswith(name + "-") for name in _INTERNAL):
        raise ToolInputError(
            f"{text!r} is part of the workspace's own records (structure store, call log, jobs, agent runs); "
            "export_structure never writes there.",
            hint="Choose another file name, e.g. 'exports/structure.cif'.",
        )
    if path.is_dir():
        raise ToolInputError(f"{text!r} is a folder.", hint=f"Give a file name inside it, e.g. '{rel}/structure.cif'.")
    if path.exists() and not overwrite:
        target = str(rel)
        ours = any(
            c.get("tool") == "export_structure"
            and c.get("status") == "ok"
            and (c.get("result") or {}).get("file") == target
            for c in ws.calls()
        )
        if not ours:
            raise ToolInputError(
                f"{text!r} already exists and was not written by export_structure.",
                hint="Pass overwrite=true to replace it, or choose another file name.",
            )


@register(
    "export_structure",
    input=ExportInput,
    result=StructureResult,
    cost="instant",
    category="structure",
    answer_fields=("file", "formula"),
)
def export_structure(ctx: ToolContext, a: ExportInput) -> StructureResult:
    """Write a stored structure to a file inside the workspace (never over its store, logs or job records; an
    existing file it did not write needs overwrite=true)."""
    import ase.io

    sid, atoms = ctx.structure(a.structure_id)
    path = ctx.workspace.path(a.path)
    fmt = _guess_format(a.path, a.format)
    _check_export_target(ctx, path, a.path, a.overwrite)
    if fmt in ("cif", "vasp") and not atoms.pbc.any():
        if fmt == "vasp" or atoms.cell.rank < 3:
            atoms.center(vacuum=5.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    row_atoms = ctx.workspace._row(sid).toatoms()  # with the stored energy/forces for extxyz
    if fmt == "extxyz" and row_atoms.calc is not None:
        atoms = row_atoms
    atoms.info.pop("structure_id", None)
    ase.io.write(str(path), atoms, format=fmt)
    return _result(ctx, sid, file=ctx.workspace.relpath(path))


# --------------------------------------------------------------------------- queries


class ListStructuresInput(ToolInput):
    limit: int = Field(50, ge=1, le=1000, description="Show at most this many (most recent).")


class StructureListResult(ToolResult):
    count: int
    structures: list[dict[str, Any]] = Field(
        description="id, formula, n_atoms, label, parent, tool, method, energy_eV for each structure."
    )


@register(
    "list_structures",
    input=ListStructuresInput,
    result=StructureListResult,
    cost="instant",
    category="structure",
    makes_structures_only=True,
    # computes nothing
    answer_fields=("count",),
)
def list_structures(ctx: ToolContext, a: ListStructuresInput) -> StructureListResult:
    """List the structures in the workspace with their lineage (no coordinates)."""
    recs = ctx.workspace.records()
    keep = ("id", "formula", "n_atoms", "label", "parent", "tool", "method", "energy_eV")
    rows = [{k: r[k] for k in keep if r[k] not in (None, "")} for r in recs[-a.limit :]]
    return StructureListResult(count=len(recs), structures=rows)


class StructureInfoInput(ToolInput):
    structure_id: str = _structure_field()


class StructureInfoResult(StructureResult):
    lineage: list[str] = Field(default_factory=list, description="Ids from this structure back to its origin.")
    produced_by: str | None = None
    method: str | None = None
    element_counts: dict[str, int] = Field(default_factory=dict)


@register(
    "structure_info",
    input=StructureInfoInput,
    result=StructureInfoResult,
    cost="instant",
    category="structure",
    answer_fields=("formula", "n_atoms", "min_distance_A", "volume_A3", "density_g_per_cm3"),
)
def structure_info(ctx: ToolContext, a: StructureInfoInput) -> StructureInfoResult:
    """Summary of one structure: formula, size, cell, shortest distance, energy and lineage."""
    sid, atoms = ctx.structure(a.structure_id)
    ws = ctx.workspace
    rec = ws.record(sid)
    counts: dict[str, int] = {}
    for s in atoms.get_chemical_symbols():
        counts[s] = counts.get(s, 0) + 1
    base = _result(ctx, sid).model_dump(exclude={"tool", "call_id", "notes"})
    return StructureInfoResult(
        **base,
        lineage=ws.lineage(sid),
        produced_by=rec["tool"] or None,
        method=rec["method"],
        element_counts=counts,
    )


class ListCalculatorsInput(ToolInput):
    pass


class CalculatorListResult(ToolResult):
    calculators: dict[str, dict[str, Any]]


@register(
    "list_calculators",
    input=ListCalculatorsInput,
    result=CalculatorListResult,
    cost="instant",
    category="structure",
)
def list_calculators(ctx: ToolContext, a: ListCalculatorsInput) -> CalculatorListResult:
    """The calculators (methods) available here, whether they are installed, and their atom limits."""
    from triscale.tools.calculators import available_methods

    return CalculatorListResult(calculators=available_methods())


# Reference crystals ase.build.bulk builds for an element alone; carbon is left out ('C' is methane's SMILES) and the
# noble gases too (ASE's reference state is their fcc solid; alone, 'Ar' means the atom).
_CRYSTAL_SYMMETRIES = ("fcc", "bcc", "hcp", "diamond")
_NOT_CRYSTALS = ("C", "He", "Ne", "Ar", "Kr", "Xe", "Rn")


def names_a_molecule(text: str) -> bool:
    """Whether :func:`molecule_from_text` builds ``text`` (a name, g2 key or SMILES with at least one letter)."""
    if not re.search(r"[A-Za-z]", text):
        return False
    try:
        molecule_from_text(text)
    except Exception:  # any refusal (unknown name, SMILES that does not embed) means "no"
        return False
    return True


def element_symbol(text: str) -> str | None:
    """The element ``text`` names: its symbol as written ('Cu', 'Co') or its name, any case ('copper',
    'aluminum', 'sulphur'). None otherwise ('co', 'CO' and 'water' name no element)."""
    from ase.data import atomic_names, chemical_symbols

    t = str(text).strip()
    if t in chemical_symbols[1:]:
        return t
    low = t.lower().replace("aluminum", "aluminium").replace("sulphur", "sulfur").replace("cesium", "caesium")
    return next((s for s, n in zip(chemical_symbols, atomic_names, strict=False) if n and n.lower() == low), None)


def element_crystal_symbol(text: str) -> str | None:
    """The element ``text`` names when it is one whose reference state is a simple crystal: its symbol or name
    (:func:`element_symbol`), or a lower-case symbol ('al', 'cu') that names no molecule ('co' is carbon
    monoxide). None otherwise."""
    from ase.data import atomic_numbers, reference_states

    t = str(text).strip()
    sym = element_symbol(t)
    if sym is None and t.islower() and t.capitalize() in atomic_numbers:
        target = _name_target(t)
        sym = t.capitalize() if target in (None, t.capitalize()) else None
    if sym is None or sym in _NOT_CRYSTALS:
        return None
    ref = reference_states[atomic_numbers[sym]] or {}
    return sym if ref.get("symmetry") in _CRYSTAL_SYMMETRIES else None


def structure_from_text(text: str, *, compute: Any = None, crystals: bool = True) -> tuple[Atoms, str, str]:
    """What a structure reference that is no id names: an element alone its reference crystal ('Al', 'aluminium':
    fcc Al; a user asking for "the energy of aluminium" means the metal, not one atom), anything else the molecule
    :func:`molecule_from_text` builds. ``crystals=False`` (reaction species, ideal gases): molecules only."""
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    sym = element_crystal_symbol(text) if crystals else None
    if sym is None:
        return molecule_from_text(text, compute=compute)
    kind = reference_states[atomic_numbers[sym]]["symmetry"]
    return bulk(sym), f"{sym} ({kind})", f"ASE reference {kind} crystal"


# ToolContext.structure builds what the caller names ("water", a SMILES, "Al") with the same limits as the builders.
set_structure_resolver(structure_from_text)
