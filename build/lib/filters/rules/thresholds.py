"""Bounds on score columns: absolute (``filters.thresholds``) or quantiles of a run (``filters.quantile_bands``)."""

from __future__ import annotations

import numpy as np

from filters.rules.base import Filter
from generators.errors import ConfigError


def check_bounds(bounds: dict, key: str = "filters.thresholds") -> dict[str, dict]:
    """``{column: {min: x, max: y}}`` with only those keys and numbers (or null) as values.

    Raises:
        ConfigError: a bound that is not a mapping, an unknown key or a value that is not a number.
    """
    checked = {}
    for column, bound in (bounds or {}).items():
        if not isinstance(bound, dict):
            raise ConfigError(f"{key}.{column}={bound}: give a mapping, e.g. {{{column}: {{min: 3.0}}}}")
        extra = sorted(set(bound) - {"min", "max"})
        if extra:
            raise ConfigError(f"{key}.{column}: unknown keys {extra}; use min and max")
        for side, value in bound.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ConfigError(f"{key}.{column}.{side}={value}: give a number or null")
        checked[str(column)] = dict(bound)
    return checked


def check_bands(bands: dict, key: str = "filters.quantile_bands") -> dict[str, tuple[float, float]]:
    """``{column: [low, high]}`` with ``0 <= low < high <= 1``.

    Raises:
        ConfigError: a band that is not two quantiles in order.
    """
    checked = {}
    for column, band in (bands or {}).items():
        ok = isinstance(band, list | tuple) and len(band) == 2
        ok = ok and all(isinstance(q, int | float) and not isinstance(q, bool) for q in band)
        if not ok or not 0 <= band[0] < band[1] <= 1:
            raise ConfigError(
                f"{key}.{column}={band}: give two quantiles [low, high] with 0 <= low < high <= 1"
            )
        checked[str(column)] = (float(band[0]), float(band[1]))
    return checked


def band_bounds(values: np.ndarray, band: tuple[float, float]) -> dict | None:
    """Absolute ``{min, max}`` of a quantile band over the non-NaN ``values`` (None when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    return {"min": float(np.quantile(values, band[0])), "max": float(np.quantile(values, band[1]))}


class ThresholdFilter(Filter):
    """Absolute bounds on any score column: ``{column: {min: x, max: y}}``.

    A row outside a bound is dropped as ``{column}_below_min`` or ``{column}_above_max``. Rows
    whose score is NaN (not scored) pass.

    Args:
        bounds: ``{column: {min: x, max: y}}``; either side may be missing or null.
        name: The stage name drops are counted under (``quantile_bands`` when the bounds come from bands).
    """

    def __init__(self, bounds: dict | None = None, name: str = "thresholds"):
        self.bounds = check_bounds(bounds)
        self.name = name

    def needs(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{c}_{side}" for c in self.bounds for side in ("below_min", "above_max"))

    def checks(self, batch: dict):
        for column, bound in self.bounds.items():
            if column not in batch:
                raise KeyError(
                    f"filters.thresholds.{column}: no such score column; enable the scorer that adds it"
                )
            values = np.asarray(batch[column], dtype=float)
            if bound.get("min") is not None:
                yield values < float(bound["min"]), f"{column}_below_min"
            if bound.get("max") is not None:
                yield values > float(bound["max"]), f"{column}_above_max"
