"""A byte-level BPE tokenizer for the synthetic corpus.

Byte-level means every string can be encoded and ``decode(encode(x)) == x``
exactly. Digits are split into single tokens *before* BPE runs, so ``85`` is
always ``8`` ``5``: the model then sees the same digit tokens in every
position, which is what lets it learn addition digit by digit.

Special tokens have fixed ids that the model code relies on::

    <unk> = 0   <s> = 1 (bos)   </s> = 2 (eos)   <pad> = 3

Encoding through :func:`load_tokenizer` prepends ``<s>`` (a TemplateProcessing
post-processor does that; ``add_bos_token`` in the config would be ignored by
``PreTrainedTokenizerFast``). It never appends ``</s>``: a prompt is a
beginning, and the trainer adds ``</s>`` itself when it packs samples.
"""

import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ..modeling.files import write_file_atomically

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # position == token id
UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(len(SPECIAL_TOKENS))


def _strings(texts):
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(
                f"texts must be strings, got {type(text).__name__}; "
                "pass [text for _, text in make_corpus(...)]")
        yield text


def train_tokenizer(texts, vocab_size=512):
    """Train a byte-level BPE tokenizer on an iterable of strings.

    The vocabulary holds the 4 special tokens, all 256 bytes and then merges
    up to ``vocab_size``; it ends up smaller if the corpus runs out of pairs.
    """
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small; use at least {minimum} "
                         "(4 special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        # add_prefix_space=False: "the cat" and "the cat sees" share a prefix
        # of tokens, so a prompt is tokenized like the start of a sample.
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),  # added first, so they get ids 0..3
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen or not
        show_progress=False,
    )
    tok.train_from_iterator(_strings(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", BOS_ID)])
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == token_id, "special token ids must be 0..3"
    return tok


def save_tokenizer(tok, directory):
    """Write ``tok`` as a directory that ``transformers.AutoTokenizer`` loads offline."""
    os.makedirs(directory, exist_ok=True)
    # each file is written whole or not at all, so a crash mid-save leaves the old tokenizer readable
    write_file_atomically(os.path.join(directory, "tokenizer.json"), tok.to_str(pretty=True))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "padding_side": "left",  # batched generation: prompts end at the same column
        # The default (True) would turn " ." into "." when decoding and break
        # the exact roundtrip that check_sentence relies on.
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        write_file_atomically(os.path.join(directory, name), json.dumps(content, indent=2) + "\n")


def load_tokenizer(directory):
    """Load a saved directory as a ``PreTrainedTokenizerFast`` (left padding, ``<s>`` prepended)."""
    from transformers import AutoTokenizer  # heavy import, only when needed

    if not os.path.isfile(os.path.join(str(directory), "tokenizer.json")):
        raise FileNotFoundError(f"No tokenizer.json in {directory!r}: pass the model folder that holds the "
                                "tokenizer files (save_tokenizer writes them), e.g. mixtral_edu.tiny.pretrained.TINY_DIR.")
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tok.padding_side = "left"
    return tok
