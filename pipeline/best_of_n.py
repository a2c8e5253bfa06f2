"""Best-of-n: ask for several candidates per request, keep the best by a score expression.

Candidates are separate plan rows sharing a ``request_group`` (the id the request would have
had alone); the candidate index is part of each candidate's id content. After scoring, filters
and dedup, the driver pulls ids, groups, drop reasons and the score columns the expression
names (a few bytes a row), picks the best kept candidate per group (ties: smallest id), and
marks the others ``not_best_of_n`` with a map over the blocks.

The score expression is arithmetic over score columns, e.g.
``chars_per_token - 0.1 * rep_dup_ngram_frac_5``: numbers, column names, ``+ - * / **``,
parentheses and the functions in :data:`FUNCTIONS`. It is parsed into a Python AST and only
those nodes are evaluated (with numpy, over whole columns): no ``eval``.
"""

from __future__ import annotations

import ast
import logging

import numpy as np

from generators.errors import ConfigError
from generators.plan import request_id

log = logging.getLogger(__name__)

FUNCTIONS = {
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "minimum": np.minimum,
    "maximum": np.maximum,
}
OPERATORS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
KEY = "best_of_n.score"


def expand(plan: list[dict], n_candidates: int, seed: int) -> list[dict]:
    """``n_candidates`` rows per planned request (the plan itself when it is 1)."""
    if not isinstance(n_candidates, int) or n_candidates < 1:
        raise ConfigError(f"best_of_n.n_candidates={n_candidates}: give a positive integer (1 = off)")
    if n_candidates == 1:
        return plan
    rows = []
    for row in plan:
        for k in range(n_candidates):
            rid = request_id({"request_group": row["id"], "candidate": k}, seed)
            rows.append({**row, "id": rid, "request_group": row["id"], "candidate": k})
    return rows


def parse(expression: str) -> ast.Expression:
    """Parse and check the expression; return the tree.

    Raises:
        ConfigError: syntax error or a construct outside the whitelist.
    """
    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{KEY}={expression!r}: not an expression ({exc.msg})") from None
    for node in ast.walk(tree):
        ok = isinstance(
            node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.USub, ast.UAdd, *OPERATORS)
        )
        ok = ok or (isinstance(node, ast.Constant) and isinstance(node.value, (int, float)))
        ok = ok or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and not node.keywords
        )
        if not ok:
            raise ConfigError(
                f"{KEY}={expression!r}: {type(node).__name__} is not allowed; use numbers, score "
                f"columns, + - * / **, parentheses and {sorted(FUNCTIONS)}"
            )
    return tree


def columns(expression: str) -> list[str]:
    """Score columns the expression reads."""
    called = {n.func.id for n in ast.walk(parse(expression)) if isinstance(n, ast.Call)}
    names = {n.id for n in ast.walk(parse(expression)) if isinstance(n, ast.Name)}
    return sorted(names - called)


def evaluate(expression: str, data: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate the expression over columns of equal length; unknown columns raise ConfigError."""

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in data:
                raise ConfigError(f"{KEY}: unknown column {node.id!r}; score columns are {sorted(data)}")
            return np.asarray(data[node.id], dtype=float)
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp):
            return OPERATORS[type(node.op)](value(node.left), value(node.right))
        return FUNCTIONS[node.func.id](*(value(a) for a in node.args))

    n = len(next(iter(data.values()))) if data else 0
    with np.errstate(all="ignore"):
        return np.broadcast_to(value(parse(expression)), (n,)).astype(float)


def losers(ids: list[str], groups: list[str], reasons: list[str], scores: np.ndarray) -> dict[str, float]:
    """Ids of kept candidates that are not their group's best; NaN scores lose, ties go to the smallest id."""
    best: dict[str, tuple[float, str]] = {}
    for rid, group, reason, score in zip(ids, groups, reasons, scores):
        if reason:
            continue
        key = (-np.inf if np.isnan(score) else float(score), rid)
        current = best.get(group)
        if current is None or key[0] > current[0] or (key[0] == current[0] and rid < current[1]):
            best[group] = key
    return {rid: best[g][1] for rid, g, r in zip(ids, groups, reasons) if not r and best[g][1] != rid}


def select(ds, expression: str):
    """Mark all but the best kept candidate of each ``request_group`` as ``not_best_of_n``.

    ``ds`` is a materialized Ray dataset; only narrow columns reach the driver.
    """
    from pipeline.graph import pull

    names = columns(expression)
    available = ds.schema().names
    missing = [c for c in names if c not in available]
    if missing:
        raise ConfigError(f"{KEY}: unknown column(s) {missing}; the rows have {sorted(available)}")
    table = pull(ds, ["id", "request_group", "drop_reason", *names])
    data = {c: table.column(c).to_numpy(zero_copy_only=False) for c in names}
    scores = evaluate(expression, data) if names else np.zeros(table.num_rows)
    drop = losers(
        table.column("id").to_pylist(),
        table.column("request_group").to_pylist(),
        table.column("drop_reason").to_pylist(),
        scores,
    )
    by_id = dict(zip(table.column("id").to_pylist(), scores.tolist()))
    log.info("best-of-n: %d candidates not kept", len(drop))
    return ds.map_batches(_mark, fn_kwargs={"drop": drop, "scores": by_id}, batch_format="numpy")


def _mark(batch: dict, drop: dict, scores: dict) -> dict:
    reasons = np.asarray(batch["drop_reason"], dtype=object).copy()
    beaten = np.array([i in drop for i in batch["id"]], dtype=bool)
    reasons[(reasons == "") & beaten] = "not_best_of_n"
    batch["drop_reason"] = reasons
    batch["best_of_n_score"] = np.array([scores.get(i, np.nan) for i in batch["id"]], dtype=np.float64)
    return batch
