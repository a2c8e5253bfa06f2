"""The plan by index (pipeline/plan.py): best-of-n candidates and blocks equal the list plan."""

from __future__ import annotations

import numpy as np

from generators.prompts.textbook import TextbookGenerator


def test_best_of_n_plan_by_index_equals_the_expanded_list(tmp_path):
    from pipeline.plan import Plan
    from pipeline.select import expand

    gen = TextbookGenerator(domains=["mathematics"])
    reference = expand(gen.plan(30, seed=2), 3, seed=2)
    plan = Plan(gen, 30, 2, n_candidates=3)
    assert plan.rows == 90 and plan.rows_at(np.arange(90)) == reference
    assert plan.rows_at([89, 0, 44]) == [reference[89], reference[0], reference[44]]
    table = plan.block_table(0)
    assert table.num_rows == 90 and table.column_names[: len(reference[0])] == list(reference[0])
    assert plan.columns() == list(reference[0])
