"""The tiny Mixtral trained here: its synthetic corpus, BPE tokenizer, trainer, evaluator,
and `load_tiny()` for the shipped directory (`mixtral_edu/tiny/model/`)."""
