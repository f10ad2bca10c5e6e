"""mixtral_edu.exercises.sampling: a correct answer passes; typical mistakes fail with a message naming them."""
import torch

from mixtral_edu.exercises import sampling

INF = -float("inf")


def temperature_ok(scores, temperature):
    return scores / temperature


def top_p_ok(scores, top_p):
    """Best-first formulation: keep tokens until the total reaches top_p (the crossing one included)."""
    probs, idx = torch.sort(scores.softmax(-1), descending=True)
    before = probs.cumsum(-1) - probs           # mass of the better tokens
    drop_sorted = before >= top_p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, idx, drop_sorted)
    return scores.masked_fill(drop, INF)


def top_p_transformers_style(scores, top_p):
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= 1 - top_p
    remove[:, -1] = False
    return scores.masked_fill(remove.scatter(1, sorted_idx, remove), INF)


def test_correct_answers_pass():
    assert sampling.check_temperature(temperature_ok)
    assert sampling.check_top_p(top_p_ok)
    assert sampling.check_top_p(top_p_transformers_style)


def test_not_yet():
    def nope(scores, x):
        raise NotImplementedError("your code here")
    for check in (sampling.check_temperature, sampling.check_top_p):
        r = check(nope)
        assert not r and "not yet" in r.message


def test_temperature_mistakes():
    r = sampling.check_temperature(lambda s, t: s * t)
    assert not r and "Divide" in r.message
    r = sampling.check_temperature(lambda s, t: torch.softmax(s / t, -1))
    assert not r and "probabilities" in r.message
    r = sampling.check_temperature(lambda s, t: s / t + 1)
    assert not r and "differ" in r.message


def test_top_p_drops_the_crossing_token():
    def f(scores, top_p):
        probs, idx = torch.sort(scores.softmax(-1), descending=True)
        drop_sorted = probs.cumsum(-1) > top_p
        return scores.masked_fill(drop_sorted.scatter(1, idx, drop_sorted), INF)
    r = sampling.check_top_p(f)
    assert not r and "cross top_p" in r.message


def test_top_p_sorted_output():
    def f(scores, top_p):
        return top_p_ok(torch.sort(scores, descending=True).values, top_p)
    r = sampling.check_top_p(f)
    assert not r and "Scatter" in r.message


def test_top_p_on_logits():
    def f(scores, top_p):
        desc, idx = torch.sort(scores, descending=True)
        cum = desc.cumsum(-1)
        drop = torch.zeros_like(cum, dtype=torch.bool)
        drop[:, 1:] = cum[:, :-1] >= top_p
        return scores.masked_fill(drop.scatter(1, idx, drop), INF)
    r = sampling.check_top_p(f)
    assert not r and "probabilities" in r.message


def test_top_p_inverted_and_zero_fill_and_renormalised():
    r = sampling.check_top_p(lambda s, p: s.masked_fill(torch.isfinite(top_p_ok(s, p)), INF))
    assert not r and "nucleus" in r.message
    r = sampling.check_top_p(lambda s, p: s.masked_fill(~torch.isfinite(top_p_ok(s, p)), 0.0))
    assert not r and "-inf" in r.message
    r = sampling.check_top_p(lambda s, p: top_p_ok(s, p) * 2)
    assert not r and "scores changed" in r.message
    r = sampling.check_top_p(lambda s, p: s)
    assert not r and "nothing was dropped" in r.message


def test_right_values_wrong_dtype():
    r = sampling.check_temperature(lambda s, t: temperature_ok(s, t).double())
    assert not r and "dtype torch.float64, expected torch.float32" in r.message, r.message
    r = sampling.check_top_p(lambda s, p: top_p_ok(s, p).double())
    assert not r and "dtype torch.float64, expected torch.float32" in r.message, r.message
