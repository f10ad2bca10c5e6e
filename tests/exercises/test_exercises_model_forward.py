"""The references of notebook 04's exercises are transformers' behaviour (the wrong answers are in
tests/exercises/test_mutations_04_model_forward.py)."""
import torch
from transformers.modeling_attn_mask_utils import (_prepare_4d_causal_attention_mask,
                                                   _prepare_4d_causal_attention_mask_for_sdpa)

from mixtral_edu.exercises import model_forward as ex, same


def test_sdpa_predictions_reference_is_transformers():
    for name, (mask, t, p, w) in ex.sdpa_cases().items():
        theirs = _prepare_4d_causal_attention_mask_for_sdpa(mask, (1, t), torch.empty(1, t, 1), p, sliding_window=w)
        assert ex.sdpa_builds_mask(mask, t, p, w) == (theirs is not None), name


def test_sdpa_cases_show_a_mask_built_for_a_window_that_hides_nothing():
    """S = W and S = W + 1: every key visible (W + 1 keys), yet 4.41.2 builds the mask (it needs S < W)."""
    for name, (mask, t, p, w) in ex.sdpa_cases().items():
        if w is not None and t + p <= w + 1:
            assert torch.equal(ex.build_4d_mask(mask, t, p, w), ex.build_4d_mask(mask, t, p)), name   # hides nothing
            assert ex.sdpa_builds_mask(mask, t, p, w) == (t + p >= w), name


def test_mask_reference_is_transformers():
    for _, args, kwargs in ex.mask_cases():
        mask, t = args[0], args[1]
        p = args[2] if len(args) > 2 else 0
        w = args[3] if len(args) > 3 else None
        embeds = torch.empty(mask.shape[0], t, 1, dtype=kwargs.get("dtype", torch.float32))
        theirs = _prepare_4d_causal_attention_mask(mask, (mask.shape[0], t), embeds, p, sliding_window=w)
        assert torch.equal(ex.build_4d_mask(*args, **kwargs), theirs)


def test_named_outputs_reference_names_the_real_tuples(pair):
    """For each flag setting, the reference names the entries of both models' return_dict=False tuples
    exactly as their return_dict=True outputs do."""
    ours, theirs = pair
    ids = torch.randint(4, 90, (2, 5), generator=torch.Generator().manual_seed(0))
    for _, *flags in ex.FLAG_CASES:
        kw = dict(zip(("use_cache", "output_hidden_states", "output_attentions", "output_router_logits"), flags))
        for model in (ours.model, theirs.model):
            with torch.no_grad():
                named = ex.named_outputs(model(ids, return_dict=False, **kw), *flags)
                full = model(ids, return_dict=True, **kw)
            for name, value in named.items():
                want = getattr(full, name)
                if isinstance(want, tuple) and want and isinstance(want[0], tuple):   # the legacy cache
                    want = tuple(tuple(x) for x in want)
                assert (value is None) == (want is None), (name, flags)
                if value is not None:
                    assert same(value, want, atol=1e-6), (name, flags)
