"""The teaching forwards read beside transformers 4.41.2's: the same statements in the same order.

Each function is reduced to its outline (what every statement assigns, or its kind, nested as
in the source). Ours may add hook points only as lines of their own, `x = self.hook_y(x)`;
with those left out the outlines must be equal. transformers' source is read live with
inspect (it is the oracle here, never copied). Not listed, on purpose: MixtralModel.forward
and MixtralForCausalLM.forward (ours add the checks of the caller's input where it enters and
the aux-loss mask fix for transformers#30731, and have no flash-attention branches), and
load_balancing_loss_func (ours drops a repeated isinstance check after its early return).
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from typing import List

import pytest
from transformers.models.mixtral import modeling_mixtral as hf

from mixtral_edu.modeling import attention, causal_lm, decoder, moe, rotary


def _hook_line(stmt: ast.stmt) -> bool:
    """`x = self.hook_y(x)`: a hook point on a tensor that is already there."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return False
    v = stmt.value
    return (isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr.startswith("hook_")
            and isinstance(v.func.value, ast.Name) and v.func.value.id == "self" and len(v.args) == 1
            and isinstance(v.args[0], ast.Name) and v.args[0].id == stmt.targets[0].id)


def _logging(stmt: ast.stmt) -> bool:
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "logger")


def _names(target: ast.expr) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple):
        return [n for e in target.elts for n in _names(e)]
    return [ast.unparse(target)]


def outline(fn) -> List[str]:
    """One line per statement: '= a,b' for an assignment (plain, augmented or annotated), else its kind."""
    body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].body
    lines: List[str] = []

    def visit(stmts, depth):
        for s in stmts:
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
                continue  # docstring
            if _logging(s) or _hook_line(s):
                continue  # transformers' log lines; our hook points
            if isinstance(s, ast.Assign):
                what = "= " + ",".join(n for t in s.targets for n in _names(t))
            elif isinstance(s, (ast.AugAssign, ast.AnnAssign)):
                what = "= " + ",".join(_names(s.target))
            else:
                what = type(s).__name__
            lines.append("  " * depth + what)
            for part in ("body", "orelse"):
                if isinstance(getattr(s, part, None), list):
                    visit(getattr(s, part), depth + 1)

    visit(body, 0)
    return lines


PAIRS = {
    "MixtralAttention.forward": (hf.MixtralAttention.forward, attention.MixtralAttention.forward),
    "MixtralSdpaAttention.forward": (hf.MixtralSdpaAttention.forward, attention.MixtralSdpaAttention.forward),
    "repeat_kv": (hf.repeat_kv, attention.repeat_kv),
    "rotate_half": (hf.rotate_half, rotary.rotate_half),
    "apply_rotary_pos_emb": (hf.apply_rotary_pos_emb, rotary.apply_rotary_pos_emb),
    "MixtralSparseMoeBlock.forward": (hf.MixtralSparseMoeBlock.forward, moe.MixtralSparseMoeBlock.forward),
    "MixtralBlockSparseTop2MLP.forward": (hf.MixtralBlockSparseTop2MLP.forward,
                                          moe.MixtralBlockSparseTop2MLP.forward),
    "MixtralRMSNorm.forward": (hf.MixtralRMSNorm.forward, decoder.MixtralRMSNorm.forward),
    "MixtralDecoderLayer.forward": (hf.MixtralDecoderLayer.forward, decoder.MixtralDecoderLayer.forward),
    "MixtralForCausalLM.prepare_inputs_for_generation": (hf.MixtralForCausalLM.prepare_inputs_for_generation,
                                                         causal_lm.MixtralForCausalLM.prepare_inputs_for_generation),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_same_statements_in_the_same_order(name):
    theirs, ours = PAIRS[name]
    assert outline(ours) == outline(theirs)


def test_the_outline_sees_a_difference():
    # a forward cut into helpers (what attention was before) does not pass for transformers'
    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None,
                output_attentions=False, use_cache=False):
        q, k, v, kv_seq_len = self._project(hidden_states, position_ids, past_key_value)
        return self._merge_heads(q), None, past_key_value
    assert outline(forward) != outline(hf.MixtralAttention.forward)
    assert outline(forward) == ["= q,k,v,kv_seq_len", "Return"]
