"""The exercise framework: checks never raise and never leak the answer; solutions pass, stubs do not;
no student notebook holds a solution; every notebook labels its exercises the same way."""
import ast
import re

import nbformat
import pytest
import torch

from exercise_harness import (all_exercises, code_cells, leaks, notebook_path, solutions,
                              solutions_path, stub)
from mixtral_edu.exercises import (ExerciseResult, NotYet, checker, difference, expect_same, name_the_mistake,
                                   run_cases, same)

EXERCISES = all_exercises()
IDS = [key for key, *_ in EXERCISES]
STUDENT_NOTEBOOKS = sorted({notebook_path(key) for key, *_ in EXERCISES})


# -- the comparison ---------------------------------------------------------------------------------

WANT = torch.tensor([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75]])


@pytest.mark.parametrize("got, words", [
    (torch.full((2, 3), float("nan")), ["NaN"]),
    (WANT.masked_fill(torch.eye(2, 3, dtype=torch.bool), float("-inf")), ["NaN/inf", "2"]),
    (WANT.double(), ["dtype", "float64"]),
    (WANT.T, ["shape", "(3, 2)"]),
    (WANT.tolist(), ["list", "tensor"]),
    (None, ["NoneType"]),
    (WANT + 3e-3, ["6 of 6", "3e-03"]),
    (WANT.long(), ["dtype"]),
])
def test_difference_names_the_problem_never_the_values(got, words):
    problem = difference(got, WANT)
    assert problem is not None and all(w in problem for w in words), problem
    for value in ("1.25", "0.75", "2.0", "3.0"):   # the expected values never appear
        assert value not in problem


def test_difference_accepts_what_matches():
    assert difference(WANT.clone(), WANT) is None
    assert difference(WANT + 1e-7, WANT) is None
    nan_where_expected = torch.tensor([float("nan"), float("-inf"), 1.0])
    assert difference(nan_where_expected.clone(), nan_where_expected) is None
    assert difference(torch.tensor([float("inf"), float("-inf"), 1.0]), nan_where_expected) is not None
    assert same(WANT.double(), WANT) and not same(WANT.double(), WANT, check_dtype=True)


def test_messages_do_not_mislead():
    """A scalar off by less than 3 significant digits is not shown as "0.003, expected 0.003"; an integer
    tensor never "differs by up to 0"."""
    problem = difference(torch.tensor(0.0031), torch.tensor(0.003))
    assert "expected" not in problem and "0.0031" in problem
    problem = difference(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]))
    assert "by up to 0" not in problem and "1 of 3" in problem
    assert "NaN" in difference(float("nan"), 0.5)


def test_difference_never_raises_on_odd_answers():
    class Weird:
        def __eq__(self, other):
            raise RuntimeError("no comparison")
    for got in (Weird(), object(), torch.tensor([1 + 2j]), {"a": 1}, (1, 2), "text", torch.zeros(0)):
        for want in (WANT, 3, 2.5, [1, 2], {"a": torch.zeros(2)}, "text", torch.tensor([True])):
            difference(got, want)   # returns a sentence or None, never raises


def test_name_the_mistake_picks_the_first_match_and_survives_errors():
    x = torch.arange(4.0)
    hint = name_the_mistake(x * 2, [("raises", lambda: 1 / 0), ("added", lambda: x + x + 1),
                                    ("doubled", lambda: x * 2), ("also doubled", x * 2)])
    assert hint == "doubled"
    assert name_the_mistake(x, [("doubled", x * 2)], default="none") == "none"


@checker
def check_double(fn):
    """A toy check, as a chapter module writes one."""
    cases = [("a vector", (torch.arange(3.0),), {}), ("a matrix", (torch.ones(2, 2),), {})]
    return run_cases(fn, lambda x: 2 * x, cases,
                     lambda got, want, x: name_the_mistake(got, [("you added 2 instead of doubling", x + 2)]),
                     "double")


def _raise(exc):
    def fn(x):
        raise exc
    return fn


@pytest.mark.parametrize("answer, words", [
    (_raise(NotImplementedError("Exercise 99.1")), ["not yet", "write the body"]),
    (_raise(IndexError("index 9 is out of bounds")), ["IndexError", "index 9", "a vector"]),
    (lambda x: x + 2, ["added 2"]),
    (lambda x: (2 * x).long(), ["dtype"]),
    (lambda x: (2 * x).tolist(), ["list"]),
    (lambda x: x * float("nan"), ["NaN"]),
    (lambda x: None, ["NoneType"]),
    (lambda x: 2 * x[None], ["shape"]),
])
def test_a_check_says_not_yet_with_a_hint(answer, words):
    result = check_double(answer)
    assert isinstance(result, ExerciseResult) and not result
    assert result.hint and "Traceback" not in result.message
    assert all(w.lower() in result.message.lower() for w in words), result.message


def test_a_check_passes_and_keeps_the_random_state():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    assert check_double(lambda x: torch.randn(()) * 0 + 2 * x)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert "NOT YET" in repr(check_double(3)) and "PASS" in repr(check_double(lambda x: x * 2))


def test_a_check_that_trips_over_an_odd_answer_says_not_yet():
    @checker
    def check_fragile(fn):
        got = fn(1)
        return ExerciseResult(got.shape == (1,), "fine")   # AttributeError on an int
    result = check_fragile(lambda x: 5)
    assert not result and "could not be checked" in result.message and "AttributeError" in result.message


def test_expect_same_hint_is_made_only_on_failure():
    calls = []
    expect_same(torch.ones(2), torch.ones(2), "ok", lambda: calls.append(1))
    assert not calls
    with pytest.raises(NotYet) as stop:
        expect_same(torch.ones(2).long(), torch.ones(2), "case", None)
    assert "dtype" in stop.value.problem and "dtype" in stop.value.hint


# -- every exercise ----------------------------------------------------------------------------------

def test_there_are_exercises():
    assert EXERCISES, "no mixtral_edu.exercises module has an EXERCISES registry"


@pytest.mark.parametrize("key, module, name, check", EXERCISES, ids=IDS)
def test_every_check_is_made_safe(key, module, name, check):
    assert getattr(check, "__checker__", False), f"{module.__name__}.{check.__name__}: decorate it with @checker"


@pytest.mark.parametrize("key, module, name, check", EXERCISES, ids=IDS)
def test_every_solution_passes(key, module, name, check):
    solution = getattr(solutions(key), name, None)
    assert solution is not None, f"{solutions_path(key).name} has no `{name}` for exercise {key}"
    result = check(solution)
    assert result, f"the reference solution of {key} fails its own check: {result.message}"


@pytest.mark.parametrize("key, module, name, check", EXERCISES, ids=IDS)
def test_every_untouched_stub_gets_not_yet(key, module, name, check):
    result = check(stub(key, name))
    assert isinstance(result, ExerciseResult) and not result, f"the untouched stub of {key} passes"
    assert "NameError" not in result.message, f"the stub of {key} uses a name it does not define: {result.message}"
    assert not leaks(result.message, key, name)


def _nanify(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return torch.full_like(x, float("nan"))
    if isinstance(x, (tuple, list)):
        return type(x)(_nanify(v) for v in x)
    return x


def _has_float_tensor(x):
    if isinstance(x, torch.Tensor):
        return x.is_floating_point()
    return isinstance(x, (tuple, list)) and any(_has_float_tensor(v) for v in x)


ODD = {
    "returns None": lambda *a, **k: None,
    "returns a string": lambda *a, **k: "answer",
    "returns an int tensor": lambda *a, **k: torch.zeros(2, 3, dtype=torch.long),
    "returns a bool tensor": lambda *a, **k: torch.ones(3, dtype=torch.bool),
    "returns a nested list": lambda *a, **k: [[1, 2], [3]],
    "raises ValueError": _raise(ValueError("something odd")),
}


@pytest.mark.parametrize("key, module, name, check", EXERCISES, ids=IDS)
def test_odd_and_non_finite_answers_get_not_yet(key, module, name, check):
    for what, fn in ODD.items():
        result = check(fn)
        assert isinstance(result, ExerciseResult) and not result, f"{key}: an answer that {what} passes"
        assert result.hint and "Traceback" not in result.message
    solution = getattr(solutions(key), name)
    outputs = []

    def nan_answer(*args, **kwargs):
        out = solution(*args, **kwargs)
        outputs.append(out)
        return _nanify(out)
    result = check(nan_answer)
    if any(_has_float_tensor(o) for o in outputs):   # only answers holding floats can be made NaN
        assert not result, f"{key}: an answer made of NaN passes"


# -- no solution in a student notebook --------------------------------------------------------------

def _dump(statements):
    return [ast.dump(s) for s in statements]


def _body(fn: ast.FunctionDef):
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]   # the docstring is not the solution
    return body


def _statement_lists(tree):
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _contains_run(haystack, needle):
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _notebook_code(path):
    """Every piece of code a reader of the notebook sees: code cells and fenced blocks in markdown."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield cell.source
        else:
            yield from re.findall(r"```(?:python|py)?\n(.*?)```", cell.source, flags=re.S)


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=[p.stem for p in STUDENT_NOTEBOOKS])
def test_no_student_notebook_contains_a_solution(path):
    solution_file = next(solutions_path(k) for k, *_ in EXERCISES if notebook_path(k) == path)
    stub_names = {name for k, _, name, _ in EXERCISES if notebook_path(k) == path}
    functions = [n for n in ast.parse(solution_file.read_text()).body if isinstance(n, ast.FunctionDef)]
    runs = []   # the solution bodies, and every run of 3 statements in any block of them
    for fn in functions:
        runs.append((fn.name, _dump(_body(fn))))
        for block in [_body(fn)] + [b for stmt in _body(fn) for b in _statement_lists(stmt)]:
            body = _dump(block)
            runs += [(fn.name, body[i:i + 3]) for i in range(len(body) - 2)]
    for source in _notebook_code(path):
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        # the exercise's own stub may share lines with its solution (a "find the bug" stub is the broken
        # solution); that it is not the solution is test_every_untouched_stub_gets_not_yet's job
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name in stub_names)]
        lists = [_dump(block) for block in _statement_lists(tree)]
        for name, run in runs:
            assert not any(_contains_run(block, run) for block in lists), \
                f"{path.name} shows (part of) the solution of `{name}`:\n{source[:400]}"
        assert "solutions" not in source, f"{path.name}: a code cell mentions the solutions: {source[:200]}"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        hidden = (cell.metadata.get("jupyter", {}).get("source_hidden") or cell.metadata.get("collapsed")
                  or any(t in ("hide-input", "hide-cell", "remove-cell", "remove-input")
                         for t in cell.metadata.get("tags", [])))
        # the one kind of hidden cell allowed: the teacher's cells the route writes (docs/_ext/route.py): speaker
        # notes and questions for the room, prose hidden from the site and shown in a slideshow; they hold no code
        notes = cell.cell_type == "markdown" and cell.metadata.get("mxe_route") in ("notes", "question")
        if notes:
            assert "```" not in cell.source and "def " not in cell.source, \
                f"{path.name}: speaker notes hold code: {cell.source[:200]}"
        assert not hidden or notes, f"{path.name}: a hidden cell (hidden cells may not hold anything): {cell.source[:200]}"
        assert "<summary>Solution" not in cell.source, f"{path.name}: a folded solution in the notebook"


# -- labels ------------------------------------------------------------------------------------------

HEADING = re.compile(r"^### Exercise (\d\d\.\d+) · (★{1,3}☆{0,2}) · (\d+) min · "
                     r"(predict|find the bug|implement a variant|experiment|implement)\s*$", re.M)


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=[p.stem for p in STUDENT_NOTEBOOKS])
def test_exercises_are_labelled_and_enough(path):
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = HEADING.findall(markdown)
    keys = [key for key, *_ in EXERCISES if notebook_path(key) == path]
    assert [k for k, *_ in labels] == keys, f"{path.name}: headings {[k for k, *_ in labels]} vs EXERCISES {keys}"
    assert all(len(stars) == 3 for _, stars, _, _ in labels)
    assert len(keys) >= 3, f"{path.name}: at least three exercises"
    if not path.stem.startswith("00"):
        assert any(stars == "★★★" for _, stars, _, _ in labels), f"{path.name}: at least one three-star exercise"
    assert markdown.count("Why it matters") >= len(keys)
    questions = markdown.count("<summary>Answer</summary>")
    assert 3 <= questions, f"{path.name}: {questions} folded answers, want 3 to 5 questions"
    # each stub cell ends with its check call
    code = "\n".join(code_cells(path))
    for key, module, name, check in EXERCISES:
        if notebook_path(key) == path:
            assert re.search(rf"ex\.{check.__name__}\({name}[,)]", code), \
                f"{path.name}: no `ex.{check.__name__}({name})` call"
