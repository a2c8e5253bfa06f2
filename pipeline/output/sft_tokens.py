"""The documents of one shard for the token files: stored ids, fresh ids, or chat-template ids with a loss mask.

:func:`documents` yields ``(flat ids, lengths, mask)`` batches for :class:`pipeline.output.token_files.ShardWriter`:

* the ids the run stored beside the shard (``.litho/tokens``; no second tokenization);
* else the shard's text tokenized here (``litho export`` with another tokenizer, ``litho dedup`` runs);
* for ``output=sft``, each conversation rendered with the target tokenizer's chat template, and a mask
  that is 1 on the tokens the assistant wrote (its turns' content and end-of-turn markers) and 0 on the
  rest (user turns, the template's role headers).

The mask comes from rendering the conversation's prefixes: the text the template gives for the turns
before an assistant turn plus the generation prompt ends where the assistant's part begins, and the
text for the turns up to it ends where it ends. The whole conversation is tokenized once and a token is
the assistant's when its first character lies in such a span. transformers computes the same mask
(``apply_chat_template(return_assistant_tokens_mask=True)``) only for templates that mark assistant
text with ``{% generation %}``, which most chat templates (SmolLM2's among them) lack;
tests/pipeline/test_token_files.py checks this mask against transformers' on a template that has them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from generators.errors import ConfigError


def chat_tokenizer(spec: str, allow_network: bool = False, cache_dir=None):
    """A transformers tokenizer with a chat template for ``spec`` (a model spec or a tokenizer folder).

    Raises:
        ConfigError: the tokenizer has no chat template to render conversations with.
    """
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        from generators.teachers.models import load_tokenizer

        tok = load_tokenizer(str(spec), "filters.tokenizer", allow_network, cache_dir)
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"filters.tokenizer={spec}: it has no chat template, which output=sft token files are rendered "
            "with; use the student's tokenizer folder with its tokenizer_config.json chat_template"
        )
    return tok


def assistant_ids(tok, messages: list[dict]) -> tuple[list[int], list[int]]:
    """A conversation's chat-template ids and its assistant-only loss mask (1 = trained on)."""
    text = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for k, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        start = tok.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True) if k else ""
        end = tok.apply_chat_template(messages[: k + 1], tokenize=False)
        if not text.startswith(start) or not text.startswith(end):
            raise ConfigError(
                "filters.tokenizer: its chat template does not render a conversation as the extension of its "
                "prefixes, so the assistant's tokens cannot be told apart; use another template"
            )
        spans.append((len(start), len(end)))
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.array([s for s, _ in encoded["offset_mapping"]], dtype=np.int64)
    mask = np.zeros(len(starts), np.uint8)
    for lo, hi in spans:
        mask[(starts >= lo) & (starts < hi)] = 1
    return list(encoded["input_ids"]), mask.tolist()


def _batches(path: str, columns: list[str], batch_size: int = 1024):
    """Record batches of a Parquet or JSONL file, as ``{column: list}``."""
    if Path(path).suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield {c: batch.column(c).to_pylist() for c in columns}
        return
    import pyarrow.json as pajson

    table = pajson.read_json(path).select(columns)
    for batch in table.to_batches(max_chunksize=batch_size):
        yield {c: batch.column(c).to_pylist() for c in columns}


def _flat(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def stored_ids(path: str, batch_size: int = 8192):
    """``(flat ids, lengths)`` batches of a ``.litho/tokens`` file, read zero-copy from Arrow's buffers."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["tokens"]):
        blobs = batch.column(0)
        offsets = np.frombuffer(blobs.buffers()[1], np.int32)[blobs.offset : blobs.offset + len(blobs) + 1]
        data = np.frombuffer(blobs.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        yield data.view("<i4"), np.diff(offsets) // 4, None


def documents(source: dict, settings: dict):
    """``(flat ids, lengths, mask or None)`` batches of the shard ``source`` describes (module docstring)."""
    if settings["sft"]:
        tok = chat_tokenizer(settings["tokenizer"], settings["allow_network"], settings["cache_dir"])
        for batch in _batches(source["path"], ["messages"]):
            rendered = [
                assistant_ids(tok, json.loads(m) if isinstance(m, str) else m) for m in batch["messages"]
            ]
            flat, lengths = _flat([ids for ids, _ in rendered])
            yield flat, lengths, np.fromiter((b for _, m in rendered for b in m), np.uint8, count=len(flat))
        return
    if source.get("tokens") and Path(source["tokens"]).is_file():
        yield from stored_ids(source["tokens"])
        return
    from filters.tokenizers import load_target_tokenizer

    tokenizer = load_target_tokenizer(settings["tokenizer"], "filters.tokenizer", settings["allow_network"],
                                      settings["cache_dir"])  # fmt: skip
    column = source.get("text_column", "text")
    for batch in _batches(source["path"], [column]):
        texts = ["" if t is None else str(t) for t in batch[column]]
        flat, lengths = _flat(tokenizer.encode(texts) if texts else [])
        yield flat, lengths, None
