"""mixtral_edu.exercises.full_size: a correct answer passes; typical mistakes fail with a message naming them."""
from mixtral_edu.exercises import full_size


def count_ok(c, gqa=True, tied_aware=True, norms=True, router=True, active_mode="K"):
    C, I, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    H, Hkv, E, K = c.num_attention_heads, c.num_key_value_heads, c.num_local_experts, c.num_experts_per_tok
    D = C // H
    kv_heads = Hkv if gqa else H
    attention = C * H * D + 2 * C * kv_heads * D + H * D * C
    expert = 3 * C * I
    head = 0 if (c.tie_word_embeddings and tied_aware) else V * C
    per_layer_shared = attention + (C * E if router else 0) + (2 * C if norms else 0)
    total = V * C + head + (C if norms else 0) + L * (per_layer_shared + E * expert)
    if active_mode == "K":
        active = total - L * (E - K) * expert
    elif active_mode == "all":
        active = total
    else:  # "scaled"
        active = total * K / E
    return total, active


def kv_ok(c, n):
    return 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * n


def test_correct_answers_pass():
    assert full_size.check_parameter_count(count_ok)
    assert full_size.check_kv_bytes_per_token(kv_ok)


def test_not_yet():
    def nope(*a):
        raise NotImplementedError("your code here")
    assert "not yet" in full_size.check_parameter_count(nope).message
    assert "not yet" in full_size.check_kv_bytes_per_token(nope).message


def test_parameter_mistakes_are_named():
    cases = [
        (dict(gqa=False), "Hkv"),
        (dict(norms=False), "RMSNorm"),
        (dict(router=False), "router"),
        (dict(active_mode="all"), "K chosen experts"),
        (dict(active_mode="scaled"), "only the experts are sparse"),
    ]
    for kw, words in cases:
        r = full_size.check_parameter_count(lambda c, kw=kw: count_ok(c, **kw))
        assert not r and words in r.message, (kw, r.message)


def test_tied_embeddings_mistake():
    r = full_size.check_parameter_count(lambda c: count_ok(c, tied_aware=False))
    assert not r and "tied" in r.message and "lm_head" in r.message


def test_kv_mistakes_are_named():
    r = full_size.check_kv_bytes_per_token(lambda c, n: kv_ok(c, n) * c.num_attention_heads // c.num_key_value_heads)
    assert not r and "num_key_value_heads" in r.message
    r = full_size.check_kv_bytes_per_token(lambda c, n: kv_ok(c, n) // 2)
    assert not r and "factor 2" in r.message
    r = full_size.check_kv_bytes_per_token(lambda c, n: kv_ok(c, n) // c.num_hidden_layers)
    assert not r and "layers" in r.message
    r = full_size.check_kv_bytes_per_token(lambda c, n: kv_ok(c, n) * 8)
    assert not r and "bits" in r.message
    r = full_size.check_kv_bytes_per_token(lambda c, n: "lots")
    assert not r and "int" in r.message
