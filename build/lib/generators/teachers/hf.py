"""Teacher backend on transformers ``generate()``: any local HF causal LM or GGUF file, CPU or CUDA."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import xxhash

from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
    cut_at_stop,
)

log = logging.getLogger(__name__)


class HFTeacher:
    """Batched chat generation with a transformers causal LM.

    Prompts go through the model's chat template, are sorted by length and padded on the left
    in micro-batches of ``batch_size``, so rows of similar length share a forward pass.

    Args:
        model: Model spec (``embedded:smollm2``, a ``.gguf`` file or a model directory); see
            :func:`generators.teachers.models.resolve`.
        name: Name recorded in the output; defaults to the spec.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:i]``.
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        batch_size: Rows per ``generate()`` call.
        threads: torch CPU threads (0: all cores, also inside a Ray worker).
        allow_network: Let transformers reach the hub (off: runs are offline by default).
        cache_dir: Where dequantized GGUF models are cached (default ``$LITHO_CACHE``).
        sampling: Keyword arguments of :class:`SamplingParams`.
    """

    def __init__(
        self,
        model: str,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
        sampling: dict | None = None,
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
        torch = self._torch
        sp = self.sampling
        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        # Sampling is reproducible for the same requests in the same micro-batch.
        seed = xxhash.xxh64_intdigest("|".join(r.id for r in requests).encode(), seed=sp.seed) % (2**63)
        generator_kwargs = dict(
            max_new_tokens=sp.max_new_tokens,
            do_sample=sp.temperature > 0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._eos_ids(),
            repetition_penalty=sp.repetition_penalty,
        )
        if sp.temperature > 0:
            generator_kwargs.update(temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k or None)
        if sp.stop:
            generator_kwargs.update(stop_strings=list(sp.stop), tokenizer=self.tokenizer)
        torch.manual_seed(seed)
        with torch.inference_mode():
            generated = self.model.generate(**batch, **generator_kwargs)
        new_tokens = generated[:, batch["input_ids"].shape[1] :].tolist()
        eos = set(self._eos_ids())
        completions = []
        for request, prompt, tokens in zip(requests, prompts, new_tokens):
            ended = next((j for j, t in enumerate(tokens) if t in eos), None)
            kept = tokens if ended is None else tokens[:ended]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, sp.stop)
            finish = FINISH_STOP if ended is not None or stopped else FINISH_LENGTH
            completions.append(Completion(request.id, text.strip(), len(prompt), len(kept), finish))
        return completions

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids
