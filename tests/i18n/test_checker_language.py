"""The exercise checkers follow mixtral_edu.set_language: a NOT YET in Chinese has no English sentence left,
and in English it is exactly what it was (the same text before and after a switch to Chinese and back).

One typical wrong answer per chapter, each caught with the hint that names its mistake (a module constant),
so the check covers the chapter's own sentences, its case labels and the shared framework's words
(case, shapes, values, "Hint:"). Chapter 12's capstone verdict is checked the same way.
"""
from __future__ import annotations

import re

import pytest
import torch

import mixtral_edu
from mixtral_edu import i18n

CJK = re.compile(r"[\u4e00-\u9fff]")
# Two English words in a row, once code spans, identifiers (a_b, a.b), tags and the words the Chinese
# text keeps on purpose (token, pad, query, key, batch, KV cache: see docs/locale/zh_CN/terms.tsv) are gone.
ENGLISH = re.compile(r"\b(?!KV\b)[A-Za-z]{2,} (?!cache\b)[a-z]{2,}\b")
KEPT = re.compile(r"\b(token|tokens|pad|pads|query|queries|key|keys|batch|value|values|id|ids)\b")


def english_left(text: str) -> list:
    out = []
    for line in text.splitlines():
        line = re.sub(r"`[^`]*`|<[^>]+>|\w*[_.]\w*", " ", line)
        line = KEPT.sub(" ", line)
        out += ENGLISH.findall(line)
    return out


@pytest.fixture(autouse=True)
def english_after():
    yield
    mixtral_edu.set_language("en")


# -- one wrong answer per chapter: (chapter, run the check, the module and the name of its expected hint) -----

def _right_padding(sequences, pad_id):
    T = max(len(s) for s in sequences)
    ids = torch.tensor([list(s) + [pad_id] * (T - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences])
    return ids, mask


def _fixed_positions(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    from mixtral_edu.exercises.model_forward import NAMES
    return dict(zip(NAMES, list(outputs) + [None] * (len(NAMES) - len(outputs))))


def _rms_norm_without_eps(x, weight, eps):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True))).to(x.dtype)


def _half_kv_cache_bytes(config, n_tokens, batch_size, bytes_per_element):
    return (n_tokens * batch_size * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
            * bytes_per_element)


def _sliding_visible_441(q_len, past_len, sliding_window):
    from mixtral_edu.modeling.masks import causal_visibility
    return causal_visibility(q_len, past_len, sliding_window)   # 4.41.2's rule: W + 1 keys


def _case(chapter):
    """(the check's result, the hint constant it must show) for the chapter's wrong answer."""
    from mixtral_edu.exercises import (full_size, decoder_layer, model_forward, orientation, prepare_inputs,
                                       sampling, then_and_now, training)
    cases = {
        "00": lambda: (orientation.check_left_pad(_right_padding), orientation.PAD_RIGHT),
        "02": lambda: (prepare_inputs.check_unprocessed_ids(lambda ids, past_length, mask: ids),
                       prepare_inputs.IDS_BRANCH2),
        "04": lambda: (model_forward.check_named_outputs(_fixed_positions), model_forward.MSG["out_stub"]),
        "05": lambda: (decoder_layer.check_rms_norm(_rms_norm_without_eps), decoder_layer.MSG["rms_no_eps"]),
        "08": lambda: (sampling.check_temperature(lambda scores, temperature: scores * temperature),
                       sampling.TEMPERATURE_HINTS["multiply"]),
        "09": lambda: (training.check_lr_schedule(lambda step, recipe: recipe.lr), training.SCHEDULE_HINTS["no_warmup"]),
        "10": lambda: (full_size.check_kv_cache_bytes(_half_kv_cache_bytes), full_size.KV_HINTS["half"]),
        "11": lambda: (then_and_now.check_sliding_visible(_sliding_visible_441), then_and_now.HINT_W_PLUS_ONE),
    }
    return cases[chapter]()


CHAPTERS = ["00", "02", "04", "05", "08", "09", "10", "11"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_not_yet_follows_the_language(chapter):
    assert mixtral_edu.get_language() == "en"
    english, hint = _case(chapter)
    assert not english and repr(english).startswith("NOT YET") and hint in english.message
    assert not CJK.search(repr(english) + english._repr_html_())

    mixtral_edu.set_language("zh_CN")
    chinese, _hint = _case(chapter)
    text = repr(chinese)
    assert not chinese, text
    assert text.startswith("尚未完成"), text
    assert "\n提示：" + i18n.gettext(hint) in text, text          # the hint naming the mistake, translated
    assert i18n.gettext(hint) != hint, f"no translation of {hint!r}"
    assert not english_left(text), f"English left in {text!r}: {english_left(text)}"
    assert "尚未完成" in chinese._repr_html_() and "NOT YET" not in chinese._repr_html_()

    mixtral_edu.set_language("en")
    again, _hint = _case(chapter)
    assert repr(again) == repr(english) and again._repr_html_() == english._repr_html_()


def test_the_stub_and_a_wrong_call_in_chinese():
    """The framework's own sentences: a stub still raising NotImplementedError, a function that is not passed."""
    from mixtral_edu.exercises import orientation

    def left_pad(sequences, pad_id):
        raise NotImplementedError

    english = [repr(orientation.check_left_pad(left_pad)), repr(orientation.check_left_pad("left_pad"))]
    mixtral_edu.set_language("zh_CN")
    chinese = [repr(orientation.check_left_pad(left_pad)), repr(orientation.check_left_pad("left_pad"))]
    for text in chinese:
        assert text.startswith("尚未完成：") and "\n提示：" in text, text
        assert not english_left(text), text
    assert "`left_pad`" in chinese[0] and "`check_left_pad(left_pad)`" in chinese[1]
    mixtral_edu.set_language("en")
    assert [repr(orientation.check_left_pad(left_pad)), repr(orientation.check_left_pad("left_pad"))] == english


def test_the_capstone_verdict_follows_the_language():
    from mixtral_edu.build import chapter

    def verdict():
        return chapter.Verdict("rms_norm", 2, False, [1, 3], 0.5, 0.2, (6, 12))

    english = (repr(verdict()), verdict()._repr_html_())
    assert english[0].startswith("NOT YET: `rms_norm`: the generated tokens differ")
    mixtral_edu.set_language("zh_CN")
    text = repr(verdict())
    assert text.startswith("尚未完成：`rms_norm`："), text
    assert i18n.gettext(chapter.M_FAIL_TOKENS).format(rows=[1, 3]) in text
    assert not english_left(text), text
    assert "尚未完成" in verdict()._repr_html_()
    mixtral_edu.set_language("en")
    assert (repr(verdict()), verdict()._repr_html_()) == english
