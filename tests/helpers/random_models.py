"""Random-weight causal LMs of named shapes, with a small byte-level chat tokenizer.

For tests (a real model of a few thousand parameters in milliseconds, no download) and for the
teacher benchmark (the SmolLM2-135M shape: speed does not depend on what the weights say).
Nothing here is a default teacher: a random model writes noise.
"""

from __future__ import annotations

from pathlib import Path

SHAPES = {
    # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M-Instruct config.json), the embedded teacher's shape.
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "tiny-llama": dict(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
    "tiny-qwen2": dict(
        model_type="qwen2",
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    ),
    "tiny-gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=512),
}

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A teacher writes, a scorer judges, a filter keeps. "
    "Synthetic corpora need many short stories about small things: cats, rivers, numbers and rain. "
)


def random_model(
    shape: str, vocab_size: int | None = None, seed: int = 0, init_std: float = 0.02, **overrides
):
    """Build a randomly initialised ``*ForCausalLM`` of a named shape (float32, CPU, eval mode)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    params = dict(SHAPES[shape], **overrides)
    model_type = params.pop("model_type")
    if vocab_size is not None:
        params["vocab_size"] = vocab_size
    config = AutoConfig.for_model(model_type, initializer_range=init_std, **params)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def chat_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on a fixed paragraph, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def write_random_model(
    path: str | Path, shape: str = "tiny-llama", seed: int = 0, init_std: float = 0.5
) -> Path:
    """Save a random model of ``shape`` with :func:`chat_tokenizer` as a loadable model directory.

    A large ``init_std`` spreads the logits so that greedy choices are far from ties (in float32
    two backends then agree token for token) and outputs are not one repeated token.
    """
    path = Path(path)
    tokenizer = chat_tokenizer()
    model = random_model(shape, vocab_size=len(tokenizer), seed=seed, init_std=init_std)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
