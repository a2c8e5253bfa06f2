"""Attention metrics reduced on the fly, one layer at a time, inside the model's forward pass.

:func:`metrics_attention` is registered with transformers' ``AttentionInterface`` under
:data:`IMPL`. It computes the softmax attention probabilities of one layer exactly as the
``eager`` implementation does, hands them to the :class:`AttentionCollector` passed to the
forward call as ``litho_collector=...``, and returns the attention output; so no ``L x L`` map
outlives its layer. Formulas: docs/metrics.md.
"""

from __future__ import annotations

import functools

import torch

IMPL = "litho_metrics"


class AttentionCollector:
    """Per-forward masks and per-layer, per-window sums of the attention metrics.

    Positions index a right-padded window whose position 0 is the prefix token.

    Args:
        lengths: ``(B,)`` real tokens per window (prefix included).
        owned_from: ``(B,)`` first position this window owns (earlier ones were scored by an
            earlier window of the same text).
        sink_k: Number of leading positions treated as the attention sink.
        num_layers: Attention layers in the model.
        reduce: The per-layer reduction (default :func:`reduce_layer`; or :func:`compiled_reduce`).
    """

    def __init__(
        self, lengths: torch.Tensor, owned_from: torch.Tensor, sink_k: int, num_layers: int, reduce=None
    ):
        self.reduce = reduce or reduce_layer
        n, own = lengths[:, None], owned_from[:, None]
        width = int(lengths.max())
        pos = torch.arange(width, device=lengths.device)[None, :]
        self.k = sink_k
        self.layer = 0
        real = pos < n
        # Queries: owned and seeing at least one non-sink key; entropy also needs two of them.
        self.query = (real & (pos >= own) & (pos >= sink_k)).float()
        self.query_ent = self.query * (pos >= sink_k + 1)
        self.visible = (pos - sink_k + 1).clamp(min=1).float()  # non-sink keys visible to query i
        self.log_visible = torch.where(self.visible > 1, self.visible.log(), 1.0)  # c = 1 rows are unused
        self.real_query = (real & (pos >= sink_k)).float()
        self.key = real & (pos >= own) & (pos >= sink_k) & (pos <= n - 2)
        self.later = (n - 1 - pos).clamp(min=1).float()  # real queries after key j
        # LongAttn's distance threshold: key j is far from query i when i - j >= n - 3 * (n // 4).
        far = n - 3 * (n // 4)
        self.far = ((pos.T[None] - pos[:, None]) >= far[:, :, None]) & (pos[:, None] >= sink_k)  # (B, i, j)
        batch = lengths.shape[0]
        zeros = torch.zeros(batch, num_layers, device=lengths.device)
        self.sink, self.entropy, self.long_range = zeros, zeros.clone(), zeros.clone()
        self.heads = torch.zeros(batch, num_layers, width, dtype=torch.int32, device=lengths.device)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Reduce one layer's probabilities ``(B, H, L, L)`` (float32) into the per-layer sums."""
        masks = (self.far, self.visible, self.log_visible, self.query, self.query_ent, self.real_query)
        sums = self.reduce(probs, self.k, *masks, self.key, self.later)
        self.sink[:, self.layer], self.entropy[:, self.layer], self.long_range[:, self.layer] = sums[:3]
        self.heads[:, self.layer] = sums[3]
        self.layer += 1


def reduce_layer(probs, k: int, far, visible, log_visible, query, query_ent, real_query, key, later):
    """Per-window sums of one layer's sink mass, normalised entropy and long-range mass over the
    owned queries, and per key the number of heads that find it load-bearing (docs/metrics.md)."""
    sink = probs[..., :k].sum(-1)
    rest = probs[..., k:].sum(-1)  # summed directly: 1 - sink loses digits when sink ~ 1
    ok = rest > 0
    safe = torch.where(ok, rest, torch.ones_like(rest))
    plogp = torch.xlogy(probs[..., k:], probs[..., k:]).sum(-1)
    entropy = torch.where(ok, (-plogp / safe + safe.log()) / log_visible[:, None], 0.0)
    long_range = torch.where(ok, torch.where(far[:, None], probs, 0.0).sum(-1) / safe, 0.0)
    # Relative attention a_ij * visible_i / rest_i is 1 under uniform non-sink attention.
    weight = torch.where(ok, visible[:, None] / safe, 0.0) * real_query[:, None]
    received = torch.einsum("bhij,bhi->bhj", probs, weight)
    received = received - weight * probs.diagonal(dim1=-2, dim2=-1)  # later queries only
    bearing = (received / later[:, None]) > 1.0
    return (
        (sink * query[:, None]).sum((1, 2)),
        (entropy * query_ent[:, None]).sum((1, 2)),
        (long_range * query[:, None]).sum((1, 2)),
        (bearing & key[:, None]).sum(1, dtype=torch.int32),
    )


@functools.cache
def compiled_reduce():
    """:func:`reduce_layer` fused by ``torch.compile``: one pass over each layer's map instead of several."""
    return torch.compile(reduce_layer, dynamic=True)


def metrics_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention that also feeds ``kwargs['litho_collector']`` (when given) the probabilities."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # scaling q saves a pass over the map
    if kwargs.get("softcap") is not None:
        scores = torch.tanh(scores / kwargs["softcap"]) * kwargs["softcap"]
    if attention_mask is not None:
        scores.add_(attention_mask[:, :, :, : key.shape[-2]])
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    del scores  # keep one L x L map alive while the metrics are reduced
    collector = kwargs.get("litho_collector")
    if collector is not None:
        collector.update(probs)
    output = torch.matmul(probs.to(value.dtype), value)
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register :data:`IMPL` (attention and its additive eager mask) with transformers; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPL, metrics_attention)
    AttentionMaskInterface.register(IMPL, eager_mask)
    return IMPL
