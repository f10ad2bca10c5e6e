"""The table of bad inputs: what a user might type, and the error (or warning) that answers it.

One row (`Case`) per mistake: the area, what went wrong, the code (run with the names of
`namespace()`), what it must produce (an exception class, a warning class, or NOT_YET for an
exercise checker, which never raises), the words the message must contain (the argument, the
valid range or type, the fix) and, when we refuse something transformers accepts, why.

tests/test_bad_inputs.py runs every row; the docs page "When something goes wrong"
(docs/troubleshooting.md) is built from the same rows by docs/_ext/mixtral_site.py, with the
messages as they come out at build time.
"""
from __future__ import annotations

import ast
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict, NamedTuple, Tuple

NOT_YET = "NOT YET"

AREAS = {
    "config": "Model config",
    "checkpoint": "Loading and saving checkpoints",
    "generate": "generate",
    "forward": "The forward pass",
    "tokenizer": "Tokenizer",
    "trace": "Traces and hooks",
    "views": "Views (figures)",
    "sizes": "Sizes of the full-size models",
    "exercises": "Exercise checkers",
}


class Case(NamedTuple):
    area: str
    problem: str              # what went wrong, in a few words
    code: str                 # what the user typed (the names come from namespace())
    expect: Any               # an exception or warning class, or NOT_YET
    names: Tuple[str, ...]    # the message must contain each of these
    stricter: str = ""        # why we refuse what transformers 4.41.2 accepts ("" if we do not)


def _cases():
    from mixtral_edu.modeling.checkpoint import CheckpointMismatchError, SharedTensorsError
    from mixtral_edu.observe.capture import EagerOnlyError
    C = Case
    return [
        # -- config -------------------------------------------------------------------------------------
        C("config", "a bool as the sliding window", "MixtralConfig(sliding_window=True)",
          TypeError, ("sliding_window", "positive integer", "bool")),
        C("config", "a number written as a string", 'MixtralConfig(rms_norm_eps="1e-5")',
          TypeError, ("rms_norm_eps", "number", "no quotes", "1e-05")),
        C("config", "None where a number is needed", "MixtralConfig(rope_theta=None)",
          TypeError, ("rope_theta", "number", "None")),
        C("config", "a token id written as a string", 'MixtralConfig(eos_token_id="2")',
          TypeError, ("eos_token_id", "token id", "no quotes")),
        C("config", "a misspelt field name", "MixtralConfig(num_experts=8)",
          ValueError, ("num_experts", "num_local_experts", "stricter than transformers"),
          "transformers keeps unknown keys as attributes, so a typo goes unnoticed and the default is used"),
        C("config", "a float where a count is needed", "MixtralConfig(vocab_size=32000.0)",
          TypeError, ("vocab_size", "positive integer")),
        C("config", "zero layers", "MixtralConfig(num_hidden_layers=0)",
          ValueError, ("num_hidden_layers", "positive integer")),
        C("config", "heads that do not divide the hidden size", "MixtralConfig(hidden_size=30, num_attention_heads=4)",
          ValueError, ("hidden_size", "num_attention_heads", "divisible")),
        C("config", "query heads that kv heads cannot share evenly", "MixtralConfig(num_key_value_heads=3)",
          ValueError, ("num_attention_heads", "num_key_value_heads", "divisible")),
        C("config", "more experts per token than experts", "MixtralConfig(num_experts_per_tok=9)",
          ValueError, ("num_experts_per_tok", "num_local_experts")),
        C("config", "another activation", 'MixtralConfig(hidden_act="gelu")',
          ValueError, ("hidden_act", "silu")),
        C("config", "an attention kind we do not have", 'MixtralConfig(attn_implementation="flash_attention_2")',
          ValueError, ("attn_implementation", "eager", "sdpa")),
        C("config", "a token id outside the vocabulary", "MixtralConfig(vocab_size=100, eos_token_id=100)",
          ValueError, ("eos_token_id", "vocab_size=100")),
        C("config", "a string where True/False is needed", 'MixtralConfig(use_cache="false")',
          TypeError, ("use_cache", "True or False", "stricter than transformers"),
          "transformers stores any value, and the string 'false' counts as true"),
        C("config", "a dropout that is not a probability", "MixtralConfig(attention_dropout=1.5)",
          ValueError, ("attention_dropout", "[0, 1)")),
        C("config", "a zero sliding window", "MixtralConfig(sliding_window=0)",
          ValueError, ("sliding_window", "positive integer", "None")),
        C("config", "a negative RoPE base", "MixtralConfig(rope_theta=-1.0)",
          ValueError, ("rope_theta", "> 0")),
        C("config", "NaN in the config", 'MixtralConfig(router_aux_loss_coef=float("nan"))',
          ValueError, ("router_aux_loss_coef", "finite")),
        C("config", "another model's config.json", 'MixtralConfig.from_dict({"model_type": "llama"})',
          ValueError, ("model_type", "llama", "mixtral")),
        C("config", "an unknown attention kind set later", 'cfg.attn_implementation = "flex"',
          ValueError, ("attn_implementation", "eager", "sdpa")),
        C("config", "RoPE scaling", 'MixtralConfig.from_dict({"rope_scaling": {"type": "linear", "factor": 2.0}})',
          ValueError, ("RoPE scaling", "plain RoPE")),

        # -- checkpoints --------------------------------------------------------------------------------
        C("checkpoint", "a shard size that is not a size", 'model.save_pretrained(folder, max_shard_size="5 megabytes")',
          ValueError, ("max_shard_size", "5 megabytes", "'5GB'")),
        C("checkpoint", "a shard size of zero", "model.save_pretrained(folder, max_shard_size=0)",
          ValueError, ("max_shard_size", "positive")),
        C("checkpoint", "a bool as the shard size", "model.save_pretrained(folder, max_shard_size=True)",
          TypeError, ("max_shard_size", "'5GB'")),
        C("checkpoint", "weights tied by hand",
          "m = new_model()\nm.lm_head.weight = m.model.embed_tokens.weight\nm.save_pretrained(folder)",
          SharedTensorsError, ("lm_head.weight", "tie_word_embeddings = True", "stricter than transformers"),
          "transformers saves such a model without lm_head.weight, and a load then fills it with random values"),
        C("checkpoint", "weights of two experts shared by hand",
          "m = new_model()\nexperts = m.model.layers[0].block_sparse_moe.experts\n"
          "experts[1].w1.weight = experts[0].w1.weight\nm.save_pretrained(folder)",
          SharedTensorsError, ("experts.0.w1.weight", "experts.1.w1.weight", "clone()")),
        C("checkpoint", "a file where the folder should be", "model.save_pretrained(a_file)",
          NotADirectoryError, ("is a file", "folder")),
        C("checkpoint", "a folder that does not exist", 'MixtralForCausalLM.from_pretrained("no/such/folder")',
          FileNotFoundError, ("no/such/folder", "not a directory")),
        C("checkpoint", "a folder without config.json", "MixtralForCausalLM.from_pretrained(empty_folder())",
          FileNotFoundError, ("config.json", "save_pretrained")),
        C("checkpoint", "a config.json that is not JSON",
          "d = saved_folder()\nwrite(f\"{d}/config.json\", '{\"vocab_size\": 97,, }')\n"
          "MixtralForCausalLM.from_pretrained(d)",
          ValueError, ("config.json", "not valid JSON", "line 1")),
        C("checkpoint", "a config.json holding a list",
          "d = saved_folder()\nwrite(f\"{d}/config.json\", '[1, 2]')\nMixtralForCausalLM.from_pretrained(d)",
          ValueError, ("config.json", "JSON object")),
        C("checkpoint", "an unknown dtype name", 'MixtralForCausalLM.from_pretrained(folder, torch_dtype="float33")',
          ValueError, ("torch_dtype", "float33", "'auto'", "bfloat16")),
        C("checkpoint", "an integer dtype", "MixtralForCausalLM.from_pretrained(folder, torch_dtype=torch.int8)",
          ValueError, ("torch_dtype", "'auto'")),
        C("checkpoint", "a folder holding only a pickle",
          "d = empty_folder()\nwrite(f\"{d}/pytorch_model.bin\", 'x')\nmodel.config.save_pretrained(d)\n"
          "MixtralForCausalLM.from_pretrained(d)",
          FileNotFoundError, ("pytorch_model.bin", "pickle", "safetensors")),
        C("checkpoint", "a config that does not fit the weights",
          "MixtralForCausalLM.from_pretrained(folder, num_hidden_layers=3)",
          CheckpointMismatchError, ("missing", "model.layers.2", "config.json")),
        C("checkpoint", "an index naming a shard that is gone",
          "d = saved_folder(max_shard_size=\"30KB\")\n"
          "shard = sorted(n for n in os.listdir(d) if n.startswith(\"model-\"))[1]\n"
          "os.remove(f\"{d}/{shard}\")\nMixtralForCausalLM.from_pretrained(d)",
          FileNotFoundError, ("index lists shard", "-of-0000", "not in")),
        C("checkpoint", "a generation_config.json with a string count",
          "d = saved_folder()\nwrite(f\"{d}/generation_config.json\", '{\"max_new_tokens\": \"32\"}')\n"
          "MixtralForCausalLM.from_pretrained(d)",
          TypeError, ("generation_config.json", "max_new_tokens", "integer")),
        C("checkpoint", "a misspelt config override", "MixtralForCausalLM.from_pretrained(folder, num_expert=8)",
          ValueError, ("num_expert", "num_local_experts")),
        C("checkpoint", "something that is not a path", "MixtralForCausalLM.from_pretrained(123)",
          TypeError, ("folder path", "int")),

        # -- generate -----------------------------------------------------------------------------------
        C("generate", "a list instead of a tensor", "model.generate([[5, 6, 7]])",
          TypeError, ("input_ids", "LongTensor", "return_tensors='pt'")),
        C("generate", "one prompt without the batch dimension", "model.generate(ids[0])",
          ValueError, ("input_ids", "(batch, seq_len)", "input_ids[None]")),
        C("generate", "int32 token ids", "model.generate(ids.int())",
          TypeError, ("int64", "torch.int32", ".long()", "stricter than transformers"),
          "transformers accepts int32 ids and appends int64 tokens to them; we ask for one dtype"),
        C("generate", "float token ids", "model.generate(ids.float())",
          TypeError, ("input_ids", "int64", "torch.float32")),
        C("generate", "an empty prompt", "model.generate(ids[:, :0])",
          ValueError, ("input_ids", "empty", "bos")),
        C("generate", "a negative number of new tokens", "model.generate(ids, max_new_tokens=-1)",
          ValueError, ("max_new_tokens", ">= 0")),
        C("generate", "a count written as a string", 'model.generate(ids, max_new_tokens="5")',
          TypeError, ("max_new_tokens", "integer")),
        C("generate", "max_length shorter than the prompt", "model.generate(ids, max_length=3)",
          ValueError, ("max_length", "5 tokens", "max_new_tokens")),
        C("generate", "zero new tokens", "model.generate(ids, max_new_tokens=0)",
          ValueError, ("max_new_tokens", "nothing would be generated")),
        C("generate", "temperature 0 for greedy decoding", "model.generate(ids, do_sample=True, temperature=0)",
          ValueError, ("temperature", "do_sample=False")),
        C("generate", "top_p = 0", "model.generate(ids, do_sample=True, top_p=0)",
          ValueError, ("top_p", "(0, 1]", "do_sample=False", "stricter than transformers"),
          "transformers accepts top_p=0 and then keeps only the best token: that is greedy decoding in disguise"),
        C("generate", "top_p above 1", "model.generate(ids, do_sample=True, top_p=1.5)",
          ValueError, ("top_p", "(0, 1]", "1.5", "stricter than transformers"),
          "transformers silently ignores a top_p above 1 (it adds no top-p step)"),
        C("generate", "a negative top_k", "model.generate(ids, do_sample=True, top_k=-3)",
          ValueError, ("top_k", "positive integer", "None")),
        C("generate", "a string for a switch", 'model.generate(ids, do_sample="yes")',
          TypeError, ("do_sample", "True or False")),
        C("generate", "a mask of another shape", "model.generate(ids, attention_mask=torch.ones(1, 3))",
          ValueError, ("attention_mask", "(1, 3)", "input_ids", "(1, 5)")),
        C("generate", "a batch row whose mask is all zeros", "model.generate(ids2, attention_mask=mask_with_empty_row)",
          UserWarning, ("attention_mask rows [1]", "all zeros", "at least one token")),
        C("generate", "generating past max_position_embeddings",
          "model.generate(ids, max_new_tokens=64, eos_token_id=None)",
          UserWarning, ("max_position_embeddings=64", "shorter prompt")),
        C("generate", "an eos id written as a string", 'model.generate(ids, eos_token_id="2")',
          TypeError, ("eos_token_id", "token id")),
        C("generate", "a dict as generation_config", 'model.generate(ids, generation_config={"max_new_tokens": 5})',
          TypeError, ("generation_config", "GenerationConfig", "dict")),
        C("generate", "beam search in generation_config.json",
          "d = saved_folder()\nwrite(f\"{d}/generation_config.json\", '{\"num_beams\": 4}')\n"
          "MixtralForCausalLM.from_pretrained(d).generate(ids)",
          ValueError, ("num_beams", "greedy", "sampling", "pop('num_beams')")),
        C("generate", "no length limit at all", "model.generate(ids, max_length=None, max_new_tokens=None)",
          ValueError, ("max_length", "max_new_tokens", "None")),
        C("generate", "ids from another tokenizer", "model.generate(ids + 1000)",
          ValueError, ("input_ids", "vocab_size=97", "tokenizer")),

        # -- forward ------------------------------------------------------------------------------------
        C("forward", "one sequence without the batch dimension", "model(ids[0])",
          ValueError, ("input_ids", "(batch, seq_len)", "input_ids[None]")),
        C("forward", "a negative token id", "model(ids - 10)",
          ValueError, ("input_ids", "[0, vocab_size=97)")),
        C("forward", "ids and embeddings together", "model(ids, inputs_embeds=torch.zeros(1, 5, 32))",
          ValueError, ("input_ids", "inputs_embeds", "not both")),
        C("forward", "neither ids nor embeddings", "model()",
          ValueError, ("input_ids", "inputs_embeds")),
        C("forward", "labels of another shape", "model(ids, labels=ids[:, :3])",
          ValueError, ("labels", "(1, 5)", "(1, 3)", "do not shift")),
        C("forward", "a cache with use_cache=False",
          "cache = model(ids, use_cache=True).past_key_values\nmodel(ids[:, :1], past_key_values=cache, use_cache=False)",
          ValueError, ("past_key_values", "use_cache=True")),
        C("forward", "every expert of a layer switched off",
          "with hooks(model, *[disable_expert(layer=0, expert=e) for e in range(4)]):\n    model(ids)",
          ValueError, ("Every expert", "model.layers.0", "at least one expert")),
        C("forward", "a transformers config for our model", "MixtralForCausalLM(hf_config)",
          TypeError, ("MixtralConfig", "MixtralConfig(...)")),
        C("forward", "the grouped MoE dispatch switched on inside a trace",
          "from mixtral_edu.fast.moe import grouped_moe\nwith trace(model), grouped_moe(model): pass",
          RuntimeError, ("grouped_moe()", "trace", "first")),

        # -- tokenizer ----------------------------------------------------------------------------------
        C("tokenizer", "a vocabulary too small for the bytes", 'train_tokenizer(["the cat"], vocab_size=100)',
          ValueError, ("vocab_size=100", "at least 260")),
        C("tokenizer", "numbers instead of texts", "train_tokenizer([1, 2, 3])",
          ValueError, ("strings", "int")),
        C("tokenizer", "a folder without tokenizer files", 'load_tokenizer("no/such/folder")',
          FileNotFoundError, ("tokenizer.json", "no/such/folder", "TINY_DIR")),

        # -- traces and hooks ---------------------------------------------------------------------------
        C("trace", "a transformers model", "trace(hf_model)",
          TypeError, ("transformers", "MixtralForCausalLM.from_pretrained(path)")),
        C("trace", "not a model at all", 'trace("model")',
          TypeError, ("trace()", "str", "load_tiny()")),
        C("trace", "a layer the model does not have", "trace(model, layers=[9])",
          ValueError, ("layers", "[9]", "0..1")),
        C("trace", "a negative depth", "trace(model, depth=-1)",
          ValueError, ("depth", ">= 0")),
        C("trace", "steps given as a string", 'trace(model, steps="0")',
          TypeError, ("steps", "range(2)")),
        C("trace", "entering the same trace twice", "tr2 = trace(model)\nwith tr2:\n    with tr2:\n        pass",
          RuntimeError, ("already recording", "trace(model)")),
        C("trace", "a layer number as a hook key", "with hooks(model, {3: print_shape}):\n    pass",
          TypeError, ("key 3", "str", "hook_names()")),
        C("trace", "a list of pairs instead of a dict",
          'with hooks(model, [("model.hook_embed", print_shape)]):\n    pass',
          TypeError, ("dicts", "list", "hooks(model, {")),
        C("trace", "a name instead of a function", 'with hooks(model, {"model.hook_embed": "print_shape"}):\n    pass',
          TypeError, ("model.hook_embed", "not a function")),
        C("trace", "a misspelt hook point", 'with hooks(model, {"model.hook_embd": print_shape}):\n    pass',
          KeyError, ("model.hook_embd", "Did you mean", "model.hook_embed")),
        C("trace", "a hook that returns the wrong shape",
          'with hooks(model, {"model.hook_embed": lambda x, point: x[:, :1]}):\n    model(ids)',
          ValueError, ("model.hook_embed", "(1, 1, 32)", "(1, 5, 32)", "same shape")),
        C("trace", "a hook that returns a list",
          'with hooks(model, {"model.hook_embed": lambda x, point: x.tolist()}):\n    model(ids)',
          TypeError, ("model.hook_embed", "list", "None")),
        C("trace", "run_with_cache on a transformers model", "run_with_cache(hf_model, ids)",
          TypeError, ("run_with_cache()", "transformers", "from_pretrained")),
        C("trace", "reading a hook point that was not captured",
          'out, cache = run_with_cache(model, ids, names="*hook_resid_post")\ncache["model.hook_embed"]',
          KeyError, ("model.hook_embed", "not among the `names`")),
        C("trace", "a call the run did not make",
          "out, cache = run_with_cache(model, ids)\ncache.step(3)",
          IndexError, ("call 3", "1 forward call")),
        C("trace", "an expert the layer does not have",
          "with hooks(model, disable_expert(layer=0, expert=9)):\n    model(ids)",
          IndexError, ("expert 9", "4 experts")),
        C("trace", "an expert given as a string", 'disable_expert(layer=0, expert="3")',
          TypeError, ("expert", "int")),
        C("trace", "attention scores of an sdpa model",
          'with hooks(sdpa_model, {"model.layers.0.self_attn.hook_pattern": print_shape}):\n    pass',
          EagerOnlyError, ("hook_pattern", "attn_implementation='eager'", "output_attentions=True")),

        # -- views --------------------------------------------------------------------------------------
        C("views", "a layer the trace does not hold", "routing_figure(tr, layer=9)",
          IndexError, ("layer=9", "[0, 1]", "trace(model, layers=...)")),
        C("views", "an empty trace", "routing_figure(empty_tr)",
          ValueError, ("routing_figure", "no step", "with mixtral_edu.trace(model)")),
        C("views", "a batch row that is not there", "routing_figure(tr, row=5)",
          IndexError, ("row=5", "0..0", "batch rows")),
        C("views", "a step that is not there", "mask_figure(tr, step=99)",
          IndexError, ("step=99", "steps")),
        C("views", "an attention layer that is not there", "attention_figure(tr, layer=7)",
          IndexError, ("layer=7", "[0, 1]")),
        C("views", "sampling for a missing row", "sampling_figure(tr, row=3)",
          IndexError, ("row=3", "batch rows")),
        C("views", "an unknown full-size preset", 'cache_figure(tr, full_size="mixtral-7x8b")',
          ValueError, ("mixtral-7x8b", "Valid names", "mixtral-8x7b")),
        C("views", "a chapter that does not exist", 'callchain_html(here="chapter 3")',
          ValueError, ("chapter 3", "not a chapter")),
        C("views", "a model instead of a trace", "routing_figure(model)",
          TypeError, ("routing_figure", "Trace", "MixtralForCausalLM")),

        # -- sizes --------------------------------------------------------------------------------------
        C("sizes", "a negative number of tokens", "kv_cache_bytes(cfg, -5)",
          ValueError, ("seq_len", ">= 0", "-5")),
        C("sizes", "a number of tokens as a string", 'kv_cache_bytes(cfg, "5")',
          TypeError, ("seq_len", "int", "without quotes")),
        C("sizes", "an empty batch", "kv_cache_bytes(cfg, 5, batch_size=0)",
          ValueError, ("batch_size", ">= 1")),
        C("sizes", "a dtype name instead of a dtype", 'kv_cache_bytes_per_token(cfg, dtype="bf16")',
          TypeError, ("dtype", "torch.bfloat16")),
        C("sizes", "a preset name instead of a config", 'parameter_count("mixtral-8x7b")',
          TypeError, ("parameter_count", "MixtralConfig", "get_preset")),
        C("sizes", "a transformers config", "parameter_count(hf_config)",
          TypeError, ("transformers", "MixtralConfig.from_dict")),
        C("sizes", "a misspelt preset", 'get_preset("mixtral-7x8b")',
          ValueError, ("mixtral-7x8b", "mixtral-8x22b, mixtral-8x7b, tiny")),
        C("sizes", "a preset that is not a name", "get_preset(7)",
          TypeError, ("get_preset", "str", "mixtral-8x7b")),
        C("sizes", "a negative context", "flops_per_token(cfg, context_len=-1)",
          ValueError, ("context_len", ">= 0")),
        C("sizes", "an empty batch in the shape table", "shape_table(cfg, batch_size=0)",
          ValueError, ("batch_size", ">= 1")),

        # -- exercises ----------------------------------------------------------------------------------
        C("exercises", "something that is not a model", 'check_greedy_generate(greedy_generate, model="abc")',
          NOT_YET, ("model", "MixtralForCausalLM", "str")),
        C("exercises", "a name instead of the function", 'check_greedy_generate("greedy_generate")',
          NOT_YET, ("greedy_generate", "function")),
        C("exercises", "nothing given", "check_append_step(None)",
          NOT_YET, ("append_step", "NoneType")),
        C("exercises", "the stub still unwritten", "check_greedy_generate(greedy_generate)",
          NOT_YET, ("greedy_generate", "NotImplementedError")),
    ]


CASES = _cases()


# -- running a case -------------------------------------------------------------------------------------

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
             rope_theta=10000.0, initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             attn_implementation="eager")


def namespace() -> Tuple[Dict[str, Any], Any]:
    """(the names the cases use, a function that deletes the temporary folders)."""
    import torch
    import transformers

    import mixtral_edu
    from mixtral_edu import MixtralConfig, MixtralForCausalLM, disable_expert, hooks, run_with_cache, trace
    from mixtral_edu.exercises.generation_loop import check_append_step, check_greedy_generate
    from mixtral_edu.full_size.presets import get_preset
    from mixtral_edu.full_size.sizes import (flops_per_token, kv_cache_bytes, kv_cache_bytes_per_token,
                                             parameter_count, shape_table)
    from mixtral_edu.tiny.tokenizer import load_tokenizer, train_tokenizer
    from mixtral_edu.viz import (attention_figure, cache_figure, callchain_html, mask_figure, routing_figure,
                                 sampling_figure)

    root = tempfile.mkdtemp(prefix="mixtral_edu_bad_inputs_")
    count = [0]

    def empty_folder() -> str:
        count[0] += 1
        path = os.path.join(root, f"f{count[0]}")
        os.makedirs(path)
        return path

    def new_model(**overrides) -> MixtralForCausalLM:
        torch.manual_seed(0)
        return MixtralForCausalLM(MixtralConfig(**dict(SMALL, **overrides))).eval()

    model = new_model()

    def saved_folder(**save_kwargs) -> str:
        path = empty_folder()
        model.save_pretrained(path, **save_kwargs)
        return path

    def write(path: str, text: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def print_shape(x, point):
        print(point.name, tuple(x.shape))

    def greedy_generate(model, input_ids, attention_mask, max_new_tokens):
        raise NotImplementedError("Exercise 01.3")

    ids = torch.tensor([[5, 17, 33, 8, 61]])
    ids2 = torch.tensor([[5, 17, 33, 8, 61], [0, 0, 0, 0, 0]])
    with trace(model) as tr:
        model.generate(ids, max_new_tokens=2)
    hf_config = transformers.MixtralConfig(**SMALL)
    a_file = os.path.join(root, "a_file.txt")
    write(a_file, "not a folder")
    ns = dict(
        _root=root, os=os, torch=torch, mixtral_edu=mixtral_edu, MixtralConfig=MixtralConfig, MixtralForCausalLM=MixtralForCausalLM,
        cfg=MixtralConfig(**SMALL), model=model, new_model=new_model, sdpa_model=new_model(attn_implementation="sdpa"),
        hf_model=transformers.MixtralForCausalLM(hf_config), hf_config=hf_config,
        ids=ids, ids2=ids2, mask_with_empty_row=(ids2 != 0).long(),
        folder=saved_folder(), saved_folder=saved_folder, empty_folder=empty_folder, a_file=a_file, write=write,
        trace=trace, hooks=hooks, run_with_cache=run_with_cache, disable_expert=disable_expert,
        print_shape=print_shape, tr=tr, empty_tr=trace(model),
        routing_figure=routing_figure, mask_figure=mask_figure, attention_figure=attention_figure,
        sampling_figure=sampling_figure, cache_figure=cache_figure, callchain_html=callchain_html,
        kv_cache_bytes=kv_cache_bytes, kv_cache_bytes_per_token=kv_cache_bytes_per_token,
        parameter_count=parameter_count, get_preset=get_preset, flops_per_token=flops_per_token,
        shape_table=shape_table, train_tokenizer=train_tokenizer, load_tokenizer=load_tokenizer,
        check_greedy_generate=check_greedy_generate, check_append_step=check_append_step, greedy_generate=greedy_generate,
    )
    return ns, lambda: shutil.rmtree(root, ignore_errors=True)


class Outcome(NamedTuple):
    kind: str        # "raised", "warned" or "returned"
    type_name: str   # the exception's or warning's class name, or the returned object's
    message: str
    error: Any       # the exception, the warning's category or the returned object


def run(case: Case, ns: Dict[str, Any]) -> Outcome:
    """Run the case's code in a copy of ns; report what it raised, else what it warned, else its value."""
    env = dict(ns)
    tree = ast.parse(case.code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exec(compile(tree, "<case>", "exec"), env)
            value = eval(compile(ast.Expression(last.value), "<case>", "eval"), env) if last else None
        except BaseException as err:  # noqa: BLE001 - the error is what the case is about
            return Outcome("raised", type(err).__name__, _message(err), err)
    wanted = [w for w in caught if isinstance(case.expect, type) and issubclass(w.category, case.expect)]
    if wanted:  # the warning the case is about: the one that names the most of what it should
        best = max(wanted, key=lambda w: sum(n in str(w.message) for n in case.names))
        return Outcome("warned", best.category.__name__, str(best.message), best.category)
    return Outcome("returned", type(value).__name__, repr(value), value)


def _message(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return str(text)


def check(case: Case, outcome: Outcome) -> str:
    """'' when the outcome is what the case expects; otherwise what is wrong."""
    if case.expect is NOT_YET:
        if outcome.kind != "returned" or bool(outcome.error) or not outcome.message.startswith(NOT_YET):
            return f"expected a NOT YET result, got {outcome.kind} {outcome.type_name}: {outcome.message[:300]}"
    elif issubclass(case.expect, Warning):
        if outcome.kind != "warned":
            return f"expected a {case.expect.__name__}, got {outcome.kind} {outcome.type_name}: {outcome.message[:300]}"
    elif outcome.kind != "raised" or not isinstance(outcome.error, case.expect):
        return f"expected {case.expect.__name__}, got {outcome.kind} {outcome.type_name}: {outcome.message[:300]}"
    missing = [n for n in case.names if n not in outcome.message]
    if missing:
        return f"the message lacks {missing}: {outcome.message}"
    if case.stricter and "stricter than transformers" not in outcome.message:
        return f"the message does not say we are stricter than transformers: {outcome.message}"
    return ""
