"""Output formats: best-of-n, packed token shards, SFT messages, shard bytes, the dataset card, and a
real consumer (a tiny Llama trained for a few steps on the packed and the SFT shards)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from pipeline import expression, select
from pipeline.output.packing import pack_tokens
from pipeline.output.schema import typed_columns
from tests.pipeline.conftest import compose

# The LM scorer is not under test here and is slow on two cores.
QUIET = ("teacher=dummy", "++filters.lm=null")


def _rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def test_best_of_n_expands_requests_into_candidate_groups():
    plan = [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}]
    rows = select.expand(plan, 3, seed=0)
    assert [r["request_group"] for r in rows] == ["a"] * 3 + ["b"] * 3
    assert [r["candidate"] for r in rows] == [0, 1, 2] * 2 and len({r["id"] for r in rows}) == 6
    assert select.expand(plan, 3, seed=0) == rows and select.expand(plan, 1, seed=0) is plan
    with pytest.raises(ConfigError, match="best_of_n.n_candidates=0"):
        select.expand(plan, 0, seed=0)


def test_score_expression_is_whitelisted_arithmetic():
    data = {
        "chars_per_token": np.array([4.0, 3.0, np.nan]),
        "rep_dup_ngram_frac_5": np.array([0.0, 0.5, 0.0]),
    }
    score = expression.evaluate("chars_per_token - 0.1 * rep_dup_ngram_frac_5 + log(abs(-1))", data)
    np.testing.assert_allclose(score, [4.0, 2.95, np.nan])
    assert expression.columns("maximum(a, 2) / b ** 2") == ["a", "b"]
    for bad in ("__import__('os')", "a.real", "a if b else c", "'text'", "open(a)", "a[0]", "a +"):
        with pytest.raises(ConfigError, match="best_of_n.score"):
            expression.parse(bad)
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        expression.evaluate("nope + 1", data)


def test_best_candidate_wins_and_dropped_candidates_do_not_compete():
    ids, groups = ["a1", "a2", "a3", "b1", "b2"], ["a", "a", "a", "b", "b"]
    reasons = ["", "", "too_short", "", ""]
    scores = np.array([1.0, 2.0, 9.0, np.nan, np.nan])
    assert select.losers(ids, groups, reasons, scores) == {"a1": "a2", "b2": "b1"}


def test_pack_tokens_cuts_exact_rows_with_document_offsets():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]  # with EOS (0): 4 + 3 + 7 = 14 tokens
    packer = pack_tokens(iter(docs), 5, eos_id=0)
    rows = []
    while True:
        try:
            rows.append(next(packer))
        except StopIteration as stop:
            tail = stop.value
            break
    assert rows == [([1, 2, 3, 0, 4], [0, 4]), ([5, 0, 6, 7, 8], [2])]
    assert tail == 4


def test_json_columns_become_typed_lists():
    table = pa.table(
        {
            "id": ["x"],
            "messages": [json.dumps([{"role": "user", "content": "hi"}])],
            "layer_terms": ['["a", "b"]'],
            "layer_relations": ["[]"],
        }
    )
    typed = typed_columns(table)
    assert typed.column("messages").to_pylist() == [[{"role": "user", "content": "hi"}]]
    assert str(typed.schema.field("messages").type) == "list<item: struct<role: string, content: string>>"
    assert typed.column("layer_terms").to_pylist() == [["a", "b"]]
    assert typed.column("layer_relations").type.value_type.names == ["head", "relation", "tail"]


def test_multi_step_rows_are_checkpointed_only_when_complete(tmp_path):
    from generators.prompts.instruct import InstructGenerator
    from pipeline.generate import GenerateStage

    generator = InstructGenerator(turns=2)
    plan = generator.plan(40, seed=0)
    batch = {k: np.asarray([r[k] for r in plan], dtype=object) for k in plan[0]}
    stage = GenerateStage(
        {"_target_": "generators.teachers.dummy.DummyTeacher", "error_rate": 0.1}, str(tmp_path), generator
    )
    failed = asyncio.run(stage(batch))  # with checkpoints, only the failed rows come back
    assert 0 < len(failed["id"]) < 40 and (failed["finish_reason"] == "error").all()
    saved = pq.read_table(next(tmp_path.glob("block=000000/gen-*.parquet"))).to_pydict()
    assert sorted(saved["id"] + failed["id"].tolist()) == sorted(batch["id"].tolist())
    assert all(n == 2 for n in saved["n_turns"]) and all(len(json.loads(s)) == 4 for s in saved["steps"])
    assert saved["completion_tokens"][0] == sum(len(s.split()) for s in json.loads(saved["steps"][0]))


def test_bad_format_settings_fail_before_generation():
    from pipeline.generate import build_generator
    from pipeline.validate import check_format

    cfg = compose("output=sft", "teacher=dummy")
    with pytest.raises(ConfigError, match="output=sft needs conversations"):
        check_format(cfg, build_generator(cfg))
    cfg = compose("output.pack_seq_len=0", "teacher=dummy")
    with pytest.raises(ConfigError, match="output.pack_seq_len=0"):
        check_format(cfg, build_generator(cfg))
    cfg = compose("best_of_n.n_candidates=2", "best_of_n.score=os.system", "teacher=dummy")
    with pytest.raises(ConfigError, match="Attribute is not allowed"):
        check_format(cfg, build_generator(cfg))


def _run(out: Path, *overrides: str) -> dict:
    from pipeline.run import run

    return run(compose(*QUIET, f"output.dir={out}", *overrides))


@pytest.mark.slow
def test_best_of_n_keeps_the_best_candidate_per_request(ray_session, tmp_path):
    manifest = _run(tmp_path, "n=8", "best_of_n.n_candidates=3", "best_of_n.score=-n_tokens")
    assert manifest["counts"]["planned"] == 24
    kept, rejected = _rows(tmp_path / "data"), _rows(tmp_path / "rejected")
    assert len({r["request_group"] for r in kept}) == len(kept) == 8
    losers = [r for r in rejected if r["drop_reason"] == "not_best_of_n"]
    assert len(losers) == 16 == manifest["dropped_by_reason"]["not_best_of_n"]
    best = {r["request_group"]: r["n_tokens"] for r in kept}
    assert all(r["n_tokens"] >= best[r["request_group"]] for r in losers)
    assert all(r["best_of_n_score"] == -r["n_tokens"] for r in kept + losers)


@pytest.mark.slow
def test_packed_shards_card_and_byte_sized_shards(ray_session, tmp_path):
    from datasets import load_dataset

    from filters.tokenizers import load_target_tokenizer

    overrides = (
        "n=20",
        "output.pack_seq_len=64",
        "output.validation_fraction=0.3",
        "output.max_shard_bytes=6000",
    )
    manifest = _run(tmp_path, *overrides)
    kept = _rows(tmp_path / "data")
    assert len(manifest["shards"]) > 2  # ~20 rows of ~1.5 kB in 6 kB shards
    packed = manifest["packed"]
    tok = load_target_tokenizer("embedded:smollm2")
    for split in ("train", "validation"):
        docs = [r for r in sorted(kept, key=lambda r: r["id"]) if r["id"] in _split_ids(tmp_path, split)]
        stream = [t for ids in tok.encode([r["text"] for r in docs]) for t in [*ids, packed["eos_id"]]]
        rows = load_dataset("parquet", data_dir=str(tmp_path / "packed"), split=split)
        assert all(len(ids) == 64 for ids in rows["input_ids"])
        assert [t for ids in rows["input_ids"] for t in ids] == stream[: 64 * len(rows)]
        assert packed["splits"][split]["tail_tokens_dropped"] == len(stream) - 64 * len(rows)
        starts = np.cumsum([0] + [len(ids) + 1 for ids in tok.encode([r["text"] for r in docs])])[:-1]
        offsets = [i * 64 + o for i, row in enumerate(rows["doc_offsets"]) for o in row]
        assert offsets == [int(s) for s in starts if s < 64 * len(rows)]
    text_rows = load_dataset("parquet", data_dir=str(tmp_path / "data"))
    assert sum(len(split) for split in text_rows.values()) == len(kept) == manifest["counts"]["kept"]
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n") and "path: packed/train-*.parquet" in card
    assert "not_best_of_n" not in card and f"| kept | {manifest['counts']['kept']} |" in card

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "packed").iterdir()}
    again = _run(tmp_path, *overrides)
    assert again["packed"]["unchanged"] and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # The run's own token ids (kept by token_metrics, stored beside each data shard) are what was packed;
    # without them every shard is tokenized again, to the same packed shards.
    from pipeline.output.packing import TOKENS, pack_run

    tokens = sorted((tmp_path / TOKENS).glob("*.parquet"))
    assert [t.name for t in tokens] == sorted(p.name for p in (tmp_path / "data").glob("*.parquet"))
    stored = {
        r["id"]: np.frombuffer(r["tokens"], np.int32).tolist()
        for t in tokens
        for r in pq.read_table(t).to_pylist()
    }
    assert stored == dict(zip([r["id"] for r in kept], tok.encode([r["text"] for r in kept])))
    digests = {
        s["file"]: s["digest"] for split in manifest["packed"]["splits"].values() for s in split["shards"]
    }
    for t in tokens:
        t.unlink()
    repacked = pack_run(tmp_path, 64, "embedded:smollm2", 6000 // (4 * 64))  # the run's rows per packed shard
    assert repacked["unchanged"] and len(list((tmp_path / TOKENS).glob("*.parquet"))) == len(tokens)
    assert {s["file"]: s["digest"] for sp in repacked["splits"].values() for s in sp["shards"]} == digests


def _split_ids(out: Path, split: str) -> set[str]:
    return {r["id"] for f in (out / "data").glob(f"{split}-*.parquet") for r in pq.read_table(f).to_pylist()}


@pytest.mark.slow
def test_a_tiny_llama_trains_on_packed_and_sft_shards(ray_session, tmp_path):
    """The consumer: datasets.load_dataset reads both formats; loss is finite and falls."""
    torch = pytest.importorskip("torch")
    from datasets import load_dataset

    from generators.teachers.models import load_tokenizer
    from tests.helpers.random_models import random_model

    _run(tmp_path / "pretrain", "n=12", "output.pack_seq_len=32")
    _run(
        tmp_path / "sft",
        "n=12",
        "generator=instruct",
        "output=sft",
        "filters.min_words=5",
        "filters.rule_sets=[]",
    )
    tok = load_tokenizer("embedded:smollm2")

    packed = load_dataset("parquet", data_dir=str(tmp_path / "pretrain" / "packed"), split="train")
    ids = torch.tensor(packed["input_ids"][:8], dtype=torch.long)
    losses = _train(random_model("tiny-llama", vocab_size=len(tok)).train(), ids, ids, torch)
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 1.0

    sft = load_dataset("parquet", data_dir=str(tmp_path / "sft" / "data"), split="train")
    assert all(m["role"] in {"user", "assistant"} for row in sft["messages"] for m in row)
    encoded = [tok.apply_chat_template(m, tokenize=True) for m in sft["messages"][:4]]
    encoded = [list(e["input_ids"] if hasattr(e, "keys") else e)[:128] for e in encoded]
    width = max(len(e) for e in encoded)
    ids = torch.tensor([e + [tok.pad_token_id] * (width - len(e)) for e in encoded], dtype=torch.long)
    labels = torch.tensor([e + [-100] * (width - len(e)) for e in encoded], dtype=torch.long)
    losses = _train(random_model("tiny-llama", vocab_size=len(tok)).train(), ids, labels, torch)
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 1.0


def _train(model, ids, labels, torch, steps: int = 10) -> np.ndarray:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


def test_layered_topic_rows_run_one_writing_call_and_one_call_per_layer(tmp_path):
    from generators.prompts.layered import LayeredGenerator
    from pipeline.generate import GenerateStage

    generator = LayeredGenerator(layers=["terms", "claims"], inline="before")
    plan = generator.plan(6, seed=1)
    batch = {k: np.asarray([r[k] for r in plan], dtype=object) for k in plan[0]}
    stage = GenerateStage({"_target_": "generators.teachers.dummy.DummyTeacher"}, str(tmp_path), generator)
    out = asyncio.run(stage(batch))
    assert all(len(json.loads(s)) == 3 for s in out["steps"])
    assert all(json.loads(s)[0] == body for s, body in zip(out["steps"], out["body"]))
    for terms, text, body in zip(out["layer_terms"], out["text"], out["body"]):
        assert all(t.lower() in body.lower() for t in json.loads(terms))
        assert text.endswith(body)


SCHEMA_OVERRIDE = (
    "generator.structure={json_schema: {type: object, properties: {title: {type: string, maxLength: 30}, "
    "tags: {type: array, items: {type: string}, minItems: 2, maxItems: 2}}, required: [title, tags]}}"
)


def test_a_user_structure_is_checked_before_the_run():
    from pipeline.generate import build_generator

    with pytest.raises(ConfigError, match="generator.structure.regex='\\[': "):
        build_generator(compose("teacher=dummy", "generator.structure={regex: '['}"))
    with pytest.raises(ConfigError, match="the layered generator constrains its own steps"):
        build_generator(compose("teacher=dummy", "generator=layered", "+generator.structure={regex: a}"))


@pytest.mark.slow
def test_user_structure_rows_match_it_or_drop_as_structure_invalid(ray_session, tmp_path):
    from generators.teachers.structure import Structure

    # Short JSON records fail the published prose rules (Gopher's n-gram fractions): not this test's subject.
    manifest = _run(tmp_path / "json", "n=6", SCHEMA_OVERRIDE, "filters.min_words=1", "filters.rule_sets=[]")
    rows = _rows(tmp_path / "json" / "data")
    assert manifest["counts"]["kept"] == len(rows) == 6
    from omegaconf import OmegaConf

    structure = Structure.from_config(OmegaConf.to_container(compose(SCHEMA_OVERRIDE).generator.structure))
    assert all(structure.validate(r["text"]) is None and r["structure_error"] == "" for r in rows)
    # The dummy teacher cannot write to a regex: every row fails it and is dropped with the reason.
    manifest = _run(
        tmp_path / "regex",
        "n=4",
        "generator.structure={regex: 'never'}",
        "filters.min_words=1",
        "filters.rule_sets=[]",
    )
    assert manifest["counts"]["kept"] == 0 and manifest["dropped_by_reason"]["structure_invalid"] == 4
