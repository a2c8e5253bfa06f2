"""Groupbys of small datasets run as one task (no hash shuffle); the groups and rows are the same."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline import partition

pytestmark = pytest.mark.slow


def _group_summary(batch: dict) -> dict:
    """One row per group: its keys, size and the sum of its values (the group must be whole)."""
    return {
        "a": batch["a"][:1],
        "b": batch["b"][:1],
        "n": np.array([len(batch["v"])]),
        "total": np.array([int(np.sum(batch["v"]))]),
        "keys_agree": np.array([len(set(batch["a"])) == 1 and len(set(batch["b"])) == 1]),
    }


def _table_rows(table: pa.Table) -> pa.Table:
    """pyarrow groups: rows pass through, tagged with their group's size."""
    return table.append_column("group_rows", pa.array([table.num_rows] * table.num_rows, pa.int64()))


@pytest.mark.parametrize("one_task_rows", [0, 10_000])
def test_map_groups_in_one_task_equals_the_shuffled_groupby(ray_session, monkeypatch, one_task_rows):
    rng = np.random.default_rng(7)
    n = 3_000
    table = pa.table(
        {
            "a": rng.choice(["x", "y", "z", ""], n),
            "b": rng.integers(0, 5, n),
            "v": rng.integers(0, 1000, n),
        }
    )
    ds = ray_session.data.from_arrow(table).repartition(6)
    expected = table.group_by(["a", "b"]).aggregate([("v", "sum"), ("v", "count")])
    expected = {(a, b): (s, c) for a, b, s, c in zip(*(expected.column(i).to_pylist() for i in range(4)))}

    monkeypatch.setattr(partition, "ONE_TASK_ROWS", one_task_rows)
    got = partition.map_groups(ds, ["a", "b"], _group_summary, 4).to_pandas()
    assert got.keys_agree.all()
    assert {(a, b): (t, c) for a, b, t, c in zip(got.a, got.b, got.total, got.n)} == expected

    rows = partition.map_groups(ds, ["a", "b"], _table_rows, 4, batch_format="pyarrow").to_pandas()
    assert len(rows) == n and sorted(rows.v) == sorted(table.column("v").to_pylist())
    sizes = rows.groupby(["a", "b"]).group_rows.agg(["min", "max", "count"])
    assert (sizes["min"] == sizes["count"]).all() and (sizes["max"] == sizes["count"]).all()
