"""Target tokenizers for the scorers: :mod:`generators.tokenizers`, which a token-aware teacher shares."""

from generators.tokenizers import (
    BYTE_PIECE,
    HFTarget,
    SentencePieceTarget,
    TokenizersTarget,
    byte_fallback_table,
    load_target_tokenizer,
)

__all__ = [
    "BYTE_PIECE",
    "HFTarget",
    "SentencePieceTarget",
    "TokenizersTarget",
    "byte_fallback_table",
    "load_target_tokenizer",
]
