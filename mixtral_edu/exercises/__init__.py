"""Checks for the notebooks' exercises: they say what is wrong and hint at the fix.

Each notebook has a module here (`mixtral_edu.exercises.<topic>`) with
`check_*` functions. A check runs the learner's code on a few cases against
the package's own implementation and reports the first difference it finds.
It returns True when everything agrees, so a notebook can `assert` it in CI.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Tuple

import torch


class ExerciseResult:
    """Pass/fail with a message; shows itself nicely in a notebook."""

    def __init__(self, ok: bool, message: str):
        self.ok, self.message = ok, message

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        if not self.ok and self.message.lower().startswith("not yet"):
            return "NOT YET" + self.message[len("not yet"):]
        return ("PASSED: " if self.ok else "NOT YET: ") + self.message

    def _repr_html_(self) -> str:
        colour, mark = ("#1b7837", "&#10004;") if self.ok else ("#b35806", "&#10008;")
        msg = self.message.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
                f'<b style="color:{colour}">{mark} {"Passed" if self.ok else "Not yet"}</b><br>{msg}</div>')


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
            return ExerciseResult(False, f"{what} raised {type(exc).__name__}: {exc}\n(case: {label})")
        problem = _difference(got, want, atol)
        if problem:
            return ExerciseResult(False, f"{what}, case {label}: {problem}\nHint: {hint(label, got, want)}")
    return ExerciseResult(True, f"{what} agrees with mixtral_edu on all {n} cases.")


def _difference(got: Any, want: Any, atol: float) -> Optional[str]:
    if want is None:
        return None if got is None else f"expected None, got {type(got).__name__}"
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if want.dtype == torch.bool or not want.is_floating_point():
            if not torch.equal(got.to(want.dtype), want):
                return f"values differ:\n got  {got.tolist()}\n want {want.tolist()}"
            return None
        err = (got.float() - want.float()).abs().max().item()
        return None if err <= atol else f"values differ by up to {err:.3g} (allowed {atol:g})"
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a sequence of {len(want)}, got {got!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            p = _difference(g, w, atol)
            if p:
                return f"item {i}: {p}"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"expected keys {sorted(want)}, got {sorted(got) if isinstance(got, dict) else got!r}"
        for k in want:
            p = _difference(got[k], want[k], atol)
            if p:
                return f"key {k!r}: {p}"
        return None
    return None if got == want else f"got {got!r}, expected {want!r}"
