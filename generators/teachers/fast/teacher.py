"""Fast teacher backend: static KV cache, CUDA-graph decode steps, continuous batching.

Same contract and constructor style as :class:`generators.teachers.hf.HFTeacher`; the decode loop is
:class:`generators.teachers.fast.engine.FastEngine` over the HF model's own weights. Greedy decoding gives
the tokens ``generate()`` gives (tested in float32 on CPU). Architectures the fast decoder does
not implement are served by ``HFTeacher`` instead, with the reason logged and kept in
``fallback_reason``. Needs neither Ray nor Hydra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
    cut_at_stop,
)
from generators.teachers.sampling import row_key

log = logging.getLogger(__name__)


class FastTeacher:
    """Batched chat generation with a hand-rolled decode loop over a transformers causal LM.

    Args:
        model: Model spec (``embedded:smollm2``, a ``.gguf`` file or a model directory); see
            :func:`generators.teachers.models.resolve`.
        name: Name recorded in the output; defaults to the spec.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:i]``.
        dtype: ``float32`` (default: a text is the same in any batch shape), ``auto`` (bf16 on CUDA and
            on CPUs with AMX / AVX512-BF16, else fp32; faster, batch-dependent), ``bfloat16`` or
            ``float16``; see :func:`generators.teachers.models.resolve_dtype`.
        batch_size: Rows the pipeline should hand to one ``generate()`` call (any number works).
        threads: torch CPU threads (0: all cores, also inside a Ray worker).
        allow_network: Let transformers reach the hub (off: runs are offline by default).
        cache_dir: Where dequantized GGUF models are cached (default ``$LITHO_CACHE``).
        sampling: Keyword arguments of :class:`SamplingParams`.
        max_batch: Rows decoded together (KV-cache slots).
        max_seq_len: Longest prompt + output one slot holds; longer requests fail alone.
        prompt_bucket: Prompt lengths are padded to a multiple of this for batched prefill.
        prefill_tokens: Padded prompt tokens per prefill forward.
        sync_every: Decode steps between host checks (stop strings, finished rows, refill).
        use_cuda_graphs: Capture one decode step per batch bucket on CUDA and replay it.
        refill: Give finished rows' slots to waiting requests (continuous batching).
        token_aware: Keyword arguments of :class:`generators.teachers.token_aware.TokenAware`; the bias is
            added to the logits before the penalty and the draw, as in ``HFTeacher``.
    """

    def __init__(
        self,
        model: str,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 256,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
        sampling: dict | None = None,
        max_batch: int = 256,
        max_seq_len: int = 4096,
        prompt_bucket: int = 64,
        prefill_tokens: int = 16384,
        sync_every: int = 16,
        use_cuda_graphs: bool = True,
        refill: bool = True,
        token_aware: dict | None = None,
    ):
        from transformers import AutoConfig

        from generators.teachers.fast.model import unsupported_reason
        from generators.teachers.models import load_causal_lm, materialize, pick_device, resolve, set_threads

        self.name = name or str(model)
        self.sampling = SamplingParams.from_config(sampling)
        self.batch_size = batch_size
        self.device = pick_device(device)
        where = materialize(resolve(model, "teacher.model", allow_network), cache_dir)
        config = AutoConfig.from_pretrained(where, local_files_only=not allow_network)
        self.fallback_reason = unsupported_reason(config)
        if self.fallback_reason:
            from generators.teachers.hf import HFTeacher

            log.warning(
                "teacher %s: fast backend unavailable (%s); using the hf backend",
                self.name,
                self.fallback_reason,
            )
            self._fallback = HFTeacher(
                model,
                self.name,
                device,
                dtype,
                batch_size,
                threads,
                allow_network,
                cache_dir,
                sampling,
                token_aware,
            )
            self.token_aware = self._fallback.token_aware
            return
        from generators.teachers.fast.engine import FastEngine
        from generators.teachers.hf import _token_aware_bias

        self._hf = None  # built on the first request with a structure (see _with_constrained)

        set_threads(threads)
        self.model, self.tokenizer = load_causal_lm(
            model, "teacher.model", self.device, dtype, allow_network, cache_dir
        )
        self.engine = FastEngine(
            self.model,
            max_batch,
            max_seq_len,
            prompt_bucket,
            prefill_tokens,
            sync_every,
            use_cuda_graphs,
            refill,
        )
        self.token_aware, self.engine.logit_bias = _token_aware_bias(
            token_aware, self.tokenizer, self.model, self.device, cache_dir, allow_network
        )

    @property
    def sampling_extra(self) -> dict:
        """Settings beyond :class:`SamplingParams` that the row's ``sampling`` column records."""
        return self.token_aware.record()

    @property
    def backend(self) -> str:
        return "hf" if self.fallback_reason else "fast"

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if self.fallback_reason:
            self._fallback.sampling, self._fallback.meter = self.sampling, getattr(self, "meter", None)
            return self._fallback.generate(requests)
        constrained = [i for i, r in enumerate(requests) if r.structure is not None]
        if constrained:
            return self._with_constrained(requests, constrained)
        answers: dict[int, Completion] = {}
        try:
            self.generate_stream(list(requests), lambda n: [], lambda r, c: answers.__setitem__(id(r), c))
        except Exception as exc:  # e.g. out of memory: this call's rows fail, the run goes on
            log.exception("fast generation failed for %d requests", len(requests))
            return [Completion(r.id, "", finish_reason=FINISH_ERROR, error=repr(exc)[:500]) for r in requests]
        return [answers[id(r)] for r in requests]

    def generate_stream(self, requests: list[Request], more: Callable, done: Callable) -> None:
        """Answer ``requests`` and whatever ``more(n)`` hands over while they decode, each through
        ``done(request, completion)`` as it finishes: the engine's free slots take requests of later
        batches (:class:`generators.teachers.stream.Streamer`). Requests with a structure, or too long
        for the slots allocated, are answered after the call."""
        if self.fallback_reason or any(r.structure is not None for r in requests):
            for request, completion in zip(requests, self.generate(requests)):
                done(request, completion)
            return
        sp = self.sampling
        known: list[Request] = []
        prompts: list[list[int]] = []
        later: list[Request] = []

        def render(request: Request) -> list[int] | None:
            try:
                return self._render(request)
            except Exception as exc:  # a malformed conversation fails alone
                done(request, Completion(request.id, "", finish_reason=FINISH_ERROR,
                                         error=f"chat template failed: {exc!r}"[:500]))  # fmt: skip
                return None

        def feed(n: int, room: int) -> list[tuple[list[int], int, int]]:
            items = []
            for request in more(n):
                prompt = render(request) if request.structure is None else None
                if request.structure is not None or (
                    prompt is not None and len(prompt) + sp.max_new_tokens > room
                ):
                    later.append(request)
                elif prompt is not None:
                    known.append(request)
                    items.append((prompt, sp.max_new_tokens, row_key(request.id, sp.seed)))
            return items

        for request in requests:
            if (prompt := render(request)) is not None:
                known.append(request)
                prompts.append(prompt)
        if prompts:
            meter = getattr(self, "meter", None)
            # Each request draws from its own counter (generators/teachers/sampling.py), as in HFTeacher.
            self.engine.generate(
                prompts,
                sp.max_new_tokens,
                temperature=sp.temperature,
                top_p=sp.top_p,
                top_k=sp.top_k,
                repetition_penalty=sp.repetition_penalty,
                min_p=sp.min_p,
                keys=[row_key(r.id, sp.seed) for r in known],
                eos_ids=self._eos_ids(),
                stop_fn=self._stop_fn(sp.stop) if sp.stop else None,
                stop_window=max((len(s) for s in sp.stop), default=0),
                feed=feed,
                done=lambda i, result: done(known[i], self._completion(known[i], result)),
                on_tokens=meter.add if meter is not None else None,
            )
        if later:
            self.generate_stream(later, more, done)

    @property
    def counts_tokens(self) -> bool:
        """Tokens are counted per host sync of the engine (the hf backend's per step when it stands in)."""
        return True

    def _completion(self, request: Request, result) -> Completion:
        prompt = len(self._render(request))
        if result.finish == "error":
            return Completion(request.id, "", prompt, finish_reason=FINISH_ERROR, error=result.error)
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, self.sampling.stop)
        finish = FINISH_LENGTH if result.finish == "length" and not stopped else FINISH_STOP
        return Completion(request.id, text.strip(), prompt, len(result.tokens), finish)

    def _with_constrained(self, requests: Sequence[Request], constrained: list[int]) -> list[Completion]:
        """Requests with a structure go through transformers' ``generate()`` on the same weights, with
        the grammar mask (:class:`generators.teachers.structure.GrammarMask`): the mask needs the
        host after every token, which the engine's device-only decode loop is built to avoid."""
        from generators.teachers.hf import HFTeacher

        if self._hf is None:
            self._hf = HFTeacher.wrap(
                self.model, self.tokenizer, self.device, self.name, self.sampling, self.batch_size
            )
            self._hf.token_aware, self._hf.logit_bias = self.token_aware, self.engine.logit_bias
        self._hf.sampling, self._hf.meter = self.sampling, getattr(self, "meter", None)
        out: list[Completion | None] = [None] * len(requests)
        for i, completion in zip(constrained, self._hf.generate([requests[i] for i in constrained])):
            out[i] = completion
        free = [i for i in range(len(requests)) if out[i] is None]
        if free:
            for i, completion in zip(free, self.generate([requests[i] for i in free])):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _stop_fn(self, stop: Sequence[str]):
        decode = self.tokenizer.decode

        def hit(tail: list[int]) -> bool:
            text = decode(tail, skip_special_tokens=True)
            return any(s and s in text for s in stop)

        return hit

    def _render(self, request: Request) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return [i for i in ids if 0 <= i < self.engine.dec.vocab_size]
