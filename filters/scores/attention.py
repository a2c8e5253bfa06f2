"""Attention metrics reduced on the fly, one layer at a time, inside the model's forward pass.

:func:`metrics_attention` is registered with transformers' ``AttentionInterface`` under
:data:`IMPL`. It computes the softmax attention probabilities of one layer exactly as the
``eager`` implementation does, hands them to the :class:`AttentionCollector` passed to the
forward call as ``litho_collector=...``, and returns the attention output; so no ``L x L`` map
outlives its layer. Formulas: docs/metrics.md.

Written by hand because no library reduces attention maps inside the forward pass. The
reductions are shaped for the CPU as well as the GPU: every row or column sum over a map is a
matrix-vector product (BLAS/oneDNN, one read of the map, no temporary of its size), and only the
entropy needs one elementwise pass. In a bf16 model the maps are reduced in bf16 (sums accumulate
in float32 inside the matmuls and are rounded to bf16 once; the errors against float32 are stated
in tests/filters/scores/test_lm_scores.py); other dtypes reduce in float32.
"""

from __future__ import annotations

import functools
import math

import torch

IMPL = "litho_metrics"


class AttentionCollector:
    """Per-forward masks and per-layer-group, per-window sums of the attention metrics.

    Positions index a right-padded window whose position 0 is the prefix token.

    Args:
        lengths: ``(B,)`` real tokens per window (prefix included).
        owned_from: ``(B,)`` first position this window owns (earlier ones were scored by an
            earlier window of the same text).
        sink_k: Number of leading positions treated as the attention sink.
        group_of: Layer group index of every attention layer (the sums are kept per group).
        wanted: Which of sink mass, entropy, long range and density to compute (four booleans); the
            others cost nothing.
        dtype: Dtype the maps are reduced in (the model's for bf16, else float32).
        reduce: The per-layer reduction (default :func:`reduce_layer`; or :func:`compiled_reduce`).
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        owned_from: torch.Tensor,
        sink_k: int,
        group_of: list[int],
        wanted=(True, True, True, True),
        dtype=torch.float32,
        reduce=None,
    ):
        self.reduce = reduce or reduce_layer
        self.group_of, self.dtype, self.k = group_of, dtype, sink_k
        self.wanted = tuple(wanted)
        n, own = lengths[:, None], owned_from[:, None]
        width = int(lengths.max())
        dev = lengths.device
        pos = torch.arange(width, device=dev)[None, :]
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
        self.non_sink = (torch.arange(width, device=dev) >= sink_k).to(dtype)[:, None]  # (L, 1)
        # LongAttn's distance threshold: key j is far from query i when i - j >= n - 3 * (n // 4).
        # Per window, (i, j, 1) for a batched matrix-vector product; windows of one length share it.
        self.far = None
        if self.wanted[2]:
            offsets = pos.T - pos  # (i, j): i - j
            bands = {}
            for d in (n - 3 * (n // 4))[:, 0].tolist():
                if d not in bands:
                    bands[d] = ((offsets >= d) & (pos >= sink_k)).to(dtype)[:, :, None]
            self.far = [bands[d] for d in (n - 3 * (n // 4))[:, 0].tolist()]
        batch, n_groups = lengths.shape[0], max(group_of) + 1
        zeros = torch.zeros(batch, n_groups, device=dev)
        self.sink, self.entropy, self.long_range = zeros, zeros.clone(), zeros.clone()
        self.heads = torch.zeros(batch, n_groups, width, dtype=torch.int32, device=dev)

    def totals(self, parts: list[list[int]], layers: list[int], head_frac: float, heads: int) -> tuple:
        """Per window and column group (``parts[c]``: its layer groups, ``layers[c]`` layers in all):
        ``(sums (B, 3, C) of sink, entropy and long range, query counts (B, 2), load-bearing keys (B, C),
        eligible keys (B,))``; a key is load-bearing in at least ``ceil(head_frac * layers * heads)`` heads."""
        metric = torch.stack([self.sink, self.entropy, self.long_range], 1)
        sums = torch.stack([metric[..., part].sum(2) for part in parts], 2)
        bearing = []
        for part, n_layers in zip(parts, layers, strict=True):
            need = max(1, math.ceil(head_frac * n_layers * heads - 1e-9))
            bearing.append(((self.heads[:, part].sum(1) >= need) & self.key).sum(1))
        counts = torch.stack([self.query.sum(1), self.query_ent.sum(1)], 1)
        return sums, counts, torch.stack(bearing, 1), self.key.sum(1)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Reduce one layer's probabilities ``(B, H, L, L)`` into its group's sums."""
        masks = (self.visible, self.log_visible, self.query, self.query_ent, self.real_query)
        sums = self.reduce(
            probs.to(self.dtype), self.k, self.wanted, self.non_sink, self.far, *masks, self.key, self.later
        )
        g = self.group_of[self.layer]
        for total, part in zip((self.sink, self.entropy, self.long_range), sums[:3], strict=True):
            if part is not None:
                total[:, g] += part
        if sums[3] is not None:
            self.heads[:, g] += sums[3]
        self.layer += 1


def reduce_layer(
    probs, k: int, wanted, non_sink, far, visible, log_visible, query, query_ent, real_query, key, later
):
    """Per-window sums of one layer's sink mass, normalised entropy and long-range mass over the
    owned queries, and per key the number of heads that find it load-bearing (docs/metrics.md);
    ``None`` for a metric not in ``wanted`` (sink, entropy, long range, density)."""
    want_sink, want_entropy, want_far, want_density = wanted
    sink = entropy = long_range = bearing = None
    if want_sink:
        sink = (probs[..., :k].float().sum(-1) * query[:, None]).sum((1, 2))
    if not (want_entropy or want_far or want_density):
        return sink, entropy, long_range, bearing
    # Summed directly (a matrix-vector product), not 1 - sink, which loses digits when sink ~ 1.
    rest = (probs @ non_sink)[..., 0].float()
    ok = rest > 0
    safe = torch.where(ok, rest, torch.ones_like(rest))
    if want_entropy:
        # -sum p ln p of the non-sink row: one elementwise pass per window (bounded temporary).
        neg_plogp = torch.stack([torch.special.entr(p) @ non_sink for p in probs])[..., 0].float()
        ent = torch.where(ok, (neg_plogp / safe + safe.log()) / log_visible[:, None], 0.0)
        entropy = (ent * query_ent[:, None]).sum((1, 2))
    if want_far:
        # far[b] is (i, j, 1): per query row i, one (H x L) @ (L x 1) product over the heads.
        mass = torch.stack([(p.transpose(0, 1) @ f)[..., 0].T for p, f in zip(probs, far, strict=True)])
        long_range = (torch.where(ok, mass.float() / safe, 0.0) * query[:, None]).sum((1, 2))
    if want_density:
        # Relative attention a_ij * visible_i / rest_i is 1 under uniform non-sink attention.
        weight = torch.where(ok, visible[:, None] / safe, 0.0) * real_query[:, None]
        received = (weight.to(probs.dtype)[:, :, None, :] @ probs)[:, :, 0].float()
        received = received - weight * probs.diagonal(dim1=-2, dim2=-1).float()  # later queries only
        bearing = ((received / later[:, None]) > 1.0) & key[:, None]
        bearing = bearing.sum(1, dtype=torch.int32)
    return sink, entropy, long_range, bearing


@functools.cache
def compiled_reduce():
    """:func:`reduce_layer` fused by ``torch.compile``: fewer passes over each layer's map (for GPUs)."""
    return torch.compile(reduce_layer, dynamic=True)


def metrics_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention that also feeds ``kwargs['litho_collector']`` (when given) the probabilities.

    Without a collector it is transformers' SDPA attention (unless ``litho_eager`` asks for the
    eager computation, or the model soft-caps its scores, which SDPA cannot). ``litho_uniform``
    (``{layer index: head indices}``) replaces those heads' attention by uniform causal attention
    (:func:`uniform_heads`), for AttentionInfluence's masked pass.

    Grouped-query heads are not expanded: the ``G`` query heads of one key/value head are stacked
    along the query axis, which gives the same ``(B, H, L, L)`` map in memory without copying K and V.
    """
    uniform = (kwargs.get("litho_uniform") or {}).get(getattr(module, "layer_idx", None))
    groups = query.shape[1] // key.shape[1]
    collector = kwargs.get("litho_collector")
    if collector is None and not kwargs.get("litho_eager") and kwargs.get("softcap") is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        rest = {k: v for k, v in kwargs.items() if not k.startswith("litho_")}
        output, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **rest
        )
        return (output if uniform is None else uniform_heads(output, value, uniform, groups)), None
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    q = (query * scaling).reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = torch.matmul(q, key.transpose(2, 3)).view(batch, heads, length, -1)
    if kwargs.get("softcap") is not None:
        scores = torch.tanh(scores / kwargs["softcap"]) * kwargs["softcap"]
    if attention_mask is not None:
        scores.add_(attention_mask[:, :, :, : key.shape[-2]])
    # In bf16/fp16 this equals eager's float32 softmax cast back (computed in float32, rounded once).
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32 if scores.dtype == torch.float32 else None)
    del scores  # keep one L x L map alive while the metrics are reduced
    collector = kwargs.get("litho_collector")
    if collector is not None:
        collector.update(probs)
    grouped = probs.to(value.dtype).view(batch, kv_heads, -1, probs.shape[-1])
    output = torch.matmul(grouped, value).view(batch, heads, length, dim).transpose(1, 2).contiguous()
    return (output if uniform is None else uniform_heads(output, value, uniform, groups)), None


def uniform_heads(
    output: torch.Tensor, value: torch.Tensor, heads: torch.Tensor, groups: int
) -> torch.Tensor:
    """``output`` ``(B, L, H, D)`` with the given heads' outputs replaced by what uniform causal attention
    gives: query ``i`` averages the values of positions ``0..i``, a running mean (O(L), no map).

    Windows are right-padded, so every key before a real query is real; padded queries are ignored.
    """
    v = value[:, heads // groups].float()  # (B, n, L, D): each masked head's key/value head
    counts = torch.arange(1, v.shape[2] + 1, device=v.device, dtype=v.dtype)[None, None, :, None]
    output[:, :, heads] = (v.cumsum(2) / counts).transpose(1, 2).to(output.dtype)
    return output


def register() -> str:
    """Register :data:`IMPL` (attention and its additive eager mask) with transformers; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPL, metrics_attention)
    AttentionMaskInterface.register(IMPL, eager_mask)
    return IMPL
