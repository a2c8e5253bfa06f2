"""Per-slot decode state kept on the device, so that a decode step never waits for the host.

Besides the KV cache (in :class:`~generators.teachers.fast.model.SlotDecoder`), a step reads and writes
only these buffers: the last token and position of every slot, how many tokens it has made, its
token limit, whether it is finished, its output so far, the key of its request's random draws
and, for the repetition penalty, every token id it has seen by position. They are allocated once
per capacity and keep their addresses, which is what lets captured CUDA graphs replay against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RowState:
    """Device buffers for ``rows`` slots of up to ``width`` generated tokens.

    Args:
        rows: Slots (KV-cache rows).
        width: Most tokens one slot may generate.
        vocab: Vocabulary size (for the EOS table).
        device: Where the buffers live.
        length: Positions per slot (prompt and output): the token history of the repetition penalty.
        penalty: Allocate the token history.
    """

    def __init__(self, rows: int, width: int, vocab: int, device, length: int, penalty: bool):
        self.rows, self.width, self.vocab = rows, width, vocab
        self.cur_tok, self.pos, self.n_gen, self.limit = (
            torch.zeros(rows, dtype=torch.long, device=device) for _ in range(4)
        )
        self.done = torch.ones(rows, dtype=torch.bool, device=device)
        self.out = torch.zeros(rows, width, dtype=torch.long, device=device)
        self.ar = torch.arange(rows, device=device)
        self.is_eos = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.scalars = torch.ones(4, device=device)  # temperature, top_p, repetition_penalty, min_p
        self.words = torch.zeros(rows, 2, dtype=torch.long, device=device)  # row keys (sampling.split_keys)
        self.history = torch.zeros(rows, length, dtype=torch.long, device=device) if penalty else None

    def fits(self, rows: int, width: int, length: int, penalty: bool) -> bool:
        return (
            rows <= self.rows
            and width <= self.width
            and (not penalty or (self.history is not None and length <= self.history.shape[1]))
        )

    def reset(
        self,
        eos_ids: Sequence[int],
        temperature: float,
        top_p: float,
        repetition_penalty: float,
        min_p: float = 0.0,
    ) -> None:
        self.done.fill_(True)  # idle slots must not advance
        self.is_eos.zero_()
        ids = [i for i in eos_ids if 0 <= i < self.vocab]
        if ids:
            self.is_eos[torch.tensor(ids, device=self.is_eos.device)] = True
        self.scalars.copy_(torch.tensor([max(temperature, 1e-6), top_p, repetition_penalty, min_p]))

    def per_row(self) -> list[torch.Tensor]:
        """The buffers indexed by slot, which a step changes and compaction moves."""
        return [self.cur_tok, self.pos, self.n_gen, self.limit, self.done, self.out, self.words] + (
            [self.history] if self.history is not None else []
        )

    def admit(self, slots, words: torch.Tensor, ids: torch.Tensor, lens: torch.Tensor) -> None:
        """Slots about to be prefilled: their row keys and, for the penalty, their prompts' history.

        Positions past the prompt repeat its first token until generated tokens overwrite them, so a
        gather over any prefix of the history sees only tokens the row really has.
        """
        self.words[slots] = words
        if self.history is not None:
            width = ids.shape[1]
            cols = torch.arange(width, device=ids.device)[None]
            self.history[slots] = ids[:, :1]
            self.history[slots, :width] = torch.where(cols < lens[:, None], ids, ids[:, :1])

    def start(
        self, slots, first: torch.Tensor, lens: torch.Tensor, limits: torch.Tensor, penalty: bool
    ) -> None:
        """Slots just prefilled: ``first`` is their first generated token, written at position ``lens``."""
        self.out[slots, 0], self.cur_tok[slots], self.pos[slots], self.limit[slots] = (
            first,
            first,
            lens,
            limits,
        )
        self.n_gen[slots] = 1
        self.done[slots] = self.is_eos[first] | (limits <= 1)
        if penalty:
            self.history[slots, lens] = first

    def advance(self, batch: int, tok: torch.Tensor, penalty: bool) -> None:
        """Record one decoded token for slots ``[0, batch)``; finished slots keep their state."""
        live, rows = ~self.done[:batch], self.ar[:batch]
        col = self.n_gen[:batch].clamp(max=self.width - 1)
        self.out[rows, col] = torch.where(live, tok, self.out[rows, col])
        step = live.long()
        self.n_gen[:batch] += step
        self.pos[:batch] += step
        if penalty:  # a live row's new token sits at its new position
            pos = self.pos[:batch]
            self.history[rows, pos] = torch.where(live, tok, self.history[rows, pos])
        self.done[:batch] |= live & (self.is_eos[tok] | (self.n_gen[:batch] >= self.limit[:batch]))
        self.cur_tok[:batch] = torch.where(live, tok, self.cur_tok[:batch])
