"""Target tokenizers behind one small batch API, whatever file they come from.

The target tokenizer is the student's and is chosen independently of the teacher. It lives in
``generators`` because both sides need it: the filters score texts for it (re-exported as
:mod:`filters.tokenizers`) and a token-aware teacher steers its writing by it
(:mod:`generators.teachers.token_aware`). A spec is:

* a SentencePiece model file (``*.model``);
* a ``tokenizer.json`` file, or a directory holding tokenizer files (``tokenizer.json`` /
  ``tokenizer_config.json``) with or without model weights;
* any model spec of :func:`generators.teachers.models.resolve` (``embedded:smollm2``, a ``.gguf`` file
  whose embedded tokenizer is used, a model directory).

Every adapter encodes a list of texts in one call (no special tokens) and knows, per vocabulary
id, whether a token is a *byte-fallback* token and which id is the unknown token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from generators.teachers.models import ModelSpecError, load_tokenizer, materialize, resolve

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class HFTarget:
    """A transformers fast tokenizer (for tokenizer folders without a ``tokenizer.json``, or whose
    ``tokenizer_config.json`` asks transformers to change the backend at load time)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.unk_id = tokenizer.unk_token_id
        self.eos_id = tokenizer.eos_token_id
        self.is_byte_fallback = byte_fallback_table(
            tokenizer.get_vocab(),
            tokenizer.backend_tokenizer.to_str(),
            tokenizer.all_special_ids,
            len(tokenizer),
        )

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Token ids and ``(n, 2)`` character spans ``[start, end)`` of each token."""
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        spans = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
        return enc["input_ids"], spans


class TokenizersTarget:
    """A ``tokenizer.json`` read by the ``tokenizers`` library itself: the same backend transformers'
    fast tokenizers wrap, without importing transformers and torch (~4 s in every scorer worker).

    ``unk_id`` and ``eos_id`` come from ``tokenizer_config.json`` beside the file, as transformers
    takes them (the unknown token falls back to the tokenizer model's; ``None`` when there is none).
    """

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        path = Path(path)
        self.tok = Tokenizer.from_file(str(path))
        config = _tokenizer_config(path.parent)
        model = json.loads(self.tok.to_str()).get("model") or {}
        unk = _token_text(config.get("unk_token")) or model.get("unk_token")  # as transformers picks it
        self.unk_id = self.tok.token_to_id(unk) if isinstance(unk, str) else model.get("unk_id")
        eos = _token_text(config.get("eos_token"))
        self.eos_id = self.tok.token_to_id(eos) if eos else None
        special = [i for i, added in self.tok.get_added_tokens_decoder().items() if added.special]
        self.is_byte_fallback = byte_fallback_table(
            self.tok.get_vocab(with_added_tokens=True),
            self.tok.to_str(),
            special,
            self.tok.get_vocab_size(with_added_tokens=True),
        )

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Token ids and ``(n, 2)`` character spans ``[start, end)`` of each token."""
        encodings = self.tok.encode_batch(texts, add_special_tokens=False)
        spans = [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in encodings]
        return [e.ids for e in encodings], spans


def byte_fallback_table(vocab: dict[str, int], backend_json: str, special_ids, size: int) -> np.ndarray:
    """Per vocabulary id: is it a byte-fallback token?

    Explicit ``<0xNN>`` pieces (SentencePiece-style BPE with byte fallback), or, for byte-level BPE
    (GPT-2 style, e.g. SmolLM2), tokens whose bytes are not valid UTF-8 on their own, i.e. pieces
    of a character that the vocabulary could not keep whole. Special tokens never are.
    """
    table = np.zeros(max(size, max(vocab.values()) + 1), dtype=bool)
    decoder = json.loads(backend_json).get("decoder") or {}
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
    for idx in special_ids:
        table[idx] = False
    return table


# tokenizer_config.json keys with which transformers rewrites the backend when it loads a tokenizer;
# with them present, litho loads through transformers so that its tokens are the ones users get.
BACKEND_CHANGING_KEYS = ("add_prefix_space", "legacy", "from_slow")


def _token_text(token) -> str | None:
    """A special token of tokenizer_config.json: a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _plain_tokenizer_json(folder: Path) -> Path | None:
    """``folder/tokenizer.json`` when the ``tokenizers`` library alone reads it as transformers would."""
    path = folder / "tokenizer.json"
    if not path.is_file() or any(k in _tokenizer_config(folder) for k in BACKEND_CHANGING_KEYS):
        return None
    return path


class SentencePieceTarget:
    """A SentencePiece model; byte-fallback tokens are its byte pieces (``<0xNN>``)."""

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.unk_id = self.sp.unk_id()
        self.eos_id = self.sp.eos_id()
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


_LOADED: dict[tuple, object] = {}  # this process's target tokenizers (see load_target_tokenizer)


def load_target_tokenizer(
    spec: str, key: str = "filters.tokenizer", allow_network: bool = False, cache_dir=None
):
    """Load the target tokenizer named by ``spec`` (see the module docstring), once per process: a
    target only encodes (nothing changes it), and loading one costs ~0.35 s (its byte-fallback table),
    which a driver paid at every pack, token-file and scoring step of every run it starts. A tokenizer
    file changed on disk since is loaded again.

    Raises:
        ModelSpecError: the spec names no tokenizer on local disk.
    """
    path = Path(str(spec)).expanduser()
    stamp = path.stat().st_mtime_ns if path.exists() else None
    cached = (str(spec), key, bool(allow_network), str(cache_dir), stamp)
    if cached not in _LOADED:
        _LOADED[cached] = _load_target_tokenizer(spec, key, allow_network, cache_dir)
    return _LOADED[cached]


def _load_target_tokenizer(spec: str, key: str, allow_network: bool, cache_dir):
    path = Path(str(spec)).expanduser()
    if path.suffix == ".model":
        if not path.is_file():
            raise ModelSpecError(
                f"{key}={spec}: no such SentencePiece model file; give an existing *.model path"
            )
        return SentencePieceTarget(path)
    if path.name == "tokenizer.json" and path.is_file():
        if _plain_tokenizer_json(path.parent):
            return TokenizersTarget(path)
        from transformers import PreTrainedTokenizerFast

        return HFTarget(PreTrainedTokenizerFast(tokenizer_file=str(path)))
    if path.is_dir() and not (path / "config.json").is_file():
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ModelSpecError(f"{key}={spec}: directory has no tokenizer.json or tokenizer_config.json")
        if _plain_tokenizer_json(path):
            return TokenizersTarget(path / "tokenizer.json")
        from transformers import AutoTokenizer

        return HFTarget(AutoTokenizer.from_pretrained(path, local_files_only=True))
    where = materialize(resolve(spec, key, allow_network), cache_dir)
    if isinstance(where, Path) and _plain_tokenizer_json(where):
        return TokenizersTarget(where / "tokenizer.json")
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
