"""Token-aware generation: steer the teacher toward text the student's tokenizer encodes cheaply.

**The student-cost table.** For every id of the teacher's vocabulary, the number of target
(student) tokens its text costs: each teacher token is decoded to its string (byte-level pieces
through GPT-2's byte map, ``<0xNN>`` pieces as bytes, ``▁`` as a space) and encoded alone by the
target tokenizer, without special tokens, twice: as a word start (``" " + text``, ``spaced``) and
as a continuation (the text without a leading space, ``bare``; a lone ``▁`` word-boundary piece that
a SentencePiece target prepends to every text is not counted, since inside a word it is not
there). A teacher token whose text starts with a space costs ``spaced``, any other ``bare``.
Byte-fallback pieces (SentencePiece ``<0xNN>``, or byte-level pieces that are not whole UTF-8
characters) and unknown pieces are counted apart. Special tokens and teacher tokens that are
only part of a UTF-8 character (their cost depends on their neighbours) cost 1: neutral. The
table is computed once per (teacher tokenizer, target tokenizer) pair, keyed by a hash of both
vocabularies, and cached as ``.npz`` under ``$LITHO_CACHE/token_aware/``.

**Where the approximation is off.** A text's true target count comes from tokenizing whole
words: the target merges across teacher-token boundaries (teacher ``" token" + "izer"`` may be one
target piece, or ``" tok" + "enizer"``: the per-token sum says 2 either way when the truth is 1
or 2), a SentencePiece target collapses runs of whitespace and normalises text (NFKC) first, and a
word's continuation pieces are encoded as if alone, where the target may pick another split. So
the per-token sum is an upper-bound-like estimate that overcounts where the target has longer
pieces than the teacher and is exact where both split alike. :func:`approximation_gap` measures it
on real text (bench/bench_token_aware.py, docs/generators.md).

**The bias.** :func:`bias_vector` is ``-strength * max(cost - 1, 0)`` per teacher id (0 for ids past
the tokenizer, e.g. padded embedding rows), and ``-inf`` for tokens whose target encoding needs
byte fallback when ``ban_byte_fallback`` is on. It is a static ``[V]`` tensor added to the logits
before the repetition penalty and the sampler, in the ``hf`` teacher (:class:`TokenAwareBias`, a
transformers logits processor) and in the ``fast`` engine (a tensor add, so CUDA-graph safe). A
server that takes ``logit_bias`` gets the ``top_n`` most penalised ids (:func:`logit_bias_map`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from generators.errors import ConfigError

log = logging.getLogger(__name__)

TABLE_VERSION = "token-aware-1"  # bump when the table's meaning changes: it is part of the cache key
KEY = "teacher.token_aware"
BOUNDARY = "\u2581"  # SentencePiece's word-boundary mark


@dataclass(frozen=True)
class TokenAware:
    """The ``teacher.token_aware`` settings.

    Args:
        strength: Logit penalty per extra target token a teacher token costs (0 = no penalty).
        target: The student's tokenizer spec (as ``filters.tokenizer`` takes); required when on.
        ban_byte_fallback: Forbid teacher tokens whose target encoding needs byte fallback.
    """

    strength: float = 0.0
    target: str | None = None
    ban_byte_fallback: bool = False

    @classmethod
    def from_config(cls, cfg: dict | None) -> TokenAware:
        """Check and build the settings.

        Raises:
            ConfigError: an unknown key, a negative strength, or no target while on.
        """
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"{KEY}: unknown keys {sorted(unknown)}; use {sorted(cls.__dataclass_fields__)}"
            )
        strength = cfg.get("strength", 0.0)
        if isinstance(strength, bool) or not isinstance(strength, int | float) or strength < 0:
            raise ConfigError(f"{KEY}.strength={strength}: give a number >= 0 (0 = off)")
        settings = cls(float(strength), cfg.get("target"), bool(cfg.get("ban_byte_fallback", False)))
        if settings.enabled and settings.target is None:
            raise ConfigError(
                f"{KEY}.target=null: the teacher does not know the student's tokenizer; set "
                f"{KEY}.target to a tokenizer spec (usually the same as filters.tokenizer)"
            )
        return settings

    @property
    def enabled(self) -> bool:
        """Whether the logits change at all."""
        return self.strength > 0 or self.ban_byte_fallback

    @property
    def active(self) -> bool:
        """Whether a bias is built (also at strength 0 when a target is named: the parity check)."""
        return self.enabled or self.target is not None

    def record(self) -> dict:
        """What the row's ``sampling`` column records."""
        return {"token_aware": asdict(self)} if self.active else {}


def teacher_pieces(tokenizer) -> tuple[list[bytes | None], np.ndarray]:
    """Each teacher id's text as bytes (None for special tokens) and whether it is a whole UTF-8 text."""
    from generators.tokenizers import BYTE_PIECE, _bytes_to_unicode

    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    byte_level = "ByteLevel" in json.dumps(decoder)
    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    out: list[bytes | None] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if piece is None or i in special:
            out.append(None)
        elif byte_level and all(c in to_byte for c in piece):
            out.append(bytes(to_byte[c] for c in piece))
        elif BYTE_PIECE.match(piece):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace(BOUNDARY, " ").encode("utf-8"))
    whole = np.array([b is not None and _is_utf8(b) for b in out], dtype=bool)
    return out, whole


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lone_boundary_ids(target) -> set[int]:
    """Target ids whose piece is a bare word boundary (``▁``): a SentencePiece dummy prefix."""
    if hasattr(target, "sp"):
        return {i for i in range(target.sp.get_piece_size()) if target.sp.id_to_piece(i) == BOUNDARY}
    vocab = target.tok.get_vocab() if hasattr(target.tok, "get_vocab") else {}
    return {i for piece, i in vocab.items() if piece == BOUNDARY}


def _counts(target, texts: list[str], drop_lead: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target tokens, byte-fallback pieces and unknown pieces per text (a leading ``drop_lead`` id
    is not counted)."""
    fallback = np.asarray(target.is_byte_fallback, dtype=bool)
    n, fb, unk = (np.zeros(len(texts), dtype=np.int32) for _ in range(3))
    for i, ids in enumerate(target.encode(texts)):
        if ids and ids[0] in drop_lead:
            ids = ids[1:]
        arr = np.asarray(ids, dtype=np.int64)
        n[i] = len(arr)
        fb[i] = int(fallback[arr[arr < len(fallback)]].sum())
        unk[i] = int((arr == target.unk_id).sum()) if target.unk_id is not None else 0
    return n, fb, unk


def compute_table(teacher_tokenizer, target) -> dict[str, np.ndarray]:
    """The student-cost table (see the module docstring) as arrays over the teacher's vocabulary.

    Keys: ``spaced``/``bare`` (target tokens as a word start / continuation), ``fallback_*`` and
    ``unknown_*`` (byte-fallback and unknown pieces of each), ``space`` (the teacher token starts
    with a space), ``neutral`` (special or partial-character tokens: cost 1), ``cost``, ``fallback``
    and ``unknown`` (the variant each token takes).
    """
    pieces, whole = teacher_pieces(teacher_tokenizer)
    texts = [p.decode("utf-8") if w else "" for p, w in zip(pieces, whole)]
    space = np.array([t.startswith(" ") for t in texts], dtype=bool)
    cores = [t.lstrip(" ") for t in texts]
    spaced, fb_s, unk_s = _counts(target, [" " + c for c in cores], set())
    bare, fb_b, unk_b = _counts(target, cores, _lone_boundary_ids(target))
    # A token of spaces only (or a word boundary the target drops) must not look free.
    neutral = ~whole | np.array([c == "" for c in cores])
    cost = np.where(space, spaced, bare)
    fallback = np.where(space, fb_s, fb_b)
    unknown = np.where(space, unk_s, unk_b)
    cost[neutral], fallback[neutral], unknown[neutral] = 1, 0, 0
    return dict(
        spaced=spaced,
        bare=bare,
        fallback_spaced=fb_s,
        fallback_bare=fb_b,
        unknown_spaced=unk_s,
        unknown_bare=unk_b,
        space=space,
        neutral=neutral,
        cost=cost,
        fallback=fallback,
        unknown=unknown,
    )


def _vocab_digest(tokenizer) -> bytes:
    """Bytes that change whenever the tokenizer's vocabulary or segmentation does."""
    if hasattr(tokenizer, "sp"):
        return tokenizer.sp.serialized_model_proto()
    tok = getattr(tokenizer, "tok", tokenizer)
    backend = getattr(tok, "backend_tokenizer", tok)
    return backend.to_str().encode()


def cost_table(teacher_tokenizer, target, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """:func:`compute_table`, cached under ``cache_dir/token_aware/`` by both tokenizers' hash."""
    from generators.teachers.models import default_cache_dir

    digest = hashlib.blake2b(digest_size=10)
    for part in (TABLE_VERSION.encode(), _vocab_digest(teacher_tokenizer), _vocab_digest(target)):
        digest.update(hashlib.blake2b(part).digest())
    path = Path(cache_dir or default_cache_dir()) / "token_aware" / f"{digest.hexdigest()}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return {k: cached[k] for k in cached.files}
    table = compute_table(teacher_tokenizer, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **table)
    os.replace(tmp, path)  # concurrent actors write the same bytes; the last rename wins
    log.info("token-aware cost table %s (%d teacher tokens)", path, len(table["cost"]))
    return table


def bias_vector(table: dict[str, np.ndarray], settings: TokenAware, vocab_size: int) -> np.ndarray:
    """The float32 ``[vocab_size]`` logit bias: ``-strength * max(cost - 1, 0)``, ``-inf`` for banned ids."""
    bias = np.zeros(vocab_size, dtype=np.float32)
    n = min(vocab_size, len(table["cost"]))
    extra = np.maximum(table["cost"][:n].astype(np.float32) - 1.0, 0.0)
    bias[:n] = -settings.strength * extra
    if settings.ban_byte_fallback:
        bias[:n][table["fallback"][:n] > 0] = -np.inf
    return bias


def load_bias(teacher_tokenizer, settings: TokenAware, vocab_size: int, cache_dir=None, allow_network=False):
    """The bias tensor for a teacher (float32, CPU), or None when ``settings`` build none."""
    if not settings.active:
        return None
    import torch

    from generators.tokenizers import load_target_tokenizer

    target = load_target_tokenizer(settings.target, f"{KEY}.target", allow_network, cache_dir)
    table = cost_table(teacher_tokenizer, target, cache_dir)
    return torch.from_numpy(bias_vector(table, settings, vocab_size))


class TokenAwareBias:
    """A transformers logits processor adding a static bias ``[V]`` to every row's scores."""

    def __init__(self, bias):
        self.bias = bias

    def __call__(self, input_ids, scores):
        return scores + self.bias.to(device=scores.device, dtype=scores.dtype)


def logit_bias_map(table: dict[str, np.ndarray], settings: TokenAware, top_n: int = 300) -> dict[str, float]:
    """The OpenAI ``logit_bias`` equivalent: the ``top_n`` most penalised ids (servers cap the map's
    size; OpenAI's API takes at most 300 entries in [-100, 100]); a ban becomes -100."""
    bias = bias_vector(table, settings, len(table["cost"]))
    bias = np.clip(bias, -100.0, 100.0)
    order = np.argsort(bias, kind="stable")[:top_n]
    return {str(int(i)): float(bias[i]) for i in order if bias[i] < 0}


def approximation_gap(teacher_tokenizer, target, table: dict[str, np.ndarray], texts: list[str]) -> dict:
    """How far the per-token sum is from tokenizing whole texts: both totals over ``texts`` and
    their ratio (per-token sum / true count; 1 = exact)."""
    ids = teacher_tokenizer(texts, add_special_tokens=False)["input_ids"]
    estimate = int(sum(table["cost"][np.asarray(row, dtype=np.int64)].sum() for row in ids if row))
    true = int(sum(len(row) for row in target.encode(texts)))
    per_text = [
        (table["cost"][np.asarray(a, dtype=np.int64)].sum() / max(1, len(b)))
        for a, b in zip(ids, target.encode(texts))
        if a
    ]
    return {
        "texts": len(texts),
        "teacher_tokens": int(sum(len(r) for r in ids)),
        "estimate": estimate,
        "true": true,
        "ratio": estimate / max(1, true),
        "abs_error_per_text": float(np.mean(np.abs(np.asarray(per_text) - 1.0))) if per_text else 0.0,
    }
