import json

import pytest

from generators.errors import ConfigError
from generators.prompts.plan import request_id, sample_combinations
from generators.prompts.textbook import TextbookGenerator
from generators.prompts.topics import load_topics


def test_builtin_topics_have_breadth():
    topics = load_topics()
    assert len(topics) >= 300
    assert len({t.topic.lower() for t in topics}) == len(topics)
    domains = {t.domain for t in topics}
    assert {"science", "mathematics", "computing", "humanities"} <= domains


def test_same_config_and_seed_give_same_plan():
    a = TextbookGenerator().plan(50, seed=7)
    b = TextbookGenerator().plan(50, seed=7)
    c = TextbookGenerator().plan(50, seed=8)
    assert a == b
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert len({r["id"] for r in a}) == 50


def test_plan_is_a_prefix_when_n_grows():
    small = TextbookGenerator().plan(10, seed=3)
    large = TextbookGenerator().plan(30, seed=3)
    assert large[:10] == small


def test_every_combination_before_any_repeat():
    picks = list(sample_combinations((3, 2, 2), 30, seed=1))
    first_pass = [combo for variant, combo in picks if variant == 0]
    assert len(first_pass) == len(set(first_pass)) == 12
    assert {v for v, _ in picks} == {0, 1, 2}


def test_repeated_prompts_get_distinct_ids():
    gen = TextbookGenerator(formats=["qa"], audiences=["expert"], domains=["mathematics"])
    rows = gen.plan(len(gen.topics) + 5, seed=0)
    assert len({r["id"] for r in rows}) == len(rows)
    assert rows[-1]["variant"] == 1


def test_build_messages_literal():
    gen = TextbookGenerator(words=100, system="SYS")
    row = {
        "format": "dense_notes",
        "topic": "the Krebs cycle",
        "domain": "science",
        "subdomain": "biology",
        "audience": "expert",
    }
    assert gen.build_messages(row) == [
        {"role": "system", "content": "SYS"},
        {
            "role": "user",
            "content": "Write dense study notes: short declarative sentences, key terms and their "
            "definitions, no filler words. Topic: the Krebs cycle (science, biology). Audience: domain experts who "
            "want precision. About 100 words. Start directly with the content: no title, no preamble, no closing "
            "remarks.",
        },
    ]


def test_prompt_column_round_trips_and_id_hashes_content():
    row = TextbookGenerator().plan(1, seed=0)[0]
    messages = json.loads(row["prompt"])
    assert messages[1]["role"] == "user" and row["topic"] in messages[1]["content"]
    assert row["id"] == request_id({"generator": "textbook", "messages": messages, "variant": 0}, 0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"formats": ["poem"]}, "generator.formats"),
        ({"domains": ["astrology"]}, "generator.domains"),
        ({"topics_file": "/nonexistent.tsv"}, "generator.topics_file"),
    ],
)
def test_bad_generator_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        TextbookGenerator(**kwargs)
