"""The bench of chapter 12: your pieces go in one at a time, transformers 4.41.2 is the judge.

    cap = Capstone()          # the tiny model (eager attention) and transformers' model from the same folder
    cap.plug(rms_norm)        # yours from now on, if generation is still token for token transformers'
    cap.finale()              # every piece yours: additions and sentences

Each `plug` runs greedy generation on a fixed batch (left-padded additions, sentences and one
prompt longer than the sliding window) with all the pieces plugged so far plus the new one,
and a forward with the router logits; it passes when the tokens equal transformers' one for
one, the logits are within 1e-5 and the load-balancing loss too. Otherwise it shows the trace
diff against the model without your pieces and stops the chapter with a one-line message (no
traceback): later steps would build on the wrong piece.

When the environment variable MIXTRAL_EDU_SOLUTIONS is set (CI, the docs site), the reference
pieces of notebooks/solutions/12_build_it_yourself.py stand in for the stubs.
"""
from __future__ import annotations

import html
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..i18n import N_, _
from ..tiny import corpus
from ..tiny.evaluate import EVAL_SEED
from ..tiny.pretrained import TINY_DIR, load_tiny
from .pieces import PIECES
from .plug import PieceNotWritten, plug_in

ENV = "MIXTRAL_EDU_SOLUTIONS"
STEM = "12_build_it_yourself"
TOLERANCE = 1e-5
ROOT = Path(__file__).resolve().parents[2]

# The check batch: additions, sentence starts, a record, and one prompt longer than the window (32).
PROMPTS = ["43+77=", "27+49=", "these happy boys", "some girls near the", "{id: 7, name:",
           "the small cat sees a red ball . some big dogs near the trees run . this girl likes the green "
           "hat . a lazy fox under the"]

# User-facing strings, one place: N_ marks them for the catalog, _() translates them where they are shown.
M_STOP_STUB = N_("The chapter stops here: `{name}` is still a stub. Write its body in the cell above, run that "
                 "cell again, then go on.")
M_STOP_WRONG = N_("The chapter stops here: with your `{name}` plugged in, the model no longer generates what "
                  "transformers does (the trace diff above shows where). Fix it, run the cell again, then go on.")
M_STOP_ERROR = N_("The chapter stops here: {error}")
M_UNKNOWN = N_("`{name}` is not one of the pieces: {names}. Keep the function's name as the stub has it.")
M_SOLUTIONS_MISSING = N_("{env} is set, but no {stem}.py was found in {places}. Set it to the folder that holds the "
                         "solutions (e.g. notebooks/solutions), or unset it.")
M_REFERENCE_USED = N_("{env} is set: the reference `{name}` stands in for the one above.")
M_PASS = N_("`{name}` is yours now ({n} of {total} pieces): {rows} prompts × {new} new tokens, token for token what "
            "transformers 4.41.2 generates; largest logit difference {worst:.2g}, aux loss difference {aux:.2g} "
            "(allowed {tol:g}).")
M_FAIL_TOKENS = N_("the generated tokens differ from transformers' in rows {rows}")
M_FAIL_LENGTH = N_("generation returned shape {got}; transformers' has shape {want}")
M_FAIL_LOGITS = N_("the logits differ from transformers' by up to {worst:.3g} (allowed {tol:g})")
M_FAIL_AUX = N_("the load-balancing loss differs from transformers' by {aux:.3g} (allowed {tol:g})")
PLAN_HEADER = (N_("your function"), N_("takes the place of"), N_("whose"))
M_FINALE = N_("{n} of {total} pieces are yours. Additions: {right} of {count} right. Sentences: {ok} of {n_s} "
              "grammatical. {same}")
M_SAME_ALL = N_("Every row is token for token what transformers 4.41.2 generates.")
M_SAME_NOT = N_("Rows that differ from transformers 4.41.2: {rows}.")


class StopChapter(Exception):
    """Stops a notebook at this cell with its message only: IPython shows `_render_traceback_` instead
    of a traceback."""

    def _render_traceback_(self) -> List[str]:
        return [f"\x1b[1;31m{self}\x1b[0m"]


def load_solutions(stem: str = STEM):
    """The reference module when MIXTRAL_EDU_SOLUTIONS is set (a folder, or any other non-empty value
    for ./solutions or <repo>/notebooks/solutions), else None."""
    value = os.environ.get(ENV, "")
    if value in ("", "0"):
        return None
    places = [Path(value)] if Path(value).is_dir() else []
    places += [Path.cwd() / "solutions", ROOT / "notebooks" / "solutions"]
    for folder in places:
        path = folder / f"{stem}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"solutions_{stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(_(M_SOLUTIONS_MISSING).format(env=ENV, stem=stem, places=", ".join(map(str, places))))


def _show(obj) -> None:
    try:
        from IPython.display import display
        display(obj)
    except ImportError:  # plain Python
        print(obj)


@dataclass
class Verdict:
    """One check against transformers: the tokens, the logits, the aux loss; and the trace diff if it failed."""

    name: str
    n_plugged: int
    same_tokens: bool
    rows_differing: List[int]
    max_logit_diff: float
    aux_diff: float
    shape: tuple
    got_shape: tuple = ()
    shape_want: tuple = ()
    diff: Optional[object] = None
    error: Optional[BaseException] = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return (self.error is None and self.same_tokens and self.max_logit_diff <= TOLERANCE
                and self.aux_diff <= TOLERANCE)

    def problems(self) -> List[str]:
        out = []
        if self.error is not None:
            out.append(str(self.error))
        else:
            if not self.same_tokens:
                out.append(_(M_FAIL_TOKENS).format(rows=self.rows_differing) if self.rows_differing else
                           _(M_FAIL_LENGTH).format(got=self.got_shape, want=self.shape_want))
            if self.max_logit_diff > TOLERANCE:
                out.append(_(M_FAIL_LOGITS).format(worst=self.max_logit_diff, tol=TOLERANCE))
            if self.aux_diff > TOLERANCE:
                out.append(_(M_FAIL_AUX).format(aux=self.aux_diff, tol=TOLERANCE))
        return out

    def message(self) -> str:
        if self.ok:
            return _(M_PASS).format(name=self.name, n=self.n_plugged, total=len(PIECES), rows=self.shape[0],
                                 new=self.shape[1], worst=self.max_logit_diff, tol=TOLERANCE, aux=self.aux_diff)
        return _("`{name}`: {problems}").format(name=self.name, problems=_("; ").join(self.problems()))

    def __repr__(self) -> str:
        text = (_("PASSED: ") if self.ok else _("NOT YET: ")) + self.message()
        text = (self.note + "\n" if self.note else "") + text
        return text + ("" if self.diff is None else "\n" + str(self.diff))

    def _repr_html_(self) -> str:
        colour, mark = ("#1b7837", "&#10004; " + _("Passed")) if self.ok else ("#b35806", "&#10008; " + _("Not yet"))
        note = f'<div style="color:#555">{_code(self.note)}</div>' if self.note else ""
        diff = "" if self.diff is None else self.diff._repr_html_()
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">{note}'
                f'<b style="color:{colour}">{mark}</b> {_code(self.message())}</div>{diff}')


def _code(text: str) -> str:
    """Escaped HTML with `name` shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


@dataclass
class Finale:
    """Every piece yours: additions and sentence completions beside transformers'."""

    additions: List[tuple]        # (prompt, yours, transformers', right?)
    sentences: List[tuple]        # (prompt, yours, transformers', grammatical?)
    n_plugged: int = 0
    same_as_transformers: bool = field(init=False)

    def __post_init__(self):
        self.same_as_transformers = all(r[1] == r[2] for r in self.additions + self.sentences)

    @property
    def addition_accuracy(self) -> float:
        return sum(r[3] for r in self.additions) / len(self.additions)

    @property
    def grammatical(self) -> float:
        return sum(r[3] for r in self.sentences) / len(self.sentences)

    def summary(self) -> str:
        rows = self.additions + self.sentences
        same = _(M_SAME_ALL) if self.same_as_transformers else \
            _(M_SAME_NOT).format(rows=[i for i, r in enumerate(rows) if r[1] != r[2]])
        return _(M_FINALE).format(n=self.n_plugged, total=len(PIECES), right=sum(r[3] for r in self.additions),
                                  count=len(self.additions), ok=sum(r[3] for r in self.sentences),
                                  n_s=len(self.sentences), same=same)

    def __repr__(self) -> str:
        rows = [f"{p}{y}   (transformers: {p}{t})  {_('ok') if good else _('WRONG')}"
                for p, y, t, good in self.additions + self.sentences]
        return self.summary() + "\n" + "\n".join(rows)

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(f"<tr><td><code>{esc(p)}<b>{esc(y)}</b></code></td><td><code>{esc(p)}{esc(t)}</code></td>"
                       f"<td>{'&#10004;' if good else '&#10008;'}</td>"
                       f"<td>{_('same') if y == t else _('DIFFERENT')}</td></tr>"
                       for p, y, t, good in self.additions + self.sentences)
        return (f"<p>{esc(self.summary())}</p><table><tr><th>{esc(_('your pieces'))}</th><th>transformers 4.41.2</th>"
                f"<th>{esc(_('right'))}</th><th>{esc(_('tokens'))}</th></tr>{body}</table>")


@dataclass
class Plan:
    """(chapter, signature, slot, yours?) per piece; a table in a notebook."""

    rows: List[tuple]

    def __repr__(self) -> str:
        return "\n".join(f"{c}  {_('yours') if y else _('ours'):<5}  {sig}  ->  {where}"
                         for c, sig, where, y in self.rows)

    def _repr_html_(self) -> str:
        esc = html.escape
        body = "".join(f"<tr><td>{c}</td><td><code>{esc(sig)}</code></td><td><code>{esc(where)}</code></td>"
                       f"<td>{'&#10004; ' + _('yours') if y else _('ours')}</td></tr>"
                       for c, sig, where, y in self.rows)
        head = "".join(f"<th>{esc(_(h))}</th>" for h in PLAN_HEADER)
        return f"<table><tr><th>{esc(_('ch.'))}</th>{head}</tr>{body}</table>"


class Capstone:
    """The tiny model with eager attention (the attention-weights piece needs it) and transformers'
    MixtralForCausalLM loaded from the same folder, the check batch, and the pieces plugged so far."""

    def __init__(self, max_new_tokens: int = 12):
        import transformers
        transformers.logging.set_verbosity_error()
        self.model, self.tokenizer = load_tiny(attn_implementation="eager")
        self.reference = transformers.MixtralForCausalLM.from_pretrained(
            TINY_DIR, attn_implementation="eager", torch_dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens
        enc = self.tokenizer(PROMPTS, return_tensors="pt", padding=True)
        self.input_ids, self.attention_mask = enc.input_ids, enc.attention_mask
        with torch.no_grad():
            self.want_ids = self._generate(self.reference, self.input_ids, self.attention_mask)
            out = self.reference(input_ids=self.input_ids, attention_mask=self.attention_mask,
                                 output_router_logits=True)
        self.want_logits, self.want_aux = out.logits, out.aux_loss
        self.pieces: Dict[str, Callable] = {}
        self.solutions = load_solutions()

    def _generate(self, model, ids, mask, max_new_tokens: Optional[int] = None):
        pad = self.tokenizer.pad_token_id
        return model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens or self.max_new_tokens,
                              do_sample=False, pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)

    def run(self, model):
        """What a check runs: a forward with the router logits, then greedy generation (for trace_diff)."""
        model(input_ids=self.input_ids, attention_mask=self.attention_mask, output_router_logits=True)
        return self._generate(model, self.input_ids, self.attention_mask)

    def check(self, pieces: Dict[str, Callable], name: str = "") -> Verdict:
        """Plug `pieces` in, generate and run a forward; compare with transformers. Never raises."""
        shape = (self.input_ids.shape[0], self.max_new_tokens)
        try:
            with torch.no_grad(), plug_in(self.model, pieces):
                got = self._generate(self.model, self.input_ids, self.attention_mask)
                out = self.model(input_ids=self.input_ids, attention_mask=self.attention_mask,
                                 output_router_logits=True)
        except Exception as err:  # noqa: BLE001  yours, or the model's own check tripping over your output
            return Verdict(name, len(pieces), False, [], float("nan"), float("nan"), shape, error=err)
        same = got.shape == self.want_ids.shape and torch.equal(got, self.want_ids)
        rows = ([] if same or got.shape != self.want_ids.shape else
                [i for i in range(got.shape[0]) if not torch.equal(got[i], self.want_ids[i])])
        worst = float((out.logits - self.want_logits).abs().max()) if out.logits.shape == self.want_logits.shape \
            else float("inf")
        worst = float("inf") if worst != worst else worst     # NaN logits are as wrong as can be
        aux = float((out.aux_loss - self.want_aux).abs())
        aux = float("inf") if aux != aux else aux
        return Verdict(name, len(pieces), same, rows, worst, aux, shape, tuple(got.shape), tuple(self.want_ids.shape))

    def plug(self, fn: Callable) -> Verdict:
        """Check `fn` with every piece plugged so far; keep it if generation is still transformers'.

        Otherwise show the trace diff and stop the chapter (StopChapter: a message, no traceback).
        """
        name = getattr(fn, "__name__", "")
        if name not in PIECES:
            raise StopChapter(_(M_UNKNOWN).format(name=name, names=", ".join(PIECES)))
        note = ""
        if self.solutions is not None:
            fn, note = getattr(self.solutions, name), _(M_REFERENCE_USED).format(env=ENV, name=name)
        candidate = {**self.pieces, name: fn}
        verdict = self.check(candidate, name)
        verdict.note = note
        if verdict.ok:
            self.pieces = candidate
            return verdict
        if isinstance(verdict.error, PieceNotWritten):
            _show(verdict)
            raise StopChapter(_(M_STOP_STUB).format(name=name))
        from .diff import trace_diff
        verdict.diff = trace_diff(self.model, candidate, run=self.run)
        _show(verdict)
        if verdict.error is not None:
            raise StopChapter(_(M_STOP_ERROR).format(error=verdict.error))
        raise StopChapter(_(M_STOP_WRONG).format(name=name))

    def finale(self, n_additions: int = 20, n_sentences: int = 8) -> Finale:
        """Every piece plugged: held-out two-digit additions and sentence starts, yours beside transformers'."""
        additions = corpus.addition_prompts(n_additions, EVAL_SEED)
        starts = corpus.lang_prompts(n_sentences, EVAL_SEED)
        prompts = [p for p, _ in additions] + starts
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            theirs = self._generate(self.reference, enc.input_ids, enc.attention_mask, 16)
            with plug_in(self.model, self.pieces):
                yours = self._generate(self.model, enc.input_ids, enc.attention_mask, 16)
        cut = enc.input_ids.shape[1]
        decode = lambda ids: self.tokenizer.batch_decode(ids[:, cut:], skip_special_tokens=True)  # noqa: E731
        y, t = decode(yours), decode(theirs)
        rows_a = [(p, y[i], t[i], y[i].strip() == want) for i, (p, want) in enumerate(additions)]
        rows_s = []
        for j, p in enumerate(starts):
            i = len(additions) + j
            text = p + y[i]
            end = text.find(" .")
            rows_s.append((p, y[i], t[i], corpus.check_sentence(text[:end + 2] if end >= 0 else text)))
        return Finale(rows_a, rows_s, n_plugged=len(self.pieces))

    def plan(self) -> "Plan":
        """The pieces in chapter order, with what each replaces and whether it is yours yet."""
        return Plan([(p.chapter[:2], p.signature, p.slot.where, p.name in self.pieces) for p in PIECES.values()])

    def __repr__(self) -> str:
        mode = (_(", {env} set: reference pieces stand in for the stubs").format(env=ENV)
                if self.solutions is not None else "")
        return _("<Capstone: {n} of {total} pieces plugged in; check batch of {prompts} prompts × {new} new "
                 "tokens{mode}>").format(n=len(self.pieces), total=len(PIECES), prompts=len(PROMPTS),
                                         new=self.max_new_tokens, mode=mode)
