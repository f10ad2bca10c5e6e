"""What the exercise tests share: finding every exercise, its solution and its stub; the mutation harness.

An exercise is a key "NN.k" in some `mixtral_edu.exercises.<chapter>.EXERCISES`, mapped to
(stub_function_name, check). Its student notebook is notebooks/NN_<chapter>.ipynb, its reference
solution the function of that name in notebooks/solutions/NN_<chapter>.py (same stem).

Mutation tests (tests/exercises/test_mutations_<chapter>.py) list plausible wrong answers:

    from exercise_harness import Mutant, mutation_tests
    MUTANTS = [Mutant("01.1", "reads the logits of position 0", wrong_fn, mentions=["last"]), ...]
    test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)

Each mutant must get NOT YET, without a traceback, with a hint containing every word of `mentions`
(case-insensitive), no line of the solution's code and no long run of numbers. The score is printed at
the end of the run (tests/exercises/conftest.py).
"""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Sequence, Tuple

import nbformat
import pytest

import mixtral_edu.exercises as exercises_pkg

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"

#: Filled by the mutation tests, printed by conftest.pytest_terminal_summary: key -> [(mutant, caught, named)]
RESULTS: Dict[str, List[Tuple[str, bool, bool]]] = {}


# -- finding exercises ---------------------------------------------------------------------------

def checker_modules() -> List[ModuleType]:
    """Every mixtral_edu.exercises.<chapter> module that has an EXERCISES registry."""
    out = []
    for info in pkgutil.iter_modules(exercises_pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mixtral_edu.exercises.{info.name}")
        if hasattr(module, "EXERCISES"):
            out.append(module)
    return out


def all_exercises() -> List[Tuple[str, ModuleType, str, Callable]]:
    """(key, module, stub name, check) for every registered exercise, in key order."""
    rows = [(key, m, name, check) for m in checker_modules() for key, (name, check) in m.EXERCISES.items()]
    return sorted(rows, key=lambda r: tuple(int(x) for x in r[0].split(".")))


def notebook_path(key: str) -> Path:
    matches = sorted(NOTEBOOKS.glob(f"{key.split('.')[0]}_*.ipynb"))
    assert len(matches) == 1, f"exercise {key}: expected one notebook {key.split('.')[0]}_*.ipynb, found {matches}"
    return matches[0]


def solutions_path(key: str) -> Path:
    return SOLUTIONS / f"{notebook_path(key).stem}.py"


@functools.lru_cache(maxsize=None)
def solutions(key_or_stem: str) -> ModuleType:
    """The solutions module of a chapter, imported from its path (it is not a package)."""
    path = solutions_path(key_or_stem) if "." in key_or_stem else SOLUTIONS / f"{key_or_stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(path: Path) -> List[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


#: What a stub may use without the notebook's first cell having run.
STUB_GLOBALS = "import math\nimport torch\nimport torch.nn.functional as F\n"


def stub(key: str, name: str) -> Callable:
    """The student notebook's own `def name(...)`, executed alone (only the definition, not its cell)."""
    found = []
    for source in code_cells(notebook_path(key)):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython magics: no stub lives in those cells
        found += [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    assert len(found) == 1, f"exercise {key}: expected one `def {name}` in {notebook_path(key).name}, found {len(found)}"
    namespace: dict = {}
    exec(STUB_GLOBALS, namespace)
    exec(compile(ast.Module(body=found, type_ignores=[]), f"<stub {key}>", "exec"), namespace)
    return namespace[name]


# -- what a hint must not contain -----------------------------------------------------------------

NUMBERS = re.compile(r"\[\s*-?\d[\d.e+-]*\s*(,\s*-?\d[\d.e+-]*\s*){3,}")


def leaks(message: str, key: str, name: str) -> List[str]:
    """Why the message gives the answer away (empty when it does not): solution code or value lists."""
    problems = []
    if "Traceback" in message:
        problems.append("it shows a traceback")
    if NUMBERS.search(message):
        problems.append(f"it prints a list of numbers: {NUMBERS.search(message).group(0)}...")
    try:
        source = ast.get_source_segment(solutions_path(key).read_text(), _solution_def(key, name)) or ""
    except AssertionError:
        source = ""
    for line in source.splitlines()[1:]:
        line = line.split("#")[0].strip()
        if len(line) >= 20 and line in message:
            problems.append(f"it prints the solution's line `{line}`")
    return problems


def _solution_def(key: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(solutions_path(key).read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{solutions_path(key).name} has no `def {name}`"
    return found[0]


# -- the mutation harness ---------------------------------------------------------------------------

@dataclass
class Mutant:
    """A plausible wrong answer to exercise `key`, and the words its hint must contain."""
    key: str
    name: str
    fn: Callable
    mentions: Sequence[str] = field(default_factory=list)
    check_kwargs: dict = field(default_factory=dict)   # e.g. {"model": the tiny model}, as the notebook calls it

    def __post_init__(self):
        assert self.mentions, f"mutant {self.key} '{self.name}': say which words the hint must contain"


def mutation_tests(module: ModuleType, mutants: Sequence[Mutant]):
    """(test_mutant, test_five_mutants_each) for a chapter's mutants; assign both at module level."""
    for m in mutants:
        assert m.key in module.EXERCISES, f"mutant '{m.name}' names {m.key}, not an exercise of {module.__name__}"

    @pytest.mark.parametrize("mutant", mutants, ids=[f"{m.key}-{m.name}" + ("-tiny" if m.check_kwargs else "")
                                                     for m in mutants])
    def test_mutant(mutant: Mutant):
        name, check = module.EXERCISES[mutant.key]
        result = check(mutant.fn, **mutant.check_kwargs)   # a check never raises: an exception here fails the test
        caught = not result
        named = caught and all(w.lower() in result.message.lower() for w in mutant.mentions)
        RESULTS.setdefault(mutant.key, []).append((mutant.name, caught, named))
        assert caught, f"{mutant.key} '{mutant.name}' passed the check: {result.message}"
        assert named, f"{mutant.key} '{mutant.name}': the hint does not mention {list(mutant.mentions)}:\n{result.message}"
        assert not leaks(result.message, mutant.key, name), leaks(result.message, mutant.key, name)

    def test_five_mutants_each():
        counts = {key: sum(m.key == key for m in mutants) for key in module.EXERCISES}
        assert all(n >= 5 for n in counts.values()), f"at least 5 mutants per exercise: {counts}"

    return test_mutant, test_five_mutants_each
