"""Target tokenizers behind one small batch API, whatever file they come from.

The target tokenizer is the student's and is chosen independently of the teacher. A spec is:

* a SentencePiece model file (``*.model``);
* a ``tokenizer.json`` file, or a directory holding tokenizer files (``tokenizer.json`` /
  ``tokenizer_config.json``) with or without model weights;
* any model spec of :func:`generators.models.resolve` (``embedded:smollm2``, a ``.gguf`` file
  whose embedded tokenizer is used, a model directory).

Every adapter encodes a list of texts in one call (no special tokens) and knows, per vocabulary
id, whether a token is a *byte-fallback* token and which id is the unknown token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from generators.models import ModelSpecError, load_tokenizer

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class HFTarget:
    """A transformers fast tokenizer.

    Byte-fallback tokens: explicit ``<0xNN>`` pieces (SentencePiece-style BPE with byte
    fallback), or, for byte-level BPE (GPT-2 style, e.g. SmolLM2), tokens whose bytes are not
    valid UTF-8 on their own, i.e. pieces of a character that the vocabulary could not keep whole.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.unk_id = tokenizer.unk_token_id
        self.is_byte_fallback = self._byte_fallback_table()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Token ids and ``(n, 2)`` character spans ``[start, end)`` of each token."""
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        spans = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
        return enc["input_ids"], spans

    def _byte_fallback_table(self) -> np.ndarray:
        vocab = self.tok.get_vocab()
        table = np.zeros(max(len(self.tok), max(vocab.values()) + 1), dtype=bool)
        decoder = json.loads(self.tok.backend_tokenizer.to_str()).get("decoder") or {}
        byte_level = "ByteLevel" in json.dumps(decoder)
        unicode_to_byte = {c: b for b, c in _bytes_to_unicode().items()}
        for piece, idx in vocab.items():
            if BYTE_PIECE.match(piece):
                table[idx] = True
            elif byte_level and piece and all(c in unicode_to_byte for c in piece):
                try:
                    bytes(unicode_to_byte[c] for c in piece).decode("utf-8")
                except UnicodeDecodeError:
                    table[idx] = True
        for idx in self.tok.all_special_ids:
            table[idx] = False
        return table


class SentencePieceTarget:
    """A SentencePiece model; byte-fallback tokens are its byte pieces (``<0xNN>``)."""

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.unk_id = self.sp.unk_id()
        ids = range(self.sp.get_piece_size())
        self.is_byte_fallback = np.array([self.sp.is_byte(i) for i in ids], dtype=bool)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
        out = self.sp.encode(texts, return_type="offset_mapping")
        ids, spans = [], []
        for enc in out:
            span = np.asarray(enc["offsets"], dtype=np.int64).reshape(-1, 2)
            # All byte pieces of one character but the last come back empty; give them that character.
            empty_bytes = (span[:, 0] == span[:, 1]) & self.is_byte_fallback[
                np.asarray(enc["ids"], dtype=np.int64)
            ]
            span[empty_bytes, 1] += 1
            ids.append(enc["ids"])
            spans.append(span)
        return ids, spans


def load_target_tokenizer(
    spec: str, key: str = "filters.tokenizer", allow_network: bool = False, cache_dir=None
):
    """Load the target tokenizer named by ``spec`` (see the module docstring).

    Raises:
        ModelSpecError: the spec names no tokenizer on local disk.
    """
    path = Path(str(spec)).expanduser()
    if path.suffix == ".model":
        if not path.is_file():
            raise ModelSpecError(
                f"{key}={spec}: no such SentencePiece model file; give an existing *.model path"
            )
        return SentencePieceTarget(path)
    if path.name == "tokenizer.json" and path.is_file():
        from transformers import PreTrainedTokenizerFast

        return HFTarget(PreTrainedTokenizerFast(tokenizer_file=str(path)))
    if path.is_dir() and not (path / "config.json").is_file():
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ModelSpecError(f"{key}={spec}: directory has no tokenizer.json or tokenizer_config.json")
        from transformers import AutoTokenizer

        return HFTarget(AutoTokenizer.from_pretrained(path, local_files_only=True))
    return HFTarget(load_tokenizer(spec, key, allow_network, cache_dir))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars
