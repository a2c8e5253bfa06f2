"""Prompt builders, plans and multi-step logic of rephrase / instruct / dense / layered (no model)."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators.errors import ConfigError
from generators.prompts.dense import DenseGenerator
from generators.prompts.instruct import InstructGenerator, clean_user_turn
from generators.prompts.layered import LayeredGenerator, layer_schema, parse_layer, render
from generators.prompts.protocol import MultiStep
from generators.prompts.rephrase import RephraseGenerator
from generators.teachers.contract import Completion
from generators.teachers.structure import Structure

SOURCE = "The loop runs while the condition holds. A break statement ends it at once."


@pytest.fixture
def seed_file(tmp_path, real_texts):
    path = tmp_path / "seeds.parquet"
    pq.write_table(pa.table({"body": real_texts[:4], "doc": ["a", "b", "c", "d"]}), path)
    return path


def _done(*texts: str, finish: str = "stop") -> list[Completion]:
    return [Completion(f"r{i}", t, 1, 1, finish) for i, t in enumerate(texts)]


def test_rephrase_messages_literal():
    gen = RephraseGenerator(seed_file="unused.parquet", system="SYS")
    assert gen.build_messages({"style": "qa", "source_text": SOURCE}) == [
        {"role": "system", "content": "SYS"},
        {
            "role": "user",
            "content": "Convert the following paragraph into a conversational format with multiple "
            'tags of "Question:" followed by "Answer:":\n\n' + SOURCE,
        },
    ]


def test_rephrase_plan_links_every_row_to_its_source(seed_file, real_texts):
    gen = RephraseGenerator(seed_file=str(seed_file), text_column="body", id_column="doc", max_words=100)
    rows = gen.plan(12, seed=3)
    assert rows == gen.plan(12, seed=3) and len({r["id"] for r in rows}) == 12
    for row in rows:
        assert row["source_id"] == "abcd"[row["source_row"]] and row["source_file"] == str(seed_file)
        assert row["source_text"] in " ".join(real_texts[row["source_row"]].split())
        assert row["source_sha256"] == hashlib.sha256(row["source_text"].encode()).hexdigest()
        assert len(row["source_text"].split()) <= 100
        assert json.loads(row["prompt"])[1]["content"].endswith(row["source_text"])
    assert {r["style"] for r in rows} == {"encyclopedic", "qa", "dense_notes", "simple"}


def test_missing_seed_file_or_column_is_a_config_error(seed_file):
    with pytest.raises(ConfigError, match="generator.seed_file=nowhere.parquet"):
        RephraseGenerator(seed_file="nowhere.parquet").plan(2, 0)
    with pytest.raises(ConfigError, match="generator.text_column=text: no such column"):
        DenseGenerator(seed_file=str(seed_file)).plan(2, 0)


def test_dense_messages_literal():
    gen = DenseGenerator(seed_file="unused", system="SYS")
    assert gen.build_messages({"source_text": SOURCE})[1]["content"] == (
        "Rewrite the text below in as few words as possible. Keep every name, number and technical term, and "
        "every fact. Drop filler, repetition and examples. Plain sentences, no title, no lists.\n\nText:\n"
        + SOURCE
    )


def test_instruct_first_prompt_literal():
    gen = InstructGenerator(structured=False)
    row = {"kind": "question", "audience": "general", "topic": "tides", "subdomain": "earth science"}
    assert gen.build_messages(row) == [
        {"role": "system", "content": "You write realistic messages that users send to an AI assistant."},
        {
            "role": "user",
            "content": "Write one question that curious adults without a technical background might "
            "ask an AI assistant about tides (earth science). Write only the user's message, nothing else.",
        },
    ]


def test_instruct_runs_two_calls_per_turn():
    gen = InstructGenerator(turns=2, system="SYS", structured=False)
    assert isinstance(gen, MultiStep) and gen.max_steps == 4
    row = {"kind": "question", "audience": "general", "topic": "tides", "subdomain": "earth science"}
    steps = _done('Question: "Why are there two tides a day?" I wonder.')
    assert gen.followup(row, steps) == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Why are there two tides a day?"},
    ]
    steps += _done("The Moon pulls the oceans on both sides of the Earth.")
    nxt = gen.followup(row, steps)
    assert nxt[1]["content"].startswith(
        "Here is a conversation between a user and an AI assistant:\n\n"
        "User: Why are there two tides a day?\n\nAssistant: The Moon pulls"
    )
    steps += _done("How high can they get?", "Up to 16 metres in the Bay of Fundy.")
    assert gen.followup(row, steps) is None
    out = gen.finish(row, steps)
    assert [m["role"] for m in json.loads(out["messages"])] == ["user", "assistant"] * 2
    assert out["text"].startswith("User: Why are there two tides a day?\n\nAssistant: The Moon")
    assert out["n_turns"] == 2 and out["finish_reason"] == "stop"


def test_instruct_stops_on_an_empty_turn_and_trims_cut_answers():
    gen = InstructGenerator(turns=2, structured=False)
    row = {"kind": "question", "audience": "general", "topic": "t", "subdomain": "s"}
    steps = _done("What is a tide?") + _done("A tide is a rise of the sea. It comes tw", finish="length")
    assert json.loads(gen.finish(row, steps)["messages"])[1]["content"] == "A tide is a rise of the sea."
    steps = _done("   ")
    assert gen.followup(row, steps) is None and gen.finish(row, steps)["n_turns"] == 0


def test_instruct_from_seed_documents_puts_the_document_in_the_answer_system_prompt(seed_file):
    gen = InstructGenerator(seed_file=str(seed_file), text_column="body", max_words=60)
    row = gen.plan(1, seed=0)[0]
    assert row["source_text"] in json.loads(row["prompt"])[1]["content"]
    answer_call = gen.followup(row, _done('{"message": "What does it do?"}'))
    assert answer_call[0]["content"].endswith(row["source_text"]) and answer_call[1]["role"] == "user"


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("User: How do tides work?\nAssistant: ...", "How do tides work?"),
        ('"Can you list three uses of salt?" is what I would ask.', "Can you list three uses of salt?"),
        ("**Question:** Explain photosynthesis simply.", "Explain photosynthesis simply."),
    ],
)
def test_clean_user_turn(raw, clean):
    assert clean_user_turn(raw) == clean


def test_layered_steps_and_parsing():
    gen = LayeredGenerator(
        layers=["terms", "relations"], required_layers=["terms"], inline="after", structured=False
    )
    row = {"topic": "tides", "domain": "science", "subdomain": "earth science", "audience": "general"}
    assert gen.build_messages(row)[1]["content"] == (
        "Write a short explanatory text about tides (science, earth science) for curious adults without a technical "
        "background. About 120 words of plain prose: no title, no lists, no closing remarks."
    )
    body = "Tides are caused by the Moon. The Moon's gravity pulls the ocean."
    steps = _done(body)
    assert gen.followup(row, steps)[1]["content"] == (
        f"Text:\n{body}\n\nList the key terms of the text, one per line, most important first. Write only the terms."
    )
    steps += _done("Here are the terms:\n1. **Tides**\n2. gravity\n3. the\n4. magnetism")
    steps += _done("- Moon -> causes -> tides\n- nonsense line")
    assert gen.followup(row, steps) is None
    out = gen.finish(row, steps)
    assert json.loads(out["layer_terms"]) == ["Tides", "gravity"]
    assert json.loads(out["layer_relations"]) == [{"head": "Moon", "relation": "causes", "tail": "tides"}]
    assert out["layers_missing"] == "" and out["n_terms"] == 2
    assert (
        out["text"]
        == f"{body}\n\n<terms>\nTides\ngravity\n</terms>\n\n<relations>\nMoon -> causes -> tides\n</relations>"
    )


def test_layer_parser_is_forgiving():
    body = "Photosynthesis turns light into chemical energy in chloroplasts."
    assert parse_layer("terms", "photosynthesis; chloroplasts; light energy", body) == [
        "photosynthesis",
        "chloroplasts",
    ]
    assert parse_layer("claims", "1. Plants make sugar from light. 2. It happens in chloroplasts.", body) == [
        "Plants make sugar from light.",
        "It happens in chloroplasts.",
    ]
    assert parse_layer("steps", "I cannot do that.", body) == ["I cannot do that."]
    assert parse_layer("relations", "light => drives => photosynthesis.", body) == [
        {"head": "light", "relation": "drives", "tail": "photosynthesis"}
    ]
    assert render(body, {"terms": ["a"]}, "before") == f"<terms>\na\n</terms>\n\n{body}"


def test_layered_from_seed_texts_skips_the_writing_call(seed_file):
    gen = LayeredGenerator(
        seed_file=str(seed_file), text_column="body", layers=["claims"], max_words=80, structured=False
    )
    row = gen.plan(1, seed=0)[0]
    assert gen.max_steps == 1 and json.loads(row["prompt"])[1]["content"].startswith(
        "Text:\n" + row["source_text"]
    )
    out = gen.finish(row, _done("Nothing here:"))
    assert out["layers_missing"] == "claims" and out["body"] == row["source_text"]


def test_clean_user_turn_prefers_the_line_that_asks():
    assert clean_user_turn("Dear Dr. Carter,\n\nCould you explain how anaesthesia works? Thanks.") == (
        "Could you explain how anaesthesia works?"
    )


def test_terms_are_taken_from_quotes_and_definitions_are_cut():
    body = "FileCheck matches a check prefix with Syntax-based rules in the metadata file."
    assert parse_layer("terms", 'The key terms are "FileCheck", "Syntax-based", "Dual-file".', body) == [
        "FileCheck",
        "Syntax-based",
    ]
    assert parse_layer(
        "terms", "1. `check prefix` (option)\n2. metadata file (meta) - where it lives", body
    ) == ["check prefix", "metadata file"]


def test_structured_layers_ask_for_json_and_parse_cut_answers():
    gen = LayeredGenerator(layers=["terms", "relations"], required_layers=["terms"])
    row = {"topic": "tides", "domain": "science", "subdomain": "earth science", "audience": "general"}
    body = "Tides are caused by the Moon. The Moon's gravity pulls the ocean."
    assert gen.step_structure(row, 0) is None  # the writing call is free text
    terms, relations = gen.step_structure(row, 1).schema, gen.step_structure(row, 2).schema
    assert terms["required"] == ["terms"] and terms["properties"]["terms"]["maxItems"] == 12
    structure = gen.step_structure(row, 1)
    assert structure.validate('{"terms": ["Moon", "tidal force"]}') is None
    assert structure.validate('{"terms": ["Moon"]}')  # at least two
    assert structure.validate('{"terms": ["]}  # a note", "x y"]}')  # an item may not hold brackets
    claims = Structure.json(layer_schema("claims", 12))
    assert claims.validate('{"claims": ["A moon pulls seas.", "Tides rise twice."]}') is None
    assert claims.validate('{"claims": ["Claim 1", "Tides rise twice."]}')  # a claim has three words
    assert relations["properties"]["relations"]["items"]["required"] == ["head", "relation", "tail"]
    steps = _done(body)
    assert gen.followup(row, steps)[1]["content"].endswith('Answer in JSON: {"terms": [...]}')
    # Cut by the token limit inside the third item: the two complete items are kept.
    steps += _done('{"terms": ["Tides", "gravity", "magnet', finish="length")
    steps += _done('{"relations": [{"head": "Moon", "relation": "causes", "tail": "tides"}, {"head": ""}]}')
    out = gen.finish(row, steps)
    assert json.loads(out["layer_terms"]) == ["Tides", "gravity"]
    assert json.loads(out["layer_relations"]) == [{"head": "Moon", "relation": "causes", "tail": "tides"}]
    assert out["layers_missing"] == ""
    assert gen.finish(row, _done(body, "not json", "[]"))["layers_missing"] == "terms,relations"


def test_structured_and_line_layers_have_different_request_ids():
    plain = LayeredGenerator(layers=["terms"], structured=False).plan(3, seed=0)
    structured = LayeredGenerator(layers=["terms"]).plan(3, seed=0)
    assert [r["topic"] for r in plain] == [r["topic"] for r in structured]
    assert not {r["id"] for r in plain} & {r["id"] for r in structured}


def test_structured_user_turns():
    gen = InstructGenerator(turns=1, system="SYS")
    row = {"kind": "question", "audience": "general", "topic": "tides", "subdomain": "earth science"}
    assert gen.build_messages(row)[1]["content"].endswith('Answer in JSON: {"message": ...}')
    question, answer = gen.step_structure(row, 0), gen.step_structure(row, 1)
    assert question.schema["required"] == ["message"] and answer is None
    assert question.validate('{"message": "Why are there two tides a day?"}') is None
    assert question.validate('{"message": "Hi! I wonder. Why? Thanks"}')  # one question, nothing after it
    task = gen.step_structure({**row, "kind": "task"}, 0)
    assert task.validate('{"message": "Summarise how tides work in three sentences."}') is None
    assert gen.step_structure({**row, "kind": "task"}, 2) == question  # follow-ups ask
    steps = _done('{"message": "Why are there two tides a day? Thanks"}')
    assert gen.followup(row, steps)[1] == {"role": "user", "content": "Why are there two tides a day?"}
    assert gen.followup(row, _done('{"message": "Why are')) is None  # a cut JSON turn ends the row
