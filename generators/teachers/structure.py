"""Structured output: a JSON schema or a regex that a completion must match.

A :class:`Structure` travels with a :class:`~generators.teachers.contract.Request`. Local teachers
(``hf``, and ``fast`` through the same path) enforce it while decoding with llguidance
(:class:`GrammarMask`): at every step each constrained row's matcher says which tokens may come
next and every other token's logit is set to ``-inf``, so the text matches the grammar unless the
token limit cuts it. Remote teachers pass it to the server (``response_format`` or vLLM's
``structured_outputs``) and check the answer. Every backend validates the final text with
:meth:`Structure.validate` (``jsonschema`` / :func:`re.fullmatch`); a text that fails carries the
reason in :attr:`Completion.invalid` and the pipeline drops its row, it never fails the run.

llguidance was picked over xgrammar, outlines-core and lm-format-enforcer by measured cost on this
CPU (bench/results/grammar.md): 0.2-0.3 ms per row and token, under 1% of a decode step, no
compile step, a 7.6 MB wheel without triton; lm-format-enforcer does not import with transformers 5,
outlines-core took 5-10 ms per row and token on array schemas.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from generators.errors import ConfigError

log = logging.getLogger(__name__)
KINDS = ("json_schema", "regex")


@dataclass(frozen=True)
class Structure:
    """What a completion must look like: exactly one of a JSON schema (as canonical JSON) or a regex.

    Build it with :meth:`json` or :meth:`from_config`; it is hashable, so requests stay frozen.
    """

    json_schema: str | None = None
    regex: str | None = None

    @classmethod
    def json(cls, schema: dict) -> Structure:
        # Keys keep their order: llguidance writes an object's properties in the schema's order.
        return cls(json_schema=json.dumps(schema, separators=(",", ":")))

    @classmethod
    def from_config(cls, value, key: str = "generator.structure") -> Structure | None:
        """``{json_schema: {...}}`` (a mapping or JSON text) or ``{regex: "..."}``; null gives None.

        Raises:
            ConfigError: another shape, an invalid schema or a regex that does not compile.
        """
        if value is None:
            return None
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in KINDS:
            raise ConfigError(f"{key}={value}: give {{json_schema: {{...}}}} or {{regex: '...'}}")
        kind, spec = next(iter(value.items()))
        if kind == "regex":
            if not isinstance(spec, str) or not spec:
                raise ConfigError(f"{key}.regex: give a non-empty regular expression")
            try:
                re.compile(spec)
            except re.error as exc:
                raise ConfigError(f"{key}.regex={spec!r}: {exc}") from None
            structure = cls(regex=spec)
        else:
            import jsonschema

            try:
                schema = json.loads(spec) if isinstance(spec, str) else spec
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except (ValueError, jsonschema.SchemaError) as exc:
                raise ConfigError(f"{key}.json_schema is not a valid JSON schema: {str(exc)[:200]}") from None
            structure = cls.json(schema)
        structure.grammar()  # llguidance must accept it too, before the run starts
        return structure

    @property
    def schema(self) -> dict | None:
        return json.loads(self.json_schema) if self.json_schema else None

    def grammar(self) -> str:
        """The llguidance grammar of this structure (cached per structure).

        Raises:
            ConfigError: llguidance cannot build a grammar from it (an unsupported schema keyword).
        """
        try:
            grammar = _grammar(self)
        except ValueError as exc:
            raise ConfigError(f"structure not supported by llguidance: {str(exc)[:300]}") from None
        problem = _grammar_error(grammar)
        if problem:  # e.g. a string's pattern with maxLength: the matcher would refuse every token
            raise ConfigError(f"structure not supported by llguidance: {problem[:300]}")
        return grammar

    def validate(self, text: str) -> str | None:
        """Why ``text`` does not match (one line), or None when it does."""
        if self.regex is not None:
            return None if re.fullmatch(self.regex, text) else f"does not match the regex {self.regex!r}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"not JSON: {exc}"
        return _schema_error(self.json_schema, value)


# Separators the grammar allows between JSON tokens: compact ones, as json.dumps(..., separators) writes.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@lru_cache(maxsize=256)
def _grammar(structure: Structure) -> str:
    from llguidance import LLMatcher

    if structure.regex is not None:
        return LLMatcher.grammar_from_regex(structure.regex)
    return LLMatcher.grammar_from_json_schema(structure.json_schema, defaults=JSON_OPTIONS)


@lru_cache(maxsize=256)
def _grammar_error(grammar: str) -> str | None:
    """Why llguidance cannot run ``grammar`` (it builds but every matcher starts in error), or None."""
    from llguidance import LLMatcher

    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return "; ".join(messages) or "invalid grammar" if failed else None


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _schema_error(schema_json: str, value) -> str | None:
    error = next(iter(_validator(schema_json).iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the answer"
    return f"{where}: {error.message}"[:300]


def check(structure: Structure | None, text: str) -> str | None:
    """:meth:`Structure.validate` for an optional structure."""
    return None if structure is None else structure.validate(text)


class GrammarMask:
    """A transformers logits processor that keeps each constrained row inside its grammar.

    One llguidance matcher per constrained row; rows without a structure are left alone, so a
    batch may mix both. At every step the matcher first consumes the token the row drew at the
    step before, then fills the row's bitmask of allowed next tokens; once the grammar is complete
    (the matcher has stopped) only EOS stays allowed, and a row that drew EOS takes no more work.
    It must run before the sampler (:class:`generators.teachers.hf.RowSampler`) so the draw sees
    the masked logits.

    Args:
        tokenizer: llguidance tokenizer (:func:`ll_tokenizer`).
        structures: One optional structure per batch row.
        prompt_width: Length of the padded prompt: the first generated token sits at this position.
        eos_ids: Token ids that end a row.
    """

    def __init__(
        self, tokenizer, structures: Sequence[Structure | None], prompt_width: int, eos_ids: Sequence[int]
    ):
        import llguidance
        import llguidance.torch

        rows = [i for i, s in enumerate(structures) if s is not None]
        self.matchers = {i: llguidance.LLMatcher(tokenizer, structures[i].grammar()) for i in rows}
        for i, matcher in self.matchers.items():  # never an empty answer: the final check flags the row
            if matcher.is_error():
                log.warning("grammar: row %d left unconstrained: %s", i, matcher.get_error()[:300])
        self.live = {i for i in rows if not self.matchers[i].is_error()}
        self.width, self.eos = prompt_width, list(eos_ids)
        self._ll = llguidance.torch
        self.mask = llguidance.torch.allocate_token_bitmask(len(structures), tokenizer.vocab_size)

    @classmethod
    def of(
        cls, tokenizer_fn, structures: Sequence[Structure | None], prompt_width: int, eos_ids: Sequence[int]
    ) -> GrammarMask | None:
        """The processor for a batch, or None when no row is constrained (``tokenizer_fn`` is only
        called then: building the llguidance tokenizer costs time once per teacher)."""
        if not any(s is not None for s in structures):
            return None
        return cls(tokenizer_fn(), structures, prompt_width, eos_ids)

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] > self.width:  # the rows' previous tokens, drawn after the last mask
            last = input_ids[:, -1].tolist()
            for i in sorted(self.live):
                matcher = self.matchers[i]
                if last[i] in self.eos:
                    self.live.discard(i)  # the row has ended: generate() only pads it from here
                elif not matcher.is_stopped() and not matcher.consume_token(last[i]):
                    log.warning("grammar: row %d: token %d refused (%s)", i, last[i], matcher.get_error())
                    self.live.discard(i)
        rows = sorted(self.live)
        if not rows:
            return scores
        scores = scores.clone()
        vocab = min(scores.shape[1], self.mask.shape[1] * 32)
        open_rows = []
        for i in rows:
            if self.matchers[i].is_stopped():  # the grammar is complete: end the row
                eos_logits = scores[i, self.eos].clone()
                scores[i] = float("-inf")
                scores[i, self.eos] = eos_logits
            else:
                self._ll.fill_next_token_bitmask(self.matchers[i], self.mask, i)
                open_rows.append(i)
        if open_rows:
            index = torch.tensor(open_rows, device=scores.device)
            part = scores[index, :vocab].float().contiguous()
            bits = self.mask[open_rows].to(scores.device)
            self._ll.apply_token_bitmask_inplace(part, bits)
            dead = torch.isneginf(part).all(dim=1)
            if dead.any():  # an earlier processor (teacher.token_aware's ban) removed every allowed token:
                allowed = torch.zeros_like(part[dead])  # the grammar wins, the allowed tokens tie
                self._ll.apply_token_bitmask_inplace(allowed, bits[dead])
                part[dead] = allowed
            scores[index, :vocab] = part.to(scores.dtype)
            scores[index, vocab:] = float("-inf")  # ids past the tokenizer's vocabulary
        return scores


def ll_tokenizer(tokenizer, eos_ids: Sequence[int], vocab_size: int):
    """The llguidance view of a transformers fast tokenizer, ending on any of ``eos_ids``."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids) or None)


def parse_partial_json(text: str):
    """The longest prefix of a JSON answer cut by the token limit that parses once closed.

    A constrained answer is valid JSON up to where ``max_new_tokens`` cut it; this keeps the items
    that were complete (``{"terms": ["a", "b", "c`` gives ``{"terms": ["a", "b"]}``; an object cut
    inside keeps the keys it had, for the caller's checks to drop) instead of losing the whole answer. Returns None when no prefix parses. Written here because JSON parsers
    only take whole documents; the grammar guarantees the prefix is well-formed so far.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    closers = _closers(text)  # cut after a complete value, before its brackets closed
    if closers:
        try:
            return json.loads(text + closers)
        except ValueError:
            pass
    cuts = [m.start() for m in re.finditer(r",", text)]
    for cut in reversed(cuts):
        head = text[:cut]
        closers = _closers(head)
        if closers is None:
            continue
        try:
            return json.loads(head + closers)
        except ValueError:
            continue
    return None


def _closers(head: str) -> str | None:
    """The brackets that close ``head``, or None when it ends inside a string."""
    stack, in_string, escaped = [], False, False
    for ch in head:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if not stack:
                return None
            stack.pop()
    return None if in_string else "".join(reversed(stack))
