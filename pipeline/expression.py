"""Score expressions: arithmetic over score columns, e.g. ``chars_per_token - 0.1 * rep_dup_ngram_frac_5``.

Used by best-of-n selection (``best_of_n.score``) and anywhere a rank is computed from scores. The
grammar is numbers, column names, ``+ - * / **``, parentheses and the functions in
:data:`FUNCTIONS`. An expression is parsed into a Python AST and only those nodes are evaluated
(with numpy, over whole columns): no ``eval``.
"""

from __future__ import annotations

import ast

import numpy as np

from generators.errors import ConfigError

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


def parse(expression: str, key: str = "best_of_n.score") -> ast.Expression:
    """Parse and check the expression; return the tree.

    Raises:
        ConfigError: syntax error or a construct outside the whitelist.
    """
    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{key}={expression!r}: not an expression ({exc.msg})") from None
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
                f"{key}={expression!r}: {type(node).__name__} is not allowed; use numbers, score "
                f"columns, + - * / **, parentheses and {sorted(FUNCTIONS)}"
            )
    return tree


def columns(expression: str, key: str = "best_of_n.score") -> list[str]:
    """Score columns the expression reads."""
    tree = parse(expression, key)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return sorted(names - called)


def evaluate(expression: str, data: dict[str, np.ndarray], key: str = "best_of_n.score") -> np.ndarray:
    """Evaluate the expression over columns of equal length; unknown columns raise ConfigError."""

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in data:
                raise ConfigError(f"{key}: unknown column {node.id!r}; score columns are {sorted(data)}")
            return np.asarray(data[node.id], dtype=float)
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp):
            return OPERATORS[type(node.op)](value(node.left), value(node.right))
        return FUNCTIONS[node.func.id](*(value(a) for a in node.args))

    n = len(next(iter(data.values()))) if data else 0
    with np.errstate(all="ignore"):
        return np.broadcast_to(value(parse(expression, key)), (n,)).astype(float)
