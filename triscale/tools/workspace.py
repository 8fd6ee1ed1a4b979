"""The run workspace: a directory with a structure store (an ASE database) and the files tools write.

Structures are addressed by short stable ids (``st1``, ``st2``, ... — the database row id, never reused) and
carry their lineage: the parent structure, the tool call that produced them, the calculator and the energy.
Coordinates stay in the store; tool results only carry ids and summaries.

Several threads and processes may share one workspace (an MCP server, a CLI run, job threads). Every id is
allocated by SQLite in one transaction (structure ids are the database's AUTOINCREMENT row ids; call and job ids
come from the ``triscale_counters`` table in the same file, see :meth:`Workspace.next_id`), and
:meth:`Workspace.new_file` creates its file (or directory) exclusively, so two concurrent callers never receive
the same id or the same output path.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from triscale.tools.errors import ToolInputError

__all__ = ["Workspace", "StructureRecord"]

_ID_RE = re.compile(r"^\s*(?:st|#)?\s*(\d+)\s*$", re.IGNORECASE)
_STRICT_ID_RE = re.compile(r"^st\d+$")
_BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another process's transaction on structures.db
_COUNTERS_DDL = "CREATE TABLE IF NOT EXISTS triscale_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"


class StructureRecord(dict):
    """One row of the store as a plain dict: id, formula, n_atoms, label, parent, tool, call_id, method,
    energy_eV, pbc, charge, spin."""


def _row_to_record(row) -> StructureRecord:
    kv = row.key_value_pairs
    energy = row.get("energy")
    return StructureRecord(
        id=f"st{row.id}",
        formula=row.formula,
        n_atoms=row.natoms,
        label=kv.get("label", ""),
        parent=kv.get("parent", "") or None,
        tool=kv.get("tool", ""),
        call_id=kv.get("call_id", ""),
        method=kv.get("method", "") or None,
        energy_eV=None if energy is None else float(energy),
        pbc=bool(np.any(row.pbc)),
        charge=int(kv.get("net_charge", 0)),
        spin=int(kv.get("n_unpaired", 0)),
    )


class Workspace:
    """A directory holding ``structures.db`` (ASE SQLite database), ``calls.jsonl`` and tool output files.

    Parameters
    ----------
    root:
        The workspace directory (created if missing). All file arguments of tools resolve inside it.
    isolate:
        Run heavy calculations in a worker process with a wall-time limit (default). ``False`` runs them in
        this process (no timeout; for debugging).
    timeout_s:
        Override the registry's per-tool wall-time limit for every call in this workspace.
    """

    def __init__(self, root: str | Path = "workspace", *, isolate: bool = True, timeout_s: float | None = None):
        if timeout_s is not None and not timeout_s > 0:
            raise ToolInputError(
                f"timeout_s must be a positive number of seconds, got {timeout_s!r}.",
                hint="Leave it unset for each tool's default limit.",
            )
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.isolate = isolate
        self.timeout_s = timeout_s
        self.db_path = self.root / "structures.db"
        self._lock = threading.RLock()
        self._services: dict[str, Any] = {}
        self._init_store()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ------------------------------------------------------------------ store
    def _db(self):
        """The ASE view of ``structures.db``, without ASE's lock file.

        ASE's default lock is a ``structures.db.lock`` file created exclusively and removed after each write, waited
        for with no time limit: a process SIGKILLed inside a write (a Dask worker killed mid-item, an OOM kill) leaves
        it behind and every later writer of the workspace waits forever. SQLite's own locks, which the kernel drops
        when their process dies, serialise writers instead (busy timeout and retries in :meth:`add`)."""
        import ase.db

        return ase.db.connect(str(self.db_path), type="db", append=True, use_lock_file=False)

    def _sql(self) -> sqlite3.Connection:
        """A plain connection to ``structures.db`` in autocommit mode (transactions are explicit)."""
        con = sqlite3.connect(str(self.db_path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        return con

    def _transaction(self, fn):
        """Run ``fn(con)`` inside ``BEGIN IMMEDIATE`` (one writer at a time, across processes)."""
        con = self._sql()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                out = fn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return out
        finally:
            con.close()

    def _init_store(self) -> None:
        """Create the ASE tables and the counters table in one transaction.

        ASE creates its tables lazily with separate statements, so two processes opening a new workspace at once
        could both try; doing it here under ``BEGIN IMMEDIATE`` makes the first one win and the other see it.
        """
        from ase.db.sqlite import index_statements, init_statements

        def init(con):
            con.execute(_COUNTERS_DDL)
            if not con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='systems'").fetchone()[0]:
                for statement in [*init_statements, *index_statements]:
                    con.execute(statement)

        self._transaction(init)

    def next_id(self, name: str) -> int:
        """The next value (1, 2, ...) of the named counter; unique across threads and processes."""

        def bump(con):
            con.execute(
                "INSERT INTO triscale_counters (name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )
            return int(con.execute("SELECT value FROM triscale_counters WHERE name = ?", (name,)).fetchone()[0])

        return self._transaction(bump)

    def add(
        self,
        atoms: Atoms,
        *,
        label: str = "",
        parent: str | None = None,
        tool: str = "",
        call_id: str = "",
        method: str | None = None,
        energy_eV: float | None = None,
        forces: np.ndarray | None = None,
        stress: np.ndarray | None = None,
        charge: int | None = None,
        spin: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> str:
        """Store a structure with its lineage and return its id (``stN``)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        from triscale.tools.validation import validate_atoms

        validate_atoms(atoms)
        atoms = atoms.copy()
        atoms.calc = None
        if energy_eV is not None:
            results: dict[str, Any] = {"energy": float(energy_eV)}
            if forces is not None:
                results["forces"] = np.asarray(forces, dtype=float)
            if stress is not None:
                results["stress"] = np.asarray(stress, dtype=float)
            atoms.calc = SinglePointCalculator(atoms, **results)
        if charge is None:
            charge = int(atoms.info.get("charge", 0))
        if spin is None:
            spin = int(atoms.info.get("spin", round(abs(float(np.sum(atoms.get_initial_magnetic_moments()))))))
        kv: dict[str, Any] = {
            "label": label or atoms.get_chemical_formula(),
            "parent": parent or "",
            "tool": tool,
            "call_id": call_id,
            "method": method or "",
            "net_charge": int(charge),
            "n_unpaired": int(spin),
        }
        with self._lock:
            for attempt in range(5):  # ASE waits 20 s for a lock; a busy multi-process workspace may need longer
                try:
                    row_id = self._db().write(atoms, key_value_pairs=kv, data=data or {})
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 4:
                        raise
        return f"st{row_id}"

    def _row(self, structure_id: str):
        m = _ID_RE.match(str(structure_id))
        if not m:
            raise self.unknown_structure(structure_id)
        with self._lock:
            try:
                return self._db().get(id=int(m.group(1)))
            except KeyError:
                raise self.unknown_structure(structure_id) from None

    def has(self, structure_id: str) -> bool:
        try:
            self._row(structure_id)
            return True
        except ToolInputError:
            return False

    def get(self, structure_id: str) -> Atoms:
        """The stored structure (with charge/spin in ``atoms.info``; no calculator attached)."""
        row = self._row(structure_id)
        atoms = row.toatoms()
        atoms.calc = None
        atoms.info["charge"] = int(row.key_value_pairs.get("net_charge", 0))
        atoms.info["spin"] = int(row.key_value_pairs.get("n_unpaired", 0))
        atoms.info["structure_id"] = f"st{row.id}"
        return atoms

    def record(self, structure_id: str) -> StructureRecord:
        return _row_to_record(self._row(structure_id))

    def records(self) -> list[StructureRecord]:
        if not self.db_path.exists():
            return []
        with self._lock:
            return [_row_to_record(r) for r in self._db().select()]

    def count(self) -> int:
        if not self.db_path.exists():
            return 0
        with self._lock:
            return self._db().count()

    def find_label(self, label: str) -> str | None:
        """Most recent structure whose label equals ``label`` (case-insensitive)."""
        hits = [r for r in self.records() if r["label"].lower() == label.strip().lower()]
        return hits[-1]["id"] if hits else None

    def lineage(self, structure_id: str, max_depth: int = 50) -> list[str]:
        """Ids from this structure back to its root."""
        chain = [self.record(structure_id)["id"]]
        while len(chain) < max_depth:
            parent = self.record(chain[-1])["parent"]
            if not parent:
                break
            chain.append(parent)
        return chain

    def unknown_structure(self, ref: str) -> ToolInputError:
        recs = self.records()
        if recs:
            shown = ", ".join(f"{r['id']} ({r['label']})" for r in recs[-15:])
            more = f" (last 15 of {len(recs)})" if len(recs) > 15 else ""
            have = f"Structures in this workspace{more}: {shown}."
        else:
            have = "The workspace has no structures yet."
        build = (
            "build_bulk (a crystal: name an element or formula such as 'Al'; repeat for a supercell) or "
            "build_molecule (name or SMILES)"
        )
        # An empty workspace is not told to pass 'st1' (a small model passed it again, unbuilt: held-out h_md_1), but
        # it is shown what an id looks like: without that it built a crystal named 'al1' (public lattice_constant_2).
        hint = (
            f"Pass one of the ids listed, or build a new structure first with {build}."
            if recs
            else f"Build the structure first with {build}; it returns an id such as 'st1' to pass here."
        )
        return ToolInputError(f"Unknown structure {ref!r}. {have}", hint=hint)

    # ------------------------------------------------------------------ files
    def path(self, relative: str | Path, *, must_exist: bool = False) -> Path:
        """Resolve a user-supplied path inside the workspace; refuse anything that escapes it."""
        text = str(relative).strip()
        if not text or "\x00" in text:
            raise ToolInputError("Empty or invalid file path.", hint="Give a file name such as 'out.xyz'.")
        p = Path(text).expanduser()
        full = (p if p.is_absolute() else self.root / p).resolve()
        if full != self.root and self.root not in full.parents:
            raise ToolInputError(
                f"Path {text!r} is outside the workspace {str(self.root)!r}.",
                hint="Use a relative file name inside the workspace, e.g. 'structures/water.xyz'.",
            )
        if must_exist and not full.exists():
            files = sorted(str(f.relative_to(self.root)) for f in self.root.rglob("*") if f.is_file())
            files = [f for f in files if not f.startswith(("structures.db", "jobs/", "vib/"))][:20]
            raise ToolInputError(
                f"File {text!r} does not exist in the workspace.",
                hint=f"Files present: {', '.join(files) or 'none'}.",
            )
        return full

    def relpath(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def new_file(self, subdir: str, stem: str, suffix: str) -> Path:
        """A fresh ``<subdir>/<stem>_<n><suffix>``, created empty before it is returned (a directory when
        ``suffix`` is empty), so that concurrent callers in any thread or process never get the same path."""
        d = self.root / subdir
        d.mkdir(parents=True, exist_ok=True)
        for i in itertools.count(1):
            p = d / f"{stem}_{i}{suffix}"
            try:
                if suffix:
                    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                else:
                    p.mkdir()
            except FileExistsError:
                continue
            return p
        raise AssertionError  # pragma: no cover

    # ------------------------------------------------------------------ calls log
    def new_call_id(self) -> str:
        """``c<n>``, from the workspace's SQLite counter: unique across threads and processes."""
        return f"c{self.next_id('call')}"

    def log_call(self, entry: dict[str, Any]) -> None:
        # One line per call, written whole under an exclusive lock: processes sharing a workspace (jobs, Dask
        # workers) never interleave their lines, however long a result is.
        line = (json.dumps(entry, default=str) + "\n").encode()
        with self._lock, open(self.root / "calls.jsonl", "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def calls(self) -> Iterator[dict[str, Any]]:
        p = self.root / "calls.jsonl"
        if p.exists():
            for line in p.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)

    # ------------------------------------------------------------------ per-workspace services
    def service(self, key: str, factory: Callable[[Workspace], Any]) -> Any:
        """One long-lived helper per workspace (e.g. the job manager), made by ``factory(self)`` on first use and
        shut down by :meth:`close`. Services live in the modules that need them; the store does not import them."""
        with self._lock:
            if key not in self._services:
                self._services[key] = factory(self)
            return self._services[key]

    def close(self) -> None:
        for svc in self._services.values():
            shutdown = getattr(svc, "shutdown", None)
            if shutdown is not None:
                shutdown()
