"""Pieces of the LM scorer's passes (:mod:`filters.scores.lm_scores`): windows, per-row sums, the
request a generated text answers (for IFD), and the layers AttentionInfluence's masked pass reuses."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import numpy as np


def plan_windows(n_tokens: int, width: int, stride: int) -> list[tuple[int, int, int]]:
    """Split ``n_tokens`` text tokens into windows of at most ``width`` tokens.

    Returns:
        ``(start, end, owned)`` per window: it covers tokens ``[start, end)`` and scores
        ``[owned, end)``, so every token is scored exactly once, with at least
        ``width - stride`` tokens of context after the first window. The last window is
        right-aligned to the text's end to give its tokens the most context.
    """
    if n_tokens == 0:
        return []
    start, end = 0, min(width, n_tokens)
    spans = [(0, end, 0)]
    while end < n_tokens:
        start, owned = min(start + stride, n_tokens - width), end
        end = start + width
        spans.append((start, end, owned))
    return spans


def prompt_messages(value) -> list[dict] | None:
    """The chat messages of a request: a JSON list of ``{role, content}`` (litho's ``prompt`` column),
    a list of such mappings, or a plain string (one user turn); None when empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                return [{"role": "user", "content": value}]
        else:
            return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        value = [value]
    messages = [dict(m) for m in list(value) if isinstance(m, dict) and m.get("content")]
    return messages or None


def prompt_ids(tok, messages: list[dict], prefix: int, limit: int) -> list[int]:
    """Token ids of a request as the teacher saw it: the tokenizer's chat template with the generation
    prompt, or (no template) the document token and the turns' contents; at most its last ``limit``."""
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    else:
        text = "\n\n".join(str(m["content"]) for m in messages) + "\n\n"
        ids = [prefix, *tok(text, add_special_tokens=False)["input_ids"]]
    return ids[-limit:]


class Accumulator:
    """Per-row sums over a text's windows, turned into means at the end."""

    def __init__(self, rows: int, groups: int):
        self.nll = np.zeros(rows)
        self.masked = np.zeros(rows)  # NLL with the retrieval heads made uniform (AttentionInfluence)
        self.conditional = np.zeros(rows)  # NLL after the request (IFD)
        self.prompted = np.zeros(rows, dtype=bool)
        self.sums = np.zeros((rows, 3, groups))
        self.counts = np.zeros((rows, 2))
        self.bearing = np.zeros((rows, groups))
        self.eligible = np.zeros(rows)
        self.seen = np.zeros(rows, dtype=bool)

    def add(self, rows, nll, sums=None, counts=None, bearing=None, eligible=None, masked=None) -> None:
        np.add.at(self.nll, rows, nll)
        self.seen[rows] = True
        if masked is not None:
            np.add.at(self.masked, rows, masked)
        if sums is not None:
            np.add.at(self.sums, rows, sums)
            np.add.at(self.counts, rows, counts)
            np.add.at(self.bearing, rows, bearing)
            np.add.at(self.eligible, rows, eligible)

    def add_conditional(self, rows, nll) -> None:
        np.add.at(self.conditional, rows, nll)
        self.prompted[rows] = True

    def attention(self, layers: list[int], heads: int, names: tuple, metrics) -> dict[str, np.ndarray]:
        """Attention columns; ``layers[g]`` is the number of layers in column group ``g``."""
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for g, n_layers in enumerate(layers):
                suffix = "" if g == 0 else f"_g{g - 1}"
                means = self.sums[:, :, g] / (n_layers * heads) / self.counts[:, [0, 1, 0]]
                for j, name in enumerate(("sink_mass", "entropy", "long_range")):
                    if name in metrics:
                        out[names[j] + suffix] = np.where(self.seen, means[:, j], np.nan)
                if "density" in metrics:
                    out[names[3] + suffix] = np.where(self.seen, self.bearing[:, g] / self.eligible, np.nan)
        return out


def _skip(output, layer):
    """A module that stands in for a decoder layer and returns ``output`` (the base pass's)."""
    import torch

    class SkippedLayer(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return output

    module = SkippedLayer()
    if hasattr(layer, "attention_type"):  # models that pick a mask per layer type read it
        module.attention_type = layer.attention_type
    return module


@contextmanager
def skipped_layers(model, first: int, output):
    """Within the block, the model's first ``first`` decoder layers return ``output`` (the base pass's
    output of layer ``first - 1``) without computing anything: the masked pass starts at ``first``."""
    layers = model.base_model.layers
    kept = [layers[i] for i in range(first)]
    for i in range(first):
        layers[i] = _skip(output, kept[i])
    try:
        yield
    finally:
        for i, layer in enumerate(kept):
            layers[i] = layer
