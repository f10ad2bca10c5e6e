"""Naming a mistake from all the cases at once.

On a single case two different mistakes can give the same wrong number (dividing by 8 when
H = 8 looks like counting bits). The learner's function is run on every case first; the hint
is the known mistake that reproduces the learner's answers in the most cases.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from . import NotYet, call, name_the_mistake

Mistakes = Sequence[Tuple[str, Any]]   # (hint, wrong answer or a no-argument callable making it)


def answers(fn: Callable, cases: Sequence[Tuple[str, tuple]], name: str) -> List[Tuple[str, Any, Optional[NotYet]]]:
    """(label, answer, None) per case, or (label, None, the NotYet its call raised): raised only when reached."""
    out = []
    for label, args in cases:
        try:
            out.append((label, call(fn, *args, name=name, label=label), None))
        except NotYet as stop:
            out.append((label, None, stop))
    return out


def most_consistent(answered: Sequence[Tuple[Any, Mistakes]], atol: float = 1e-6) -> Optional[str]:
    """The hint whose wrong answers match the learner's in the most cases (the earliest hint on a tie)."""
    score: dict = {}
    for got, mistakes in answered:
        for hint, wrong in mistakes:
            if name_the_mistake(got, [(hint, wrong)], atol=atol):
                score[hint] = score.get(hint, 0) + 1
    return max(score, key=score.get) if score else None
