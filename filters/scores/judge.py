"""Judge scores: a teacher model rates each text on rubrics from config (``filters.judge``).

For every kept row and every rubric the judge (any teacher backend, usually a larger model than the
generator) is asked for a JSON object ``{"score": <integer in the scale>}``, with structured output
(:func:`rating_schema`: local teachers hold their decoding to it, ``openai`` sends it as
``response_format`` and checks the answer); the rating becomes the
row's ``judge_<rubric>`` column (NaN when the judge failed or answered out of the scale), which
thresholds, quantile bands, best-of-n expressions and the probe can use like any score. The answer
is parsed with :func:`parse_rating` (JSON first, then the first in-scale integer after ``score``).

Ratings are checkpointed like generations: every finished batch is written under
``<output.dir>/.litho/judgements/<judge fingerprint>/``, keyed by the row id, a hash of its text and
the rubric, so a rerun (or a rerun with more rows) asks the judge only for what it has not rated.
The fingerprint covers the judge teacher (minus operational keys), the rubrics, the scale and the
prompt version: another judge never reuses these ratings.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import xxhash

from generators.errors import ConfigError

log = logging.getLogger(__name__)
VERSION = "judge_v2"  # bump when the prompt or the answer's schema changes: it is part of the fingerprint
SYSTEM = "You are a strict, fair grader of texts. You answer only with the JSON object asked for."
PROMPT = (
    "Rubric: {rubric}\n\nText:\n<<<\n{text}\n>>>\n\nRate the text on the rubric with an integer from "
    '{low} (worst) to {high} (best). Answer with only a JSON object: {{"score": <integer>}}'
)
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SCORE_AFTER_KEY = re.compile(r"score\D{0,12}?(-?\d+(?:\.\d+)?)", re.I)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Keys of a judge teacher's config that change how fast it answers, not what.
OPERATIONAL = {
    "device",
    "dtype",
    "batch_size",
    "threads",
    "cache_dir",
    "allow_network",
    "max_concurrency",
    "timeout_s",
    "max_retries",
    "backoff_s",
    "backoff_max_s",
    "api_key_env",
}


def check_rubrics(rubrics: dict, scale) -> tuple[dict[str, str], tuple[int, int]]:
    """``{name: rubric text}`` with names usable in a column, and an integer scale ``[low, high]``.

    Raises:
        ConfigError: an empty rubric set, a bad name or an inverted scale.
    """
    if not rubrics:
        raise ConfigError(
            "filters.judge.rubrics: give at least one rubric, e.g. {quality: 'How clear and correct is it?'}"
        )
    for name, text in rubrics.items():
        if not NAME.match(str(name)):
            raise ConfigError(f"filters.judge.rubrics.{name}: use a lower-case name of letters, digits and _")
        if not str(text or "").strip():
            raise ConfigError(f"filters.judge.rubrics.{name}: the rubric text is empty")
    ok = isinstance(scale, list | tuple) and len(scale) == 2 and all(isinstance(v, int) for v in scale)
    if not ok or scale[0] >= scale[1]:
        raise ConfigError(f"filters.judge.scale={scale}: give two integers [low, high], e.g. [1, 10]")
    return {str(k): str(v) for k, v in rubrics.items()}, (int(scale[0]), int(scale[1]))


def parse_rating(text: str, low: int, high: int) -> float:
    """The rating in ``text`` (a JSON object with ``score``, else the first number after "score",
    else the first number), or NaN when there is none in ``[low, high]``."""
    text = text or ""
    start, end = text.find("{"), text.rfind("}")
    candidates = []
    if 0 <= start < end:
        try:
            value = json.loads(text[start : end + 1]).get("score")
            if isinstance(value, int | float) and not isinstance(value, bool):
                candidates.append(float(value))
        except (ValueError, AttributeError):
            pass
    candidates += [float(m) for m in SCORE_AFTER_KEY.findall(text)[:1]]
    candidates += [float(m) for m in NUMBER.findall(text)[:1]]
    for value in candidates:
        if low <= value <= high:
            return value
    return float("nan")


def rating_schema(low: int, high: int) -> dict:
    """The judge's answer, ``{"score": <integer in [low, high]>}``: the teacher's decoding is held to it
    (generators/teachers/structure.py), so a rating parses unless the token limit cut it."""
    score = {"type": "integer", "minimum": low, "maximum": high}
    return {
        "type": "object",
        "properties": {"score": score},
        "required": ["score"],
        "additionalProperties": False,
    }


def judge_sampling(sampling: dict | None) -> dict:
    """The judge's decoding: greedy and short unless the config says otherwise."""
    return {"max_new_tokens": 24, "temperature": 0.0, "repetition_penalty": 1.0, **(sampling or {})}


def fingerprint(teacher: dict, rubrics: dict, scale, sampling: dict | None = None) -> str:
    """Which judge made a rating: the teacher (minus operational keys, with its final sampling),
    the rubrics, the scale and the prompt version."""
    teacher = {**teacher, "sampling": {**(teacher.get("sampling") or {}), **judge_sampling(sampling)}}
    keep = {k: v for k, v in teacher.items() if k not in OPERATIONAL}
    if "_target_" in keep:
        keep["_target_"] = str(keep["_target_"]).rsplit(".", 1)[-1]
    blob = json.dumps([VERSION, keep, rubrics, list(scale)], sort_keys=True, default=str)
    return xxhash.xxh3_64_hexdigest(blob.encode())


class JudgeScores:
    """Scorer stage: adds ``judge_<rubric>`` for every rubric (NaN on dropped rows and failures).

    Args:
        teacher: The judge's teacher config (``_target_`` plus arguments, as in conf/teacher/).
        rubrics: ``{name: rubric text}``.
        scale: ``[low, high]`` integer rating scale.
        checkpoint_dir: Where finished ratings are kept (None: no checkpoints).
        sampling: Merged over the judge teacher's own sampling (default: greedy, 24 new tokens).
        max_chars: Texts are cut to this many characters in the prompt.
        text_column: Column holding the text.
    """

    @classmethod
    def columns(cls, rubrics=None, scale=(1, 10), text_column: str = "text", **_) -> tuple[tuple, tuple]:
        """``(needs, adds)``; checks the rubrics and scale (cheap: the driver calls it before the run)."""
        names, _ = check_rubrics(rubrics or {}, scale)
        return (text_column, "id"), tuple(f"judge_{n}" for n in names)

    def __init__(
        self,
        teacher: dict,
        rubrics: dict,
        scale=(1, 10),
        checkpoint_dir: str | None = None,
        sampling: dict | None = None,
        max_chars: int = 6000,
        text_column: str = "text",
    ):
        from hydra.utils import instantiate

        from generators.teachers.stream import split_config

        self.rubrics, self.scale = check_rubrics(rubrics, scale)
        teacher = split_config(teacher)[0]  # a conf/teacher/ mapping also holds the teacher stage's keys
        teacher = {**teacher, "sampling": {**(teacher.get("sampling") or {}), **judge_sampling(sampling)}}
        self.teacher = instantiate(teacher, _convert_="all")
        self.dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.max_chars, self.text_column = max_chars, text_column
        self.known = self._load()

    def _load(self) -> dict[str, float]:
        import pyarrow.parquet as pq

        known: dict[str, float] = {}
        if self.dir is None or not self.dir.is_dir():
            return known
        for path in sorted(self.dir.glob("judge-*.parquet")):
            table = pq.read_table(path, columns=["key", "score"])
            known.update(zip(table.column("key").to_pylist(), table.column("score").to_pylist()))
        return known

    def key(self, row_id: str, text: str, rubric: str) -> str:
        return f"{row_id}:{xxhash.xxh3_64_hexdigest(text.encode())}:{rubric}"

    def __call__(self, batch: dict) -> dict:
        from generators.teachers.contract import Request
        from generators.teachers.structure import Structure

        structure = Structure.json(rating_schema(*self.scale))
        texts = [str(t) for t in batch[self.text_column]]
        ids = [str(i) for i in batch["id"]]
        kept = np.array([str(r or "") == "" for r in batch.get("drop_reason", [""] * len(texts))], bool)
        wanted, requests = [], []
        for i in np.flatnonzero(kept):
            for name, rubric in self.rubrics.items():
                key = self.key(ids[i], texts[i], name)
                if key in self.known:
                    continue
                user = PROMPT.format(
                    rubric=rubric, text=texts[i][: self.max_chars], low=self.scale[0], high=self.scale[1]
                )
                messages = ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})
                wanted.append(key)
                requests.append(Request(f"{ids[i]}/judge/{name}", messages, structure))
        if requests:
            completions = self.teacher.generate(requests)
            scores = [
                parse_rating(c.text, *self.scale) if c.finish_reason != "error" else float("nan")
                for c in completions
            ]
            self._save(wanted, scores, [c.text for c in completions])
            self.known.update(zip(wanted, scores))
        for name in self.rubrics:
            batch[f"judge_{name}"] = np.array(
                [
                    self.known.get(self.key(ids[i], texts[i], name), np.nan) if kept[i] else np.nan
                    for i in range(len(texts))
                ],
                dtype=np.float64,
            )
        return batch

    def _save(self, keys: list[str], scores: list[float], raw: list[str]) -> None:
        """One checkpoint file per finished batch, written to a temporary name and renamed."""
        if self.dir is None or not keys:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"judge-{xxhash.xxh3_64_hexdigest('|'.join(sorted(keys)).encode())}.parquet"
        if path.exists():
            return
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        table = pa.table({"key": keys, "score": pa.array(scores, pa.float64()), "raw": raw})
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        failed = int(np.isnan(np.asarray(scores)).sum())
        if failed:
            log.warning(
                "judge: %d of %d ratings did not parse into the scale %s", failed, len(keys), list(self.scale)
            )
