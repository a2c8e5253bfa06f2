"""Dataset-wide numbers merged from per-block partials (pipeline/aggregate.py): exact quantiles equal numpy's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline import aggregate


class Blocks:
    """The parts of a Ray dataset that pipeline/aggregate.py uses, over in-memory blocks: a map over
    each block, and its results streamed back in a shuffled order (as Ray may finish them)."""

    def __init__(self, tables: list[pa.Table]):
        self.tables = tables

    def schema(self):
        return self.tables[0].schema

    def select_columns(self, columns):
        return Blocks([t.select(columns) for t in self.tables])

    def map_batches(self, fn, batch_format, batch_size):
        assert batch_format == "pyarrow" and batch_size is None  # whole blocks
        return Blocks([fn(t) for t in self.tables])

    def iter_batches(self, batch_size, batch_format):
        order = np.random.default_rng(len(self.tables)).permutation(len(self.tables))
        return iter([self.tables[i] for i in order])


def _blocks(values: np.ndarray, reasons: np.ndarray, parts: int) -> Blocks:
    cuts = np.linspace(0, len(values), parts + 1).astype(int)
    return Blocks(
        [
            pa.table({"id": [f"r{i}" for i in range(a, b)], "drop_reason": reasons[a:b], "x": values[a:b]})
            for a, b in zip(cuts, cuts[1:])
        ]
    )


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 5000])
def test_quantiles_equal_numpy_on_kept_non_nan_values(n):
    rng = np.random.default_rng(n)
    values = np.concatenate([rng.normal(size=n - n // 3), rng.integers(-3, 3, n // 3).astype(float)])
    values[rng.random(n) < 0.1] = np.nan
    reasons = np.where(rng.random(n) < 0.2, "short", "").astype(object)
    qs = [0.0, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0]
    kept = values[(reasons == "") & ~np.isnan(values)]
    got = aggregate.quantiles(_blocks(values, reasons, 4), {"x": qs})
    if not kept.size:
        assert got == {}
        return
    assert got["x"] == [float(np.quantile(kept, q)) for q in qs]


def test_summary_counts_reasons_splits_and_scores():
    values = np.array([1.0, 2.0, np.nan, 4.0, 8.0])
    reasons = np.array(["", "", "", "short", ""], dtype=object)
    stats = aggregate.summary(
        _blocks(values, reasons, 3),
        ["x", "missing"],
        split_fn=lambda ids, rs: ["train" if not r else "rejected" for r in rs],
    )
    assert stats["rows"] == 5 and stats["splits"] == {"train": 4, "rejected": 1}
    assert stats["reasons"] == {("", ""): 4, ("short", ""): 1}
    x = stats["scores"]["x"]
    assert (x["count"], x["sum"], x["min"], x["max"]) == (3, 11.0, 1.0, 8.0) and "missing" not in stats[
        "scores"
    ]


def test_keys_keep_float_order():
    values = np.array([-np.inf, -1e300, -2.5, -0.0, 0.0, 1e-300, 3.0, np.inf])
    k = aggregate.keys(values)
    assert (np.diff(k.astype(object)) >= 0).all()
    assert [aggregate.from_key(int(v)) for v in k] == values.tolist()


def test_manifest_lists_every_score_in_order_even_without_kept_rows():
    from types import SimpleNamespace

    from pipeline.output import manifest

    reasons = np.array(["short", "short", "", ""], dtype=object)
    stats = aggregate.summary(_blocks(np.array([1.0, 2.0, 3.0, 5.0]), reasons, 2), ["x"])
    job = SimpleNamespace(
        cfg=SimpleNamespace(output=SimpleNamespace(dir="/tmp/o")),
        out="/tmp/o",
        score_versions=dict,
        process=[],
        select=[],
    )
    quantiles = aggregate.quantiles(
        _blocks(np.array([1.0, 2.0, 3.0, 5.0]), reasons, 2), {"x": list(manifest.QUANTILES)}, stats
    )
    built = manifest.build(job, stats, quantiles, {}, {}, {}, {}, ["n_tokens", "x", "y"])
    # Like the one-array summary of main's accounting: every numeric score column, in the given order.
    assert list(built["scores"]) == ["n_tokens", "x", "y"]
    assert built["scores"]["n_tokens"] == built["scores"]["y"] == {"count": 0}
    assert built["scores"]["x"]["count"] == 2 and built["scores"]["x"]["max"] == 5.0
    assert built["counts"] == {"rows_in": 4, "kept": 2, "dropped": 2}
