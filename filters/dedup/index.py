"""Cross-run near-dedup index: the band keys and shingle sets of earlier runs' kept texts, on disk.

Layout of ``index_dir``::

    meta.json                      settings the keys depend on (ngram, bands, rows, seed, version)
    run=<run_id>/part-*.parquet    id (string), bands (list<uint64>, one key per band),
                                   shingles (list<uint64>, sorted unique shingle hashes)
    _staging/<run_id>/             a run being written; renamed to run=<run_id>/ once complete

A run reads only ``id`` and ``bands`` (8 * bands bytes plus the id per indexed text, and a 4-byte
row order per band); the shingle sets of the few rows that share a band with a new text are read
row group by row group, to verify the pair by exact Jaccard like pairs inside a run. Texts that
match an earlier run are removed; the earlier text always wins, since it is already published.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filters.dedup.lsh import jaccard
from filters.dedup.minhash import MinHashConfig, band_matrix, minhash_bands, shingle_sets
from filters.rules.base import current_reasons, record_drops

log = logging.getLogger(__name__)
VERSION = "minhash_v1"
ROW_GROUP = 4096  # rows per Parquet row group: the unit read to fetch one old shingle set


def index_table(ids, texts, cfg: MinHashConfig, keys: np.ndarray | None = None) -> pa.Table:
    """Index rows (id, bands, shingles) for texts; ``keys`` reuses band keys already computed."""
    keys = minhash_bands(list(texts), cfg) if keys is None else keys
    sets = shingle_sets(list(texts), cfg.ngram)
    return pa.table(
        {
            "id": pa.array([str(i) for i in ids], pa.string()),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.uint64()), cfg.bands),
            "shingles": pa.array(sets, pa.list_(pa.uint64())),
        }
    )


class IndexRows:
    """Stage: turns kept rows into index rows (``id``, ``bands``, ``shingles``) for a run's index.

    Args:
        text_column: Column holding the text.
        id_column: Column holding the row id.
        bands_column: Column of band keys already computed for these rows (``(rows, bands)`` uint64),
            reused when present instead of signing the texts again.
        **cfg: Near-dedup settings (keys of :class:`filters.dedup.minhash.MinHashConfig`).
    """

    def __init__(
        self, text_column: str = "text", id_column: str = "id", bands_column: str | None = None, **cfg
    ):
        self.cfg = MinHashConfig.from_dict(cfg)
        self.text_column, self.id_column, self.bands_column = text_column, id_column, bands_column

    def __call__(self, batch: dict) -> pa.Table:
        keys = None
        if self.bands_column and self.bands_column in batch:
            keys = band_matrix(batch[self.bands_column], self.cfg.bands)
        return index_table(batch[self.id_column], [str(t) for t in batch[self.text_column]], self.cfg, keys)


class DedupIndex:
    """Earlier runs' index under ``cfg.index_dir``; :meth:`match` finds new texts they already hold.

    Args:
        cfg: Near-dedup settings; ``index_dir`` must be set and the rest must match ``meta.json``.
    """

    def __init__(self, cfg: MinHashConfig):
        if not cfg.index_dir:
            raise ValueError("dedup.index_dir is not set; give a directory for the cross-run index")
        self.cfg, self.root = cfg, Path(cfg.index_dir)
        self.meta = {
            "version": VERSION,
            "ngram": cfg.ngram,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "seed": cfg.seed,
        }
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            found = json.loads(meta_path.read_text())
            if found != self.meta:
                diff = sorted(k for k in self.meta if found.get(k) != self.meta[k])
                raise ValueError(
                    f"dedup.index_dir={self.root} was built with {found}; dedup keys {diff} differ: "
                    "use the index's settings or a new dedup.index_dir"
                )
        self.ids = pa.array([], pa.string())
        self.files: list[Path] = []
        self.file_of = self.row_of = np.zeros(0, np.int64)
        self.sorted_keys = np.zeros((0, cfg.bands), np.uint64)
        self.order = np.zeros((0, cfg.bands), np.int32)

    def runs(self) -> list[str]:
        """Committed run ids, sorted."""
        return sorted(p.name[4:] for p in self.root.glob("run=*") if p.is_dir())

    def load(self) -> DedupIndex:
        """Read ids and band keys of every committed run; returns self."""
        empty = np.zeros(0, np.int64)
        ids, keys, file_of, row_of = [], [np.zeros((0, self.cfg.bands), np.uint64)], [empty], [empty]
        self.files = sorted(self.root.glob("run=*/*.parquet"))
        for f, path in enumerate(self.files):
            table = pq.read_table(path, columns=["id", "bands"])
            ids.append(table.column("id"))
            keys.append(
                table.column("bands").combine_chunks().flatten().to_numpy().reshape(-1, self.cfg.bands)
            )
            file_of.append(np.full(len(table), f, np.int64))
            row_of.append(np.arange(len(table), dtype=np.int64))
        self.ids = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else self.ids
        keys = np.concatenate(keys)
        self.file_of, self.row_of = np.concatenate(file_of), np.concatenate(row_of)
        # Sorted copies per band replace the keys: 8 bytes per band for the key, 4 for its row.
        self.order = np.argsort(keys, axis=0, kind="stable").astype(np.int32)
        self.sorted_keys = np.take_along_axis(keys, self.order, axis=0)
        log.info("dedup index %s: %d texts from %d runs", self.root, len(self), len(self.runs()))
        return self

    def __len__(self) -> int:
        return len(self.sorted_keys)

    def _candidates(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unique (new row, index row) pairs that share a band key."""
        new, old = [], []
        for band in range(self.cfg.bands):
            col = self.sorted_keys[:, band]
            left = np.searchsorted(col, keys[:, band], "left")
            right = np.searchsorted(col, keys[:, band], "right")
            width = right - left
            rows = np.repeat(np.arange(len(keys)), width)
            pos = np.repeat(left, width) + (
                np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
            )
            new.append(rows)
            old.append(self.order[pos, band].astype(np.int64))
        code = np.unique(np.concatenate(new) * len(self) + np.concatenate(old))
        return code // len(self), code % len(self)

    def _old_sets(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Shingle sets of index rows, reading only the row groups that hold them."""
        sets = {}
        for f in np.unique(self.file_of[rows]).tolist():
            wanted = rows[self.file_of[rows] == f]
            pf = pq.ParquetFile(self.files[f])
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            starts = np.concatenate(([0], np.cumsum(sizes)))
            group = np.searchsorted(starts, self.row_of[wanted], "right") - 1
            chosen = np.unique(group)
            column = pf.read_row_groups(chosen.tolist(), columns=["shingles"]).column(0)
            # Offset of each chosen group inside the concatenation of the chosen groups.
            offset = dict(
                zip(chosen.tolist(), np.cumsum([0, *np.diff(starts)[chosen][:-1]]).tolist(), strict=True)
            )
            for r, g in zip(wanted.tolist(), group.tolist(), strict=True):
                sets[r] = column[offset[g] + int(self.row_of[r] - starts[g])].values.to_numpy()
        return sets

    def match(self, keys: np.ndarray, texts) -> np.ndarray:
        """Id of the most similar earlier text at Jaccard >= threshold per new text, else None.

        Ties go to the smallest earlier id. Without ``verify``, any shared band is a match.
        """
        out = np.full(len(keys), None, dtype=object)
        if not len(self) or not len(keys):
            return out
        new, old = self._candidates(keys)
        if not len(new):
            return out
        if self.cfg.verify:
            docs = np.unique(new)
            mine = dict(
                zip(docs.tolist(), shingle_sets([texts[i] for i in docs], self.cfg.ngram), strict=True)
            )
            theirs = self._old_sets(np.unique(old))
            sim = np.array(
                [jaccard(mine[a], theirs[b]) for a, b in zip(new.tolist(), old.tolist(), strict=True)]
            )
        else:
            sim = np.ones(len(new))
        ok = sim >= self.cfg.threshold
        old_ids = np.asarray(self.ids.take(pa.array(old[ok])).to_pylist(), dtype=str)
        for i in np.lexsort((old_ids, -sim[ok], new[ok]))[::-1]:  # last write wins: best match per row
            out[new[ok][i]] = str(old_ids[i])
        return out

    def _write_meta(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, sort_keys=True))
        os.replace(tmp, self.root / "meta.json")

    def staging_dir(self, run_id: str) -> Path:
        """Where a run's index parts are written before :meth:`commit` moves them into place."""
        if (self.root / f"run={run_id}").exists():
            raise ValueError(f"dedup index {self.root} already holds run {run_id!r}; pick a new run id")
        self._write_meta()
        staging = self.root / "_staging" / run_id
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed attempt are not this run
        return staging

    def commit(self, run_id: str) -> Path:
        """Publish a staged run atomically (one directory rename)."""
        final = self.root / f"run={run_id}"
        os.replace(self.root / "_staging" / run_id, final)
        return final

    def add_run(self, run_id: str, ids, texts, keys: np.ndarray | None = None) -> Path:
        """Index a finished run's kept texts (in memory) and commit them."""
        staging = self.staging_dir(run_id)
        staging.mkdir(parents=True, exist_ok=True)
        table = index_table(ids, texts, self.cfg, keys)
        pq.write_table(table, staging / "part-00000.parquet", row_group_size=ROW_GROUP)
        return self.commit(run_id)


class CrossRunMatch:
    """Stage: marks rows that duplicate an earlier run's kept text (``drop_reason="near_duplicate"``,
    ``duplicate_of`` and ``cluster_id`` set to the earlier id). Needs ``lsh_bands``; the index is
    loaded once per actor.

    Args:
        text_column: Column holding the text.
        **cfg: Near-dedup settings; ``index_dir`` names the index.
    """

    def __init__(self, text_column: str = "text", **cfg):
        self.cfg = MinHashConfig.from_dict(cfg)
        self.index = DedupIndex(self.cfg).load()
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        before = current_reasons(batch)
        rows = np.flatnonzero(before == "")
        keys = band_matrix(batch["lsh_bands"], self.cfg.bands)
        prior = self.index.match(keys[rows], [str(batch[self.text_column][i]) for i in rows])
        hit = rows[np.array([p is not None for p in prior], bool)]
        earlier = prior[[p is not None for p in prior]]
        for column in ("duplicate_of", "cluster_id"):
            out = np.asarray(batch[column], dtype=object).copy()
            out[hit] = earlier
            batch[column] = out
        reasons = before.copy()
        reasons[hit] = "near_duplicate"
        record_drops(batch, before, reasons, "near_dedup")
        return batch
