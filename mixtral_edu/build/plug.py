"""How a learner's function takes the place of ours: one mechanism for every piece.

    with mixtral_edu.plug_in(model, {"repeat_kv": my_repeat_kv, "rms_norm": my_rms_norm}):
        model.generate(ids, attention_mask=mask)      # runs your pieces, ours for the rest

Every piece lives in a *slot*: the one callable the model looks up by name at call time.
Two kinds, one rule:
  * a function of `mixtral_edu.modeling` (`repeat_kv`, `rotate_half`, ...): the name is
    rebound in every modeling module that holds it (`from .rotary import apply_rotary_pos_emb`
    copies the name into attention.py, so both are rebound);
  * a method of the model's modules (`MixtralRMSNorm.forward`, `MixtralSparseMoeBlock.forward`,
    `generate`, ...): set on each instance (its `__dict__`), so the class stays untouched.
`plug_in` sets them and, whatever happens inside the block, puts back exactly what was there
(the same objects; an instance attribute that did not exist is deleted). The model's source
is never changed. Function slots are module names, so while the block runs every mixtral_edu
model in the process uses your function pieces; method slots touch only `model`.

Your function is checked twice: its signature when you plug it in, its output (shape, dtype,
structure) the first time the model calls it. Both failures raise PieceError naming the
piece, what was expected, what came back and the chapter that teaches the piece.
"""
from __future__ import annotations

import difflib
import inspect
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List

from torch import nn

from .errors import PieceError, PieceNotWritten

#: Names of the learner's pieces running right now, innermost last. The trace diff reads it to
#: charge what happens inside your function (e.g. a forward your greedy_step makes) to your function.
RUNNING: List[str] = []

_MISSING = object()

# User-facing messages (plain literals, one place: translation wraps them later).
MSG_UNKNOWN = "No piece called {name!r}.{hint} The pieces: {names}."
MSG_NOT_CALLABLE = "The piece {name!r} must be a function; got {kind}."
MSG_SIGNATURE = ("Your `{name}` cannot be called the way the model calls it: {call}. "
                 "It takes {got}. {chapter}")
MSG_OUTPUT = "Your `{name}` returned {problem}. {chapter}"
MSG_RAISED = "Your `{name}` raised {kind}: {error} {chapter}"
MSG_NOT_WRITTEN = "Your `{name}` is still a stub (it raises NotImplementedError): write its body first. {chapter}"
MSG_NO_SLOT = "The piece {name!r} plugs into {where}, which this {model} does not have. {fix}"
MSG_NOT_OURS = ("plug_in needs a mixtral_edu MixtralForCausalLM or MixtralModel, got {kind}. Load one with "
                "mixtral_edu.load_tiny() or MixtralForCausalLM.from_pretrained(dir).")
MSG_NOT_DICT = "plug_in takes a dict {{piece name: your function}}, got {kind}."


class Rebinder:
    """Sets attributes (module globals, instance attributes) and puts back exactly what was there.

    close() undoes in reverse order: the previous object again, or the attribute deleted when
    there was none. It is the only thing plug_in and the trace diff change in a model.
    """

    def __init__(self) -> None:
        self._undo: List[Any] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        space = vars(owner)  # a module's globals or an instance's own attributes, never its class
        self._undo.append((space, name, space.get(name, _MISSING)))
        space[name] = value

    def on_close(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def close(self) -> None:
        while self._undo:
            item = self._undo.pop()
            if callable(item):
                item()
                continue
            space, name, previous = item
            if previous is _MISSING:
                space.pop(name, None)
            else:
                space[name] = previous

    def __enter__(self) -> "Rebinder":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def chapter_text(piece) -> str:
    return f"(Chapter {piece.chapter[:2]}, notebooks/{piece.chapter}.ipynb, teaches {piece.teaches}.)"


def checked(piece, fn: Callable) -> Callable:
    """fn, called as the model calls it: its output checked on the first call, its errors named.

    A stub's NotImplementedError becomes PieceNotWritten; any other exception from your code
    becomes PieceError naming the piece (the original is chained as __cause__). A PieceError
    raised deeper (another of your pieces, called from inside this one) passes through as is.
    """
    first = [True]

    def call(*args):
        RUNNING.append(piece.name)
        try:
            out = fn(*args)
        except PieceError:
            raise
        except NotImplementedError as err:
            raise PieceNotWritten(MSG_NOT_WRITTEN.format(name=piece.name, chapter=chapter_text(piece)),
                                  piece.name) from err
        except Exception as err:
            raise PieceError(MSG_RAISED.format(name=piece.name, kind=type(err).__name__, error=err,
                                               chapter=chapter_text(piece)), piece.name) from err
        finally:
            RUNNING.pop()
        if first[0]:
            problem = piece.contract(args, out)
            if problem:
                raise PieceError(MSG_OUTPUT.format(name=piece.name, problem=problem, chapter=chapter_text(piece)),
                                 piece.name)
            first[0] = False
        return out

    call.__name__ = getattr(fn, "__name__", piece.name)
    call.__wrapped__ = fn
    return call


def check_signature(piece, fn: Any) -> None:
    """PieceError unless fn can be called with the piece's positional arguments."""
    if not callable(fn):
        raise PieceError(MSG_NOT_CALLABLE.format(name=piece.name, kind=type(fn).__name__), piece.name)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: its first call will tell
    try:
        sig.bind(*piece.params)
    except TypeError:
        raise PieceError(MSG_SIGNATURE.format(name=piece.name, call=piece.signature, got=f"{piece.name}{sig}",
                                              chapter=chapter_text(piece)), piece.name) from None


def _check_model(model: Any) -> None:
    from ..modeling.model import MixtralModel
    from ..modeling.causal_lm import MixtralForCausalLM
    if not isinstance(model, (MixtralForCausalLM, MixtralModel)):
        raise TypeError(MSG_NOT_OURS.format(kind=type(model).__name__))


def plan(model: nn.Module, pieces: Dict[str, Callable]) -> List[tuple]:
    """[(slot, {piece name: checked fn})] for the given pieces, every check done, nothing changed yet."""
    from .pieces import PIECES
    _check_model(model)
    if not isinstance(pieces, dict):
        raise PieceError(MSG_NOT_DICT.format(kind=type(pieces).__name__))
    by_slot: Dict[Any, Dict[str, Callable]] = {}
    for name, fn in pieces.items():
        piece = PIECES.get(name)
        if piece is None:
            close = difflib.get_close_matches(str(name), list(PIECES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PieceError(MSG_UNKNOWN.format(name=name, hint=hint, names=", ".join(PIECES)))
        check_signature(piece, fn)
        if not piece.slot.present(model):
            raise PieceError(MSG_NO_SLOT.format(name=name, where=piece.slot.where, model=type(model).__name__,
                                                fix=piece.slot.fix), name)
        by_slot.setdefault(piece.slot, {})[name] = checked(piece, fn)
    return list(by_slot.items())


@contextmanager
def plug_in(model: nn.Module, pieces: Dict[str, Callable]) -> Iterator[nn.Module]:
    """Run `model` with your functions in place of ours for the duration of a `with` block.

    pieces: {piece name: your function}; the names and signatures are in
    `mixtral_edu.build.PIECES` (print `mixtral_edu.build.piece_table()`). On exit, whatever was
    raised, the model and the modeling modules hold exactly the objects they held before.
    """
    steps = plan(model, pieces)
    rebinder = Rebinder()
    try:
        for slot, fns in steps:
            slot.install(rebinder, model, fns)
        yield model
    finally:
        rebinder.close()
