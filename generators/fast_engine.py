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

from generators.fast_graphs import GraphCache
from generators.fast_model import SlotDecoder
from generators.fast_sampling import SamplingMode, choose

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
        self.rows = self.width = 0
        self.seen = self.noise = None
        self.stats: dict[str, int] = {}

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new: int | Sequence[int],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        eos_ids: Sequence[int] = (),
        stop_fn: Callable[[list[int]], bool] | None = None,
        stop_window: int = 8,
    ) -> list[RowResult]:
        """Generate for every prompt; ``stop_fn(tail_tokens)`` may end a row early (finish ``stop``)."""
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
        self.stats = dict.fromkeys(("steps", "syncs", "prefills", "compactions", "tokens"), 0)
        if valid:
            self.mode = SamplingMode.of(temperature, top_k, top_p, repetition_penalty)
            with torch.inference_mode():
                length = max(len(prompts[i]) + limits[i] for i in valid)
                slots = bucket(len(valid), self.max_batch)
                self._prepare(slots, length, max(limits[i] for i in valid), eos_ids, seed)
                self.scalars.copy_(torch.tensor([max(temperature, 1e-6), top_p, repetition_penalty]))
                self._loop(prompts, limits, valid, slots, results, set(eos_ids), stop_fn, stop_window)
        self.stats["graphs"] = len(self.graphs)
        return results  # type: ignore[return-value]

    def _prepare(self, slots: int, length: int, width: int, eos_ids: Sequence[int], seed: int) -> None:
        dev, vocab = self.dec.device, self.dec.vocab_size
        length = bucket(length, self.max_seq_len, floor=64)
        moved = self.dec.allocate(slots, length)
        need_seen, need_noise = (
            self.mode.penalty and self.seen is None,
            not self.mode.greedy and self.noise is None,
        )
        if moved or width > self.width or need_seen or need_noise:
            rows, self.width = self.dec.rows, max(width, self.width)
            self.cur_tok, self.pos, self.n_gen, self.limit = (
                torch.zeros(rows, dtype=torch.long, device=dev) for _ in range(4)
            )
            self.done = torch.ones(rows, dtype=torch.bool, device=dev)
            self.out = torch.zeros(rows, self.width, dtype=torch.long, device=dev)
            self.ar = torch.arange(rows, device=dev)
            self.is_eos = torch.zeros(vocab, dtype=torch.bool, device=dev)
            self.scalars = torch.ones(3, device=dev)
            if self.mode.penalty or self.seen is not None:
                self.seen = torch.zeros(rows, vocab, dtype=torch.bool, device=dev)
            if not self.mode.greedy or self.noise is not None:
                self.noise = torch.ones(rows, vocab, device=dev)
            self.graphs.clear()  # captured graphs point at the old buffers
        self.done.fill_(True)
        self.is_eos.zero_()
        if eos_ids:
            self.is_eos[torch.tensor(list(eos_ids), device=dev)] = True
        self.gen = torch.Generator(device=dev).manual_seed(seed)

    def _loop(self, prompts, limits, valid, slots, results, eos, stop_fn, stop_window) -> None:
        queue = deque(sorted(valid, key=lambda i: len(prompts[i])))
        free = list(range(slots))
        owner: dict[int, int] = {}  # slot -> request index
        steps: dict[int, int] = {}  # slot -> decode steps since its prefill
        while queue or owner:
            if queue and (not owner or (self.refill and len(free) >= min(len(queue), max(1, slots // 16)))):
                self._admit(
                    [queue.popleft() for _ in range(min(len(free), len(queue)))],
                    free,
                    owner,
                    steps,
                    prompts,
                    limits,
                )
            left = min(limits[owner[s]] - 1 - steps[s] for s in owner)
            chunk = min(self.sync_every, left)
            if chunk > 0:
                batch = bucket(max(owner) + 1, slots)
                need = max(
                    min(len(prompts[owner[s]]) + steps[s] + chunk, len(prompts[owner[s]]) + limits[owner[s]])
                    for s in owner
                )
                kv_len = bucket(need, self.dec.length, floor=64)
                for _ in range(chunk):
                    if not self.mode.greedy:
                        self.noise[:batch].exponential_(generator=self.gen)
                    self.graphs.step(batch, kv_len)
                for s in owner:
                    steps[s] += chunk
                self.stats["steps"] += chunk
            self._collect(owner, free, results, eos, stop_fn, stop_window)
            if not queue and owner and bucket(len(owner), slots) < bucket(max(owner) + 1, slots):
                self._compact(owner, steps, free)

    def _admit(self, requests: list[int], free: list[int], owner, steps, prompts, limits) -> None:
        dev = self.dec.device
        i = 0
        while i < len(requests):
            width = min(
                -(-len(prompts[requests[i]]) // self.prompt_bucket) * self.prompt_bucket, self.dec.length
            )
            group = [r for r in requests[i:] if len(prompts[r]) <= width][
                : max(1, self.prefill_tokens // width)
            ]
            i += len(group)
            chosen = [free.pop(0) for _ in group]
            ids = torch.zeros(len(group), width, dtype=torch.long)
            for row, r in enumerate(group):
                ids[row, : len(prompts[r])] = torch.tensor(prompts[r])
            ids, sl = ids.to(dev), torch.tensor(chosen, device=dev)
            lens = torch.tensor([len(prompts[r]) for r in group], device=dev)
            lim = torch.tensor([limits[r] for r in group], device=dev)
            logits = self.dec.prefill(ids, lens, sl)
            seen = None
            if self.mode.penalty:
                self.seen[sl] = False
                rows = torch.tensor([row for row, r in enumerate(group) for _ in prompts[r]], device=dev)
                self.seen[
                    sl[rows], ids[rows, torch.cat([torch.arange(len(prompts[r])) for r in group]).to(dev)]
                ] = True
                seen = self.seen[sl]
            noise = None if self.mode.greedy else torch.empty_like(logits).exponential_(generator=self.gen)
            tok = choose(logits, self.mode, self.scalars, seen, noise)
            if self.mode.penalty:
                self.seen[sl, tok] = True
            self.out[sl, 0], self.cur_tok[sl], self.pos[sl], self.limit[sl] = tok, tok, lens, lim
            self.n_gen[sl] = 1
            self.done[sl] = self.is_eos[tok] | (lim <= 1)
            for s, r in zip(chosen, group, strict=True):
                owner[s], steps[s] = r, 0
            self.stats["prefills"] += 1

    def _collect(self, owner, free, results, eos, stop_fn, stop_window) -> None:
        """One host sync: hand back finished rows, then end live rows whose tail hits a stop string."""
        self.stats["syncs"] += 1
        live = sorted(owner)
        live_t = torch.tensor(live, device=self.dec.device)
        done = self.done[live_t].tolist()
        n_gen = self.n_gen[live_t].tolist()
        finished = {s: "done" for s, d in zip(live, done, strict=True) if d}
        if stop_fn is not None:
            window = self.sync_every + stop_window
            running = [j for j, d in enumerate(done) if not d]
            if running:
                idx = torch.tensor(running, device=self.dec.device)
                cols = (
                    self.n_gen[live_t[idx]][:, None] - window + torch.arange(window, device=self.dec.device)
                ).clamp(min=0)
                tails = self.out[live_t[idx]].gather(1, cols).tolist()
                for j, tail in zip(running, tails, strict=True):
                    if stop_fn(tail[window - min(window, n_gen[j]) :]):
                        finished[live[j]] = "stop"
        if not finished:
            return
        slots = list(finished)
        rows = self.out[torch.tensor(slots, device=self.dec.device)].tolist()
        self.done[torch.tensor(slots, device=self.dec.device)] = True
        for s, row in zip(slots, rows, strict=True):
            tokens = row[: n_gen[live.index(s)]]
            if finished[s] == "stop":
                results[owner[s]] = RowResult(tokens, "stop")
            elif tokens and tokens[-1] in eos:
                results[owner[s]] = RowResult(tokens[:-1], "eos")
            else:
                results[owner[s]] = RowResult(tokens, "length")
            self.stats["tokens"] += len(tokens)
            del owner[s]
            bisect.insort(free, s)

    def _compact(self, owner: dict, steps: dict, free: list[int]) -> None:
        """Move live rows into the lowest slots so that decode steps run a smaller batch bucket."""
        k = len(owner)
        moves = list(zip(sorted(s for s in owner if s >= k), [s for s in free if s < k], strict=True))
        src = torch.tensor([m[0] for m in moves], device=self.dec.device)
        dst = torch.tensor([m[1] for m in moves], device=self.dec.device)
        buffers = [
            *self.dec.k,
            *self.dec.v,
            self.cur_tok,
            self.pos,
            self.n_gen,
            self.limit,
            self.done,
            self.out,
        ]
        for buf in buffers + ([self.seen] if self.seen is not None else []):
            buf[dst] = buf[src]
        self.done[src] = True
        for s, d in moves:
            owner[d], steps[d] = owner.pop(s), steps.pop(s)
            free.remove(d)
            bisect.insort(free, s)
        self.stats["compactions"] += 1

    def step(self, batch: int, kv_len: int) -> None:
        """One decode token for slots ``[0, batch)``; only device work, no host reads."""
        logits = self.dec.decode(self.cur_tok[:batch], self.pos[:batch], kv_len)
        seen = self.seen[:batch] if self.mode.penalty else None
        noise = None if self.mode.greedy else self.noise[:batch]
        tok = choose(logits, self.mode, self.scalars, seen, noise)
        live, rows = ~self.done[:batch], self.ar[:batch]
        col = self.n_gen[:batch].clamp(max=self.width - 1)
        self.out[rows, col] = torch.where(live, tok, self.out[rows, col])
        if self.mode.penalty:
            self.seen[rows, tok] = self.seen[rows, tok] | live
        advance = live.long()
        self.n_gen[:batch] += advance
        self.pos[:batch] += advance
        self.done[:batch] |= live & (self.is_eos[tok] | (self.n_gen[:batch] >= self.limit[:batch]))
        self.cur_tok[:batch] = torch.where(live, tok, self.cur_tok[:batch])
