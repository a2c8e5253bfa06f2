"""The rule contract: first failed check wins, earlier drops stay, and the base names the rule that dropped."""

from __future__ import annotations

import numpy as np

from filters.rules.base import DROPPED_BY, Filter


class Short(Filter):
    name = "short"

    def reasons(self):
        return ("empty", "too_short")

    def checks(self, batch):
        lengths = np.array([len(t) for t in batch["text"]])
        yield lengths == 0, "empty"
        yield lengths < 5, "too_short"


def test_first_failed_check_wins_and_earlier_drops_stay():
    batch = {
        "text": np.array(["", "abc", "abcdef", "x"], dtype=object),
        "drop_reason": np.array(["", "", "", "upstream"], dtype=object),
        DROPPED_BY: np.array(["", "", "", "earlier"], dtype=object),
    }
    out = Short()(batch)
    assert list(out["drop_reason"]) == ["empty", "too_short", "", "upstream"]
    assert list(out[DROPPED_BY]) == ["short", "short", "", "earlier"]


def test_a_batch_without_reasons_starts_all_kept():
    out = Short()({"text": np.array(["abcdef", "ab"], dtype=object)})
    assert list(out["drop_reason"]) == ["", "too_short"] and list(out[DROPPED_BY]) == ["", "short"]
