"""The fast engine's token choice: litho's sampler (generators/teachers/sampling.py) on device buffers.

Everything a step needs is on the device and has a fixed shape, so the step can be captured in a
CUDA graph: the sampling scalars (temperature, top-p, penalty, min-p) are a device tensor, the
repetition penalty gathers the row's token history, and the random draw of slot ``s`` at its
``n``-th generated token is the counter hash of ``(row key of s, n)``: no generator state, and the
draws of a request do not depend on the slot it got, its neighbours or the batch bucket. Inside
a graph the top-p prefilter cannot read its flag on the host, so every row takes the full sort
there, which gives the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generators.teachers import sampling


@dataclass(frozen=True)
class SamplingMode:
    """The shape-changing part of the sampling settings: one captured graph per distinct mode."""

    greedy: bool
    top_k: int  # 0: off
    top_p: bool  # whether the top-p warper runs (its threshold is a device scalar)
    penalty: bool  # whether the repetition penalty runs (its factor is a device scalar)
    min_p: bool = False  # whether the min-p warper runs (its factor is a device scalar)

    @classmethod
    def of(
        cls, temperature: float, top_k: int, top_p: float, repetition_penalty: float, min_p: float = 0.0
    ) -> SamplingMode:
        greedy = temperature <= 0
        return cls(
            greedy=greedy,
            top_k=0 if greedy else max(0, int(top_k)),
            top_p=not greedy and top_p < 1.0,
            penalty=repetition_penalty != 1.0,
            min_p=not greedy and min_p > 0,
        )

    @property
    def warpers(self) -> sampling.Warpers:
        """The mode as :class:`~generators.teachers.sampling.Warpers` (values come from the scalars)."""
        return sampling.Warpers(
            0.0 if self.greedy else 1.0,
            self.top_k,
            0.5 if self.top_p else 1.0,
            min_p=0.5 if self.min_p else 0.0,
        )


def choose(
    logits: torch.Tensor,
    mode: SamplingMode,
    scalars: torch.Tensor,
    history: torch.Tensor | None,
    u: torch.Tensor | None,
    host_checks: bool,
) -> torch.Tensor:
    """Pick one token per row of float32 ``logits`` [B, V].

    Args:
        logits: Next-token logits, float32.
        mode: Which warpers run.
        scalars: Device tensor ``[temperature, top_p, repetition_penalty, min_p]``.
        history: Token ids [B, L] each row has seen (prompt and output; repeats allowed); for the penalty.
        u: The rows' uniforms [B] (:func:`generators.teachers.sampling.uniforms`); unused when greedy.
        host_checks: Let the top-p prefilter read one flag on the host (off inside a CUDA graph).
    """
    if mode.penalty:
        logits = sampling.penalize(logits, history, scalars[2])
    return sampling.choose(logits, mode.warpers, u, scalars[0], scalars[1], host_checks, scalars[3])
