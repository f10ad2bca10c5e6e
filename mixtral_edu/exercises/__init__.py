"""Checks for the notebooks' exercises: PASS, or NOT YET with a hint that names the mistake.

The contract every checker module (`mixtral_edu.exercises.<chapter>`) follows
(written out with examples in notebooks/solutions/README.md):

* A check is `check_<name>(fn)` decorated with :func:`checker`. It never raises:
  a stub that still raises NotImplementedError, an exception inside the learner's
  function, or an answer of a type the check did not expect all come back as
  NOT YET with one line saying what happened, never as a traceback.
* It returns an :class:`ExerciseResult` (truthy on PASS, so CI can `assert` it).
* Hints name the mistake and never print the expected values or the solution's
  code: :func:`difference` describes a wrong tensor by its type, shape, dtype,
  non-finite entries and how many entries are off, never by the right numbers.
* `EXERCISES = {"NN.k": ("stub_function_name", check_fn)}` lists the module's
  checks in notebook order; the reference solutions live in
  notebooks/solutions/NN_<chapter>.py under the same function names.

Building blocks: :func:`checker`, :class:`NotYet` (raise it anywhere inside a
check to stop with a hint), :func:`call` (run the learner's function),
:func:`expect_same` / :func:`difference` / :func:`same` (compare safely),
:func:`name_the_mistake` (match an answer against known wrong variants),
:func:`run_cases` (the usual loop over cases).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
from numbers import Number
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.overrides import TorchFunctionMode

from ..i18n import N_, _

# The user-facing sentences of this module, in one place: marked with N_() for the catalog, translated with _()
# where they are shown (a template before .format, so a translation may move its placeholders).
NOT_YET = N_("not yet: write the body of `{name}` (it still raises NotImplementedError).")
STUB_HINT = N_("replace the `raise NotImplementedError(...)` line with your code, then run this cell again.")
RAISED = N_("`{name}` raised {kind}: {text}")
RAISED_HINT = {
    "IndexError": N_("an index or slice went past the end of a dimension: print the shapes your code sees."),
    "RuntimeError": N_("a tensor operation refused its inputs (often two shapes that do not fit): print the shapes."),
    "TypeError": N_("a function got an argument of a type it does not take: check what each name holds."),
    "ValueError": N_("a function got a value it does not accept: check the arguments you pass."),
    "NameError": N_("the function uses a name that is not defined where it runs (a typo, or a missing import)."),
    "AttributeError": N_("an object has no attribute of that name: check what the variable holds."),
    "ZeroDivisionError": N_("a division by zero: check which count can be 0."),
}
RAISED_OTHER = N_("run your function by hand on this case to see where it fails.")
# A RuntimeError whose text names dtypes: two tensors of different dtypes met (print dtypes, not shapes).
RAISED_DTYPE_HINT = N_("two tensors of different dtypes met in one operation (e.g. float32 and bfloat16): print the "
                       "dtype of each tensor the failing line combines, and make them agree.")
DTYPE_WORDS = ("scalar type", "dtype", "BFloat16", "Half", "Float and", "Double and", "Long and")
ODD_ANSWER = N_("your answer could not be checked ({kind}: {text}).")
ODD_ANSWER_HINT = N_("return what the exercise asks for, of the type and shape its signature says.")
NOT_CALLABLE = N_("pass your function itself (`{check}({name})`), got a {kind}.")
NOT_CALLABLE_HINT = N_("write `{check}({name})`: the name of your function, without quotes or parentheses after it.")
PASSED = N_("{what} agrees on all {n} cases.")
CASE = N_("case {label}: {problem}")
WRONG_TYPE = N_("{what} is a {got}, expected a {want}")
WRONG_LEN = N_("{what} has {got} items, expected {want}")
WRONG_KEYS = N_("{what} has keys {got}, expected {want}")
WRONG_SHAPE = N_("{what} has shape {got}, expected {want}")
WRONG_DTYPE = N_("{what} has dtype {got}, expected {want}")
DTYPE_PROBLEM = N_("dtype {got}, expected {want}")
NON_FINITE = N_("{what} holds {count} NaN/inf value(s) where the answer has none")
WRONG_ENTRIES = N_("{what}: {count} of {total} entries are wrong (the first at index {index})")
WRONG_VALUES = N_("{what}: {count} of {total} values are off by more than the tolerance "
                  "(the largest by about {size}, at index {index})")
WRONG_NUMBER = N_("{what} is {got}, which is off (by about {size} relative)")
WRONG_VALUE = N_("{what} is {got!r}, which is not right")
WRONG_HINT_DEFAULT = N_("compare your steps with the exercise text, one at a time, on this case.")
PREDICTIONS_TYPE = N_("return a dict {{name: your prediction}}, got a {kind}.")
PREDICTIONS_KEYS = N_("the dict must have exactly the names of the stub.")
PREDICTIONS_KEYS_HINT = N_("do not rename, add or remove entries: only replace each ... by your prediction.")
PREDICTIONS_BLANK = N_("{n} of the {total} predictions are still `...`.")
KIND_HINT = {  # the default hint for each kind of difference, when the check knows no better one
    "type": N_("return the kind of object the exercise's signature asks for."),
    "length": N_("return as many items as the exercise's signature lists."),
    "keys": N_("use exactly the keys the exercise names."),
    "shape": N_("print the shape of each intermediate tensor and compare it with the shape legend."),
    "dtype": N_("keep the dtype the exercise asks for (a stray .float(), .long() or Python literal changes it)."),
    "non-finite": N_("a NaN or inf appeared: look for -inf times 0, a log of 0, a division by 0, or an overflow."),
    "values": WRONG_HINT_DEFAULT,
}
# words that go into the sentences above
THE_RESULT = N_("the result")
YOUR_FUNCTION = N_("your function")
YOUR_PREDICTIONS = N_("your predictions")
NO_MESSAGE = N_("(no message)")
A_NUMBER, A_WHOLE_NUMBER, A_TENSOR = N_("number"), N_("whole number (int)"), N_("torch tensor")


class ExerciseResult:
    """PASS or NOT YET, a message, and for NOT YET a hint; shows itself nicely in a notebook.

    message and hint are shown in the current language (mixtral_edu.set_language): a message or hint that is
    a catalog entry (a constant marked N_("...")) is translated here, so a check may pass its constants as
    they are; a sentence with values is translated by the check before .format (``_(TEMPLATE).format(...)``).
    """

    def __init__(self, ok: bool, message: str, hint: Optional[str] = None):
        message, hint = _(message), (_(hint) if hint else hint)
        self.ok, self.hint = ok, hint
        self.message = message if not hint else message + "\n" + _("Hint: ") + hint

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        if self.ok:
            return _("PASS: ") + self.message
        waiting = _("not yet")
        if self.message.lower().startswith(waiting.lower()):
            return _("NOT YET") + self.message[len(waiting):]
        return _("NOT YET: ") + self.message

    def _repr_html_(self) -> str:
        colour, mark = ("#1b7837", "&#10004;") if self.ok else ("#b35806", "&#10008;")
        msg = self.message.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
                f'<b style="color:{colour}">{mark} {_("PASS") if self.ok else _("NOT YET")}</b><br>{msg}</div>')


class NotYet(Exception):
    """Raise inside a check to stop with NOT YET: `raise NotYet(problem, hint)`."""

    def __init__(self, problem: str, hint: Optional[str] = None):
        super().__init__(problem)
        self.problem, self.hint = problem, hint

    def result(self) -> ExerciseResult:
        return ExerciseResult(False, self.problem, self.hint)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or _(NO_MESSAGE)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def checker(check: Callable) -> Callable:
    """Make a check safe: whatever the learner's function does, the check returns an ExerciseResult.

    It also runs the check with the global random state saved and restored, so that
    checking an answer does not change the numbers of the cells after it.
    """
    # the stub's name is the check's first parameter (check_append_step(append_step))
    stub = next(iter(inspect.signature(check).parameters), "my_function")

    @functools.wraps(check)
    def safe(fn: Any = None, *args, **kwargs) -> ExerciseResult:
        if not callable(fn):
            names = dict(check=check.__name__, name=stub)
            return ExerciseResult(False, _(NOT_CALLABLE).format(kind=type(fn).__name__, **names),
                                  _(NOT_CALLABLE_HINT).format(**names))
        try:
            with torch.random.fork_rng(devices=[]):
                result = check(fn, *args, **kwargs)
        except NotYet as stop:
            return stop.result()
        except NotImplementedError:
            return ExerciseResult(False, _(NOT_YET).format(name=getattr(fn, "__name__", _(YOUR_FUNCTION))),
                                  STUB_HINT)
        except Exception as exc:  # the check tripped over an answer it did not expect: say so, no traceback
            return ExerciseResult(False, _(ODD_ANSWER).format(kind=type(exc).__name__, text=_one_line(exc)),
                                  ODD_ANSWER_HINT)
        if isinstance(result, NotYet):
            return result.result()
        return result
    safe.__checker__ = True
    return safe


def call(fn: Callable, *args, name: Optional[str] = None, label: str = "", **kwargs) -> Any:
    """Run the learner's fn; a NotImplementedError or any exception becomes NotYet naming it.

    label: the case, shown as it is or translated when it is a catalog entry (mark case labels with N_()).
    """
    name = name or getattr(fn, "__name__", _(YOUR_FUNCTION))
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotYet(_(NOT_YET).format(name=name), STUB_HINT) from None
    except Exception as exc:  # the learner's code failed: say where, not a stack trace
        problem = _(RAISED).format(name=name, kind=type(exc).__name__, text=_one_line(exc))
        raise NotYet(_(CASE).format(label=_(label), problem=problem) if label else problem,
                     raised_hint(exc)) from None


def raised_hint(exc: BaseException) -> str:
    """The hint for an exception the learner's code raised: by its type, and for a RuntimeError about
    dtypes (e.g. "self (Float) and source (BFloat16) must have the same scalar type") a dtype hint."""
    kind = type(exc).__name__
    if kind == "RuntimeError" and any(w.lower() in str(exc).lower() for w in DTYPE_WORDS):
        return RAISED_DTYPE_HINT
    return RAISED_HINT.get(kind, RAISED_OTHER)


# -- watching how an answer computes ----------------------------------------------------------------

class Call(NamedTuple):
    """One torch call the learner's code made: the function's name, the function, its arguments."""
    name: str
    func: Any
    args: tuple
    kwargs: dict


class _Watch(TorchFunctionMode):
    """Notes every torch function or tensor method call whose name is in `names` (and runs it unchanged)."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names, self.calls = frozenset(names), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.names:
            self.calls.append(Call(name, func, args, kwargs))
        return func(*args, **kwargs)


@contextlib.contextmanager
def watching(*names: str) -> Iterator[List[Call]]:
    """Inside the block, the calls of torch functions / tensor methods named `names` are listed (e.g.
    `with watching("index_add_") as calls: got = call(fn, ...)`): for checks of HOW an answer computes,
    where the exercise asks for one way and the numbers cannot tell (one index_add_, a float32 softmax).
    Only the outermost call is seen: what a watched function calls inside is not listed again."""
    mode = _Watch(names)
    with mode:
        yield mode.calls


# -- comparing answers -----------------------------------------------------------------------------

class Problem(str):
    """A difference in words, with its kind ("type", "shape", "dtype", "non-finite", "values", ...)."""
    kind = "values"


def _problem(kind: str, text: str) -> Problem:
    p = Problem(text)
    p.kind = kind
    return p


def _index(flat_position: int, shape: Sequence[int]) -> Tuple[int, ...]:
    out = []
    for size in reversed(list(shape)):
        out.append(flat_position % size)
        flat_position //= size
    return tuple(reversed(out))


def _about(x: float) -> str:
    """An order of magnitude, never a value to copy: 0.0032 -> '3e-03'."""
    return f"{x:.0e}" if x > 0 else "0"


def difference(got: Any, want: Any, atol: float = 1e-5, rtol: float = 0.0, what: str = THE_RESULT,
               check_dtype: bool = True) -> Optional[Problem]:
    """What is wrong with got, in words, or None when it matches want. Never raises, never prints want's values.

    Tensors: type, shape, dtype (unless check_dtype=False), NaN/inf where want has none, then the values
    (exact for integer/bool tensors, within atol + rtol * |want| for floats). Tuples, lists and dicts
    are compared item by item; numbers within the same tolerance; anything else with ==.
    The words come in the current language (what: a catalog entry such as N_("the ids") is translated).
    """
    try:
        return _difference(got, want, atol, rtol, _(what), check_dtype)
    except Exception as exc:  # an answer so odd that comparing it failed
        return _problem("type", _(ODD_ANSWER).format(kind=type(exc).__name__, text=_one_line(exc)))


def _difference(got, want, atol, rtol, what, check_dtype) -> Optional[Problem]:
    if want is None:
        return None if got is None else _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__,
                                                                              want="None"))
    if isinstance(want, torch.Tensor):
        return _tensor_difference(got, want, atol, rtol, what, check_dtype)
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__,
                                                         want=type(want).__name__))
        if len(got) != len(want):
            return _problem("length", _(WRONG_LEN).format(what=what, got=len(got), want=len(want)))
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _difference(g, w, atol, rtol, f"{what}[{i}]", check_dtype)
            if problem:
                return problem
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__, want="dict"))
        if set(got) != set(want):
            return _problem("keys", _(WRONG_KEYS).format(what=what, got=sorted(map(str, got)),
                                                         want=sorted(map(str, want))))
        for k in want:
            problem = _difference(got[k], want[k], atol, rtol, f"{what}[{k!r}]", check_dtype)
            if problem:
                return problem
        return None
    if isinstance(want, bool) or not isinstance(want, Number):
        if isinstance(want, bool) and not isinstance(got, bool):
            return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__, want="bool"))
        return None if got == want else _problem("values", _(WRONG_VALUE).format(what=what, got=got))
    return _number_difference(got, want, atol, rtol, what)


def _number_difference(got, want, atol, rtol, what) -> Optional[Problem]:
    if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dim() == 0:
        got = got.item()
    if not isinstance(got, Number) or isinstance(got, bool):
        return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__, want=_(A_NUMBER)))
    if isinstance(want, int) and not isinstance(got, int) and not isinstance(want, bool):
        return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__, want=_(A_WHOLE_NUMBER)))
    g, w = complex(got), complex(want)
    if not (math.isfinite(g.real) and math.isfinite(g.imag)):
        return _problem("non-finite", _(NON_FINITE).format(what=what, count=1))
    if abs(g - w) > atol + rtol * abs(w):
        return _problem("values", _(WRONG_NUMBER).format(what=what, got=got,
                                                         size=_about(abs(g - w) / max(abs(w), 1e-30))))
    return None


def _tensor_difference(got, want, atol, rtol, what, check_dtype) -> Optional[Problem]:
    if not isinstance(got, torch.Tensor):
        return _problem("type", _(WRONG_TYPE).format(what=what, got=type(got).__name__, want=_(A_TENSOR)))
    if tuple(got.shape) != tuple(want.shape):
        return _problem("shape", _(WRONG_SHAPE).format(what=what, got=tuple(got.shape), want=tuple(want.shape)))
    if check_dtype and got.dtype != want.dtype:
        return _problem("dtype", _(WRONG_DTYPE).format(what=what, got=got.dtype, want=want.dtype))
    if want.numel() == 0:
        return None
    if want.dim() == 0 and (want.is_floating_point() or want.is_complex()):
        return _number_difference(got.item(), want.item(), atol, rtol, what)
    if got.is_floating_point() or got.is_complex():
        g = got.detach().to(torch.complex128 if got.is_complex() or want.is_complex() else torch.float64)
    else:
        g = got.detach().to(torch.int64 if want.dtype == torch.bool or not want.is_floating_point() else torch.float64)
    exact = not (want.is_floating_point() or want.is_complex())
    w = want.detach().to(g.dtype if g.is_floating_point() or g.is_complex() or exact else torch.float64)
    if g.is_floating_point() or g.is_complex():
        extra = torch.isfinite(w) & ~torch.isfinite(g)       # NaN/inf in the answer where the reference is finite
        if bool(extra.any()):
            return _problem("non-finite", _(NON_FINITE).format(what=what, count=int(extra.sum())))
    if exact:
        wrong = g != w
        if bool(wrong.any()):
            return _problem("values", _(WRONG_ENTRIES).format(what=what, count=int(wrong.sum()),
                                                              total=want.numel(), index=_where(wrong, want.shape)))
        return None
    g = g.to(w.dtype)
    special = ~torch.isfinite(w)   # where the reference is NaN/inf the answer must match it (inf with its sign)
    special_wrong = special & ~((torch.isnan(g) & torch.isnan(w)) | (g == w))
    err = (g - w).abs().masked_fill(special, 0.0)
    wrong = (err > atol + rtol * w.abs().masked_fill(special, 0.0)) | special_wrong
    if bool(wrong.any()):
        return _problem("values", _(WRONG_VALUES).format(what=what, count=int(wrong.sum()), total=want.numel(),
                                                         size=_about(float(err.max()))
                                                         if bool((wrong & ~special).any()) else "inf",
                                                         index=_where(wrong, want.shape)))
    return None


def _where(wrong: torch.Tensor, shape) -> str:
    if len(shape) == 0:
        return "()"
    return str(_index(int(wrong.flatten().nonzero()[0]), shape))


def same(got: Any, want: Any, atol: float = 1e-5, rtol: float = 0.0, check_dtype: bool = False) -> bool:
    """True when got matches want (NaN-aware, never raises). By default the dtype may differ."""
    return difference(got, want, atol, rtol, check_dtype=check_dtype) is None


def close(a: Any, b: Any, atol: float = 1e-5) -> bool:
    """Two tensors of one shape, equal within atol; a NaN or inf in a where b has none is never close."""
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and same(a, b, atol=atol)


def name_the_mistake(got: Any, mistakes: Iterable[Tuple[str, Any]], atol: float = 1e-5,
                     default: Optional[str] = None) -> Optional[str]:
    """The hint of the first known mistake that got matches, else default.

    mistakes: (hint, wrong) pairs; wrong is the wrong answer itself or a no-argument callable that makes
    it (made lazily, in order; a callable that raises is skipped). Compared with :func:`same`.
    """
    for hint, wrong in mistakes:
        try:
            value = wrong() if callable(wrong) else wrong
        except Exception:
            continue
        if same(got, value, atol=atol):
            return hint
    return default


def expect_same(got: Any, want: Any, label: str, hint: Union[str, Callable[[], Optional[str]], None] = None,
                atol: float = 1e-5, rtol: float = 0.0, what: str = THE_RESULT, check_dtype: bool = True) -> None:
    """Raise NotYet naming what differs (and the hint, a string or a callable made only on failure).

    label and what are shown translated when they are catalog entries (marked with N_() where defined).
    """
    problem = difference(got, want, atol, rtol, what, check_dtype)
    if problem is None:
        return
    text = None
    if callable(hint):
        try:
            text = hint()
        except Exception:  # a diagnosis that trips over an odd answer falls back to the default
            text = None
    else:
        text = hint
    raise NotYet(_(CASE).format(label=_(label), problem=problem),
                 text or KIND_HINT.get(problem.kind, WRONG_HINT_DEFAULT))


def run_cases(fn: Callable, reference: Callable, cases, diagnose: Optional[Callable], what: str,
              atol: Union[float, Callable[[str, tuple, dict], float]] = 1e-5, rtol: float = 0.0,
              check_dtype: bool = True) -> ExerciseResult:
    """Run fn and reference on each (label, args, kwargs); NOT YET at the first case that differs.

    diagnose(got, want, *args, **kwargs) -> a hint naming the mistake (or None for the default);
    it runs only on a failure, and an exception inside it falls back to the default hint.
    atol is a number, or a function of (label, args, kwargs) for a per-case tolerance.
    It returns NOT YET rather than raising, so it also works in a check not yet decorated with :func:`checker`.
    """
    cases = list(cases)
    try:
        for label, args, kwargs in cases:
            want = reference(*args, **kwargs)
            got = call(fn, *_copies(args), label=label, **_copies(kwargs))
            tol = atol(label, args, kwargs) if callable(atol) else atol
            expect_same(got, want, label,
                        None if diagnose is None else (lambda: diagnose(got, want, *args, **kwargs)),
                        atol=tol, rtol=rtol, what=what, check_dtype=check_dtype)
    except NotYet as stop:
        return stop.result()
    return ExerciseResult(True, _(PASSED).format(what=_(what), n=len(cases)))


def _copies(x: Any) -> Any:
    """Fresh copies of tensors, so an answer that works in place cannot spoil the reference's inputs."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, tuple):
        return tuple(_copies(v) for v in x)
    if isinstance(x, list):
        return [_copies(v) for v in x]
    if isinstance(x, dict):
        return {k: _copies(v) for k, v in x.items()}
    return x


def filled_predictions(fn: Callable, names: Sequence[str], blank_hint: str) -> dict:
    """For a "predict" exercise whose stub returns {name: ...}: the learner's dict, with exactly `names` and
    no `...` left; NotYet (type, keys or blanks named) otherwise."""
    got = call(fn, label=YOUR_PREDICTIONS)
    if not isinstance(got, dict):
        raise NotYet(_(PREDICTIONS_TYPE).format(kind=type(got).__name__), PREDICTIONS_KEYS_HINT)
    if set(got) != set(names):
        raise NotYet(PREDICTIONS_KEYS, PREDICTIONS_KEYS_HINT)
    blank = sum(v is Ellipsis for v in got.values())
    if blank:
        raise NotYet(_(PREDICTIONS_BLANK).format(n=blank, total=len(names)), blank_hint)
    return got


# -- kept for the checker modules written before the contract above ---------------------------------

def compare(cases: Iterable[Tuple[str, Tuple, dict]], learner: Callable, reference: Callable,
            hint: Callable[[str, Any, Any], str], what: str, atol: float = 1e-6) -> ExerciseResult:
    """run_cases with a hint(label, got, want); returns (never raises)."""
    def diagnose(got, want, *args, **kwargs):
        return hint("", got, want)
    return checker(lambda fn: run_cases(fn, reference, cases, diagnose, what, atol=atol))(learner)


def dtype_problem(got: torch.Tensor, want: torch.Tensor) -> Optional[str]:
    """'dtype torch.int32, expected torch.int64', or None when the dtypes agree."""
    return None if got.dtype == want.dtype else _(DTYPE_PROBLEM).format(got=got.dtype, want=want.dtype)


def not_yet(fn: Callable, *args, **kwargs) -> Optional[ExerciseResult]:
    """'Not yet' when fn's body still raises NotImplementedError; None otherwise."""
    try:
        fn(*args, **kwargs)
    except NotImplementedError:
        return ExerciseResult(False, _(NOT_YET).format(name=getattr(fn, "__name__", _(YOUR_FUNCTION))), STUB_HINT)
    except Exception:  # a real error: the check reports it with its case
        return None
    return None


def call_learner(fn: Callable, args: tuple, name: str, label: str) -> Tuple[Any, Optional[ExerciseResult]]:
    """(result, None), or (None, the ExerciseResult saying 'not yet' or what fn raised)."""
    try:
        return call(fn, *args, name=name, label=label), None
    except NotYet as stop:
        return None, stop.result()


def fail(label: str, problem: str, hint: str) -> ExerciseResult:
    """NOT YET for case label; label, problem and hint are translated when they are catalog entries."""
    return ExerciseResult(False, _(CASE).format(label=_(label), problem=_(problem)), hint)


def dtype_failure(label: str, got: torch.Tensor, want: torch.Tensor, hint: str,
                  name: str = "") -> Optional[ExerciseResult]:
    """For a check that compared the values after a cast: fail() naming the wrong dtype, or None."""
    if not isinstance(got, torch.Tensor):
        return fail(label, _(WRONG_TYPE).format(what=name or _(THE_RESULT), got=type(got).__name__,
                                                want=_(A_TENSOR)), hint)
    problem = dtype_problem(got, want)
    return None if problem is None else fail(label, f"{name}: {problem}" if name else problem, hint)
