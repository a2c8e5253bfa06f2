"""Typed columns: JSON string columns (``messages``, annotation layers) become typed Arrow lists.

They travel through the graph as JSON because Ray's numpy batches would turn nested lists into
pickled objects; the writer types them, so readers get ``list<struct<role, content>>`` etc.
Schemas and examples: docs/formats.md.
"""

from __future__ import annotations

import json

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
RELATION = pa.struct([("head", pa.string()), ("relation", pa.string()), ("tail", pa.string())])
JSON_COLUMNS = {
    "messages": pa.list_(MESSAGE),
    "layer_terms": pa.list_(pa.string()),
    "layer_claims": pa.list_(pa.string()),
    "layer_steps": pa.list_(pa.string()),
    "layer_relations": pa.list_(RELATION),
}


def typed_columns(table: pa.Table) -> pa.Table:
    """Replace JSON string columns named in :data:`JSON_COLUMNS` by typed Arrow lists."""
    for name, dtype in JSON_COLUMNS.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        values = [json.loads(v) if v else [] for v in column.to_pylist()]
        index = table.column_names.index(name)
        table = table.set_column(index, pa.field(name, dtype), pa.array(values, type=dtype))
    return table
