"""What a scorer model sees in a text: bits per byte and how its attention spreads.

One forward pass per window gives both: the language-model loss (bits per UTF-8 byte,
comparable across tokenizers) and attention metrics reduced layer by layer inside the
attention function (:mod:`filters.scores.attention`). Definitions and references: docs/metrics.md.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from generators.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = "lm_scores_v1"  # for the output metadata; the columns carry _v1 too
BPB = "bits_per_byte_v1"
ATTN = ("attn_sink_mass_v1", "attn_entropy_v1", "attn_long_range_v1", "attn_density_v1")
METRICS = ("sink_mass", "entropy", "long_range", "density")  # filters.lm.metrics: ATTN without attn_, _v1


def wanted_metrics(metrics) -> tuple[str, ...]:
    """The attention metrics asked for, in :data:`METRICS` order.

    Raises:
        ConfigError: ``metrics`` is not a list of names from :data:`METRICS`.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics or [])
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ConfigError(
            f"filters.lm.metrics: unknown metric {unknown[0]!r}; use a list of {', '.join(METRICS)} "
            "([] = bits_per_byte_v1 only)"
        )
    return tuple(m for m in METRICS if m in names)


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


class LMScorer:
    """Scorer stage: adds ``bits_per_byte_v1`` and the attention metrics ``attn_sink_mass_v1``,
    ``attn_entropy_v1``, ``attn_long_range_v1``, ``attn_density_v1`` (plus ``<name>_g<i>`` for
    each layer group when ``layer_groups > 1``).

    Bits per byte as in the Pile (Gao et al. 2020); attention sinks after StreamingLLM (Xiao et
    al. 2023); long-range mass after LongAttn (Wu et al. 2025). Each text is prefixed with one
    document token and cut into windows of ``max_len`` positions; windows of a batch are sorted by
    length and right-padded, and padding never changes a row's scores. Rows whose ``drop_reason``
    is non-empty are not scored (NaN).

    Args:
        model: Scorer model spec: ``embedded:smollm2``, a ``.gguf`` file or a local HF causal LM
            directory (see :func:`generators.teachers.models.resolve`).
        text_column: Column holding the text.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:i]``.
        dtype: ``auto`` (as :func:`generators.teachers.models.load_causal_lm` picks), ``float32``,
            ``bfloat16`` or ``float16``. A bf16 model's attention maps are also reduced in bf16.
        max_len: Positions per window, the prefix token included.
        stride: Text tokens between window starts (default ``max_len // 2``); the overlap is context.
        batch_size: Windows per forward pass.
        sink_k: Leading positions (prefix token included) counted as the attention sink.
        density_head_frac: Share of heads in which a token must receive more than its uniform
            share of attention to count as load-bearing.
        layer_groups: Contiguous layer groups with their own columns (0 or 1: none; the number of
            layers: one column per layer). The metrics are summed per group as the layers run.
        metrics: Attention metrics to compute, from :data:`METRICS` (default all); the others are
            neither computed nor written. ``[]`` leaves bits per byte, at the cost of a plain forward.
        prefix_token: Token put before every window (the document start the scorer was trained on):
            default ``<|endoftext|>`` when the tokenizer has it as a special token, else BOS, else EOS.
        compile_metrics: Fuse the per-layer metric reductions with ``torch.compile`` (for CUDA, where
            they are memory-bound; slower on CPU, and the first batches pay the compilation).
        threads: torch CPU threads (0: all cores, also inside a Ray worker).
        allow_network: Let transformers reach the hub.
        cache_dir: Where dequantized GGUF models are cached.
    """

    version = VERSION

    @classmethod
    def columns(
        cls,
        text_column: str = "text",
        layer_groups: int = 3,
        max_len: int = 512,
        stride: int | None = None,
        sink_k: int = 4,
        metrics=METRICS,
        **_,
    ) -> tuple[tuple, tuple]:
        """``(needs, adds)``; checks the window and metric settings (cheap: the driver calls it
        before the run)."""
        stride = max_len // 2 if stride is None else stride
        if not 0 <= sink_k <= max_len - 3:
            raise ConfigError(f"filters.lm.sink_k={sink_k}: use 0..max_len-3 (StreamingLLM uses 4)")
        if not 1 <= stride <= max_len - 1:
            raise ConfigError(f"filters.lm.stride={stride}: use 1..max_len-1 (max_len={max_len})")
        attn = tuple(ATTN[METRICS.index(m)] for m in wanted_metrics(metrics))
        n_groups = layer_groups if layer_groups > 1 else 0
        return (text_column,), (BPB, *attn) + tuple(f"{m}_g{g}" for g in range(n_groups) for m in attn)

    def __init__(
        self,
        model: str = "embedded:smollm2",
        text_column: str = "text",
        device: str = "auto",
        dtype: str = "auto",
        max_len: int = 512,
        stride: int | None = None,
        batch_size: int = 8,
        sink_k: int = 4,
        density_head_frac: float = 0.5,
        layer_groups: int = 3,
        metrics=METRICS,
        prefix_token: str | None = None,
        compile_metrics: bool = False,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
    ):
        import torch

        from filters.scores.attention import compiled_reduce, register
        from generators.teachers.models import load_causal_lm, pick_device, set_threads

        _, self.adds = self.columns(text_column, layer_groups, max_len, stride, sink_k, metrics)
        stride = max_len // 2 if stride is None else stride
        set_threads(threads)
        self.torch = torch
        self.device = pick_device(device)
        self.model, self.tok = load_causal_lm(
            model, "filters.lm.model", self.device, dtype, allow_network, cache_dir
        )
        self.metrics = wanted_metrics(metrics)
        self.wanted = tuple(m in self.metrics for m in METRICS)
        # Without attention metrics the model keeps its fused attention: bits per byte alone costs
        # a plain forward pass.
        self.model.set_attn_implementation(register() if self.metrics else "sdpa")
        # bf16 maps are reduced in bf16 (docs/metrics.md); fp16 would overflow the density weights.
        bf16 = self.model.dtype == torch.bfloat16
        self.reduce_dtype = torch.bfloat16 if bf16 else torch.float32
        self.prefix = self._prefix_id(prefix_token)
        self.reduce = compiled_reduce() if compile_metrics else None
        self.text_column, self.batch_size, self.sink_k = text_column, batch_size, sink_k
        self.width, self.stride, self.head_frac = max_len - 1, stride, density_head_frac
        config = self.model.config
        self.num_layers, self.num_heads = config.num_hidden_layers, config.num_attention_heads
        self.softcap = getattr(config, "final_logit_softcapping", None)
        # The collector keeps one sum per layer group (every layer in group 0 when there are none);
        # the all-layer columns add the groups up.
        n_groups = layer_groups if layer_groups > 1 else 0
        split = np.array_split(np.arange(self.num_layers), max(n_groups, 1))
        self.group_of = [g for g, layers in enumerate(split) for _ in layers]
        self.parts = [list(range(len(split)))] + ([[g] for g in range(n_groups)] if n_groups else [])
        self.group_layers = [len(layers) for layers in split]

    def _prefix_id(self, token: str | None) -> int:
        """The document token put before every window (see ``prefix_token``)."""
        tok = self.tok
        if token is None:
            # Byte-level BPE families (GPT-2, SmolLM, Qwen) separate pretraining documents with it.
            token = (
                "<|endoftext|>"
                if "<|endoftext|>" in tok.all_special_tokens
                else tok.bos_token or tok.eos_token
            )
        if token is None:
            raise ConfigError("filters.lm.prefix_token: the scorer tokenizer has no BOS/EOS; name a token")
        idx = tok.convert_tokens_to_ids(token)
        if idx is None or (idx == tok.unk_token_id and token != tok.unk_token):
            raise ConfigError(f"filters.lm.prefix_token={token}: not in the scorer's vocabulary")
        return idx

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column]]
        keep = np.ones(len(texts), dtype=bool)
        if "drop_reason" in batch:
            keep = np.array([r is None or str(r) == "" for r in batch["drop_reason"]], dtype=bool)
        batch.update(self.score([t if k else "" for t, k in zip(texts, keep, strict=True)]))
        return batch

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Score texts; empty texts get NaN."""
        ids = self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        windows = []
        for row, toks in enumerate(ids):
            for start, end, owned in plan_windows(len(toks), self.width, self.stride):
                windows.append((row, [self.prefix, *toks[start:end]], 1 + owned - start))
        windows.sort(key=lambda w: -len(w[1]))
        acc = _Accumulator(len(texts), len(self.parts))
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            acc.add([w[0] for w in chunk], *self._forward(chunk))
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
        layers = [sum(self.group_layers[g] for g in part) for part in self.parts]
        return acc.finish(n_bytes, self.num_heads, layers, self.metrics)

    def _forward(self, chunk: list[tuple[int, list[int], int]], reduce=None):
        """One padded forward pass: per-window NLL sums and, per column group (all layers first),
        attention sums (``reduce`` overrides the per-layer reduction, for benchmarks)."""
        torch = self.torch
        from filters.scores.attention import AttentionCollector

        dev = self.device
        lengths = torch.tensor([len(w[1]) for w in chunk], device=dev)
        owned = torch.tensor([w[2] for w in chunk], device=dev)
        width = int(lengths.max())
        ids = torch.full((len(chunk), width), self.prefix, dtype=torch.long)
        for b, (_, toks, _) in enumerate(chunk):
            ids[b, : len(toks)] = torch.tensor(toks)
        ids = ids.to(dev)
        pos = torch.arange(width, device=dev)[None]
        mask = (pos < lengths[:, None]).long()
        extra = {}
        if self.metrics:
            extra["litho_collector"] = collector = AttentionCollector(
                lengths,
                owned,
                self.sink_k,
                self.group_of,
                self.wanted,
                self.reduce_dtype,
                reduce or self.reduce,
            )
        with torch.inference_mode():
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, **extra)[0]
            target = (pos >= owned[:, None]) & (pos < lengths[:, None]) & (pos >= 1)
            nll = self._nll(hidden[:, :-1][target[:, 1:]], ids[:, 1:][target[:, 1:]])
            rows = target[:, 1:].nonzero()[:, 0]
            nll_sum = torch.zeros(len(chunk), dtype=torch.float64, device=dev).index_add_(
                0, rows, nll.double()
            )
            if not self.metrics:
                return [nll_sum.cpu().numpy(), None, None, None, None]
            sums, bearing = [], []
            for part in self.parts:
                layers = sum(self.group_layers[g] for g in part)
                sums.append(
                    torch.stack([collector.sink, collector.entropy, collector.long_range], 1)[..., part]
                )
                heads = collector.heads[:, part].sum(1)
                need = math.ceil(self.head_frac * layers * self.num_heads - 1e-9)
                bearing.append(((heads >= max(need, 1)) & collector.key).sum(1))
            sums = torch.stack([s.sum(2) for s in sums], 2)  # (B, 3, column groups)
            counts = torch.stack([collector.query.sum(1), collector.query_ent.sum(1)], 1)
            out = (nll_sum, sums, counts, torch.stack(bearing, 1), collector.key.sum(1))
        return [t.double().cpu().numpy() for t in out]

    def _nll(self, hidden, labels, chunk: int = 2048):
        """Per-token negative log-likelihood in nats, the output layer applied in chunks to bound memory."""
        torch = self.torch
        head = self.model.get_output_embeddings()
        parts = []
        for i in range(0, len(labels), chunk):
            logits = head(hidden[i : i + chunk]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            lse = torch.logsumexp(logits, -1)
            parts.append(lse - logits.gather(1, labels[i : i + chunk, None])[:, 0])
        return torch.cat(parts) if parts else torch.zeros(0, device=hidden.device)


class _Accumulator:
    """Per-row sums over a text's windows, turned into means at the end."""

    def __init__(self, rows: int, groups: int):
        self.nll = np.zeros(rows)
        self.sums = np.zeros((rows, 3, groups))
        self.counts = np.zeros((rows, 2))
        self.bearing = np.zeros((rows, groups))
        self.eligible = np.zeros(rows)
        self.seen = np.zeros(rows, dtype=bool)

    def add(self, rows, nll, sums=None, counts=None, bearing=None, eligible=None) -> None:
        np.add.at(self.nll, rows, nll)
        self.seen[rows] = True
        if sums is not None:
            np.add.at(self.sums, rows, sums)
            np.add.at(self.counts, rows, counts)
            np.add.at(self.bearing, rows, bearing)
            np.add.at(self.eligible, rows, eligible)

    def finish(self, n_bytes: np.ndarray, heads: int, layers: list[int], metrics) -> dict[str, np.ndarray]:
        """Columns from the sums; ``layers[g]`` is the number of layers in column group ``g``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {BPB: np.where(self.seen & (n_bytes > 0), self.nll / (math.log(2) * n_bytes), np.nan)}
            for g, n_layers in enumerate(layers):
                suffix = "" if g == 0 else f"_g{g - 1}"
                means = self.sums[:, :, g] / (n_layers * heads) / self.counts[:, [0, 1, 0]]
                for j, name in enumerate(METRICS[:3]):
                    if name in metrics:
                        out[ATTN[j] + suffix] = np.where(self.seen, means[:, j], np.nan)
                if "density" in metrics:
                    out[ATTN[3] + suffix] = np.where(self.seen, self.bearing[:, g] / self.eligible, np.nan)
        return out
