"""Teacher backend on transformers ``generate()``: any local HF causal LM or GGUF file, CPU or CUDA."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
    cut_at_stop,
)
from generators.teachers.structure import GrammarMask, check, ll_tokenizer
from generators.teachers.token_aware import TokenAware, TokenAwareBias

log = logging.getLogger(__name__)


class HFTeacher:
    """Batched chat generation with a transformers causal LM.

    Tokens are counted per decode step (:class:`TokenCounter`) for the live progress.

    Prompts go through the model's chat template, are sorted by length and padded on the left
    in micro-batches of ``batch_size``, so rows of similar length share a forward pass. Sampling
    and the repetition penalty run in :class:`RowSampler` (litho's sampler,
    :mod:`generators.teachers.sampling`): each row draws from its own request's counter, so a
    text does not depend on the rows it shares a micro-batch with.

    Args:
        model: Model spec (``embedded:smollm2``, a ``.gguf`` file or a model directory); see
            :func:`generators.teachers.models.resolve`.
        name: Name recorded in the output; defaults to the spec.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:i]``.
        dtype: ``float32`` (default: a text is the same in any batch shape), ``auto`` (bf16 on CUDA and
            on CPUs with AMX / AVX512-BF16, else fp32; faster, batch-dependent), ``bfloat16`` or
            ``float16``; see :func:`generators.teachers.models.resolve_dtype`.
        batch_size: Rows per ``generate()`` call.
        threads: torch CPU threads (0: all cores, also inside a Ray worker).
        allow_network: Let transformers reach the hub (off: runs are offline by default).
        cache_dir: Where dequantized GGUF models are cached (default ``$LITHO_CACHE``).
        sampling: Keyword arguments of :class:`SamplingParams`.
        token_aware: Keyword arguments of :class:`generators.teachers.token_aware.TokenAware`: a logit
            bias toward tokens the student's tokenizer encodes cheaply (off by default).
    """

    def __init__(
        self,
        model: str,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
        sampling: dict | None = None,
        token_aware: dict | None = None,
    ):
        import torch

        from generators.teachers.models import load_causal_lm, pick_device, set_threads

        set_threads(threads)
        self.name = name or str(model)
        self.sampling = SamplingParams.from_config(sampling)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.model, self.tokenizer = load_causal_lm(
            model, "teacher.model", self.device, dtype, allow_network, cache_dir
        )
        self._torch = torch
        self._ll_tokenizer = None
        self.token_aware, self.logit_bias = _token_aware_bias(
            token_aware, self.tokenizer, self.model, self.device, cache_dir, allow_network
        )

    counts_tokens = True  # per decode step, through TokenCounter

    @classmethod
    def wrap(cls, model, tokenizer, device: str, name: str, sampling: SamplingParams, batch_size: int):
        """A teacher over an already loaded model (the fast teacher's path for constrained requests)."""
        import torch

        teacher = cls.__new__(cls)
        teacher.model, teacher.tokenizer, teacher.device, teacher.name = model, tokenizer, device, name
        teacher.sampling, teacher.batch_size, teacher._torch, teacher._ll_tokenizer = (
            sampling,
            batch_size,
            torch,
            None,
        )
        teacher.token_aware, teacher.logit_bias = TokenAware(), None  # the fast teacher sets its own
        return teacher

    @property
    def sampling_extra(self) -> dict:
        """Settings beyond :class:`SamplingParams` that the row's ``sampling`` column records."""
        return self.token_aware.record()

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        prompts = [self._render(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            try:
                results = self._generate_chunk([requests[i] for i in chunk], [prompts[i] for i in chunk])
            except Exception as exc:  # one bad micro-batch must not kill the run
                log.exception("generation failed for %d requests", len(chunk))
                results = [
                    Completion(requests[i].id, "", finish_reason=FINISH_ERROR, error=repr(exc)[:500])
                    for i in chunk
                ]
            for i, completion in zip(chunk, results):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _render(self, request: Request) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def _generate_chunk(self, requests: list[Request], prompts: list[list[int]]) -> list[Completion]:
        from transformers import GenerationConfig

        torch = self._torch
        sp = self.sampling
        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        # transformers' own warpers are off (greedy): RowSampler does the penalty and the draws. The
        # penalty is set to 1 here because an unset field takes the model's generation_config.json value.
        config = GenerationConfig(
            max_new_tokens=sp.max_new_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._eos_ids(),
        )
        extra = {}
        if sp.stop:
            extra.update(stop_strings=list(sp.stop), tokenizer=self.tokenizer)
        width = batch["input_ids"].shape[1]
        # The token-aware bias first, as in fast; then the grammar mask: the sampler draws from the masked logits.
        processors = [
            TokenAwareBias(self.logit_bias) if self.logit_bias is not None else None,
            GrammarMask.of(self._grammar_tokenizer, [r.structure for r in requests], width, self._eos_ids()),
            RowSampler.of(sp, [r.id for r in requests], batch["attention_mask"]),
        ]
        if any(processors):
            extra["logits_processor"] = [p for p in processors if p is not None]
        if getattr(self, "meter", None) is not None:  # live progress: tokens as they are decoded
            extra["streamer"] = TokenCounter(self.meter, self._eos_ids())
        with torch.inference_mode():
            generated = self.model.generate(**batch, generation_config=config, **extra)
        new_tokens = generated[:, batch["input_ids"].shape[1] :].tolist()
        eos = set(self._eos_ids())
        completions = []
        for request, prompt, tokens in zip(requests, prompts, new_tokens):
            ended = next((j for j, t in enumerate(tokens) if t in eos), None)
            kept = tokens if ended is None else tokens[:ended]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, sp.stop)
            finish = FINISH_STOP if ended is not None or stopped else FINISH_LENGTH
            text = text.strip()
            completion = Completion(request.id, text, len(prompt), len(kept), finish)
            completion.invalid = check(request.structure, text)
            completions.append(completion)
        return completions

    def _grammar_tokenizer(self):
        if self._ll_tokenizer is None:
            self._ll_tokenizer = ll_tokenizer(self.tokenizer, self._eos_ids(), self.model.config.vocab_size)
        return self._ll_tokenizer

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids


def _token_aware_bias(settings, tokenizer, model, device, cache_dir, allow_network):
    """The ``token_aware`` settings and their logit bias on ``device`` (None when off)."""
    from generators.teachers.token_aware import TokenAware, load_bias

    settings = TokenAware.from_config(settings)
    vocab = model.get_output_embeddings().weight.shape[0]  # the logits' width
    bias = load_bias(tokenizer, settings, vocab, cache_dir, allow_network)
    return settings, None if bias is None else bias.to(device)


class TokenCounter:
    """A transformers streamer that counts each decode step's new tokens of rows not yet finished (the
    teacher's :class:`generators.teachers.stream.TokenMeter`); ``generate()`` hands it the prompts first."""

    def __init__(self, meter, eos_ids: Sequence[int]):
        self.meter, self.eos, self.finished, self.prompt_seen = meter, list(eos_ids), None, False

    def put(self, tokens) -> None:
        import torch

        if not self.prompt_seen:  # the first call carries the prompts
            self.prompt_seen = True
            return
        tokens = tokens.reshape(-1)
        if self.finished is None:
            self.finished = torch.zeros(len(tokens), dtype=torch.bool)
        ended = torch.isin(tokens, torch.tensor(self.eos, dtype=tokens.dtype))
        self.meter.add(int((~self.finished & ~ended).sum()))
        self.finished |= ended

    def end(self) -> None:
        pass


class RowSampler:
    """A transformers logits processor running litho's sampler with one counter per row.

    ``generate()`` runs greedy and this processor leaves only the drawn token finite, so the
    draw is :func:`generators.teachers.sampling.choose` with the row's own uniforms. The
    repetition penalty sees the prompt and the generated tokens but not the left padding.

    Args:
        warpers: The sampling settings.
        keys: One row key per batch row (:func:`generators.teachers.sampling.row_key`).
        attention_mask: The left-padded prompt mask [B, T].
    """

    def __init__(self, warpers, keys: Sequence[int], attention_mask):
        import torch

        from generators.teachers.sampling import split_keys

        self.w, self.width = warpers, attention_mask.shape[1]
        self.words = split_keys(keys, attention_mask.device)
        self.pads = attention_mask == 0
        self._torch = torch

    @classmethod
    def of(cls, sp: SamplingParams, ids: Sequence[str], attention_mask) -> RowSampler | None:
        """The processor for these requests, or None when plain greedy decoding needs none."""
        from generators.teachers.sampling import Warpers, row_key

        warpers = Warpers(sp.temperature, sp.top_k, sp.top_p, sp.repetition_penalty, sp.min_p)
        if warpers.greedy and not warpers.penalty:
            return None
        return cls(warpers, [row_key(i, sp.seed) for i in ids], attention_mask)

    def __call__(self, input_ids, scores):
        from generators.teachers.sampling import choose, penalize, uniforms

        torch = self._torch
        if self.w.penalty:
            # Pad positions repeat the row's last prompt token, which is penalised anyway.
            prompt = input_ids[:, : self.width]
            seen = input_ids.clone()
            seen[:, : self.width] = torch.where(self.pads, prompt[:, -1:], prompt)
            scores = penalize(scores, seen, self.w.repetition_penalty)
        if self.w.greedy:
            return scores
        step = torch.full((len(scores),), input_ids.shape[1] - self.width, device=scores.device)
        tokens = choose(scores, self.w, uniforms(self.words, step))
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens[:, None], 0.0)
