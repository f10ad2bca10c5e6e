"""Exercises of notebook 03 (`MixtralForCausalLM.forward`).

    03.1 check_shifted_cross_entropy(fn)   fn(logits (B, T, V), labels (B, T)) -> scalar loss
    03.2 check_masked_load_balancing_loss(fn)
         fn(router_logits: tuple of L (B*T, E), num_experts, top_k, attention_mask (B, T)) -> scalar
    03.3 check_output_names(fn)            fn(labels, output_router_logits, use_cache, output_hidden_states,
                                              output_attentions) -> list of field names, in tuple order

References: the loss `MixtralForCausalLM.forward` computes, `mixtral_edu.modeling.moe.load_balancing_loss_func`
and the fields of a real call. Hints name the mistake, never the expected values.
"""
from __future__ import annotations

import functools
import itertools
from typing import List

import torch
import torch.nn.functional as F

from . import ExerciseResult, checker, name_the_mistake, run_cases
from ..i18n import N_, _
from ..modeling.moe import load_balancing_loss_func

IGNORE = -100  # the label value cross-entropy skips

# -- the sentences a learner reads (one place, for translation) ------------------------------------
CE_SCALAR = N_("return one number (a 0-dim tensor): average over the kept positions "
             "(F.cross_entropy's default reduction='mean').")
# 03.1 is "find the bug": the hints ask where to look (the case that disagrees says when), never spell the fix.
CE_ROW_MEAN = N_("the batches whose rows keep different numbers of labels disagree with the model: in your average, "
               "how much does one label of a row with few labels weigh, and one of a row with many?")
CE_ROW_NAN = N_("a row whose labels are all -100 makes your loss NaN: what does your function average for that row, "
              "and does the model average row by row at all?")
CE_NO_SHIFT = N_("which label are the logits at position t scored against in your function? The model scores them "
               "against the token at t + 1.")
CE_WRONG_WAY = N_("your shift goes the other way: does position t predict the token before it, or the one after it?")
CE_SUM = N_("your number grows with the number of labels: is it a sum or a mean?")
CE_IGNORED = N_("labels equal to -100 were scored as if they were a token: how does F.cross_entropy know to skip them?")
CE_ALL_PAIRS = N_("what do you divide by: every (position, label) pair, or only the labels that are not -100?")
CE_DEFAULT = N_("compare with section 5 step by step: which logits are scored against which labels, which labels are "
              "skipped, and over what the mean is taken.")

LB_SCALAR = N_("return one number (a 0-dim tensor): E * sum(f * P).")
LB_NO_MASK = N_("the pads were counted: leave the positions where attention_mask is 0 out of both f and P "
              "(weight each token by its mask value, divide by the number of real tokens).")
LB_F_ONLY = N_("the mask was applied to f but not to P: the mean router probability P must also average over the "
             "real tokens only.")
LB_P_ONLY = N_("the mask was applied to P but not to f: f must also count the real tokens only.")
LB_LAYOUT = N_("the mask is matched to the wrong rows: the logits are L blocks of (B*T) rows, layer after layer, "
             "so the (B, T) mask must be flattened and repeated once per LAYER (not each entry repeated L times).")
LB_DENOMINATOR = N_("divide by the number of real tokens (the sum of the mask over all layers), not by all L*B*T rows.")
LB_PER_LAYER = N_("concatenate the L layers' router logits into one (L*B*T, E) tensor first, then average: the mean "
                "of per-layer losses is not the same number.")
LB_NO_E = N_("multiply by the number of experts E at the end (so a perfectly even router gives K).")
LB_LOGITS = N_("P is the mean router PROBABILITY per expert: softmax the logits over the experts first.")
LB_TOP1 = N_("f must count all K choices of each token (torch.topk over the probabilities), not only the top one.")
LB_DEFAULT = N_("softmax the (L*B*T, E) logits; top-k -> one-hot (L*B*T, K, E); weight each row by its token's mask; "
              "f = masked mean over tokens (K, E); P = masked mean probability (E,); return E * sum(f * P).")

NAMES_NOT_LIST = N_("return a list of field names such as ['logits', 'past_key_values'].")
NAMES_ORDER = N_("the right fields in the wrong order. The order is fixed: loss, aux_loss, logits, past_key_values, "
               "hidden_states, attentions, router_logits (absent ones are left out).")
NAMES_WHY = {"loss": N_("loss exists only when labels are given"),
             "aux_loss": N_("aux_loss exists whenever output_router_logits=True, with or without labels"),
             "logits": N_("logits are always there"),
             "past_key_values": N_("the cache is returned when use_cache=True"),
             "hidden_states": N_("hidden_states come with output_hidden_states=True"),
             "attentions": N_("attentions come with output_attentions=True"),
             "router_logits": N_("router_logits come with output_router_logits=True")}
NAMES_MISSING = N_("missing {names}")
NAMES_EXTRA = N_("should not be there: {names}")
NAMES_SUMMARY = N_("{parts}. Remember: {notes}.")
NAMES_SUMMARY_PLAIN = N_("{parts}.")
NAMES_JOIN = N_("; ")
CE_WHAT, LB_WHAT, NAMES_WHAT = N_("shifted cross-entropy"), N_("masked load-balancing loss"), N_("output order")


# -- 03.1 the shifted cross-entropy ---------------------------------------------------------------

def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss MixtralForCausalLM.forward computes: logits at t score the label at t + 1.

    logits (B, T, V), labels (B, T) with -100 = ignore. Mean over the kept pairs of the whole batch.
    (The model computes this inline; tests/exercises/test_mutations_causal_lm.py checks it equals out.loss.)
    """
    vocab = logits.shape[-1]
    shift_logits = logits[..., :-1, :].reshape(-1, vocab)   # (B*(T-1), V): drop the last position
    shift_labels = labels[..., 1:].reshape(-1)               # (B*(T-1),): drop the first label
    return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE)


def _ce_cases():
    g = torch.Generator().manual_seed(3)
    out = []
    for label, (b, t, v), ignore in [
            ("B=1, T=6, V=11", (1, 6, 11), []),
            (N_("B=2, T=7, V=13, rows keep 5 and 3 labels"), (2, 7, 13), [(1, 1), (1, 2), (1, 3)]),
            (N_("B=3, T=5, V=17, -100 in two rows"), (3, 5, 17), [(0, 0), (0, 1), (2, 4)]),
            (N_("B=2, T=6, V=9, row 0 has no label left"), (2, 6, 9), [(0, j) for j in range(6)])]:
        logits = torch.randn(b, t, v, generator=g) * 2
        labels = torch.randint(0, v, (b, t), generator=g)
        for i, j in ignore:
            labels[i, j] = IGNORE
        out.append((label, (logits, labels), {}))
    return out


def _ce_mistakes(logits, labels):
    v = logits.shape[-1]
    sl, sy = logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1)
    kept = (labels[:, 1:] != IGNORE)

    def row_means():
        return torch.stack([F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=IGNORE)
                            for b in range(logits.shape[0])])
    return [
        (CE_ROW_MEAN, lambda: row_means().mean()),
        (CE_ROW_MEAN, lambda: row_means().nanmean()),
        (CE_NO_SHIFT, lambda: F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=IGNORE)),
        (CE_WRONG_WAY, lambda: F.cross_entropy(logits[:, 1:].reshape(-1, v), labels[:, :-1].reshape(-1),
                                               ignore_index=IGNORE)),
        (CE_SUM, lambda: F.cross_entropy(sl, sy, ignore_index=IGNORE, reduction="sum")),
        (CE_IGNORED, lambda: F.cross_entropy(sl, sy.clamp(min=0))),
        (CE_ALL_PAIRS, lambda: F.cross_entropy(sl, sy, ignore_index=IGNORE, reduction="sum") / kept.numel()),
    ]


def _diagnose_ce(got, want, logits, labels):
    if isinstance(got, torch.Tensor) and got.dim() != 0:
        return CE_SCALAR
    if isinstance(got, torch.Tensor) and not bool(torch.isfinite(got).all()):
        return CE_ROW_NAN
    return name_the_mistake(got, _ce_mistakes(logits, labels), default=CE_DEFAULT)


@checker
def check_shifted_cross_entropy(fn) -> ExerciseResult:
    """fn(logits (B, T, V), labels (B, T)) -> the shifted mean cross-entropy, ignoring -100 labels."""
    return run_cases(fn, shifted_cross_entropy, _ce_cases(), _diagnose_ce, CE_WHAT,
                     check_dtype=False)


# -- 03.2 the load-balancing loss with padding ---------------------------------------------------------

def _lb_cases():
    g = torch.Generator().manual_seed(5)
    out = []
    for label, (layers, b, t, e, k), pads in [
            (N_("L=1, B=2, T=4, E=4, K=2, row 0 has 2 pads"), (1, 2, 4, 4, 2), (2, 0)),
            (N_("L=3, B=2, T=5, E=8, K=2, pads 0 and 3"), (3, 2, 5, 8, 2), (0, 3)),
            (N_("L=2, B=3, T=4, E=8, K=1, pads 1, 0, 2"), (2, 3, 4, 8, 1), (1, 0, 2)),
            (N_("L=2, B=2, T=6, E=4, K=3, peaked router, pads 4 and 0"), (2, 2, 6, 4, 3), (4, 0)),
            (N_("L=2, B=2, T=3, E=4, K=2, no padding"), (2, 2, 3, 4, 2), (0, 0))]:
        scale = 4.0 if "peaked" in label else 1.5
        logits = tuple(torch.randn(b * t, e, generator=g) * scale for layer in range(layers))
        mask = torch.tensor([[0] * p + [1] * (t - p) for p in pads])
        out.append((label, (logits, e, k, mask), {}))
    return out


def reference_masked_lb(router_logits, num_experts, top_k, attention_mask):
    return load_balancing_loss_func(tuple(router_logits), num_experts, top_k, attention_mask)


def _lb_variant(router_logits, E, K, mask, f_mask=True, p_mask=True, layout="layers", denominator="real",
                per_layer=False, times_e=True, softmax=True, top1=False):
    """The masked loss with one of the usual mistakes (for naming them)."""
    if per_layer:
        return torch.stack([_lb_variant((g,), E, K, mask, f_mask, p_mask, layout, denominator, False, times_e,
                                        softmax, top1) for g in router_logits]).mean()
    logits = torch.cat(list(router_logits), dim=0)
    probs = logits.softmax(-1) if softmax else logits
    k = 1 if top1 else K
    chosen = F.one_hot(torch.topk(logits.softmax(-1), k, dim=-1).indices, E).float()    # (L*N, k, E)
    L = logits.shape[0] // mask.numel()
    keep = mask.reshape(-1).repeat(L) if layout == "layers" else mask.reshape(-1).repeat_interleave(L)
    keep = keep.float()
    count = keep.sum() if denominator == "real" else torch.tensor(float(keep.numel()))
    f = (chosen * keep[:, None, None]).sum(0) / count if f_mask else chosen.mean(0)
    p = (probs * keep[:, None]).sum(0) / count if p_mask else probs.mean(0)
    return (E if times_e else 1) * (f * p).sum()


def _lb_mistakes(router_logits, E, K, mask):
    v = functools.partial(_lb_variant, router_logits, E, K, mask)
    return [(LB_NO_MASK, lambda: v(f_mask=False, p_mask=False)), (LB_F_ONLY, lambda: v(p_mask=False)),
            (LB_P_ONLY, lambda: v(f_mask=False)), (LB_LAYOUT, lambda: v(layout="interleaved")),
            (LB_DENOMINATOR, lambda: v(denominator="all")), (LB_PER_LAYER, lambda: v(per_layer=True)),
            (LB_NO_E, lambda: v(times_e=False)), (LB_LOGITS, lambda: v(softmax=False)),
            (LB_TOP1, lambda: v(top1=True))]


def _diagnose_lb(got, want, router_logits, num_experts, top_k, attention_mask):
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        return LB_SCALAR
    return name_the_mistake(got, _lb_mistakes(router_logits, num_experts, top_k, attention_mask), default=LB_DEFAULT)


@checker
def check_masked_load_balancing_loss(fn) -> ExerciseResult:
    """fn(router_logits: tuple of L (B*T, E), num_experts, top_k, attention_mask (B, T)) -> the aux loss."""
    return run_cases(fn, reference_masked_lb, _lb_cases(), _diagnose_lb, LB_WHAT,
                     check_dtype=False)


# -- 03.3 the order of the output tuple --------------------------------------------------------------

FLAGS = ("labels", "output_router_logits", "use_cache", "output_hidden_states", "output_attentions")


@functools.lru_cache(maxsize=1)
def _tiny_model():
    """A minuscule random MixtralForCausalLM (built once): the reference runs it to read the fields."""
    from ..modeling.causal_lm import MixtralForCausalLM
    from ..modeling.config import MixtralConfig
    config = MixtralConfig(vocab_size=11, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                           num_experts_per_tok=1, max_position_embeddings=16, attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MixtralForCausalLM(config).eval()


def output_names(labels: bool, output_router_logits: bool, use_cache: bool, output_hidden_states: bool,
                 output_attentions: bool) -> List[str]:
    """The names of the entries of MixtralForCausalLM's return_dict=False tuple, read off a real call."""
    model = _tiny_model()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        out = model(ids, labels=ids if labels else None, output_router_logits=output_router_logits,
                    use_cache=use_cache, output_hidden_states=output_hidden_states,
                    output_attentions=output_attentions, return_dict=True)
    return list(out.keys())


def _names_cases():
    return [(", ".join(f"{n}={v}" for n, v in zip(FLAGS, combo)), combo, {})
            for combo in itertools.product([False, True], repeat=len(FLAGS))]


def _diagnose_names(got, want, *flags) -> str:
    if not isinstance(got, (list, tuple)) or not all(isinstance(n, str) for n in got):
        return NAMES_NOT_LIST
    got = list(got)
    if sorted(got) == sorted(want):
        return NAMES_ORDER
    missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
    parts = ([_(NAMES_MISSING).format(names=missing)] if missing else []) + \
            ([_(NAMES_EXTRA).format(names=extra)] if extra else [])
    notes = [_(NAMES_WHY[n]) for n in missing + extra if n in NAMES_WHY]
    join = _(NAMES_JOIN)
    if notes:
        return _(NAMES_SUMMARY).format(parts=join.join(parts), notes=join.join(notes))
    return _(NAMES_SUMMARY_PLAIN).format(parts=join.join(parts))


@checker
def check_output_names(fn) -> ExerciseResult:
    """fn(labels, output_router_logits, use_cache, output_hidden_states, output_attentions) -> names in order."""
    return run_cases(fn, output_names, _names_cases(), _diagnose_names, NAMES_WHAT)


EXERCISES = {
    "03.1": ("shifted_cross_entropy", check_shifted_cross_entropy),
    "03.2": ("masked_load_balancing_loss", check_masked_load_balancing_loss),
    "03.3": ("output_names", check_output_names),
}
