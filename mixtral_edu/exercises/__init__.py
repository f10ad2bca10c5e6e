"""Checks for the notebooks' exercises: they say what is wrong and hint at the fix.

Each notebook has a module here (`mixtral_edu.exercises.<topic>`) with
`check_*` functions. A check runs the learner's code on a few cases against
the package's own implementation and reports the first difference it finds.
It returns True when everything agrees, so a notebook can `assert` it in CI.

Shared by the modules: `run_cases` (compare case by case, with a hint that sees
the case's inputs), `not_yet`; for the checks that compare by hand
`call_learner`, `fail` and `dtype_failure`; `close` and `dtype_problem`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple, Union

import torch

from ..i18n import N_, _

# Shown through _() in the learner's language (mixtral_edu.set_language).
NOT_YET = N_("not yet: write the body of `{name}` (it still raises NotImplementedError).")


class ExerciseResult:
    """Pass/fail with a message; shows itself nicely in a notebook."""

    def __init__(self, ok: bool, message: str):
        self.ok, self.message = ok, message

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        waiting = _("not yet")
        if not self.ok and self.message.lower().startswith(waiting.lower()):
            return _("NOT YET") + self.message[len(waiting):]
        return (_("PASSED: ") if self.ok else _("NOT YET: ")) + self.message

    def _repr_html_(self) -> str:
        colour, mark = ("#1b7837", "&#10004;") if self.ok else ("#b35806", "&#10008;")
        msg = self.message.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
                f'<b style="color:{colour}">{mark} {_("Passed") if self.ok else _("Not yet")}</b><br>{msg}</div>')


def compare(cases: Iterable[Tuple[str, Tuple, dict]], learner: Callable, reference: Callable,
            hint: Callable[[str, Any, Any], str], what: str, atol: float = 1e-6) -> ExerciseResult:
    """Run learner and reference on each (label, args, kwargs); report the first case that differs."""
    n = 0
    for label, args, kwargs in cases:
        n += 1
        want = reference(*args, **kwargs)
        try:
            got = learner(*args, **kwargs)
        except Exception as exc:  # the learner's code failed: say where, not a stack trace
            return ExerciseResult(False, _("{what} raised {error}: {exc}\n(case: {label})").format(
                what=what, error=type(exc).__name__, exc=exc, label=label))
        problem = _difference(got, want, atol)
        if problem:
            return ExerciseResult(False, _("{what}, case {label}: {problem}\nHint: {hint}").format(
                what=what, label=label, problem=problem, hint=hint(label, got, want)))
    return ExerciseResult(True, _("{what} agrees with mixtral_edu on all {n} cases.").format(what=what, n=n))


def _difference(got: Any, want: Any, atol: float) -> Optional[str]:
    if want is None:
        return None if got is None else _("expected None, got {type}").format(type=type(got).__name__)
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return _("expected a tensor, got {type}").format(type=type(got).__name__)
        if got.shape != want.shape:
            return _("shape {got}, expected {want}").format(got=tuple(got.shape), want=tuple(want.shape))
        if want.dtype == torch.bool or not want.is_floating_point():
            if not torch.equal(got.to(want.dtype), want):
                return _("values differ:\n got  {got}\n want {want}").format(got=got.tolist(), want=want.tolist())
        else:
            err = (got.float() - want.float()).abs().max().item()
            if err > atol:
                return _("values differ by up to {err:.3g} (allowed {atol:g})").format(err=err, atol=atol)
        return dtype_problem(got, want)  # the values were compared after a cast: a wrong dtype needs its own check
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return _("expected a sequence of {n}, got {got!r}").format(n=len(want), got=got)
        for i, (g, w) in enumerate(zip(got, want)):
            p = _difference(g, w, atol)
            if p:
                return _("item {i}: {problem}").format(i=i, problem=p)
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return _("expected keys {want}, got {got}").format(
                want=sorted(want), got=sorted(got) if isinstance(got, dict) else repr(got))
        for k in want:
            p = _difference(got[k], want[k], atol)
            if p:
                return _("key {key!r}: {problem}").format(key=k, problem=p)
        return None
    return None if got == want else _("got {got!r}, expected {want!r}").format(got=got, want=want)


def dtype_problem(got: torch.Tensor, want: torch.Tensor) -> Optional[str]:
    """'dtype torch.int32, expected torch.int64', or None when the dtypes agree."""
    return None if got.dtype == want.dtype else _("dtype {got}, expected {want}").format(got=got.dtype, want=want.dtype)


def close(a: Any, b: Any, atol: float = 1e-5) -> bool:
    """Two tensors of one shape, equal within atol (compared in float32)."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.float(), b.float(), atol=atol, rtol=0)))


def not_yet(fn: Callable, *args, **kwargs) -> Optional[ExerciseResult]:
    """'Not yet' when fn's body still raises NotImplementedError; None otherwise."""
    try:
        fn(*args, **kwargs)
    except NotImplementedError:
        return ExerciseResult(False, _(NOT_YET).format(name=getattr(fn, "__name__", _("your function"))))
    except Exception:  # a real error: compare() reports it with its case
        return None
    return None


def run_cases(fn: Callable, reference: Callable, cases, diagnose: Callable, what: str,
              atol: Union[float, Callable[[str, tuple, dict], float]] = 1e-5) -> ExerciseResult:
    """compare() case by case, so that diagnose(got, want, *args, **kwargs) sees the case's inputs.

    atol is a number, or a function of (label, args, kwargs) for a per-case tolerance.
    """
    cases = list(cases)
    waiting = not_yet(fn, *cases[0][1], **cases[0][2])
    if waiting is not None:
        return waiting
    for label, args, kwargs in cases:
        tol = atol(label, args, kwargs) if callable(atol) else atol
        result = compare([(label, args, kwargs)], fn, reference,
                         hint=lambda _l, got, want, a=args, k=kwargs: diagnose(got, want, *a, **k),
                         what=what, atol=tol)
        if not result:
            return result
    return ExerciseResult(True, _("{what} agrees with mixtral_edu on all {n} cases.").format(what=what, n=len(cases)))


def call_learner(fn: Callable, args: tuple, name: str, label: str) -> Tuple[Any, Optional[ExerciseResult]]:
    """(result, None), or (None, the ExerciseResult saying 'not yet' or what fn raised)."""
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, ExerciseResult(False, _(NOT_YET).format(name=name))
    except Exception as exc:  # the learner's code failed: say where, not a stack trace
        return None, ExerciseResult(False, _("`{name}` raised {error}: {exc}\n(case: {label})").format(
            name=name, error=type(exc).__name__, exc=exc, label=label))


def fail(label: str, problem: str, hint: str) -> ExerciseResult:
    message = _("case {label}: {problem}\nHint: {hint}").format(label=label, problem=problem, hint=hint)
    return ExerciseResult(False, message)


def dtype_failure(label: str, got: torch.Tensor, want: torch.Tensor, hint: str,
                  name: str = "") -> Optional[ExerciseResult]:
    """For a check that compared the values after a cast: fail() naming the wrong dtype, or None."""
    problem = dtype_problem(got, want)
    if problem is None:
        return None
    return fail(label, f"{name}: {problem}" if name else problem, hint)
