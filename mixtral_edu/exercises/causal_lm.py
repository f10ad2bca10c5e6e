"""Checks for notebook 03 (`MixtralForCausalLM.forward`): the shifted loss, the aux loss, the output order.

    check_shifted_cross_entropy(fn)   fn(logits (B, T, V), labels (B, T)) -> scalar loss
    check_load_balancing_loss(fn)     fn(router_logits: tuple of L (N, E), num_experts, top_k) -> scalar
    check_output_names(fn)            fn(labels, output_router_logits, use_cache, output_hidden_states,
                                         output_attentions) -> list of field names, in tuple order

Each check runs the learner's function on several cases, compares it with the
package's computation and, when they differ, names the likely mistake.
A function whose body still raises NotImplementedError gets "not yet".
"""
from __future__ import annotations

import itertools
from typing import Callable, List

import torch
import torch.nn.functional as F

from . import ExerciseResult, close, run_cases
from ..modeling.moe import load_balancing_loss_func

IGNORE = -100  # the label value cross-entropy skips


# -- 1. the shifted cross-entropy --------------------------------------------------------------

def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss MixtralForCausalLM.forward computes: logits at t score the label at t + 1.

    logits (B, T, V), labels (B, T) with -100 = ignore. Mean over the kept (B*(T-1)) pairs.
    (The model computes this inline; tests/exercises/test_exercises_causal_lm.py checks it equals out.loss.)
    """
    vocab = logits.shape[-1]
    shift_logits = logits[..., :-1, :].reshape(-1, vocab)   # (B*(T-1), V): drop the last position
    shift_labels = labels[..., 1:].reshape(-1)               # (B*(T-1),): drop the first label
    return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE)


def _ce_cases():
    g = torch.Generator().manual_seed(3)
    out = []
    for label, (b, t, v), ignore in [("B=1, T=6, V=11", (1, 6, 11), []),
                                     ("B=2, T=5, V=17", (2, 5, 17), []),
                                     ("B=2, T=7, V=13, some labels -100", (2, 7, 13), [(0, 0), (0, 1), (1, 4)])]:
        logits = torch.randn(b, t, v, generator=g) * 2
        labels = torch.randint(0, v, (b, t), generator=g)
        for i, j in ignore:
            labels[i, j] = IGNORE
        out.append((label, (logits, labels), {}))
    return out


def _diagnose_ce(got, want, logits, labels) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor: the mean cross-entropy (F.cross_entropy returns one)."
    if got.dim() != 0:
        return (f"return one number (a 0-dim tensor), got shape {tuple(got.shape)}: "
                "average over the kept positions (F.cross_entropy's default reduction='mean').")
    v = logits.shape[-1]
    keep = labels[..., 1:] != IGNORE
    clean = labels.clamp(min=0)
    candidates = {
        "no shift": lambda: F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=IGNORE),
        "shift the wrong way": lambda: F.cross_entropy(logits[:, 1:].reshape(-1, v), labels[:, :-1].reshape(-1),
                                                       ignore_index=IGNORE),
        "sum": lambda: F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1),
                                       ignore_index=IGNORE, reduction="sum"),
        "-100 counted": lambda: F.cross_entropy(logits[:, :-1].reshape(-1, v), clean[:, 1:].reshape(-1)),
        "mean over all pairs": lambda: F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1),
                                                       ignore_index=IGNORE, reduction="sum") / keep.numel(),
    }
    for name, make in candidates.items():
        if close(got, make()):
            return {
                "no shift": "the logits at position t predict the token at t + 1: drop the LAST logit "
                            "(logits[:, :-1]) and the FIRST label (labels[:, 1:]) before the cross-entropy.",
                "shift the wrong way": "the shift goes the other way: logits[:, :-1] with labels[:, 1:] "
                                       "(position t predicts the token after it, not the one before).",
                "sum": "take the mean over the kept positions, not the sum.",
                "-100 counted": "labels equal to -100 must be skipped, not turned into a real token id: "
                                "pass them to F.cross_entropy, whose ignore_index is -100.",
                "mean over all pairs": "divide by the number of kept labels (those != -100), not by all "
                                       "B*(T-1) pairs: F.cross_entropy(..., ignore_index=-100) does it.",
            }[name]
    return ("shift (logits[:, :-1], labels[:, 1:]), flatten to (B*(T-1), V) and (B*(T-1),), then "
            "F.cross_entropy(..., ignore_index=-100).")


def check_shifted_cross_entropy(fn: Callable) -> ExerciseResult:
    """fn(logits (B, T, V), labels (B, T)) -> the shifted mean cross-entropy, ignoring -100 labels."""
    return run_cases(fn, shifted_cross_entropy, _ce_cases(), _diagnose_ce, "shifted cross-entropy")


# -- 2. the load-balancing loss ------------------------------------------------------------------

def _lb_cases():
    g = torch.Generator().manual_seed(5)
    out = []
    for label, (layers, n, e, k) in [("L=1, N=6, E=4, K=2", (1, 6, 4, 2)),
                                     ("L=3, N=10, E=8, K=2", (3, 10, 8, 2)),
                                     ("L=2, N=9, E=8, K=1", (2, 9, 8, 1)),
                                     ("L=2, N=12, E=4, K=3, peaked router", (2, 12, 4, 3))]:
        scale = 4.0 if "peaked" in label else 1.5
        logits = tuple(torch.randn(n, e, generator=g) * scale for _ in range(layers))
        out.append((label, (logits, e, k), {}))
    return out


def _reference_lb(gate_logits, num_experts, top_k):
    return load_balancing_loss_func(tuple(gate_logits), num_experts, top_k)


def _diagnose_lb(got, want, gate_logits, num_experts, top_k) -> str:
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        return "return one number (a 0-dim tensor): E * sum(f * P)."
    logits = torch.cat(list(gate_logits), dim=0)
    probs = logits.softmax(-1)
    if close(got, sum(g.sum() for g in gate_logits)):
        return ("that is the walkthrough's placeholder, the sum of the router logits. The real loss is "
                "E * sum_k sum_e f[k, e] * P[e]: f = share of tokens whose k-th choice is expert e, "
                "P = mean router probability of e.")
    if close(got, want / num_experts):
        return "multiply by the number of experts E at the end (so a perfectly even router gives K)."
    if close(got, want / top_k):
        return ("f keeps one row per top-k slot (K, E) and each row sums to 1; do not divide f by K "
                "(a perfectly even router must give K, not 1).")
    per_layer = torch.stack([load_balancing_loss_func((g,), num_experts, top_k) for g in gate_logits]).mean()
    if len(gate_logits) > 1 and close(got, per_layer):
        return ("concatenate the L layers' router logits into one (L*N, E) tensor first, then average: "
                "the mean of per-layer losses is not the same number.")
    top1 = F.one_hot(probs.argmax(-1), num_experts).float().mean(0)
    if top_k > 1 and close(got, num_experts * (top1 * probs.mean(0)).sum()):
        return "f must count all K choices of each token (torch.topk(probs, K)), not only the top one."
    wrong_p = logits.mean(0)
    f = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).float().mean(0)
    if close(got, num_experts * (f * wrong_p).sum()):
        return "P is the mean router PROBABILITY per expert: softmax the logits over the experts first."
    return ("softmax the (L*N, E) logits over experts; topk -> one-hot (L*N, K, E); f = its mean over tokens "
            "(K, E); P = mean probability (E,); return E * sum(f * P).")


def check_load_balancing_loss(fn: Callable) -> ExerciseResult:
    """fn(router_logits: tuple of L tensors (N, E), num_experts, top_k) -> the aux loss (no padding mask)."""
    return run_cases(fn, _reference_lb, _lb_cases(), _diagnose_lb, "load-balancing loss")


# -- 3. the order of the output tuple --------------------------------------------------------------

FLAGS = ("labels", "output_router_logits", "use_cache", "output_hidden_states", "output_attentions")
_TINY = None


def _tiny_model():
    """A minuscule random MixtralForCausalLM (built once): the reference runs it to read the fields."""
    global _TINY
    if _TINY is None:
        from ..modeling.causal_lm import MixtralForCausalLM
        from ..modeling.config import MixtralConfig
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        config = MixtralConfig(vocab_size=11, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                               num_experts_per_tok=1, max_position_embeddings=16, attn_implementation="eager")
        _TINY = MixtralForCausalLM(config).eval()
        torch.random.set_rng_state(state)
    return _TINY


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
    if not isinstance(got, (list, tuple)):
        return "return a list of field names such as ['logits', 'past_key_values']."
    got = list(got)
    if sorted(got) == sorted(want):
        return ("the right fields in the wrong order. The order is fixed: loss, aux_loss, logits, "
                "past_key_values, hidden_states, attentions, router_logits (leave out the absent ones).")
    missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"should not be there: {extra}")
    why = {"loss": "loss exists only when labels are given",
           "aux_loss": "aux_loss exists whenever output_router_logits=True, with or without labels",
           "past_key_values": "the cache is returned when use_cache=True",
           "hidden_states": "hidden_states come with output_hidden_states=True",
           "attentions": "attentions come with output_attentions=True",
           "router_logits": "router_logits come with output_router_logits=True"}
    notes = [why[n] for n in missing + extra if n in why]
    return "; ".join(parts) + (". Remember: " + "; ".join(notes) + "." if notes else ".")


def check_output_names(fn: Callable) -> ExerciseResult:
    """fn(labels, output_router_logits, use_cache, output_hidden_states, output_attentions) -> names in order."""
    return run_cases(fn, output_names, _names_cases(), _diagnose_names, "output order")
