"""What a scorer model sees in a text: bits per byte, how its attention spreads, and how much of its
prediction rests on its retrieval heads, on the request the text answers, and on a reference model.

One forward pass per window gives bits per byte and the attention metrics (reduced layer by layer
inside the attention function, :mod:`filters.scores.attention`). ``influence`` adds a second pass with
the retrieval heads' attention made uniform, sharing the layers below the first of them
(AttentionInfluence); ``ifd`` scores the text again after its request (IFD); ``reference`` scores it
under a second model (the reference-model gap). Definitions and references: docs/metrics.md.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from filters.scores.lm_parts import Accumulator, plan_windows, prompt_ids, prompt_messages, skipped_layers
from generators.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = "lm_scores_v1"  # for the output metadata; the columns carry _v1 too
BPB = "bits_per_byte_v1"
ATTN = ("attn_sink_mass_v1", "attn_entropy_v1", "attn_long_range_v1", "attn_density_v1")
INFLUENCE, IFD, REF_GAP = "attn_influence_v1", "ifd_v1", "ref_gap_v1"
ATTN_METRICS = ("sink_mass", "entropy", "long_range", "density")  # ATTN without attn_ and _v1
METRICS = (*ATTN_METRICS, "influence", "ifd")  # filters.lm.metrics
DEFAULT_METRICS = ATTN_METRICS  # the class default; conf/filters/default.yaml says what a run computes
__all__ = ["ATTN", "BPB", "IFD", "INFLUENCE", "METRICS", "REF_GAP", "LMScorer", "plan_windows"]


def wanted_metrics(metrics) -> tuple[str, ...]:
    """The metrics asked for, in :data:`METRICS` order.

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


class LMScorer:
    """Scorer stage: adds ``bits_per_byte_v1`` and, as ``metrics`` asks, the attention metrics
    ``attn_sink_mass_v1``, ``attn_entropy_v1``, ``attn_long_range_v1``, ``attn_density_v1`` (plus
    ``<name>_g<i>`` for each layer group when ``layer_groups > 1``), ``attn_influence_v1`` and
    ``ifd_v1`` (with a ``prompt_column``); ``ref_gap_v1`` with a ``reference`` model.

    Bits per byte as in the Pile (Gao et al. 2020); attention sinks after StreamingLLM (Xiao et
    al. 2023); long-range mass after LongAttn (Wu et al. 2025); influence after AttentionInfluence
    (Hua et al. 2025); IFD after Li et al. 2023/2024 (Cherry LLM, Superfiltering); the reference gap
    after RHO-1 (Lin et al. 2024) and CoLoR-Filter (Brandfonbrener et al. 2024). Each text is prefixed
    with one document token and cut into windows of ``max_len`` positions; windows of a batch are
    sorted by length and right-padded, and padding never changes a row's scores. Rows whose
    ``drop_reason`` is non-empty are not scored (NaN).

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
        layer_groups: Contiguous layer groups with their own attention columns (0 or 1: none; the
            number of layers: one column per layer). The metrics are summed per group as the layers run.
        metrics: Metrics to compute, from :data:`METRICS` (default the attention ones); the others are neither
            computed nor written. ``[]`` leaves bits per byte, at the cost of a plain forward.
        prompt_column: Column holding each text's request (chat messages as JSON, a list of them, or
            a string), for ``ifd``; without it ``ifd`` is not computed.
        reference: A second model spec: ``ref_gap_v1`` is bits per byte under ``model`` minus under it.
        influence_head_frac: Share of heads masked for ``influence`` (the top retrieval heads).
        prefix_token: Token put before every window (the document start the scorer was trained on):
            default ``<|endoftext|>`` when the tokenizer has it as a special token, else BOS, else EOS.
        compile_metrics: Fuse the per-layer metric reductions with ``torch.compile`` (for CUDA, where
            they are memory-bound; slower on CPU, and the first batches pay the compilation).
        threads: torch CPU threads (0: all cores, also inside a Ray worker).
        allow_network: Let transformers reach the hub.
        cache_dir: Where dequantized GGUF models and the retrieval heads are cached.
    """

    # Holds nothing a run changes: a small run keeps one per worker process (pipeline/stages.py).
    shareable = True

    version = VERSION

    @classmethod
    def columns(
        cls,
        text_column: str = "text",
        layer_groups: int = 3,
        max_len: int = 512,
        stride: int | None = None,
        sink_k: int = 4,
        metrics=DEFAULT_METRICS,
        prompt_column: str | None = None,
        reference: str | None = None,
        **_,
    ) -> tuple[tuple, tuple]:
        """``(needs, adds)``; checks the window and metric settings (cheap: the driver calls it
        before the run)."""
        stride = max_len // 2 if stride is None else stride
        if not 0 <= sink_k <= max_len - 3:
            raise ConfigError(f"filters.lm.sink_k={sink_k}: use 0..max_len-3 (StreamingLLM uses 4)")
        if not 1 <= stride <= max_len - 1:
            raise ConfigError(f"filters.lm.stride={stride}: use 1..max_len-1 (max_len={max_len})")
        wanted = wanted_metrics(metrics)
        attn = tuple(ATTN[i] for i, m in enumerate(ATTN_METRICS) if m in wanted)
        extra = (INFLUENCE,) * ("influence" in wanted) + (IFD,) * ("ifd" in wanted and bool(prompt_column))
        n_groups = layer_groups if layer_groups > 1 else 0
        groups = tuple(f"{m}_g{g}" for g in range(n_groups) for m in attn)
        needs = (text_column,) + ((prompt_column,) if IFD in extra else ())
        return needs, (BPB, *attn, *extra, *(REF_GAP,) * bool(reference)) + groups

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
        metrics=DEFAULT_METRICS,
        prompt_column: str | None = None,
        reference: str | None = None,
        influence_head_frac: float = 0.05,
        prefix_token: str | None = None,
        compile_metrics: bool = False,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
    ):
        import torch

        from filters.scores.attention import compiled_reduce, register
        from generators.teachers.models import load_causal_lm, pick_device, set_threads

        _, self.adds = self.columns(
            text_column, layer_groups, max_len, stride, sink_k, metrics, prompt_column, reference
        )
        stride = max_len // 2 if stride is None else stride
        set_threads(threads)
        self.torch = torch
        self.device = pick_device(device)
        self.model, self.tok = load_causal_lm(
            model, "filters.lm.model", self.device, dtype, allow_network, cache_dir
        )
        wanted = wanted_metrics(metrics)
        self.metrics = tuple(m for m in wanted if m in ATTN_METRICS)
        self.influence = "influence" in wanted
        self.prompt_column = prompt_column if IFD in self.adds else None
        self.wanted = tuple(m in self.metrics for m in ATTN_METRICS)
        # Without attention metrics or masked heads the model keeps its fused attention: bits per byte
        # alone costs a plain forward pass.
        self.model.set_attn_implementation(register() if self.metrics or self.influence else "sdpa")
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
        self.uniform, self.first_masked = {}, 0  # {layer: head indices} made uniform, the first such layer
        if self.influence:
            from filters.scores.retrieval_heads import masked_heads

            encode = lambda text: self.tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            self.uniform, self.first_masked = masked_heads(
                self.model, encode, self.prefix, cache_dir, influence_head_frac
            )
        self.reference = None
        if reference:
            self.reference = LMScorer(
                reference, text_column, device, dtype, max_len, stride, batch_size, metrics=[],
                layer_groups=0, threads=threads, allow_network=allow_network, cache_dir=cache_dir,
            )  # fmt: skip

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
        prompts = list(batch[self.prompt_column]) if self.prompt_column else None
        batch.update(self.score([t if k else "" for t, k in zip(texts, keep, strict=True)], prompts))
        return batch

    def score(self, texts: list[str], prompts: list | None = None) -> dict[str, np.ndarray]:
        """Score texts (with their requests, for ``ifd``); empty texts get NaN."""
        ids = self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        windows, conditional = [], []
        for row, toks in enumerate(ids):
            spans = plan_windows(len(toks), self.width, self.stride)
            for start, end, owned in spans:
                windows.append((row, [self.prefix, *toks[start:end]], 1 + owned - start))
            messages = prompt_messages(prompts[row]) if self.prompt_column and prompts else None
            if messages and spans:
                # The request takes the document token's place before every window: the same text
                # tokens are scored with the same text context, after the request instead.
                p = prompt_ids(self.tok, messages, self.prefix, self.width + 1)
                conditional += [(row, [*p, *toks[s:e]], len(p) + o - s) for s, e, o in spans]
        acc = Accumulator(len(texts), len(self.parts))
        for chunk in _batches(windows, self.batch_size):
            acc.add([w[0] for w in chunk], *self._forward(chunk))
        for chunk in _batches(conditional, self.batch_size):
            acc.add_conditional([w[0] for w in chunk], self._forward(chunk, plain=True)[0])
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
        layers = [sum(self.group_layers[g] for g in part) for part in self.parts]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {BPB: np.where(acc.seen & (n_bytes > 0), acc.nll / (math.log(2) * n_bytes), np.nan)}
            out.update(acc.attention(layers, self.num_heads, ATTN, self.metrics))
            nll = np.where(acc.seen & (acc.nll > 0), acc.nll, np.nan)
            if self.influence:
                out[INFLUENCE] = (acc.masked - nll) / nll
            if self.prompt_column:
                out[IFD] = np.where(acc.prompted, acc.conditional / nll, np.nan)
        if self.reference is not None:
            out[REF_GAP] = out[BPB] - self.reference.score(texts)[BPB]
        return out

    def _forward(self, chunk: list[tuple[int, list[int], int]], reduce=None, plain: bool = False):
        """One padded forward pass: per-window NLL sums and, per column group (all layers first),
        attention sums, and the NLL with the retrieval heads made uniform (``reduce`` overrides the
        per-layer reduction, for benchmarks; ``plain``: NLL only, with SDPA attention)."""
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
        target = (pos >= owned[:, None]) & (pos < lengths[:, None]) & (pos >= 1)
        collect = self.metrics and not plain
        extra = {}
        if collect:
            extra["litho_collector"] = collector = AttentionCollector(
                lengths,
                owned,
                self.sink_k,
                self.group_of,
                self.wanted,
                self.reduce_dtype,
                reduce or self.reduce,
            )
        influence = self.influence and not plain
        captured, hook = [None], None
        if influence and self.first_masked > 0:  # the masked pass starts from this layer's output
            layer = self.model.base_model.layers[self.first_masked - 1]
            hook = layer.register_forward_hook(lambda module, args, out: captured.__setitem__(0, out))
        try:
            with torch.inference_mode():
                hidden = self.model.base_model(input_ids=ids, attention_mask=mask, **extra)[0]
        finally:
            if hook is not None:
                hook.remove()
        with torch.inference_mode():
            nll_sum = self._nll_sums(hidden, ids, target)
            masked = self._masked_nll(ids, mask, target, captured[0]) if influence else None
            if not collect:
                return [nll_sum.cpu().numpy(), None, None, None, None, masked]
            layers = [sum(self.group_layers[g] for g in part) for part in self.parts]
            out = (nll_sum, *collector.totals(self.parts, layers, self.head_frac, self.num_heads))
        return [t.double().cpu().numpy() for t in out] + [masked]

    def _masked_nll(self, ids, mask, target, below):
        """Per-window NLL sums with the retrieval heads' attention uniform (AttentionInfluence), with
        SDPA attention. Layers below the first masked one are not run again: their output ``below``
        comes from the base pass (docs/metrics.md)."""
        args = {"litho_uniform": self.uniform}
        if self.first_masked > 0:
            with skipped_layers(self.model, self.first_masked, below):
                hidden = self.model.base_model(input_ids=ids, attention_mask=mask, **args)[0]
        else:
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, **args)[0]
        return self._nll_sums(hidden, ids, target).cpu().numpy()

    def _nll_sums(self, hidden, ids, target):
        """Per-window sums of the NLL (nats) of the target positions."""
        nll = self._nll(hidden[:, :-1][target[:, 1:]], ids[:, 1:][target[:, 1:]])
        rows = target[:, 1:].nonzero()[:, 0]
        zeros = self.torch.zeros(len(ids), dtype=self.torch.float64, device=hidden.device)
        return zeros.index_add_(0, rows, nll.double())

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


def _batches(windows: list, size: int):
    """Windows sorted by length (less padding), ``size`` at a time."""
    windows = sorted(windows, key=lambda w: -len(w[1]))
    for i in range(0, len(windows), size):
        yield windows[i : i + size]
