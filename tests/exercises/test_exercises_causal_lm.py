"""Exercise checks of notebook 03: right answers pass, typical mistakes fail with a message naming them."""
import torch
import torch.nn.functional as F

from mixtral_edu.exercises import causal_lm as ex


def todo(*args, **kwargs):
    raise NotImplementedError("your code here")


# -- shifted cross-entropy ------------------------------------------------------------------

def good_ce(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100)


def test_ce_reference_is_the_models_loss(pair):
    ours, theirs = pair
    ids = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, :3] = -100
    with torch.no_grad():
        out = ours(ids, labels=labels)
        hf = theirs(ids, labels=labels)
    torch.testing.assert_close(ex.shifted_cross_entropy(out.logits, labels), out.loss)
    torch.testing.assert_close(ex.shifted_cross_entropy(out.logits, labels), hf.loss)


def test_ce_not_yet():
    r = ex.check_shifted_cross_entropy(todo)
    assert not r and "not yet" in r.message


def test_ce_passes():
    r = ex.check_shifted_cross_entropy(good_ce)
    assert r, r.message


def test_ce_mistakes():
    def no_shift(logits, labels):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def backwards(logits, labels):
        return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), labels[:, :-1].reshape(-1))

    def summed(logits, labels):
        v = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), reduction="sum")

    def per_token(logits, labels):
        v = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), reduction="none")

    def counts_ignored(logits, labels):
        v = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].clamp(min=0).reshape(-1))

    for fn, words in [(no_shift, "drop the LAST logit"), (backwards, "other way"), (summed, "mean"),
                      (per_token, "one number"), (counts_ignored, "-100")]:
        r = ex.check_shifted_cross_entropy(fn)
        assert not r and words in r.message, (fn.__name__, r.message)


# -- load-balancing loss -----------------------------------------------------------------------

def good_lb(gate_logits, num_experts, top_k):
    logits = torch.cat(gate_logits, dim=0)
    probs = logits.softmax(-1)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).float()
    return num_experts * (chosen.mean(0) * probs.mean(0)).sum()


def test_lb_passes_and_not_yet():
    assert ex.check_load_balancing_loss(good_lb)
    r = ex.check_load_balancing_loss(todo)
    assert not r and "not yet" in r.message


def test_lb_reference_is_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func as hf
    for _, (logits, e, k), _ in ex._lb_cases():
        torch.testing.assert_close(ex._reference_lb(logits, e, k), hf(logits, e, k))


def test_lb_mistakes():
    def walkthrough(gate_logits, num_experts, top_k):
        return sum(g.sum() for g in gate_logits)

    def no_e(gate_logits, num_experts, top_k):
        return good_lb(gate_logits, num_experts, top_k) / num_experts

    def per_layer(gate_logits, num_experts, top_k):
        return torch.stack([good_lb((g,), num_experts, top_k) for g in gate_logits]).mean()

    def logits_not_probs(gate_logits, num_experts, top_k):
        logits = torch.cat(gate_logits, dim=0)
        chosen = F.one_hot(logits.topk(top_k, dim=-1).indices, num_experts).float()
        return num_experts * (chosen.mean(0) * logits.mean(0)).sum()

    def top1(gate_logits, num_experts, top_k):
        probs = torch.cat(gate_logits, dim=0).softmax(-1)
        return num_experts * (F.one_hot(probs.argmax(-1), num_experts).float().mean(0) * probs.mean(0)).sum()

    for fn, words in [(walkthrough, "placeholder"), (no_e, "number of experts"), (per_layer, "concatenate"),
                      (logits_not_probs, "PROBABILITY"), (top1, "all K choices")]:
        r = ex.check_load_balancing_loss(fn)
        assert not r and words in r.message, (fn.__name__, r.message)


# -- output order ---------------------------------------------------------------------------------

def good_names(labels, output_router_logits, use_cache, output_hidden_states, output_attentions):
    flags = [labels, output_router_logits, True, use_cache, output_hidden_states, output_attentions,
             output_router_logits]
    names = ["loss", "aux_loss", "logits", "past_key_values", "hidden_states", "attentions", "router_logits"]
    return [n for n, f in zip(names, flags) if f]


def test_names_pass_and_match_transformers():
    assert ex.check_output_names(good_names)
    import transformers
    cfg = ex._tiny_model().config.to_dict()
    hf = transformers.MixtralForCausalLM(transformers.MixtralConfig(**cfg)).eval()
    ids = torch.tensor([[1, 2, 3]])
    for _, flags, _ in ex._names_cases():
        labels, router, cache, hidden, attn = flags
        with torch.no_grad():
            out = hf(ids, labels=ids if labels else None, output_router_logits=router, use_cache=cache,
                     output_hidden_states=hidden, output_attentions=attn, return_dict=True)
        assert list(out.keys()) == ex.output_names(*flags)


def test_names_mistakes():
    def loss_needs_router(labels, output_router_logits, *rest):
        names = good_names(labels, output_router_logits, *rest)
        return [n for n in names if n != "aux_loss" or labels]

    def wrong_order(*flags):
        names = good_names(*flags)
        return names[::-1]

    r = ex.check_output_names(loss_needs_router)
    assert not r and "aux_loss exists whenever" in r.message, r.message
    r = ex.check_output_names(wrong_order)
    assert not r and "wrong order" in r.message, r.message
