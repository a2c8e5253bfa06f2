"""Per-token cost of grammar engines on this CPU, to pick the one litho's hf/fast teachers use.

For each engine that is installed (xgrammar, llguidance, outlines-core, lm-format-enforcer) and each
schema, it compiles the grammar once for the embedded teacher's tokenizer (SmolLM2, 49,152 tokens),
then replays the tokens of a valid answer for ``--batch`` rows, timing what a decode step adds:
computing the next-token mask of every row, applying it to a ``(batch, vocab)`` logits tensor, and
advancing every row's state by its token. Printed next to the time of one bf16 forward step of the
model itself at the same batch, so the overhead reads as a share of a decode step.

    python bench/bench_grammar.py --batch 32 --write     # bench/results/grammar.md
    python bench/bench_grammar.py --quick                # smoke run: batch 1, no write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEMAS = {
    "layer_terms": (
        {
            "type": "object",
            "properties": {"terms": {"type": "array", "items": {"type": "string"}, "maxItems": 12}},
            "required": ["terms"],
        },
        {"terms": ["attention", "softmax temperature", "key vectors", "query", "sink tokens", "entropy"]},
    ),
    "judge_score": (
        {
            "type": "object",
            "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["score"],
        },
        {"score": 7},
    ),
    "relations": (
        {
            "type": "object",
            "properties": {
                "relations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "head": {"type": "string"},
                            "relation": {"type": "string"},
                            "tail": {"type": "string"},
                        },
                        "required": ["head", "relation", "tail"],
                    },
                }
            },
            "required": ["relations"],
        },
        {
            "relations": [
                {"head": "attention", "relation": "weights", "tail": "values"},
                {"head": "softmax", "relation": "normalises", "tail": "scores"},
            ]
        },
    ),
}


def _tokenizer():
    from generators.teachers.models import load_tokenizer

    return load_tokenizer("embedded:smollm2")


class XGrammar:
    name = "xgrammar"

    def __init__(self, tok, vocab: int):
        import xgrammar as xgr

        self.xgr, self.vocab = xgr, vocab
        self.compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab))

    def compile(self, schema: dict):
        return self.compiler.compile_json_schema(json.dumps(schema))

    def start(self, compiled, batch: int):
        self.matchers = [self.xgr.GrammarMatcher(compiled) for _ in range(batch)]
        self.mask = self.xgr.allocate_token_bitmask(batch, self.vocab)

    def step(self, logits, tokens: list[int]) -> None:
        for i, m in enumerate(self.matchers):
            m.fill_next_token_bitmask(self.mask, i)
        self.xgr.apply_token_bitmask_inplace(logits, self.mask)
        for m, t in zip(self.matchers, tokens):
            assert m.accept_token(t), "xgrammar refused a valid token"


class LLGuidance:
    name = "llguidance"

    def __init__(self, tok, vocab: int):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.ll, self.llt, self.vocab = llguidance, llguidance.torch, vocab
        self.tok = llguidance.hf.from_tokenizer(tok, n_vocab=vocab)

    def compile(self, schema: dict):
        return self.ll.LLMatcher.grammar_from_json_schema(json.dumps(schema))

    def start(self, compiled, batch: int):
        self.matchers = [self.ll.LLMatcher(self.tok, compiled) for _ in range(batch)]
        self.mask = self.llt.allocate_token_bitmask(batch, self.vocab)

    def step(self, logits, tokens: list[int]) -> None:
        for i, m in enumerate(self.matchers):
            self.llt.fill_next_token_bitmask(m, self.mask, i)
        self.llt.apply_token_bitmask_inplace(logits, self.mask)
        for m, t in zip(self.matchers, tokens):
            assert m.consume_token(t), f"llguidance refused a valid token: {m.get_error()}"


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tok, vocab: int):
        from outlines_core import Vocabulary

        self.vocab_size = vocab
        pieces: dict[str, list[int]] = {}
        eos = tok.eos_token_id
        for token, idx in tok.get_vocab().items():
            if idx == eos or token in tok.all_special_tokens:
                continue
            text = tok.convert_tokens_to_string([token])
            pieces.setdefault(text, []).append(idx)
        self.vocabulary = Vocabulary(eos, pieces)

    def compile(self, schema: dict):
        from outlines_core import Index
        from outlines_core.json_schema import build_regex_from_schema

        return Index(build_regex_from_schema(json.dumps(schema)), self.vocabulary)

    def start(self, compiled, batch: int):
        import torch
        from outlines_core import Guide

        self.torch = torch
        self.guides = [Guide(compiled) for _ in range(batch)]

    def step(self, logits, tokens: list[int]) -> None:
        mask = self.torch.full_like(logits, float("-inf"))
        for i, g in enumerate(self.guides):
            mask[i, g.get_tokens()] = 0
        logits.add_(mask)
        for g, t in zip(self.guides, tokens):
            g.advance(t)


class FormatEnforcer:
    name = "lm-format-enforcer"

    def __init__(self, tok, vocab: int):
        from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data

        self.data = build_token_enforcer_tokenizer_data(tok)

    def compile(self, schema: dict):

        return schema

    def start(self, compiled, batch: int):
        import torch
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        self.torch = torch
        self.enforcers = [TokenEnforcer(self.data, JsonSchemaParser(compiled)) for _ in range(batch)]
        self.prefixes = [[] for _ in range(batch)]

    def step(self, logits, tokens: list[int]) -> None:
        mask = self.torch.full_like(logits, float("-inf"))
        for i, e in enumerate(self.enforcers):
            mask[i, e.get_allowed_tokens(self.prefixes[i])] = 0
        logits.add_(mask)
        for prefix, t in zip(self.prefixes, tokens):
            prefix.append(t)


ENGINES = (XGrammar, LLGuidance, OutlinesCore, FormatEnforcer)


def forward_step_s(batch: int, repeats: int = 5) -> float:
    """Seconds of one bf16 decode step of the embedded teacher at ``batch`` rows (KV cache of 200)."""
    import torch

    from generators.teachers.models import load_causal_lm

    model, tok = load_causal_lm("embedded:smollm2", "teacher.model", "cpu", "bfloat16")
    ids = torch.randint(0, 1000, (batch, 200))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache, nxt = out.past_key_values, torch.randint(0, 1000, (batch, 1))
        for _ in range(2):  # warm-up
            model(nxt, past_key_values=cache, use_cache=True)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(nxt, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write bench/results/grammar.md")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (make bench ARGS=--quick): batch 1, no write"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.write = 1, False
    torch.set_num_threads(args.threads)
    tok = _tokenizer()
    vocab = len(tok)
    step = forward_step_s(args.batch)
    print(f"one bf16 decode step of the teacher at batch {args.batch}: {step * 1e3:.1f} ms")
    rows = []
    for cls in ENGINES:
        try:
            engine = cls(tok, vocab)
        except Exception as exc:  # not installed, or does not import beside this transformers
            print(f"{cls.name}: unavailable ({str(exc)[:120]})")
            rows.append((cls.name, "-", float("nan"), float("nan"), float("nan"), float("nan"), float("nan")))
            continue
        for schema_name, (schema, answer) in SCHEMAS.items():
            tokens = tok(json.dumps(answer), add_special_tokens=False)["input_ids"]
            t0 = time.perf_counter()
            compiled = engine.compile(schema)
            compile_s = time.perf_counter() - t0
            timings = []
            for _ in range(3):  # the first replay warms the engine's caches; the median is reported
                engine.start(compiled, args.batch)
                logits = torch.zeros(args.batch, vocab)
                t0 = time.perf_counter()
                for t in tokens:
                    engine.step(logits, [t] * args.batch)
                timings.append((time.perf_counter() - t0) / len(tokens))
            cold, per_step = timings[0], statistics.median(timings)
            rows.append(
                (
                    cls.name,
                    schema_name,
                    compile_s,
                    cold,
                    per_step,
                    per_step / args.batch * 1e6,
                    per_step / step,
                )
            )
            print(
                f"{cls.name:20} {schema_name:12} compile {compile_s:7.3f} s  first {cold * 1e3:8.2f} ms  step {per_step * 1e3:8.2f} ms "
                f"({per_step / args.batch * 1e6:7.1f} us/row-token, {per_step / step:6.1%} of a decode step)"
            )
    lines = [
        f"# Grammar engines on this CPU (batch {args.batch}, {args.threads} threads, embedded SmolLM2 tokenizer)",
        "",
        f"`python bench/bench_grammar.py --batch {args.batch} --write`. One bf16 decode step of the teacher "
        f"at this batch: {step * 1e3:.1f} ms.",
        "",
        "| engine | schema | compile s | first replay ms/step | mask+apply+advance ms/step | µs per row-token | share of a decode step |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e} | {s} | {c:.3f} | {k * 1e3:.2f} | {p * 1e3:.2f} | {u:.1f} | {f:.1%} |"
        for e, s, c, k, p, u, f in rows
    ]
    print("\n" + "\n".join(lines))
    if args.write:
        out = ROOT / "bench" / "results" / "grammar.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
