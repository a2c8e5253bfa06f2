"""The Superfiltering rule: drop a generated text its own request does not help a scorer predict.

Li et al. 2024, "Superfiltering: Weak-to-Strong Data Filtering for Fast Instruction-Tuning", drop
instruction/response pairs whose IFD (``ifd_v1``, docs/metrics.md) is 1 or more: the response is no
easier to predict after the instruction than alone, so it does not answer it. For litho's generated
rows that is a text that ignores what it was asked for (docs/probe.md measures which rows it drops).
"""

from __future__ import annotations

import numpy as np

from filters.rules.base import Filter
from filters.scores.lm_scores import IFD


class SuperfilteringFilter(Filter):
    """Drops rows with ``ifd_v1 >= max_ifd`` as ``ifd_not_below_max``; unscored rows (NaN) pass.

    Args:
        max_ifd: The bound (Superfiltering: 1.0).
    """

    name = "superfiltering"

    def __init__(self, max_ifd: float = 1.0):
        self.max_ifd = float(max_ifd)

    def needs(self) -> tuple[str, ...]:
        return (IFD,)

    def reasons(self) -> tuple[str, ...]:
        return ("ifd_not_below_max",)

    def checks(self, batch: dict):
        values = np.asarray(batch[IFD], dtype=float)
        with np.errstate(invalid="ignore"):
            yield values >= self.max_ifd, "ifd_not_below_max"
