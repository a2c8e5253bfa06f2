"""The decode loop of the fast teacher: slots, continuous batching and CUDA-graph replay.

Each request owns one slot (a KV-cache row) from prefill until it finishes. A decode step runs
the first ``B`` slots (``B`` a power-of-two bucket) for one token; the per-row bookkeeping
(output buffer, position, finished mask, EOS and length checks) lives on the device, so the host
only enqueues work. Every ``sync_every`` steps the host reads the finished mask once, hands
finished rows back, checks stop strings on the tail of the live rows and refills free slots with
waiting requests. On CUDA each ``(B, kv_len, sampling mode)`` step is captured once as a CUDA
graph and replayed: one launch per token instead of ~20 kernels per layer.

Stop strings are checked on the host every ``sync_every`` steps, so a row may decode up to
``sync_every - 1`` tokens past its stop string before it is cut (the text is cut exactly at the
end). A larger ``sync_every`` means fewer host round-trips and more wasted tokens per stopped row.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from generators.teachers import sampling
from generators.teachers.fast.graphs import GraphCache
from generators.teachers.fast.model import SlotDecoder
from generators.teachers.fast.sampling import SamplingMode, choose
from generators.teachers.fast.state import RowState

log = logging.getLogger(__name__)


@dataclass
class RowResult:
    """Generated token ids for one prompt; ``finish`` is ``eos``, ``stop``, ``length`` or ``error``."""

    tokens: list[int]
    finish: str
    error: str | None = None


def bucket(n: int, cap: int, floor: int = 1) -> int:
    """Smallest power of two >= max(n, floor), but at most ``cap``."""
    return min(cap, max(floor, 1 << max(0, n - 1).bit_length()))


class FastEngine:
    """Batched generation over token ids with a static KV cache.

    Args:
        model: A loaded HF causal LM of a supported architecture (see ``fast_model``).
        max_batch: Slots decoded together (KV rows); memory grows with ``max_batch * max_seq_len``.
        max_seq_len: Longest prompt + output a slot holds; longer requests fail alone.
        prompt_bucket: Prompts are right-padded to a multiple of this for batched prefill.
        prefill_tokens: Padded tokens per prefill forward (bounds prefill activation memory).
        sync_every: Decode steps between host checks (finished rows, stop strings, refill).
        use_cuda_graphs: Replay captured decode steps on CUDA (ignored on CPU).
        refill: Admit waiting requests into freed slots while others decode; off: static waves.
    """

    def __init__(
        self,
        model,
        max_batch: int = 256,
        max_seq_len: int = 4096,
        prompt_bucket: int = 64,
        prefill_tokens: int = 16384,
        sync_every: int = 16,
        use_cuda_graphs: bool = True,
        refill: bool = True,
    ):
        self.dec = SlotDecoder(model)
        self.max_batch, self.max_seq_len, self.prompt_bucket = max_batch, max_seq_len, prompt_bucket
        self.prefill_tokens, self.sync_every, self.refill = prefill_tokens, max(1, sync_every), refill
        self.graphs = GraphCache(self, enabled=use_cuda_graphs and self.dec.device.type == "cuda")
        self.state: RowState | None = None
        self.stats: dict[str, int] = {}
        # A static [V] float32 tensor on the model's device added to every step's logits (token-aware
        # generation); set it before the first generate(): captured graphs read this very tensor.
        self.logit_bias: torch.Tensor | None = None

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new: int | Sequence[int],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        min_p: float = 0.0,
        seed: int = 0,
        keys: Sequence[int] | None = None,
        eos_ids: Sequence[int] = (),
        stop_fn: Callable[[list[int]], bool] | None = None,
        stop_window: int = 8,
        feed: Callable[[int, int], list[tuple[list[int], int, int]]] | None = None,
        done: Callable[[int, RowResult], None] | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[RowResult]:
        """Generate for every prompt; ``stop_fn(tail_tokens)`` may end a row early (finish ``stop``).

        ``keys`` are the prompts' row keys (:func:`generators.teachers.sampling.row_key` of their
        request ids): a prompt's draws depend on its key only. Default: keys of the prompt indices
        under ``seed``.

        Streaming (the teacher stage keeps requests of several batches in flight): ``feed(n, room)``
        is asked for up to ``n`` more ``(prompt, max_new, key)`` whenever slots are free, each with
        ``len(prompt) + max_new <= room``; they are numbered after ``prompts`` and answered in the same
        call. ``done(i, result)`` hears of each row as it finishes, ``on_tokens(n)`` of decoded tokens.
        """
        prompts = list(prompts)
        self.feed, self.on_done, self.on_tokens, self._seen = feed, done, on_tokens, {}
        limits = [max_new] * len(prompts) if isinstance(max_new, int) else list(max_new)
        results: list[RowResult | None] = [None] * len(prompts)
        valid = []
        for i, (p, m) in enumerate(zip(prompts, limits, strict=True)):
            if not p or len(p) + m > self.max_seq_len:
                results[i] = RowResult(
                    [], "error", f"prompt of {len(p)} tokens + {m} new > max_seq_len {self.max_seq_len}"
                )
            else:
                valid.append(i)
        for i, result in enumerate(results):
            if result is not None and done is not None:
                done(i, result)
        self.stats = dict.fromkeys(("steps", "syncs", "prefills", "compactions", "tokens"), 0)
        if valid:
            self.mode = SamplingMode.of(temperature, top_k, top_p, repetition_penalty, min_p)
            with torch.inference_mode():
                length = max(len(prompts[i]) + limits[i] for i in valid)
                slots = bucket(len(valid), self.max_batch)
                self._prepare(slots, length, max(limits[i] for i in valid))
                self.state.reset(eos_ids, temperature, top_p, repetition_penalty, min_p)
                keys = (
                    keys
                    if keys is not None
                    else [sampling.row_key(str(i), seed) for i in range(len(prompts))]
                )
                self.words = sampling.split_keys(keys, self.dec.device)
                self._loop(prompts, limits, valid, slots, results, set(eos_ids), stop_fn, stop_window)
        self.stats["graphs"] = len(self.graphs)
        return results  # type: ignore[return-value]

    def _prepare(self, slots: int, length: int, width: int) -> None:
        mode = self.mode
        moved = self.dec.allocate(slots, bucket(length, self.max_seq_len, floor=64))
        st = self.state
        if moved or st is None or not st.fits(self.dec.rows, width, self.dec.length, mode.penalty):
            width = max(width, st.width if st else 0)
            penalty = mode.penalty or (st is not None and st.history is not None)
            self.state = None  # free the old buffers first
            self.state = RowState(
                self.dec.rows, width, self.dec.vocab_size, self.dec.device, self.dec.length, penalty
            )
            self.graphs.clear()  # captured graphs point at the old buffers

    def _loop(self, prompts, limits, valid, slots, results, eos, stop_fn, stop_window) -> None:
        queue = deque(sorted(valid, key=lambda i: len(prompts[i])))
        free = list(range(slots))
        owner: dict[int, int] = {}  # slot -> request index
        steps: dict[int, int] = {}  # slot -> decode steps since its prefill
        while True:
            if self.feed is not None and len(free) > len(queue):  # requests of later batches
                queue.extend(self._adopt(prompts, limits, results, len(free) - len(queue)))
            if not queue and not owner:
                break
            # Refill in groups: every prefill is an eager forward that costs about one decode step.
            if queue and (not owner or (self.refill and len(free) >= min(len(queue), max(1, slots // 16)))):
                admitted = [queue.popleft() for _ in range(min(len(free), len(queue)))]
                for group in self._prefill_groups(admitted, prompts):
                    chosen = [free.pop(0) for _ in group]
                    self._prefill(group, chosen, prompts, limits)
                    owner.update(zip(chosen, group, strict=True))
                    steps.update(dict.fromkeys(chosen, 0))
            # Run until the next row must end on length, at most sync_every steps: no step is wasted
            # on rows whose end the host can predict.
            chunk = min(self.sync_every, min(limits[owner[s]] - 1 - steps[s] for s in owner))
            if chunk > 0:
                batch = bucket(max(owner) + 1, slots)
                ends = (len(prompts[owner[s]]) + min(steps[s] + chunk, limits[owner[s]]) for s in owner)
                kv_len = bucket(max(ends), self.dec.length, floor=64)
                for _ in range(chunk):
                    self.graphs.step(batch, kv_len)
                for s in owner:
                    steps[s] += chunk
                self.stats["steps"] += chunk
            self._collect(owner, free, results, eos, stop_fn, stop_window)
            if not queue and owner and bucket(len(owner), slots) < bucket(max(owner) + 1, slots):
                self._compact(owner, steps, free)

    def _adopt(self, prompts: list, limits: list, results: list, n: int) -> list[int]:
        """Up to ``n`` fed requests that fit the allocated slots, numbered after those known."""
        start = len(prompts)
        for prompt, limit, key in self.feed(n, self.dec.length):
            if limit > self.state.width:  # the teacher feeds only rows of its own max_new_tokens
                raise ValueError(f"fed row of {limit} new tokens > {self.state.width} allocated")
            prompts.append(list(prompt))
            limits.append(limit)
            results.append(None)
            self.words = torch.cat([self.words, sampling.split_keys([key], self.dec.device)])
        return list(range(start, len(prompts)))

    def _prefill_groups(self, requests: list[int], prompts) -> list[list[int]]:
        """Split requests (sorted by length) into runs that share a padded length and a token budget."""
        groups = []
        for r in requests:
            width = min(-(-len(prompts[r]) // self.prompt_bucket) * self.prompt_bucket, self.dec.length)
            if groups and groups[-1][0] == width and (len(groups[-1][1]) + 1) * width <= self.prefill_tokens:
                groups[-1][1].append(r)
            else:
                groups.append((width, [r]))
        return [g for _, g in groups]

    def _prefill(self, group: list[int], chosen: list[int], prompts, limits) -> None:
        dev, st = self.dec.device, self.state
        width = min(
            -(-max(len(prompts[r]) for r in group) // self.prompt_bucket) * self.prompt_bucket,
            self.dec.length,
        )
        ids = torch.zeros(len(group), width, dtype=torch.long)
        for row, r in enumerate(group):
            ids[row, : len(prompts[r])] = torch.tensor(prompts[r])
        ids, slots = ids.to(dev), torch.tensor(chosen, device=dev)
        lens = torch.tensor([len(prompts[r]) for r in group], device=dev)
        st.admit(slots, self.words[torch.tensor(group, device=dev)], ids, lens)
        logits = self._biased(self.dec.prefill(ids, lens, slots))
        history = st.history[slots, :width] if self.mode.penalty else None
        u = None if self.mode.greedy else sampling.uniforms(st.words[slots], torch.zeros_like(lens))
        first = choose(logits, self.mode, st.scalars, history, u, self.host_checks)
        st.start(slots, first, lens, torch.tensor([limits[r] for r in group], device=dev), self.mode.penalty)
        self.stats["prefills"] += 1

    def _collect(self, owner, free, results, eos, stop_fn, stop_window) -> None:
        """One host sync: hand back finished rows, then end live rows whose tail hits a stop string."""
        st, dev = self.state, self.dec.device
        self.stats["syncs"] += 1
        live = sorted(owner)
        live_t = torch.tensor(live, device=dev)
        done, n_gen = st.done[live_t].tolist(), dict(zip(live, st.n_gen[live_t].tolist(), strict=True))
        if self.on_tokens is not None:  # decoded since the last sync, finished rows included
            self.on_tokens(sum(n_gen[s] - self._seen.get(s, 0) for s in live))
            self._seen.update(n_gen)
        finished = {s: "done" for s, d in zip(live, done, strict=True) if d}
        running = [s for s, d in zip(live, done, strict=True) if not d]
        if stop_fn is not None and running:
            window = self.sync_every + stop_window
            run_t = torch.tensor(running, device=dev)
            cols = (st.n_gen[run_t][:, None] - window + torch.arange(window, device=dev)).clamp(min=0)
            for s, tail in zip(running, st.out[run_t].gather(1, cols).tolist(), strict=True):
                if stop_fn(tail[window - min(window, n_gen[s]) :]):
                    finished[s] = "stop"
        if not finished:
            return
        slots = list(finished)
        slots_t = torch.tensor(slots, device=dev)
        st.done[slots_t] = True
        for s, row in zip(slots, st.out[slots_t].tolist(), strict=True):
            tokens = row[: n_gen[s]]
            if finished[s] == "stop":
                results[owner[s]] = RowResult(tokens, "stop")
            elif tokens and tokens[-1] in eos:
                results[owner[s]] = RowResult(tokens[:-1], "eos")
            else:
                results[owner[s]] = RowResult(tokens, "length")
            self.stats["tokens"] += len(tokens)
            if self.on_done is not None:
                self.on_done(owner[s], results[owner[s]])
            self._seen.pop(s, None)
            del owner[s]
            bisect.insort(free, s)

    def _compact(self, owner: dict, steps: dict, free: list[int]) -> None:
        """Move live rows into the lowest slots so that decode steps run a smaller batch bucket."""
        k = len(owner)
        moves = list(zip(sorted(s for s in owner if s >= k), [s for s in free if s < k], strict=True))
        src = torch.tensor([m[0] for m in moves], device=self.dec.device)
        dst = torch.tensor([m[1] for m in moves], device=self.dec.device)
        for buf in [*self.dec.k, *self.dec.v, *self.state.per_row()]:
            buf[dst] = buf[src]
        self.state.done[src] = True
        for s, d in moves:
            owner[d], steps[d] = owner.pop(s), steps.pop(s)
            self._seen[d] = self._seen.pop(s, 0)
            free.remove(d)
            bisect.insort(free, s)
        self.stats["compactions"] += 1

    def _biased(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` plus the token-aware bias, when there is one (a tensor add: CUDA-graph safe)."""
        return logits if self.logit_bias is None else logits + self.logit_bias

    @property
    def host_checks(self) -> bool:
        """Whether the sampler may read a flag on the host: not inside captured CUDA graphs."""
        return not self.graphs.enabled

    def step(self, batch: int, kv_len: int) -> None:
        """One decode token for slots ``[0, batch)``; only device work, no host reads (with graphs)."""
        st, mode = self.state, self.mode
        logits = self._biased(self.dec.decode(st.cur_tok[:batch], st.pos[:batch], kv_len))
        history = st.history[:batch, :kv_len] if mode.penalty else None
        u = None if mode.greedy else sampling.uniforms(st.words[:batch], st.n_gen[:batch])
        st.advance(batch, choose(logits, mode, st.scalars, history, u, self.host_checks), mode.penalty)
