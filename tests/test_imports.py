"""The package's design, read from its imports: every `import` in every file, lazy ones inside
functions included (parsed with ast, nothing is imported here).

    modeling  <-  fast, observe  <-  full_size  <-  tiny  <-  viz, exercises, build  <-  then_and_now  <-  mixtral_edu/__init__.py

Arrows point from a package to what it may import: only packages further left. modeling/, the
Hugging Face chain, imports nothing else of ours; no import cycle anywhere; views never import
the tiny model's training code; no module reaches into another's private names; and no module
shares its name with a function its package exports (`mixtral_edu.trace` is the function, the
module is `observe/tracer.py`).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "mixtral_edu"
RANK = {"modeling": 0, "fast": 1, "observe": 1, "full_size": 2, "tiny": 3, "viz": 4, "exercises": 4, "build": 4, "then_and_now": 5, "i18n": 1}
TRAINING = {"mixtral_edu.tiny.train", "mixtral_edu.tiny.corpus", "mixtral_edu.tiny.evaluate",
            "mixtral_edu.tiny.tokenizer"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> List[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for every import statement of module `name`."""
    base = name if is_package(name) else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module
            names = [a.name for a in node.names]
            # `from . import palette`, `from ..modeling import masks`: the submodule is what is imported
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            found += [(s, [], node.lineno) for s in subs]
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not subs:
                found.append((target, rest, node.lineno))
    return found


def internal_edges() -> Dict[str, Set[str]]:
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in imports_of(m):
            if target == "mixtral_edu" or target.startswith("mixtral_edu."):
                assert target in MODULES, f"{m} imports {target}, which is not a module of the package"
                if target != m:
                    edges[m].add(target)
    return edges


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_parser_sees_lazy_imports():
    # balance.py imports run_with_cache inside a function: it must be among its imports
    targets = {t for t, _, _ in imports_of("mixtral_edu.viz.balance")}
    assert "mixtral_edu.observe.capture" in targets and "mixtral_edu.viz.runs" in targets


def test_no_import_cycle_anywhere():
    edges = internal_edges()
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_dependencies_run_one_way():
    wrong = []
    for m, targets in internal_edges().items():
        src = package_of(m)
        for t in targets:
            dst = package_of(t)
            if not src or src == dst:
                continue  # mixtral_edu/__init__.py gathers the public names; a package may import itself
            if dst not in RANK or src not in RANK or RANK[dst] >= RANK[src]:
                wrong.append(f"{m} -> {t}")
    layers = " <- ".join(", ".join(p for p, r in RANK.items() if r == rank) for rank in sorted(set(RANK.values())))
    assert not wrong, f"imports against the layering {layers}: {sorted(wrong)}"


def test_modeling_imports_nothing_else_of_ours():
    outside = sorted(f"{m} -> {t}" for m, ts in internal_edges().items() if package_of(m) == "modeling"
                     for t in ts if package_of(t) != "modeling")
    assert not outside, outside


def test_views_import_no_training_code():
    bad = sorted(f"{m} -> {t}" for m, ts in internal_edges().items() if package_of(m) == "viz"
                 for t in ts if t in TRAINING)
    assert not bad, bad


# gettext's own names: `_` (translate) and `N_` (mark for extraction) are public by convention
GETTEXT_NAMES = {"_", "N_"}


def test_no_module_imports_another_modules_private_names():
    bad = []
    for m in MODULES:
        for target, names, line in imports_of(m):
            if target.startswith("mixtral_edu") and target != m:
                bad += [f"{m}:{line} takes {n} from {target}" for n in names
                        if n.startswith("_") and not n.startswith("__") and n not in GETTEXT_NAMES]
    assert not bad, bad


def test_no_module_shares_its_name_with_a_function_it_exports():
    clashes = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = m.rsplit(".", 1)[-1]
        if own in {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}:
            clashes.append(f"{m} defines a function {own}()")
        if not is_package(m):
            continue
        # a name the package binds that is also one of its submodules hides that submodule
        # (`import mixtral_edu.x as t` would then give whatever the package bound to x)
        subs = {s.rsplit(".", 1)[-1] for s in MODULES if s.rsplit(".", 1)[0] == m and s != m}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                source = ".".join(m.split(".")[:len(m.split(".")) - node.level + 1] + [node.module or ""]).rstrip(".")
                for a in node.names:
                    bound = a.asname or a.name
                    if bound in subs and f"{source}.{a.name}" != f"{m}.{bound}":
                        clashes.append(f"{m} binds {bound} (from {source}), hiding its submodule {m}.{bound}")
    assert not clashes, clashes
