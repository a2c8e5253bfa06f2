"""Structured output: schemas and regexes held while decoding (hf, fast), sent and checked (openai)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generators.errors import ConfigError
from generators.teachers.contract import Request
from generators.teachers.fast import FastTeacher
from generators.teachers.hf import HFTeacher
from generators.teachers.openai import OpenAITeacher, guided_fields
from generators.teachers.serve import TeacherServer
from generators.teachers.structure import Structure, parse_partial_json

pytestmark = pytest.mark.usefixtures("one_thread")

TERMS = {
    "type": "object",
    "properties": {"terms": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
    "required": ["terms"],
    "additionalProperties": False,
}
SCORE = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
    "additionalProperties": False,
}
ASK = ({"role": "user", "content": "List the key terms of a text about cats and rivers."},)


def test_config_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"generator.structure=.*give \{json_schema"):
        Structure.from_config({"schema": {}})
    with pytest.raises(ConfigError, match="generator.structure.regex='\\(': "):
        Structure.from_config({"regex": "("})
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        Structure.from_config({"json_schema": {"type": "no-such-type"}})
    assert Structure.from_config(None) is None
    assert Structure.from_config({"json_schema": json.dumps(SCORE)}) == Structure.json(SCORE)


def test_validate_names_what_is_wrong():
    score = Structure.json(SCORE)
    assert score.validate('{"score": 3}') is None
    assert "score: 9 is greater than the maximum of 5" in score.validate('{"score": 9}')
    assert score.validate('{"score": 3').startswith("not JSON")
    assert Structure(regex=r"(yes|no)").validate("yes") is None
    assert Structure(regex=r"(yes|no)").validate("yes!") is not None


def test_partial_json_keeps_complete_items():
    assert parse_partial_json('{"terms": ["a", "b", "c') == {"terms": ["a", "b"]}
    # An object cut inside keeps the keys it had: the layer checks drop such an item.
    assert parse_partial_json('{"r": [{"h": "x", "t": "y"}, {"h": "z", "t') == {
        "r": [{"h": "x", "t": "y"}, {"h": "z"}]
    }
    assert parse_partial_json('{"terms": ["a, b", "c') == {"terms": ["a, b"]}  # a comma inside a string
    assert parse_partial_json('{"message": "cut') is None
    assert parse_partial_json('{"message": "Why?"') == {"message": "Why?"}  # cut before its closing brace
    assert parse_partial_json("[1, 2]") == [1, 2]


@pytest.fixture(scope="module")
def sampled():
    return dict(max_new_tokens=48, temperature=1.0, top_p=1.0, seed=3)


@pytest.mark.parametrize("backend", [HFTeacher, FastTeacher])
def test_local_teachers_hold_random_models_to_the_schema(model_dir, sampled, backend):
    """A random model writes noise; with the grammar its noise still parses and validates."""
    teacher = backend(model_dir, device="cpu", sampling=sampled)
    structures = [Structure.json(TERMS), None, Structure.json(SCORE), Structure(regex=r"(yes|no)")]
    requests = [Request(f"r{i}", ASK, s) for i, s in enumerate(structures)]
    out = teacher.generate(requests)
    assert [c.id for c in out] == [r.id for r in requests]
    for request, completion in zip(requests, out):
        if request.structure is None:
            continue
        assert completion.invalid is None, (completion.text, completion.invalid)
        assert request.structure.validate(completion.text) is None
    assert out[3].text in ("yes", "no") and out[3].finish_reason == "stop"
    # The unconstrained row in the mixed batch is the row generated alone: the mask leaves it alone.
    alone = teacher.generate([Request("r1", ASK)])[0]
    assert out[1].text == alone.text and out[1].invalid is None


def test_a_cut_answer_is_marked_invalid(model_dir):
    teacher = HFTeacher(model_dir, device="cpu", sampling=dict(max_new_tokens=3, temperature=0.0))
    long_terms = {
        **TERMS,
        "properties": {"terms": {"type": "array", "items": {"type": "string"}, "minItems": 3}},
    }
    [completion] = teacher.generate([Request("cut", ASK, Structure.json(long_terms))])
    assert completion.finish_reason == "length" and completion.invalid.startswith("not JSON")


def test_served_teacher_enforces_response_format_end_to_end(model_dir):
    """openai -> litho's own server (response_format json_schema, and vLLM's structured_outputs regex)."""
    teacher = HFTeacher(
        model_dir, name="tiny", device="cpu", sampling=dict(max_new_tokens=40, temperature=0.0)
    )
    with TeacherServer(teacher, api_key=None) as server:
        for guided in ("response_format", "structured_outputs"):
            client = OpenAITeacher(
                server.url, "tiny", api_key_env="", guided=guided, sampling=teacher.sampling.__dict__
            )
            out = client.generate(
                [Request("a", ASK, Structure.json(SCORE)), Request("b", ASK, Structure(regex="(yes|no)"))]
            )
            assert out[0].invalid is None and 1 <= json.loads(out[0].text)["score"] <= 5
            if guided == "structured_outputs":  # response_format has no regex: only checked there
                assert out[1].text in ("yes", "no") and out[1].invalid is None


class _Scripted(BaseHTTPRequestHandler):
    """Answers chat requests with the next text of ``server.answers`` and records every body."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        text = self.server.answers.pop(0) if self.server.answers else "still not json"
        answer = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.bodies, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_retries_an_invalid_answer_with_another_seed(scripted):
    url = f"http://127.0.0.1:{scripted.server_port}/v1"
    scripted.answers = ["Sure! Here it is: {score: 4}", '{"score": 4}']
    client = OpenAITeacher(url, "m", api_key_env="", structure_retries=2, max_retries=0)
    [done] = client.generate([Request("q", ASK, Structure.json(SCORE))])
    assert done.text == '{"score": 4}' and done.invalid is None and done.extra["structure_attempts"] == 2
    first, second = scripted.bodies
    assert first["response_format"]["json_schema"]["schema"] == SCORE and first["seed"] != second["seed"]
    scripted.bodies.clear()
    [failed] = client.generate([Request("q2", ASK, Structure.json(SCORE))])  # every answer invalid
    assert (
        len(scripted.bodies) == 3 and failed.invalid.startswith("not JSON") and failed.finish_reason == "stop"
    )


def test_guided_fields_per_mode():
    schema, regex = Structure.json(SCORE), Structure(regex="(yes|no)")
    assert guided_fields(schema, "structured_outputs") == {"structured_outputs": {"json": SCORE}}
    assert guided_fields(regex, "structured_outputs") == {"structured_outputs": {"regex": "(yes|no)"}}
    assert guided_fields(regex, "response_format") == {} and guided_fields(schema, "none") == {}
    with pytest.raises(ConfigError, match="teacher.guided=xml"):
        OpenAITeacher("http://127.0.0.1:1/v1", "m", guided="xml")


def test_properties_keep_the_order_they_were_given_in(model_dir):
    """llguidance writes properties in schema order: a title before a summary stays first."""
    schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 8},
              "summary": {"type": "string", "maxLength": 8}}, "required": ["title", "summary"],
              "additionalProperties": False}  # fmt: skip
    # A random byte-level model: 8 characters may take 32 byte tokens each string.
    teacher = HFTeacher(model_dir, device="cpu", sampling=dict(max_new_tokens=120, temperature=0.0))
    [done] = teacher.generate([Request("o", ASK, Structure.from_config({"json_schema": schema}))])
    assert done.invalid is None and list(json.loads(done.text)) == ["title", "summary"], done.text


def test_the_grammar_wins_when_an_earlier_processor_removed_every_allowed_token(model_dir):
    import torch
    from transformers import AutoTokenizer

    from generators.teachers.structure import GrammarMask, ll_tokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    vocab = len(tok)
    mask = GrammarMask(
        ll_tokenizer(tok, [tok.eos_token_id], vocab), [Structure(regex="a")], 1, [tok.eos_token_id]
    )
    a = tok.convert_tokens_to_ids("a")
    scores = torch.zeros((1, vocab))
    scores[0, a] = float("-inf")  # "a", the only token the grammar allows, was banned (token_aware's ban)
    out = mask(torch.zeros((1, 1), dtype=torch.long), scores)
    assert out[0].argmax().item() == a and torch.isfinite(out[0]).sum().item() == 1


def test_a_grammar_llguidance_cannot_run_is_a_config_error():
    # A pattern that repeats a group, with maxLength: llguidance builds it, but every matcher
    # starts in error and would refuse every token (the rows came back empty before this check).
    item = {"type": "string", "pattern": r"^[a-z]+( [a-z]+){2,}$", "maxLength": 200}
    with pytest.raises(ConfigError, match="structure not supported by llguidance: .*regex is empty"):
        Structure.from_config({"json_schema": {"type": "array", "items": item}})


def test_every_schema_litho_asks_for_runs_in_llguidance():
    from filters.scores.judge import rating_schema
    from generators.prompts.instruct import MESSAGE, QUESTION, user_schema
    from generators.prompts.layered import LAYERS, layer_schema

    schemas = [layer_schema(n, 12) for n in LAYERS] + [user_schema(QUESTION), user_schema(MESSAGE)]
    for schema in [*schemas, rating_schema(1, 10)]:
        Structure.json(schema).grammar()  # raises ConfigError when a matcher would start in error
