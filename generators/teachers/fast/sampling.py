"""Next-token choice on the device: repetition penalty, temperature, top-k, top-p, seeded noise.

Everything here is tensor math with shapes fixed by the batch, so it runs inside the captured
decode graph. The random part is Gumbel-max sampling: ``argmax(logits - log(E))`` with
``E ~ Exponential(1)`` draws from ``softmax(logits)``; the engine fills ``E`` from a seeded
``torch.Generator`` just before each step (outside the graph, one kernel), which keeps the
graph free of RNG state and the draws reproducible for a given seed and schedule.

The warpers follow transformers' ``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper`` and ``TopPLogitsWarper`` (Holtzman et al., 2020, "The Curious Case of Neural
Text Degeneration"), in that order, so greedy decoding matches ``generate()`` token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingMode:
    """The shape-changing part of the sampling settings: one captured graph per distinct mode."""

    greedy: bool
    top_k: int  # 0: off
    top_p: bool  # whether the top-p warper runs (its threshold is a device scalar)
    penalty: bool  # whether the repetition penalty runs (its factor is a device scalar)

    @classmethod
    def of(cls, temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> SamplingMode:
        greedy = temperature <= 0
        return cls(
            greedy=greedy,
            top_k=0 if greedy else max(0, int(top_k)),
            top_p=not greedy and top_p < 1.0,
            penalty=repetition_penalty != 1.0,
        )


def choose(
    logits: torch.Tensor,
    mode: SamplingMode,
    scalars: torch.Tensor,
    seen: torch.Tensor | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """Pick one token per row of float32 ``logits`` [B, V].

    Args:
        logits: Next-token logits, float32.
        mode: Which warpers run.
        scalars: Device tensor ``[temperature, top_p, repetition_penalty]``.
        seen: Bool [B, V], tokens already in the row (prompt and output); needed for the penalty.
        noise: Exponential(1) draws [B, V]; needed unless greedy.
    """
    if mode.penalty:
        penalty = scalars[2]
        penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
        logits = torch.where(seen, penalized, logits)
    if mode.greedy:
        return logits.argmax(-1)
    logits = logits / scalars[0]
    if mode.top_k:
        kth = torch.topk(logits, min(mode.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if mode.top_p:
        ordered, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative <= (1 - scalars[1])
        drop[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return (logits - noise.log()).argmax(-1)
