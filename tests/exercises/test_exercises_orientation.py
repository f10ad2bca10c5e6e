"""mixtral_edu.exercises.orientation: a correct answer passes; typical mistakes fail with a message naming them."""
import torch

from mixtral_edu.full_size import sizes
from mixtral_edu.exercises import orientation as ex


def not_written(*args):
    raise NotImplementedError("your code here")


# -- left_pad ---------------------------------------------------------------------------------------------


def left_pad_ok(sequences, pad_id):
    T = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (T - len(s)) + list(s) for s in sequences])
    mask = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in sequences])
    return ids, mask


def test_left_pad_correct_answer_passes():
    assert ex.check_left_pad(left_pad_ok)


def test_left_pad_not_yet():
    r = ex.check_left_pad(not_written)
    assert not r and "not yet" in r.message and "left_pad" in r.message


def test_left_pad_right_padding():
    def wrong(sequences, pad_id):
        T = max(len(s) for s in sequences)
        ids = torch.tensor([list(s) + [pad_id] * (T - len(s)) for s in sequences])
        mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences])
        return ids, mask
    r = ex.check_left_pad(wrong)
    assert not r and "right padding" in r.message and "LEFT" in r.message


def test_left_pad_inverted_mask():
    r = ex.check_left_pad(lambda s, p: (left_pad_ok(s, p)[0], 1 - left_pad_ok(s, p)[1]))
    assert not r and "inverted" in r.message


def test_left_pad_float_mask():
    r = ex.check_left_pad(lambda s, p: (left_pad_ok(s, p)[0], left_pad_ok(s, p)[1].float()))
    assert not r and "dtype" in r.message


def test_left_pad_ignores_pad_id():
    r = ex.check_left_pad(lambda s, p: left_pad_ok(s, 3))
    assert not r and "another pad id" in r.message


# -- active_parameters ----------------------------------------------------------------------------------


def active_ok(config):
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    E, K = config.num_local_experts, config.num_experts_per_tok
    attention = C * H * D + 2 * C * Hkv * D + H * D * C
    per_layer = attention + C * E + K * 3 * C * I + 2 * C
    head = 0 if config.tie_word_embeddings else V * C
    return V * C + head + L * per_layer + C


def test_active_parameters_correct_answer_passes():
    assert ex.check_active_parameters(active_ok)


def test_active_parameters_not_yet():
    r = ex.check_active_parameters(not_written)
    assert not r and "not yet" in r.message


def test_active_parameters_total_instead():
    r = ex.check_active_parameters(lambda c: sizes.parameter_count(c).total)
    assert not r and "that is the total" in r.message


def test_active_parameters_forgets_router():
    r = ex.check_active_parameters(lambda c: active_ok(c) - c.num_hidden_layers * c.hidden_size * c.num_local_experts)
    assert not r and "router" in r.message


def test_active_parameters_kv_heads_as_query_heads():
    def wrong(c):
        D = c.hidden_size // c.num_attention_heads
        return active_ok(c) + 2 * c.num_hidden_layers * c.hidden_size * D * (c.num_attention_heads - c.num_key_value_heads)
    r = ex.check_active_parameters(wrong)
    assert not r and "Hkv" in r.message


def test_active_parameters_tied_head_counted_twice():
    def wrong(c):
        return active_ok(c) + (c.vocab_size * c.hidden_size if c.tie_word_embeddings else 0)
    r = ex.check_active_parameters(wrong)
    assert not r and "tied" in r.message and "once" in r.message
