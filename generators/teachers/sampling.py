"""litho's sampler, shared by the ``hf`` and ``fast`` teachers: per-request draws, cheap warpers.

**Per-request determinism.** A row's random draw at generation step ``t`` is a counter-based
hash of ``(row key, t)``, where the row key is a hash of the sampling seed and the request id
(:func:`row_key`). No generator state is shared between rows, so a request's completion depends
only on the model, its prompt, the sampling settings, the seed and its id: never on its batch
neighbours, the batch size, the number of actors or how blocks are split (up to float rounding
of the logits themselves, which a different batch shape can change in the last bits). The hash
is plain integer arithmetic on tensors (murmur3's 32-bit finaliser, with 32-bit products split
into 16-bit halves so that no int64 product can overflow), so it runs on the device, inside a
captured CUDA graph, and gives the same draws on CPU and CUDA. One uniform per row and step is
enough: the token is drawn by inverse CDF over the kept candidates, in a fixed order. This is why
the sampler is hand-written: transformers' warpers are exact but draw with ``torch.multinomial``
from one generator shared by the batch, so a row's text would depend on its neighbours.

**The distribution is transformers'.** The warpers and their order are those ``generate()``
builds (``GenerationMixin._get_logits_processor``): ``RepetitionPenaltyLogitsProcessor`` on the
raw logits (prompt and output; left padding excluded, as ``generate()`` does through the
processor's ``prompt_ignore_length``), then
``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper`` (Holtzman et al., 2020,
"The Curious Case of Neural Text Degeneration") and ``MinPLogitsWarper`` (Nguyen et al., 2024,
"Turning Up the Heat: Min-p Sampling"). tests/generators/teachers/test_sampling_reference.py holds
each setting against the processors ``generate()`` itself builds. They run without the
full-vocabulary passes:

* the repetition penalty gathers and scatters only the tokens a row has seen;
* top-p sorts only the ``prefilter`` most likely tokens (``torch.topk``) and keeps the tokens
  whose more likely neighbours hold less than ``top_p`` of the mass; a row whose nucleus does not
  fit in the prefilter is sorted in full, so the result is exact. Inside a CUDA graph (no host
  reads) every row takes the full sort, which gives the same tokens;
* min-p drops the candidates whose probability is below ``min_p`` times the most likely one's; it
  scales with the kept mass, so applying it to the candidates left by top-k/top-p is the same as
  transformers' pass over the renormalised vocabulary;
* with neither top-k nor top-p, the draw runs over the whole vocabulary in token order (no sort).

Greedy decoding (temperature 0) takes the argmax after the penalty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is made: the driver imports this module for its version
    import torch

# Bump when the draws or warpers change which tokens a seed gives: it is part of the checkpoint
# fingerprint (pipeline/checkpoint.py), so texts made by another sampler are never reused.
SAMPLER_VERSION = "litho-sampler-2"
PREFILTER = 64  # candidates sorted for top-p before falling back to a full sort
_M32 = 0xFFFFFFFF


def row_key(request_id: str, seed: int) -> int:
    """The 64-bit key of a request's draws: BLAKE2b of its id, keyed by the sampling seed.

    hashlib, not xxhash: the fast engine and its benchmark run on bare torch + transformers machines.
    """
    key = (seed % 2**64).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8, key=key).digest(), "little")


def split_keys(keys, device=None) -> torch.Tensor:
    """Row keys as an int64 tensor ``[B, 2]`` of their low and high 32-bit words."""
    import torch

    words = [(k & _M32, (k >> 32) & _M32) for k in keys]
    return torch.tensor(words, dtype=torch.long, device=device).reshape(-1, 2)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for ``0 <= x < 2**32``, every partial product below 2**49."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def uniforms(words: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One float32 uniform in [0, 1) per row: a hash of the row's key words ``[B, 2]`` and ``step`` [B].

    24 bits of the hash, so the value is exact in float32.
    """
    import torch

    h = _fmix32(words[:, 0] ^ _mul32(step & _M32, 0x9E3779B1))
    h = _fmix32(h ^ words[:, 1])
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class Warpers:
    """The sampling settings that change which kernels run (the rest are scalars).

    Args:
        temperature: 0 = greedy.
        top_k: Keep the k most likely tokens (0 = off).
        top_p: Nucleus mass (1 = off).
        repetition_penalty: CTRL-style penalty on seen tokens (1 = off).
        min_p: Drop tokens less likely than ``min_p`` times the most likely one (0 = off).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalty(self) -> bool:
        return self.repetition_penalty != 1.0


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float | torch.Tensor) -> torch.Tensor:
    """``logits`` with the repetition penalty on the tokens of ``seen`` [B, L] (repeats are harmless)."""
    import torch

    picked = logits.gather(1, seen)
    return logits.scatter(1, seen, torch.where(picked < 0, picked * penalty, picked / penalty))


def choose(
    logits: torch.Tensor,
    w: Warpers,
    u: torch.Tensor | None,
    temperature: float | torch.Tensor | None = None,
    top_p: float | torch.Tensor | None = None,
    host_checks: bool = True,
    min_p: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row of float32 ``logits`` [B, V] (penalty already applied).

    Args:
        logits: Next-token logits; not modified.
        w: Which warpers run.
        u: Uniforms [B] from :func:`uniforms`; unused when greedy.
        temperature: The temperature as a number or a device scalar (default ``w.temperature``).
        top_p: The nucleus mass as a number or a device scalar (default ``w.top_p``).
        min_p: The min-p factor as a number or a device scalar (default ``w.min_p``); runs when ``w.min_p > 0``.
        host_checks: Whether the prefilter may read one flag on the host (off inside a CUDA graph:
            every row then takes the full sort, with the same result).
    """
    import torch

    if w.greedy:
        return logits.argmax(-1)
    temperature = w.temperature if temperature is None else temperature
    top_p = w.top_p if top_p is None else top_p
    min_p = (w.min_p if min_p is None else min_p) if w.min_p > 0 else None
    scaled = logits / temperature
    vocab = scaled.shape[-1]
    if w.top_k:
        values, order = torch.topk(scaled, min(w.top_k, vocab), dim=-1)
        probs = values.softmax(-1)  # top-k renormalises before top-p, as transformers' warpers do
        return _draw(probs, order, u, top_p if w.top_p < 1 else None, min_p=min_p)
    if w.top_p >= 1:
        return _draw(scaled.softmax(-1), None, u, None, min_p=min_p)
    lse = scaled.logsumexp(-1, keepdim=True)
    k = min(PREFILTER, vocab) if host_checks else vocab
    values, order = torch.topk(scaled, k, dim=-1) if k < vocab else torch.sort(scaled, -1, descending=True)
    probs = (values - lse).exp()
    cumulative = probs.cumsum(-1)
    if k == vocab:
        return _draw(probs, order, u, top_p, cumulative, min_p)
    # The (k+1)-th token is out of the nucleus when the first k hold top_p: then the prefilter is exact.
    short = cumulative[:, -1] < top_p
    if not bool(short.any()):
        return _draw(probs, order, u, top_p, cumulative, min_p)
    tokens = torch.empty(len(scaled), dtype=torch.long, device=scaled.device)
    fit = ~short
    if bool(fit.any()):
        tokens[fit] = _draw(probs[fit], order[fit], u[fit], top_p, cumulative[fit], min_p)
    values, order = torch.sort(scaled[short], -1, descending=True)
    tokens[short] = _draw((values - lse[short]).exp(), order, u[short], top_p, min_p=min_p)
    return tokens


def _draw(probs, order, u, top_p, cumulative=None, min_p=None) -> torch.Tensor:
    """Inverse-CDF draw over candidates ``probs`` [B, K] (token ids ``order``; None: the vocabulary).

    With ``top_p``, candidates are in descending order and those whose more likely candidates
    already hold ``top_p`` of the mass are dropped (the first always stays). With ``min_p``, then
    those below ``min_p`` times the most likely candidate (which always stays).
    """
    import torch

    cumulative = probs.cumsum(-1) if cumulative is None else cumulative
    if top_p is not None:
        probs = probs.masked_fill(cumulative - probs >= top_p, 0.0)
    if min_p is not None:
        probs = probs.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), 0.0)
    if top_p is not None or min_p is not None:
        cumulative = probs.cumsum(-1)
    target = u[:, None] * cumulative[:, -1:]
    # The first candidate whose cumulative mass exceeds the target; it always has a probability > 0,
    # except when float rounding lifts ``target`` to the total: then take the last kept candidate.
    pick = (cumulative <= target).sum(-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
    last_kept = (probs > 0).long().cumsum(-1).argmax(-1, keepdim=True)
    pick = torch.where(probs.gather(1, pick) > 0, pick, last_kept)
    return (pick if order is None else order.gather(1, pick)).squeeze(1)
