import json

import numpy as np
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


def _list_plan(gen, n: int, seed: int) -> list[dict]:
    """The plan as litho built it before plans were computed per index: one walk, a list of rows."""
    from generators.prompts.plan import messages_json

    axes = gen.axes()
    rows = []
    for variant, index in sample_combinations(tuple(len(a) for a in axes), n, seed):
        row = gen.make_row(variant, tuple(axis[i] for axis, i in zip(axes, index)))
        messages = gen.build_messages(row)
        row["prompt"] = messages_json(messages)
        row["id"] = request_id(gen.id_content(row, messages), seed)
        rows.append(row)
    return rows


def _generators(tmp_path):
    from pydoc_data.topics import topics

    from generators.prompts.dense import DenseGenerator
    from generators.prompts.instruct import InstructGenerator
    from generators.prompts.layered import LayeredGenerator
    from generators.prompts.rephrase import RephraseGenerator

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"text": topics[k]}) + "\n" for k in sorted(topics)[:12]))
    return [
        TextbookGenerator(formats=["qa", "lecture"], audiences=["expert"], domains=["mathematics"]),
        RephraseGenerator(seed_file=str(seeds), max_words=80),
        DenseGenerator(seed_file=str(seeds), max_words=80),
        InstructGenerator(turns=2),
        InstructGenerator(seed_file=str(seeds)),
        LayeredGenerator(),
        LayeredGenerator(seed_file=str(seeds)),
    ]


def test_rows_by_index_equal_the_list_plan_for_every_generator(tmp_path):
    """Any index set, in any order, in blocks planned by separate objects: the rows of the list plan."""
    for gen in _generators(tmp_path):
        n = 3 * len(gen.axes()[0]) + 7  # several passes over the grid
        reference = _list_plan(gen, n, seed=5)
        assert gen.plan(n, seed=5) == reference, gen.name
        picks = np.random.default_rng(0).permutation(n)[:40]
        assert _fresh(gen).plan_rows(picks, seed=5) == [reference[i] for i in picks], gen.name
        blocks = [_fresh(gen).plan_rows(np.arange(a, min(a + 17, n)), 5) for a in range(0, n, 17)]
        assert [r for b in blocks for r in b] == reference, gen.name


def _fresh(gen):
    """The generator as a Ray task receives it: unpickled, without loaded axes or permutations."""
    import pickle

    fresh = pickle.loads(pickle.dumps(gen))
    assert "_axes" not in fresh.__dict__ and "_walks" not in fresh.__dict__
    return fresh
