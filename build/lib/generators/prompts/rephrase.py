"""Rephrasing a seed corpus in chosen styles (WRAP: Maini et al. 2024, "Rephrasing the Web").

Each plan row asks the teacher to rewrite one seed chunk in one style. The row keeps its link to
the source (file, row index, id column, chunk, SHA-256 of the text) and the source text itself,
so real and rephrased text can be mixed or compared later (WRAP trains on both).
"""

from __future__ import annotations

from generators.prompts.plan import PlannedGenerator
from generators.prompts.seeds import SeedSource
from generators.prompts.textbook import _pick

# The encyclopedic, Q&A and simple instructions are WRAP's "medium", "QA" and "easy" prompts.
STYLES = {
    "encyclopedic": "For the following paragraph give me a diverse paraphrase of the same in high quality "
    "English language as in sentences on Wikipedia:",
    "qa": 'Convert the following paragraph into a conversational format with multiple tags of "Question:" '
    'followed by "Answer:":',
    "dense_notes": "Rewrite the following paragraph as dense study notes: short declarative sentences that keep "
    "every name, number and technical term, no filler words:",
    "simple": "For the following paragraph give me a paraphrase of the same using a very small vocabulary and "
    "extremely simple sentences that a toddler will understand:",
}

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the questions."
)

SEED_COLUMNS = ("source_file", "source_row", "source_id", "source_chunk", "source_sha256", "source_text")


class RephraseGenerator(PlannedGenerator):
    """Plans ``n`` rewrites of seed chunks, every (chunk, style) pair once before any repeats.

    Args:
        seed_file: Parquet or JSONL file, a directory of them, or a ``save_to_disk`` directory.
        text_column: Column holding the seed text.
        id_column: Column holding a source id to keep (optional).
        seed_split: Split to read from a saved ``DatasetDict``.
        styles: Style keys (subset of :data:`STYLES`); all by default.
        max_words: Seed documents are cut into chunks of at most this many words.
        min_words: Chunks shorter than this are skipped.
        max_docs: Read at most this many seed documents (all when null).
        system: System prompt.
    """

    name = "rephrase"
    columns = ("style", "variant", *SEED_COLUMNS)

    def __init__(
        self,
        seed_file: str,
        text_column: str = "text",
        id_column: str | None = None,
        seed_split: str = "train",
        styles: list[str] | None = None,
        max_words: int = 250,
        min_words: int = 30,
        max_docs: int | None = None,
        system: str = SYSTEM,
    ):
        self.seeds = SeedSource(seed_file, text_column, id_column, seed_split, max_words, min_words, max_docs)
        self.styles = _pick(styles, STYLES, "generator.styles")
        self.system = system

    def build_messages(self, row: dict) -> list[dict]:
        """The chat messages for one plan row (pure: no I/O)."""
        user = f"{STYLES[row['style']]}\n\n{row['source_text']}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def axes(self) -> tuple:
        return self.seeds.load(), self.styles

    def make_row(self, variant: int, picks: tuple) -> dict:
        seed, style = picks
        return {"generator": self.name, "style": style, "variant": variant, **seed.columns()}
