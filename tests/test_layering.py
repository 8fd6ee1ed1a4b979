"""The package's layering, enforced (DESIGN.md): imports point down, never up; no import cycles between modules
(imports inside functions count: they are dependencies too); nobody imports another module's ``_private`` names;
``tools/`` and everything below import no LLM library.

    common, sanity, uncertainty  <  foundation  <  finetune | quantum | continuum  <  tools  <  agents  <  cli, web

The package root (``triscale/__init__.py``) is the public facade above everything; nothing inside imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "triscale"
RANK = {
    "common": 0,
    "uncertainty": 0,
    "sanity": 0,
    "foundation": 1,
    "finetune": 2,
    "quantum": 2,
    "continuum": 2,
    "tools": 3,
    "agents": 4,
    "cli": 5,
    "web": 5,
}
LLM_LIBRARIES = ("langchain", "langchain_core", "langchain_openai", "langgraph", "openai", "llama_cpp")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module or package, imported name or None, line) for every import in ``module``."""
    path = MODULES[module]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(base, a.name, node.lineno) for a in node.names]
    return out


def _target(base: str, name: str | None) -> str | None:
    """The triscale module an import loads (``from pkg import sub`` loads ``pkg.sub``)."""
    if not base.startswith("triscale"):
        return None
    full = f"{base}.{name}" if name and f"{base}.{name}" in MODULES else base
    while full not in MODULES and "." in full:
        full = full.rsplit(".", 1)[0]
    return full


def _graph() -> dict[str, set[str]]:
    graph = {}
    for m in MODULES:
        targets = {_target(b, n) for b, n, _ in _imports(m)}
        graph[m] = {t for t in targets if t and t != m}
    return graph


def _rank(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_every_unit_has_a_layer():
    units = {m.split(".")[1] for m in MODULES if "." in m}
    assert units <= set(RANK), f"units without a layer in this test: {sorted(units - set(RANK))}"


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down():
    graph = _graph()
    bad = [
        f"{m} imports {t}"
        for m, ts in graph.items()
        for t in ts
        if (_rank(m) is not None and (t == "triscale" or (_rank(t) is not None and _rank(t) > _rank(m))))
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_private_imports_across_modules():
    bad = []
    for m in MODULES:
        for base, name, line in _imports(m):
            target = _target(base, name)
            if target and target != m and name and name.startswith("_") and not name.startswith("__"):
                bad.append(f"{m}:{line} imports {name} from {base}")
    assert not bad, "private names imported from other modules:\n" + "\n".join(bad)


def test_no_llm_library_below_agents():
    bad = [
        f"{m}:{line} imports {base}"
        for m in MODULES
        if _rank(m) is not None and _rank(m) < RANK["agents"]
        for base, _, line in _imports(m)
        if base.split(".")[0] in LLM_LIBRARIES
    ]
    assert not bad, "\n".join(bad)
