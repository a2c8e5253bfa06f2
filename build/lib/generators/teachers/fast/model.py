"""A Llama-family decoder forward over a loaded HF model, with a slot-addressed static KV cache.

The HF modules keep their weights and do the per-token math (embedding, RMSNorm, projections,
MLP); this file only re-plumbs attention so that every batch row ("slot") has its own position
and its own cache row. That is what lets the engine refill a finished row with a new request
while the others keep decoding, and what makes one decode step a fixed-shape, sync-free
sequence of kernels that a CUDA graph can capture. Architectures whose attention differs from
this recipe (ALiBi, softcapping, per-position RoPE scaling, ...) are refused by
:func:`unsupported_reason` and served by the plain ``generate()`` teacher instead.
"""

from __future__ import annotations

import torch

# Llama-style blocks: pre-norm attention with RoPE + gated MLP. Qwen3 adds q/k RMSNorm per head.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# RoPE types whose frequencies do not depend on the sequence length: one cos/sin table is exact.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def unsupported_reason(config) -> str | None:
    """Why the fast decoder cannot run this config, or None when it can."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {list(SUPPORTED_MODEL_TYPES)}"
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else None
    if rope_type not in SUPPORTED_ROPE_TYPES:
        return f"rope_type {rope_type!r} is not one of {list(SUPPORTED_ROPE_TYPES)}"
    return None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


class SlotDecoder:
    """Prefill and one-token decode over an HF ``*ForCausalLM`` with per-slot KV rows.

    Args:
        model: A loaded Llama / Mistral / Qwen2 / Qwen3 causal LM (any device and dtype).
    """

    def __init__(self, model):
        cfg = model.config
        inner = model.model
        self.layers = list(inner.layers[: cfg.num_hidden_layers])
        self.embed, self.norm, self.lm_head, self.rotary = (
            inner.embed_tokens,
            inner.norm,
            model.lm_head,
            inner.rotary_emb,
        )
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.groups = self.n_heads // self.n_kv
        self.scale = self.layers[0].self_attn.scaling
        # Mistral keeps the window on the config; Qwen sets it per layer (None on full-attention layers).
        global_window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
        self.windows = [
            getattr(layer.self_attn, "sliding_window", None) or global_window for layer in self.layers
        ]
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.vocab_size = self.lm_head.out_features
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.rows = self.length = 0

    def allocate(self, rows: int, length: int) -> bool:
        """Make room for ``rows`` slots of ``length`` positions; return True if buffers moved."""
        if rows <= self.rows and length <= self.length:
            return False
        rows, length = max(rows, self.rows), max(length, self.length)
        self.k = self.v = []  # free the old cache before allocating the new one
        shape = (rows, self.n_kv, length, self.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        positions = torch.arange(length, device=self.device)[None]
        probe = torch.zeros(1, device=self.device, dtype=self.dtype)
        cos, sin = self.rotary(probe, positions)  # the model's own RoPE, evaluated once per position
        self.cos, self.sin = cos[0], sin[0]
        self.rows, self.length = rows, length
        return True

    def _qkv(self, layer, h: torch.Tensor, shape: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = layer.self_attn
        q = attn.q_proj(h).view(*shape, self.n_heads, self.head_dim)
        k = attn.k_proj(h).view(*shape, self.n_kv, self.head_dim)
        v = attn.v_proj(h).view(*shape, self.n_kv, self.head_dim)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q, k, v

    def _finish_layer(self, layer, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = x + layer.self_attn.o_proj(attn_out)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h)).float()

    def prefill(self, ids: torch.Tensor, lens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Run right-padded prompts ``ids`` [n, T] into cache rows ``slots``; return last-token logits.

        Right padding keeps every real token at positions 0..len-1, so a plain causal mask is
        exact for real queries; the pad positions' keys land in the cache but are overwritten by
        decode steps before any query can see them.
        """
        n, t = ids.shape
        x = self.embed(ids)
        cos, sin = self.cos[:t, None], self.sin[:t, None]  # [T, 1, D] against [n, T, H, D]
        masks = {w: self._prefill_mask(t, w) for w in set(self.windows)}
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(x), (n, t))
            q, k = _rotate(q, cos, sin).transpose(1, 2), _rotate(k, cos, sin).transpose(1, 2)
            v = v.transpose(1, 2)
            self.k[i][slots, :, :t] = k
            self.v[i][slots, :, :t] = v
            mask = masks[self.windows[i]]
            out = torch.nn.functional.scaled_dot_product_attention(
                q,
                _repeat_kv(k, self.groups),
                _repeat_kv(v, self.groups),
                attn_mask=mask,
                is_causal=mask is None,
                scale=self.scale,
            )
            x = self._finish_layer(layer, x, out.transpose(1, 2).reshape(n, t, -1))
        last = x[torch.arange(n, device=x.device), lens - 1]
        return self._logits(last)

    def _prefill_mask(self, t: int, window: int | None) -> torch.Tensor | None:
        if window is None or window >= t:
            return None
        q = torch.arange(t, device=self.device)[:, None]
        kv = torch.arange(t, device=self.device)[None]
        return (kv <= q) & (kv > q - window)

    def decode(self, tok: torch.Tensor, pos: torch.Tensor, kv_len: int) -> torch.Tensor:
        """One token for each of the first ``len(tok)`` slots at positions ``pos``; return logits.

        Fixed shapes and no host reads: safe to capture in a CUDA graph. Attention reads only the
        first ``kv_len`` cache positions (the engine keeps every live row's position below it).
        """
        b = tok.shape[0]
        rows = torch.arange(b, device=tok.device)
        x = self.embed(tok)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # [B, 1, D] against [B, H, D]
        kv_idx = torch.arange(kv_len, device=tok.device)[None]
        masks = {}
        for w in set(self.windows):
            visible = kv_idx <= pos[:, None]
            if w is not None:
                visible = visible & (kv_idx > pos[:, None] - w)
            masks[w] = visible[:, None, None]  # [B, 1, 1, L]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(x), (b,))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            self.k[i][rows, :, pos] = k
            self.v[i][rows, :, pos] = v
            # Grouped-query attention without copying K/V: the g query heads that share a KV head
            # become g "query positions" of one head, all at the row's position, so the mask is the
            # same for each of them and SDPA's fused kernels (fp32 softmax) apply.
            out = torch.nn.functional.scaled_dot_product_attention(
                q.view(b, self.n_kv, self.groups, self.head_dim),
                self.k[i][:b, :, :kv_len],
                self.v[i][:b, :, :kv_len],
                attn_mask=masks[self.windows[i]],
                scale=self.scale,
            )
            x = self._finish_layer(layer, x, out.reshape(b, -1))
        return self._logits(x)
