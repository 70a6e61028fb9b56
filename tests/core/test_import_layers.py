"""Imports point down the layer table of docs/design.md; no import cycles; adapters use the public API only.

Every ``import``/``from`` statement is read with `ast`, including those inside functions and under
``TYPE_CHECKING`` (which is where cycles hide).
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "packages" / "core" / "src"
ADAPTERS = REPO / "packages"

# (importer, imported) pairs that break the rules today, each with the change that removes it. The test fails
# when one no longer occurs, so the list only shrinks.
KNOWN: dict[tuple[str, str], str] = {}


def read_table() -> tuple[dict[str, int], set[str], set[str]]:
    """(layer rank per top-level module, adapter packages, what adapters may import) from docs/design.md."""
    text = (REPO / "docs" / "design.md").read_text()
    m = re.search(r"<!-- layers: read by tests/core/test_import_layers.py -->\s*```text\n(.*?)```", text, re.S)
    assert m, "docs/design.md has lost its layer table"
    rows = [line.split() for line in m.group(1).splitlines() if line.strip()]
    rank: dict[str, int] = {}
    adapters: set[str] = set()
    allowed: set[str] = set()
    layers = [r for r in rows if r[0] != "adapters"]
    for i, (_, *mods) in enumerate(reversed(layers)):  # the table lists the top layer first
        for mod in mods:
            assert mod not in rank, f"{mod} is in two layers of docs/design.md"
            rank[mod] = i
    for _, *rest in (r for r in rows if r[0] == "adapters"):
        arrow = rest.index("->")
        adapters.update(rest[:arrow])
        allowed.update(rest[arrow + 1:])
    return rank, adapters, allowed


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, mod: str, src: Path) -> set[str]:
    """Every module of its own package that ``path`` (module ``mod``) imports, relative imports resolved."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found = False
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                sub = src.joinpath(*f"{target}.{alias.name}".split("."))
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    out.add(f"{target}.{alias.name}")
                    found = True
            if not found:
                out.add(target)
    return out


def graph(src: Path, package: str) -> dict[str, set[str]]:
    g = {}
    for path in sorted((src / package).rglob("*.py")):
        mod = module_name(path, src)
        g[mod] = imports(path, mod, src)
    return g


def top(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_core_imports_point_down_the_layer_table():
    rank, _, _ = read_table()
    g = graph(CORE, "ml_dash")
    unknown = sorted({top(m) for m in g} - set(rank))
    assert not unknown, f"modules missing from the layer table in docs/design.md: {unknown}"
    wrong, seen = [], set()
    for mod, deps in g.items():
        for dep in deps:
            if dep.split(".")[0] != "ml_dash" or dep == mod:
                continue
            if rank[top(dep)] > rank[top(mod)]:
                if (mod, dep) in KNOWN:
                    seen.add((mod, dep))
                    continue
                wrong.append(f"{mod} imports {dep}, a higher layer")
    assert not wrong, "\n".join(wrong)
    stale = {k for k in KNOWN if k[0].startswith("ml_dash.")} - seen
    assert not stale, f"these exceptions are gone: remove them from KNOWN: {sorted(stale)}"


def test_no_import_cycles():
    g = graph(CORE, "ml_dash")
    g = {m: {d for d in deps if d in g and d != m and (m, d) not in KNOWN} for m, deps in g.items()}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("adapter", ["lightning", "hf", "keras"])
def test_adapters_import_only_the_public_api(adapter):
    _, names, allowed = read_table()
    src = ADAPTERS / adapter / "src"
    (package,) = [p.name for p in src.iterdir() if (p / "__init__.py").is_file()]
    assert package in names
    wrong = []
    seen = set()
    for mod, deps in graph(src, package).items():
        for dep in deps:
            if dep.split(".")[0] == "ml_dash" and dep not in allowed:
                if (mod, dep) in KNOWN:
                    seen.add((mod, dep))
                    continue
                wrong.append(f"{mod} imports {dep}; adapters use only {sorted(allowed)}")
    assert not wrong, "\n".join(wrong)
    stale = {k for k in KNOWN if k[0].split(".")[0] == package} - seen
    assert not stale, f"these exceptions are gone: remove them from KNOWN: {sorted(stale)}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "ml_dash"
    (pkg / "stores").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stores" / "__init__.py").write_text("from .base import Store\n")
    (pkg / "stores" / "base.py").write_text("Store = object\n")
    (pkg / "reader.py").write_text("def f():\n    from .experiment import unflatten\n    from . import values\n")
    (pkg / "values.py").write_text("")
    (pkg / "experiment.py").write_text("from .stores import Store\nimport ml_dash.reader\n")
    g = graph(tmp_path, "ml_dash")
    assert g["ml_dash.reader"] == {"ml_dash.experiment", "ml_dash.values"}
    assert g["ml_dash.experiment"] == {"ml_dash.stores", "ml_dash.reader"}
    assert g["ml_dash.stores"] == {"ml_dash.stores.base"}
