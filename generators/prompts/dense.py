"""Model-centric dense rewriting: the same content in fewer tokens of the student's tokenizer.

The teacher condenses a seed chunk. After scoring, ``filters.scores.dense.DenseScores`` counts the
target-tokenizer tokens of source and rewrite and checks that the rewrite still carries the
source's key terms; ``filters.rules.dense.DenseFilter`` drops rewrites that save no tokens or lose
key terms (both named in conf/generator/dense.yaml). Kept rows report ``source_tokens``,
``tokens_saved`` and ``key_term_recall``.
"""

from __future__ import annotations

from generators.prompts.plan import PlannedGenerator
from generators.prompts.rephrase import SEED_COLUMNS
from generators.prompts.seeds import SeedSource

INSTRUCTION = (
    "Rewrite the text below in as few words as possible. Keep every name, number and technical term, "
    "and every fact. Drop filler, repetition and examples. Plain sentences, no title, no lists."
)
SYSTEM = "You are an expert editor who condenses texts without losing facts."


class DenseGenerator(PlannedGenerator):
    """Plans ``n`` condensations of seed chunks (each chunk once before any repeats).

    Args:
        seed_file: Parquet or JSONL file, a directory of them, or a ``save_to_disk`` directory.
        text_column: Column holding the seed text.
        id_column: Column holding a source id to keep (optional).
        seed_split: Split to read from a saved ``DatasetDict``.
        max_words: Seed documents are cut into chunks of at most this many words.
        min_words: Chunks shorter than this are skipped.
        max_docs: Read at most this many seed documents (all when null).
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
        system: str = SYSTEM,
    ):
        self.seeds = SeedSource(seed_file, text_column, id_column, seed_split, max_words, min_words, max_docs)
        self.system = system

    def build_messages(self, row: dict) -> list[dict]:
        """The chat messages for one plan row (pure: no I/O)."""
        user = f"{INSTRUCTION}\n\nText:\n{row['source_text']}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def axes(self) -> tuple:
        return (self.seeds.load(),)

    def make_row(self, variant: int, picks: tuple) -> dict:
        return {"generator": self.name, "variant": variant, **picks[0].columns()}
