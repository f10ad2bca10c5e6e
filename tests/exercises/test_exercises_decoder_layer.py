"""The references of notebook 05's exercises are transformers' behaviour and the model's own logits
(the wrong answers are in tests/exercises/test_mutations_05_decoder_layer.py)."""
import torch
import transformers
from transformers.models.mixtral.modeling_mixtral import MixtralDecoderLayer as HFLayer
from transformers.models.mixtral.modeling_mixtral import MixtralRMSNorm as HFNorm

from mixtral_edu.exercises import decoder_layer as ex


def test_rms_reference_is_transformers_and_eps_varies():
    for _, (x, w, eps), _ in ex.rms_cases():
        hf = HFNorm(x.shape[-1], eps=eps).to(w.dtype)
        with torch.no_grad():
            hf.weight.copy_(w)
            assert torch.equal(hf(x), ex.rms_norm(x, w, eps))
    assert len({eps for _, (_, _, eps), _ in ex.rms_cases()}) >= 3   # a number written into the code fails


def test_layer_reference_is_transformers():
    for _, (layer, x, mask, pos), _ in ex.layer_cases():
        cfg = transformers.MixtralConfig(**{k: v for k, v in layer.self_attn.config.to_dict().items()
                                            if k != "attn_implementation"})
        cfg._attn_implementation = "eager"
        hf = HFLayer(cfg, 0).eval()
        hf.load_state_dict(layer.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(hf(x, attention_mask=mask, position_ids=pos)[0], ex.reference_decoder_layer(layer, x, mask, pos))


def test_contributions_reference_adds_up_to_the_logit():
    for _, seed, b, t, target in ex.DLA_CASES:
        model = ex._model(seed)
        logits, acts = ex._acts(model, seed)
        parts = ex.logit_contributions(model, acts, b, t, target)
        assert parts.shape == (2 * model.config.num_hidden_layers + 1,)
        torch.testing.assert_close(parts.sum(), logits[b, t, target], atol=1e-5, rtol=1e-5)
