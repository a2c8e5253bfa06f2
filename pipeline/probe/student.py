"""The probe's student: a small Llama-shaped causal LM trained from scratch on one arm's tokens, and
its held-out bits per byte. Plain Python (torch, transformers): no Ray, testable on its own.

The student uses the target tokenizer's ids, compacted to the tokens that occur (in the pool or the
evaluation sets), so the embedding and output layers are as small as the text allows; on CPU the
output layer is most of the cost. When more distinct tokens occur than ``max_vocab``, the rarest
(by pool frequency) share one *rare* class whose probability is spread evenly over its members: the
student still assigns a proper probability to every token, so bits per byte stay honest (a rare
token costs ``-log p(rare) + log(members)``).

Bits per byte (Gao et al., 2020, "The Pile"; used by DataDecide, 2025, as the small-scale metric
that predicts larger-scale rankings): the summed negative log-likelihood of every token of the
evaluation text, in bits, over the text's UTF-8 bytes, so tokenizers and vocabularies compare.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import numpy as np

SEPARATOR = 0  # compact id 0 is the document separator: it starts every document


@dataclass(frozen=True)
class StudentConfig:
    """The student's shape and training recipe (conf/probe.yaml ``student:``).

    Args:
        hidden_size: Model width.
        layers: Transformer blocks.
        heads: Attention heads (key/value heads too).
        intermediate_size: MLP width.
        seq_len: Tokens per training sequence and evaluation window.
        max_vocab: Most compact ids (separator and rare class included); None: every token that occurs.
        batch_size: Sequences per optimizer step.
        lr: Peak AdamW learning rate.
        min_lr_frac: Final learning rate as a share of the peak (cosine decay).
        warmup_frac: Share of steps with a linear warm-up.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip (0 = off).
        epochs: Passes over the arm's tokens.
        dtype: ``auto`` (bf16 where the CPU or GPU runs it natively, else fp32), ``bf16`` or ``fp32``.
        device: ``auto`` (cuda when present), ``cpu`` or ``cuda``.
        threads: torch CPU threads (0 = torch's default).
        eval_batch_size: Windows per evaluation forward pass.
        average_last: Checkpoints whose held-out bits per byte are averaged (1: the final model only);
            averaging the last checkpoints lowers seed-to-seed noise (DataDecide, Magnusson et al. 2025).
        average_span: Share of the steps, counted back from the end, that those checkpoints span.
    """

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 512
    seq_len: int = 256
    max_vocab: int | None = 8192
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    epochs: int = 1
    dtype: str = "auto"
    device: str = "auto"
    threads: int = 1
    eval_batch_size: int = 16
    average_last: int = 1
    average_span: float = 0.2

    @classmethod
    def from_dict(cls, values: dict) -> StudentConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class Vocab:
    """Target ids mapped to compact student ids.

    Args:
        table: ``table[target_id]`` is the compact id (the rare class for rare tokens).
        size: Compact vocabulary size.
        rare_id: The shared class of the rarest tokens (None when every token has its own id).
        rare_members: Distinct target tokens in the rare class.
        distinct: Distinct target tokens seen in the pool and the evaluation sets.
    """

    table: np.ndarray
    size: int
    rare_id: int | None
    rare_members: int
    distinct: int

    def encode(self, ids) -> np.ndarray:
        return self.table[np.asarray(ids, dtype=np.int64)]


def build_vocab(pool_ids: np.ndarray, eval_ids: list[np.ndarray], max_vocab: int | None) -> Vocab:
    """Compact ids for the tokens in ``pool_ids`` (all pool tokens, flat) and ``eval_ids``: the separator,
    then tokens by pool frequency (ties by id); beyond ``max_vocab`` the rest share the rare class."""
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    every = np.concatenate([pool_ids, *[np.asarray(e, dtype=np.int64) for e in eval_ids]])
    present = np.unique(every)
    counts = np.bincount(pool_ids, minlength=int(present.max()) + 1)[present]
    ranked = present[np.lexsort((present, -counts))]  # most frequent first, then by id
    room = len(ranked) if max_vocab is None else max(1, int(max_vocab) - 1)
    table = np.zeros(int(present.max()) + 1, dtype=np.int32)
    if len(ranked) <= room:
        table[ranked] = np.arange(1, len(ranked) + 1)
        return Vocab(table, len(ranked) + 1, None, 0, len(ranked))
    own = room - 1  # one id goes to the rare class
    table[ranked[:own]] = np.arange(1, own + 1)
    rare_id = own + 1
    table[ranked[own:]] = rare_id
    return Vocab(table, rare_id + 1, rare_id, len(ranked) - own, len(ranked))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16 matrix units (AMX, AVX512-BF16), else fp32."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bf16"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "fp32"
    return "bf16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "fp32"


def build_student(vocab_size: int, cfg: StudentConfig, seed: int):
    """A Llama-shaped causal LM with tied embeddings, initialised from ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.seq_len + 1,
        tie_word_embeddings=True,
        bos_token_id=SEPARATOR,
        eos_token_id=SEPARATOR,
        pad_token_id=SEPARATOR,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def parameter_count(vocab_size: int, cfg: StudentConfig) -> int:
    """Parameters of the student for a vocabulary size (tied embeddings counted once)."""
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.layers
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    return vocab_size * h + n * per_layer + h


def _lr_at(step: int, steps: int, cfg: StudentConfig) -> float:
    warm = max(1, int(round(cfg.warmup_frac * steps)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def checkpoints(steps: int, last: int, span: float) -> list[int]:
    """The steps after which the model is evaluated: the final one and ``last - 1`` more, evenly
    spaced over the final ``span`` of training."""
    if last <= 1:
        return [steps]
    back = [round(span * steps * j / (last - 1)) for j in range(last)]
    return sorted({max(1, steps - b) for b in back})


def train_student(stream: np.ndarray, vocab_size: int, cfg: StudentConfig, seed: int, evaluate=None):
    """Train a fresh student on ``stream`` (compact ids, documents each led by the separator).

    The stream is cut into ``seq_len`` blocks (a last partial block is dropped: every arm of one
    budget gets the same number of blocks), shuffled by ``seed`` each epoch. ``evaluate(model)``, when
    given, is called at every step of :func:`checkpoints` (its seconds are not training seconds).

    Returns:
        ``(model, stats)``; stats hold ``steps``, ``train_tokens``, ``train_s``, ``tokens_per_s``,
        ``final_loss`` (nats, mean of the last 10 steps), ``parameters``, ``dtype`` and ``device``, and
        with ``evaluate`` its results as ``checkpoints`` (``[{"step", "result"}]``) and ``eval_s``.
    """
    import torch

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.threads and device == "cpu":
        torch.set_num_threads(int(cfg.threads))
    model = build_student(vocab_size, cfg, seed).to(device)
    blocks = torch.from_numpy(np.asarray(stream, dtype=np.int64)[: len(stream) // cfg.seq_len * cfg.seq_len])
    blocks = blocks.view(-1, cfg.seq_len)
    if not len(blocks):
        raise ValueError(f"the stream has {len(stream)} tokens, fewer than one sequence of {cfg.seq_len}")
    per_epoch = math.ceil(len(blocks) / cfg.batch_size)
    steps = per_epoch * cfg.epochs
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    started = time.perf_counter()
    step, evaluated, eval_s = 0, [], 0.0
    points = set(checkpoints(steps, cfg.average_last, cfg.average_span)) if evaluate else set()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(blocks), generator=generator)
        for b in range(per_epoch):
            batch = blocks[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]].to(device)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, cfg)
            with torch.autocast(
                device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16"
            ):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step in points:
                t0 = time.perf_counter()
                evaluated.append({"step": step, "result": evaluate(model)})
                eval_s += time.perf_counter() - t0
    seconds = time.perf_counter() - started - eval_s
    tokens = int(blocks.numel()) * cfg.epochs
    stats = {
        "steps": steps,
        "train_tokens": tokens,
        "train_s": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "final_loss": round(float(np.mean(losses[-10:])), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "device": device,
    }
    if evaluate:
        stats.update(checkpoints=evaluated, eval_s=round(eval_s, 3))
    return model, stats


def windows(doc: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """A document's evaluation windows: ``[separator, *doc]`` cut into pieces of ``seq_len + 1`` tokens
    that overlap by one, so every token of the document is predicted exactly once."""
    seq = np.concatenate([[SEPARATOR], np.asarray(doc, dtype=np.int64)])
    return [seq[i : i + seq_len + 1] for i in range(0, len(seq) - 1, seq_len)]


def bits_per_byte(model, docs: list[np.ndarray], n_bytes: int, vocab: Vocab, cfg: StudentConfig) -> float:
    """Bits per UTF-8 byte of the evaluation documents (compact ids) under ``model``."""
    import torch

    device = next(model.parameters()).device
    dtype = resolve_dtype(cfg.dtype, str(device))
    pieces = [w for doc in docs for w in windows(doc, cfg.seq_len)]
    pieces.sort(key=len)  # similar lengths together: less padding
    rare_cost = math.log(vocab.rare_members) if vocab.rare_id is not None else 0.0
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pieces), cfg.eval_batch_size):
            chunk = pieces[start : start + cfg.eval_batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), SEPARATOR, dtype=torch.long)
            valid = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
            for row, piece in enumerate(chunk):
                ids[row, : len(piece)] = torch.from_numpy(piece)
                valid[row, : len(piece) - 1] = True
            ids = ids.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                logits = model(input_ids=ids[:, :-1]).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            targets = ids[:, 1:]
            nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
            if rare_cost:
                nll = nll + rare_cost * (targets.cpu() == vocab.rare_id)
            total += float(nll[valid].sum())
    model.train()
    return total / math.log(2) / n_bytes


def stream(
    rows: np.ndarray, flat: np.ndarray, offsets: np.ndarray, budget: int, separator: int
) -> np.ndarray:
    """The training stream of ``rows``: each row's tokens led by the separator, cut to ``budget``."""
    pieces = []
    for r in rows:
        pieces.append([separator])
        pieces.append(flat[offsets[r] : offsets[r + 1]])
    return np.concatenate(pieces).astype(np.int32)[:budget]


def evaluated_student(stream, evals: dict, vocab: Vocab, cfg: StudentConfig, seed: int):
    """A student trained on ``stream`` and its bits per byte on every eval set, averaged over the last
    ``cfg.average_last`` checkpoints (``stats["bpb"]``; each checkpoint's in ``stats["checkpoints"]``)."""

    def evaluate(model) -> dict[str, float]:
        return {name: bits_per_byte(model, docs, n, vocab, cfg) for name, (docs, n) in evals.items()}

    model, stats = train_student(stream, vocab.size, cfg, seed, evaluate)
    points = [c["result"] for c in stats["checkpoints"]]
    stats["bpb"] = {name: float(np.mean([p[name] for p in points])) for name in evals}
    if len(points) == 1:
        del stats["checkpoints"]
    return model, stats
