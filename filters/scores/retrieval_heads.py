"""A scorer model's retrieval heads, found once by a built-in synthetic retrieval task and cached.

AttentionInfluence (Hua et al. 2025, "AttentionInfluence: Adopting Attention Head Influence for
Weak-to-Strong Pretraining Data Selection") masks a small model's retrieval heads and scores a
document by how much its loss rises. The heads are found as in Wu et al. 2024 ("Retrieval Head
Mechanistically Explains Long-Context Factuality"): a head's *retrieval score* is the share of the
answer tokens it copies, i.e. for which its strongest attention lands on that same token inside the
needle. Hua et al. keep the top 5% of heads by that score.

The task here is theirs in miniature: a list of key/value pairs of random letters and digits, then a
query naming one key, teacher-forced on its value (the needle). The value's token ids are the same
in the list and in the answer, so a copy is exact. Written by hand: no library ships such a task.

Every model gets its heads once: they are cached under ``<cache_dir>/retrieval_heads/`` by a digest
of the model's config, dtype and weights (the embedding and last layer), beside the dequantized models.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TASK_VERSION = 1
SAMPLES, PAIRS, CHARS = 24, 12, 10  # contexts, key/value pairs per context, characters per key or value
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
HEAD_FRAC = 0.05  # Hua et al.: the top 5% of heads by retrieval score


class RetrievalCollector:
    """Fed each layer's attention probabilities by :func:`filters.scores.attention.metrics_attention`
    (like :class:`~filters.scores.attention.AttentionCollector`): per head, how many answer tokens its
    strongest attention copies from the needle.

    Args:
        ids: ``(L,)`` token ids of one sample.
        queries: Positions whose next token is an answer token.
        needle: ``(start, end)`` positions of the queried value inside the list.
    """

    def __init__(self, ids, queries: list[int], needle: tuple[int, int]):
        self.ids, self.queries, self.needle = ids, queries, needle
        self.hits: list[np.ndarray] = []  # per layer, (heads,)

    def update(self, probs) -> None:
        top = probs[0, :, self.queries, :].argmax(-1)  # (heads, queries): the most attended key
        inside = (top >= self.needle[0]) & (top < self.needle[1])
        copied = self.ids[top] == self.ids[[q + 1 for q in self.queries]][None, :]
        self.hits.append((inside & copied).sum(1).cpu().numpy())


def samples(encode, prefix: int, seed: int = 0) -> list[tuple[list[int], list[int], tuple[int, int]]]:
    """``(ids, queries, needle)`` of every sample: the list, the query, the answer (teacher-forced)."""
    rng = random.Random(seed)
    out = []
    for _ in range(SAMPLES):
        pairs = [
            ["".join(rng.choice(ALPHABET) for _ in range(CHARS)) for _ in range(2)] for _ in range(PAIRS)
        ]
        asked = rng.randrange(PAIRS)
        ids = [prefix, *encode("Below is a list of keys and their values.\n")]
        values = [encode(value) for _, value in pairs]
        for (key, _), value in zip(pairs, values):
            ids += encode(f'"{key}": "')
            if key == pairs[asked][0]:
                needle = (len(ids), len(ids) + len(value))
            ids += value + encode('",\n')
        ids += encode(f'The value of "{pairs[asked][0]}" is "')
        answer = len(ids)
        ids += values[asked]
        out.append((ids, list(range(answer - 1, len(ids) - 1)), needle))
    return out


def detect(model, encode, prefix: int, frac: float = HEAD_FRAC) -> dict:
    """Retrieval scores of every head and the top ``frac`` of them (at least one).

    ``model`` must run :data:`filters.scores.attention.IMPL` attention. Returns ``{"heads": [[layer,
    head], ...], "scores": [[...] per layer], "copy_accuracy": share of answer tokens the model's own
    top prediction gets right}``.
    """
    import torch

    hits, total, correct = 0, 0, 0
    dev = next(model.parameters()).device
    for ids, queries, needle in samples(encode, prefix):
        x = torch.tensor([ids], device=dev)
        collector = RetrievalCollector(x[0], queries, needle)
        with torch.inference_mode():
            hidden = model.base_model(input_ids=x, litho_collector=collector)[0]
            logits = model.get_output_embeddings()(hidden[0, queries])
        correct += int((logits.argmax(-1) == x[0, [q + 1 for q in queries]]).sum())
        hits = hits + np.stack(collector.hits)
        total += len(queries)
    scores = hits / total
    k = max(1, round(frac * scores.size))
    order = np.lexsort((np.arange(scores.size), -scores.ravel()))[:k]  # ties: lower layer and head first
    heads = sorted([int(i) // scores.shape[1], int(i) % scores.shape[1]] for i in order)
    return {"heads": heads, "scores": scores.round(4).tolist(), "copy_accuracy": round(correct / total, 4)}


def fingerprint(model) -> str:
    """Digest of what decides the heads: config, dtype, embedding and last-layer weights, the task."""
    import xxhash

    h = xxhash.xxh3_64()
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "dtype"}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(f"{model.dtype}:{TASK_VERSION}:{SAMPLES}:{PAIRS}:{CHARS}".encode())
    last = list(model.base_model.layers[-1].parameters())
    for tensor in [model.get_input_embeddings().weight, *last]:
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def retrieval_heads(
    model, encode, prefix: int, cache_dir: str | Path | None, frac: float = HEAD_FRAC
) -> dict:
    """The model's retrieval heads from the cache, or found now and cached (see :func:`detect`)."""
    from generators.teachers.models import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / "retrieval_heads" / f"{fingerprint(model)}-{frac:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    found = detect(model, encode, prefix, frac)
    log.info(
        "retrieval heads of the scorer: %s (copy accuracy %.2f), cached in %s",
        found["heads"],
        found["copy_accuracy"],
        path,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(found))
    os.replace(tmp, path)  # two actors racing write the same content; the rename is atomic
    return found


def masked_heads(model, encode, prefix: int, cache_dir, frac: float = HEAD_FRAC) -> tuple[dict, int]:
    """``({layer: head index tensor}, first such layer)``: the heads AttentionInfluence makes uniform.

    Raises:
        ConfigError: the model's layers cannot be masked by index (not ``base_model.layers`` with
            ``self_attn.layer_idx``).
    """
    import torch

    from generators.errors import ConfigError

    layers = getattr(model.base_model, "layers", None)
    if layers is None or any(getattr(x.self_attn, "layer_idx", None) != i for i, x in enumerate(layers)):
        raise ConfigError(
            "filters.lm.metrics: influence needs a model whose decoder layers are base_model.layers "
            "with self_attn.layer_idx (Llama, Mistral, Qwen, Gemma); drop influence for this model"
        )
    heads: dict[int, list[int]] = {}
    for layer, head in retrieval_heads(model, encode, prefix, cache_dir, frac)["heads"]:
        heads.setdefault(layer, []).append(head)
    device = next(model.parameters()).device
    return {k: torch.tensor(v, device=device) for k, v in heads.items()}, min(heads)
