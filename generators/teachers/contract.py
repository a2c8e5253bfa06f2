"""The teacher contract: every backend turns chat requests into completions the same way.

A backend is any object with a ``name`` and ``generate(requests) -> completions``; the pipeline
never looks past this interface. Backends import torch / transformers / HTTP clients lazily so
that building a plan or a config never pays for them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from generators.errors import ConfigError

if TYPE_CHECKING:
    from generators.teachers.structure import Structure

FINISH_STOP = "stop"  # the model ended the text (EOS or a stop string)
FINISH_LENGTH = "length"  # max_new_tokens was reached: the text may be cut mid-sentence
FINISH_ERROR = "error"  # the request failed; ``error`` says why, ``text`` is empty


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by every backend.

    Args:
        max_new_tokens: Upper bound on generated tokens per request.
        temperature: Softmax temperature; 0 means greedy decoding.
        top_p: Nucleus sampling mass (1.0 disables it).
        top_k: Keep only the k most likely tokens (0 disables it).
        repetition_penalty: CTRL-style penalty on already generated tokens (1.0 disables it).
        min_p: Drop tokens less likely than ``min_p`` times the most likely one (Nguyen et al., 2024;
            0 disables it); applied after top-k and top-p, as transformers' ``generate()`` does.
        seed: Base seed; backends derive per-batch seeds from it and the request ids.
        stop: Extra stop strings; the text is cut before the first one.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        checks = (
            (
                "max_new_tokens",
                self.max_new_tokens,
                isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
                "a positive integer",
            ),
            ("temperature", self.temperature, self.temperature >= 0, ">= 0 (0 = greedy)"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
            (
                "top_k",
                self.top_k,
                isinstance(self.top_k, int) and self.top_k >= 0,
                "an integer >= 0 (0 = off)",
            ),
            ("repetition_penalty", self.repetition_penalty, self.repetition_penalty > 0, "> 0 (1 = off)"),
            ("min_p", self.min_p, 0 <= self.min_p <= 1, "in [0, 1] (0 = off)"),
        )
        for key, value, ok, want in checks:
            if not ok:
                raise ConfigError(f"teacher.sampling.{key}={value}: give {want}")

    @classmethod
    def from_config(cls, sampling: dict | None) -> SamplingParams:
        """Build from a config mapping (lists from YAML become the ``stop`` tuple).

        Raises:
            ConfigError: an unknown key or an out-of-range value, named with the fix.
        """
        sampling = dict(sampling or {})
        unknown = set(sampling) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"teacher.sampling: unknown keys {sorted(unknown)}; use {sorted(cls.__dataclass_fields__)}"
            )
        if "stop" in sampling:
            sampling["stop"] = tuple(sampling["stop"] or ())
        return cls(**sampling)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Request:
    """One generation request: a stable id, a chat conversation to continue and, optionally, the
    structure (JSON schema or regex, :mod:`generators.teachers.structure`) its answer must match."""

    id: str
    messages: tuple[dict, ...]
    structure: Structure | None = None


@dataclass
class Completion:
    """What a backend returns for one request, in request order."""

    id: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = FINISH_STOP
    error: str | None = None
    extra: dict = field(default_factory=dict)
    invalid: str | None = None  # why the text fails the request's structure (None: none asked, or it matches)


@runtime_checkable
class Teacher(Protocol):
    """Anything that can answer chat requests."""

    name: str
    sampling: SamplingParams

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        """Return one completion per request, in the same order; never raise for one bad row."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; return the text and whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
