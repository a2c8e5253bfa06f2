"""Teacher backend on vLLM's async engine: one engine per teacher actor, CPU or CUDA (``teacher=vllm``).

Runs the engine the way Ray Data LLM's vLLM stage does: the actor owns one ``AsyncLLM`` for its life
(tensor parallel over the actor's GPUs, vLLM's multiprocessing executor) on an event loop of its
own, and every request is submitted the moment the teacher stage has it (:meth:`VLLMTeacher.submit`),
so the engine's continuous batching is fed across Ray Data batches instead of waiting for the
slowest row of each. Prompts are rendered with the model's chat template and tokenized before they
reach the engine, every request carries its own sampling parameters (and seed), its tokens are
counted as the engine streams them (the live progress), and a request that fails becomes that
row's error while the others go on. Only a dead engine is rebuilt, for the requests that follow.

vLLM is an optional extra (``pip install -e .[vllm]``; the CPU build through ``make install-vllm``)
and is imported only when the teacher is built.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import types
from collections.abc import Sequence
from concurrent.futures import Future

import xxhash

from generators.errors import ConfigError
from generators.teachers.contract import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Request,
    SamplingParams,
    cut_at_stop,
)
from generators.teachers.stream import LoopThread, count_tokens
from generators.teachers.structure import Structure, check

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def request_seed(request_id: str, seed: int) -> int:
    """The sampling seed of one request: its text depends on the request alone, not on its batch.

    The same value the ``openai`` teacher sends as ``seed``, so a vLLM server and this engine draw
    alike for the same request.
    """
    return xxhash.xxh64_intdigest(request_id.encode(), seed=seed) % (2**31)


def sampling_kwargs(sp: SamplingParams, request_id: str) -> dict:
    """litho's sampling settings as keyword arguments of ``vllm.SamplingParams`` for one request."""
    kwargs = dict(
        max_tokens=sp.max_new_tokens,
        temperature=sp.temperature,
        repetition_penalty=sp.repetition_penalty,
        stop=list(sp.stop),
        skip_special_tokens=True,
    )
    if sp.temperature > 0:  # greedy decoding draws nothing: no seed, no truncation
        kwargs.update(top_p=sp.top_p, top_k=sp.top_k or -1, seed=request_seed(request_id, sp.seed))
        if sp.min_p > 0:  # only when on: the settings of configs without min-p stay as they were
            kwargs["min_p"] = sp.min_p
    return kwargs


def structured(structure: Structure | None) -> dict:
    """``vllm.SamplingParams`` keyword for a request's structure: ``structured_outputs`` (vLLM >= 0.12),
    ``guided_decoding`` on older engines."""
    if structure is None:
        return {}
    kind = {"json": structure.schema} if structure.json_schema else {"regex": structure.regex}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**kind)}
    return {"structured_outputs": StructuredOutputsParams(**kind)}


def _is_fatal(exc: Exception) -> bool:
    """A dead engine fails every request that follows: it is rebuilt (Ray Data LLM re-raises the same
    error)."""
    return type(exc).__name__ in {"EngineDeadError", "EngineGenerateError"} or "Engine core" in str(exc)


class VLLMTeacher:
    """Chat generation with vLLM's ``AsyncLLM`` engine inside the teacher actor.

    Args:
        model: Model spec (``embedded:smollm2``, a ``.gguf`` file or a model directory); a GGUF file is
            dequantized once into ``cache_dir`` (:func:`generators.teachers.models.materialize`) and
            vLLM loads that safetensors directory.
        name: Name recorded in the output; defaults to the spec.
        num_gpus: GPUs of this actor (``cluster.teacher_gpus``); the engine runs tensor parallel over
            them, and on the CPU when 0.
        dtype: ``auto`` (bf16 on the CPU; on CUDA vLLM's choice for the model), ``float32``, ``bfloat16``
            or ``float16``.
        max_model_len: Longest prompt + completion per request; a longer prompt fails alone.
        max_num_seqs: Requests the engine decodes together.
        kv_cache_gib: KV cache size in GiB; ``None`` = vLLM's share of GPU memory on CUDA, 2 GiB on the
            CPU (where vLLM would otherwise reserve 90% of the machine's memory).
        gpu_memory_utilization: Share of GPU memory vLLM may take (CUDA only).
        chunked_prefill: Split long prompts over engine steps; ``None`` = on for CUDA, off on the CPU,
            where a seeded request whose prompt is split crashes the engine
            (``RuntimeError: CPU Generator does not use offset``: vLLM rewinds the generator of the
            discarded sample, which only CUDA generators allow).
        enforce_eager: Skip torch.compile and CUDA graphs (faster start, slower steps).
        threads: CPU cores vLLM's worker binds (``VLLM_CPU_OMP_THREADS_BIND``); 0 = every core but one,
            which vLLM keeps for its scheduler and detokenizer. Ignored on CUDA.
        allow_network: Let vLLM fetch a hub id (off: runs are offline).
        cache_dir: Where GGUF files are dequantized to safetensors, once.
        engine_kwargs: Further engine arguments (``vllm.AsyncEngineArgs``), e.g. ``{max_num_batched_tokens: 16384}``.
        sampling: Keyword arguments of :class:`SamplingParams`.
    """

    def __init__(
        self,
        model: str,
        name: str | None = None,
        num_gpus: float = 0,
        dtype: str = "auto",
        max_model_len: int = 4096,
        max_num_seqs: int = 256,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.9,
        chunked_prefill: bool | None = None,
        enforce_eager: bool = False,
        threads: int = 0,
        allow_network: bool = False,
        cache_dir: str | None = None,
        engine_kwargs: dict | None = None,
        sampling: dict | None = None,
    ):
        from generators.teachers.models import materialize, resolve

        if dtype not in DTYPES:
            raise ConfigError(f"teacher.dtype={dtype}: use one of {list(DTYPES)}")
        self.name = name or str(model)
        self.sampling = SamplingParams.from_config(sampling)
        self.path = str(materialize(resolve(model, "teacher.model", allow_network), cache_dir))
        cuda = float(num_gpus or 0) > 0
        if threads and not cuda:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")
        if not allow_network:  # no hub look-ups, and none of vLLM's usage reports either
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        prefill = cuda if chunked_prefill is None else bool(chunked_prefill)
        kv_bytes = None if kv_cache_gib is None and cuda else int(float(kv_cache_gib or 2) * 2**30)
        self.engine_args = dict(
            model=self.path,
            dtype="bfloat16" if dtype == "auto" and not cuda else dtype,
            tensor_parallel_size=max(1, int(num_gpus or 0)),
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            enable_chunked_prefill=prefill,
            enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_bytes,
            seed=self.sampling.seed,
        )
        if not prefill:  # unchunked, every prompt that fits max_model_len must fit one step's budget
            self.engine_args["max_num_batched_tokens"] = max(max_model_len, 8192)
        self.engine_args.update(engine_kwargs or {})
        self.max_model_len = max_model_len
        self.engine = None
        self.start_s = 0.0
        self._ids = itertools.count()
        self._starting: asyncio.Lock | None = None
        self._launch()

    def _launch(self) -> None:
        """The teacher's event loop, and the engine on it."""
        self._loop = LoopThread("litho-vllm")
        self._loop.run(self._start()).result()

    counts_tokens = True  # as the engine streams them

    async def _start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm import AsyncLLMEngine as AsyncLLM  # vLLM's v1 AsyncLLM under its exported name

        started = time.perf_counter()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args, disable_log_stats=True))
        self.tokenizer = self.engine.get_tokenizer()
        self.start_s = time.perf_counter() - started
        log.info("vllm engine for %s started in %.1f s", self.name, self.start_s)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return [future.result() for future in [self.submit(r) for r in requests]]

    def submit(self, request: Request) -> Future:
        """The request's completion, as a future: the engine has the request at once."""
        return self._loop.run(self._answer(request))

    async def _answer(self, request: Request) -> Completion:
        if self.engine is None:  # the engine died: the first request after it rebuilds it
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self.engine is None:
                    try:
                        await self._start()
                    except Exception as exc:
                        return _failed(request.id, f"vllm engine did not start: {exc!r}")
        try:
            prompt = self._render(request)
        except Exception as exc:  # a conversation the chat template refuses, a prompt too long
            return _failed(request.id, str(exc))
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = VSamplingParams(
            **sampling_kwargs(self.sampling, request.id),
            **structured(request.structure),
            output_kind=RequestOutputKind.DELTA,  # new tokens per step: counted for the live progress
        )
        engine, texts, tokens, reason = self.engine, [], 0, None
        try:
            rid = f"{request.id}#{next(self._ids)}"  # unique in the engine, even for a request asked twice
            async for output in engine.generate({"prompt_token_ids": prompt}, params, request_id=rid):
                step = output.outputs[0]
                count_tokens(self, len(step.token_ids))
                texts.append(step.text or "")
                tokens += len(step.token_ids)
                reason = step.finish_reason or reason
        except Exception as exc:
            text = _describe(exc)
            log.warning("vllm: request %s failed: %s", request.id, text)
            if _is_fatal(exc) and self.engine is engine:
                log.warning(
                    "vllm engine for %s died; it is restarted for the requests that follow", self.name
                )
                self.engine = None
                _shutdown(engine)
            return _failed(request.id, text)
        answer = types.SimpleNamespace(text="".join(texts), token_ids=range(tokens), finish_reason=reason)
        return self._completion(request, prompt, answer)

    def _render(self, request: Request) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, tokenize=True
        )
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(ids)} tokens does not fit teacher.max_model_len={self.max_model_len}"
            )
        return ids

    def _completion(self, request: Request, prompt: list[int], answer) -> Completion:
        text, stopped = cut_at_stop(answer.text or "", self.sampling.stop)
        reason = answer.finish_reason
        finish = FINISH_LENGTH if reason == "length" and not stopped else FINISH_STOP
        extra = {"finish_reason": reason} if reason not in ("stop", "length", None) else {}
        text = text.strip()
        completion = Completion(request.id, text, len(prompt), len(answer.token_ids), finish, extra=extra)
        completion.invalid = check(request.structure, text)
        return completion

    def close(self) -> None:
        """Stop the engine's processes (they would outlive the actor otherwise, as Ray Data LLM notes)."""
        engine, self.engine = getattr(self, "engine", None), None
        loop = getattr(self, "_loop", None)
        if engine is not None and loop is not None and loop.loop.is_running():
            # Its output handler stops first: it would log the engine's exit as an EngineDeadError.
            try:
                loop.run(_quietly_shutdown(engine)).result(timeout=60)
            except Exception as exc:
                log.debug("vllm engine shutdown: %r", exc)
        else:
            _shutdown(engine)
        if loop is not None:
            loop.close()

    def __del__(self):
        self.close()


async def _quietly_shutdown(engine) -> None:
    handler = getattr(engine, "output_handler", None)
    if handler is not None:
        handler.cancel()
        await asyncio.sleep(0)
    _shutdown(engine)


def _shutdown(engine) -> None:
    if engine is not None:
        try:
            engine.shutdown()
        except Exception as exc:  # a dead engine may fail to say goodbye
            log.debug("vllm engine shutdown: %r", exc)


def _describe(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"[:500]
    return f"vllm engine died: {text}" if _is_fatal(exc) else text


def _failed(request_id: str, error: str) -> Completion:
    return Completion(request_id, "", finish_reason=FINISH_ERROR, error=error[:500])
