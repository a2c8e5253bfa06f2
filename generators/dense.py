"""Model-centric dense rewriting: the same content in fewer tokens of the student's tokenizer.

The teacher condenses a seed chunk. After scoring, :class:`filters.dense.DenseScores` counts the
target-tokenizer tokens of source and rewrite and checks that the rewrite still carries the
source's key terms; :class:`filters.dense.DenseFilter` drops rewrites that save no tokens or lose
key terms. Kept rows report ``source_tokens``, ``tokens_saved`` and ``key_term_recall``.
"""

from __future__ import annotations

from filters.dense import DenseFilter, DenseScores
from generators.plan import messages_json, request_id, sample_combinations
from generators.rephrase import SEED_COLUMNS
from generators.seeds import SeedSource

INSTRUCTION = (
    "Rewrite the text below in as few words as possible. Keep every name, number and technical term, "
    "and every fact. Drop filler, repetition and examples. Plain sentences, no title, no lists."
)
SYSTEM = "You are an expert editor who condenses texts without losing facts."


class DenseGenerator:
    """Plans ``n`` condensations of seed chunks (each chunk once before any repeats).

    Args:
        seed_file: Parquet or JSONL file, a directory of them, or a ``save_to_disk`` directory.
        text_column: Column holding the seed text.
        id_column: Column holding a source id to keep (optional).
        seed_split: Split to read from a saved ``DatasetDict``.
        max_words: Seed documents are cut into chunks of at most this many words.
        min_words: Chunks shorter than this are skipped.
        max_docs: Read at most this many seed documents (all when null).
        tokenizer: Target tokenizer that counts the saving (the pipeline's ``filters.tokenizer``).
        cache_dir: Cache for tokenizers extracted from GGUF files.
        top_k: Key terms taken from each source.
        min_tokens_saved: Drop rewrites that save fewer target tokens.
        max_copied_frac: Drop rewrites whose share of words in 8-grams copied from the source is larger.
        min_key_term_recall: Drop rewrites that carry a smaller share of the source's key terms.
        system: System prompt.
    """

    name = "dense"
    columns = ("variant", *SEED_COLUMNS)

    def __init__(
        self,
        seed_file: str,
        text_column: str = "text",
        id_column: str | None = None,
        seed_split: str = "train",
        max_words: int = 200,
        min_words: int = 40,
        max_docs: int | None = None,
        tokenizer: str = "embedded:smollm2",
        cache_dir: str | None = None,
        top_k: int = 10,
        min_tokens_saved: int = 1,
        max_copied_frac: float = 0.9,
        min_key_term_recall: float = 0.8,
        system: str = SYSTEM,
    ):
        self.seeds = SeedSource(seed_file, text_column, id_column, seed_split, max_words, min_words, max_docs)
        self.system = system
        self.extra_filters = [
            (DenseScores, {"tokenizer": tokenizer, "top_k": top_k, "cache_dir": cache_dir}),
            (
                DenseFilter,
                {
                    "min_tokens_saved": min_tokens_saved,
                    "max_copied_frac": max_copied_frac,
                    "min_key_term_recall": min_key_term_recall,
                },
            ),
        ]

    def build_messages(self, row: dict) -> list[dict]:
        """The chat messages for one plan row (pure: no I/O)."""
        user = f"{INSTRUCTION}\n\nText:\n{row['source_text']}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def plan(self, n: int, seed: int) -> list[dict]:
        seeds = self.seeds.load()
        rows = []
        for variant, (s,) in sample_combinations((len(seeds),), n, seed):
            row = {"generator": self.name, "variant": variant, **seeds[s].columns()}
            messages = self.build_messages(row)
            row["prompt"] = messages_json(messages)
            row["id"] = request_id({"generator": self.name, "messages": messages, "variant": variant}, seed)
            rows.append(row)
        return rows
