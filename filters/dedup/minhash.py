"""MinHash signatures and LSH band keys for near-duplicate detection.

A text is normalised (NFKC, lowercase, whitespace collapsed), cut into word n-grams (shingles) and
summarised by ``bands * rows`` min-hash values (Broder 1997, "On the resemblance and containment of
documents"). Two texts with shingle-set Jaccard similarity ``s`` agree on one min-hash value with
probability ``s``, so they share at least one band (a run of ``rows`` values) with probability

    P(candidate | s) = 1 - (1 - s**rows) ** bands            (Leskovec et al., *Mining of Massive
                                                              Datasets*, ch. 3.4)

====  =========================  ===============================
s     litho default, 20 x 5      datasketch optimum at 0.8, 9 x 13
====  =========================  ===============================
0.30  0.048                      0.000
0.50  0.470                      0.001
0.60  0.802                      0.012
0.70  0.975                      0.084
0.75  0.996                      0.195
0.80  0.9996                     0.399
0.85  1.000                      0.686
0.90  1.000                      0.929
====  =========================  ===============================

datasketch picks ``bands x rows`` to balance false positives against false negatives, because it
returns candidates unverified. litho verifies every candidate by exact Jaccard (see
:mod:`filters.dedup.lsh`), so a false positive costs one set intersection and the curve is placed well left
of the threshold: a pair at s = 0.8 is missed with probability 4e-4 instead of 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import chain

import numpy as np
import xxhash

from generators.errors import ConfigError
from generators.text import normalized_words

_M64 = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier (2^64 / golden ratio) for the n-gram polynomial
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a text without shingles
_CHUNK = 1 << 20  # shingle x permutation elements per numpy pass: 8 MiB of uint64 temporaries


@dataclass(frozen=True)
class MinHashConfig:
    """Near-dedup settings; the keys of ``conf/dedup/minhash.yaml``.

    Args:
        ngram: Words per shingle.
        num_perm: Min-hash values per text; must equal ``bands * rows``.
        bands: LSH bands; a pair sharing any band becomes a candidate.
        rows: Min-hash values per band.
        threshold: Jaccard similarity at or above which a verified pair is a duplicate.
        verify: Check candidates by exact Jaccard of shingle sets; off, every candidate is a duplicate.
        keep_by: Score column whose highest value a cluster keeps (ties and ``None``: smallest id).
        index_dir: Cross-run index of earlier runs' kept texts (:mod:`filters.dedup.index`), or None.
        seed: Seed of the hash permutations; the same seed gives the same signatures.
    """

    ngram: int = 5
    num_perm: int = 100
    bands: int = 20
    rows: int = 5
    threshold: float = 0.8
    verify: bool = True
    keep_by: str | None = None
    index_dir: str | None = None
    seed: int = 0

    def __post_init__(self):
        for key in ("ngram", "bands", "rows"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dedup.minhash.{key}={value}: give a positive integer")
        if self.bands * self.rows != self.num_perm:
            raise ConfigError(
                f"dedup.minhash.num_perm={self.num_perm}: must equal bands*rows={self.bands}*{self.rows}; "
                f"set dedup.minhash.num_perm={self.bands * self.rows}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"dedup.minhash.threshold={self.threshold}: give a Jaccard in (0, 1]")

    @classmethod
    def from_dict(cls, cfg=None, **overrides) -> MinHashConfig:
        """Build from a mapping (a Hydra node or dict); unknown keys raise with their name."""
        merged = {**dict(cfg or {}), **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"dedup.minhash: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**merged)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: spreads the polynomial's bits so low 32 bits are uniform."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def shingle_hashes(texts, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of many texts, concatenated.

    Each word is hashed once with xxh3_64, and an n-gram's hash is the polynomial of its word hashes
    (mod 2^64) through an avalanche mix, computed for the whole batch in numpy. This equals hashing
    the n-gram string up to 2^-64 collisions and is ~2x faster than one xxhash call per n-gram,
    which would also have to build each n-gram string. A text shorter than ``ngram`` words is one
    shingle; an empty text has none.

    Returns:
        ``(hashes, offsets)``: text ``i`` owns ``hashes[offsets[i]:offsets[i+1]]`` (with repeats).
    """
    words = [normalized_words(t) for t in texts]
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    total = int(lens.sum())
    word_hash = np.fromiter(
        map(xxhash.xxh3_64_intdigest, map(str.encode, chain.from_iterable(words))), np.uint64, total
    )
    # Pad every text with ngram-1 zero hashes so windows never cross into the next text.
    pad = ngram - 1
    starts = np.concatenate(([0], np.cumsum(lens + pad)))
    padded = np.zeros(int(starts[-1]) + pad, dtype=np.uint64)
    padded[np.arange(total) + np.repeat(np.arange(len(lens)) * pad, lens)] = word_hash
    m = len(padded) - pad
    acc = padded[:m].copy()
    for k in range(1, ngram):
        acc *= _M64
        acc += padded[k : k + m]
    counts = np.where(lens > 0, np.maximum(lens - pad, 1), 0)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    first = np.repeat(starts[:-1], counts) + (np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts))
    return _fmix64(acc[first]), offsets


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``a, b`` of the hash family ``h(x) = ((a*x + b) mod 2^64) >> 32``."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min-hash signatures, shape ``(n_texts, num_perm)``, uint32.

    The permutations are Dietzfelbinger's multiply-add-shift family on the low 32 bits of each
    shingle hash (Dietzfelbinger 1996, "Universal hashing and k-wise independent random variables
    via integer arithmetic without primes"): 2-independent, as the ``a*x+b mod (2^61-1)`` family of
    datasketch is, but it needs only a wrapping uint64 multiply, add and shift, where a Mersenne
    modulus would need 128-bit products that numpy does not have. Truncating shingle hashes to 32
    bits merges two distinct shingles with probability 2^-32 per pair, far below estimation noise.
    """
    n, k = len(offsets) - 1, len(a)
    sig = np.full((n, k), EMPTY, dtype=np.uint32)
    counts = np.diff(offsets)
    x = hashes & _LOW32
    ends = np.searchsorted(offsets, offsets[:-1] + _CHUNK // k, side="right") - 1
    i = 0
    while i < n:
        j = max(int(ends[i]), i + 1)
        lo, hi = int(offsets[i]), int(offsets[j])
        rows = np.flatnonzero(counts[i:j]) + i
        if hi > lo:
            v = np.multiply(a[:, None], x[None, lo:hi])
            v += b[:, None]
            v >>= _SHIFT32
            sig[rows] = np.minimum.reduceat(v, offsets[rows] - lo, axis=1).T
        i = j
    return sig


def bands_array(keys: np.ndarray):
    """Band keys ``(rows, bands)`` as an Arrow ``list<uint64>`` column. Ray Data cannot store a zero-row
    2-D numpy column as Arrow (it logs an ArrowConversionError and pickles the block): a list column
    holds any number of rows, with one type whatever the width."""
    import pyarrow as pa

    keys = np.asarray(keys, dtype=np.uint64)
    offsets = pa.array(np.arange(len(keys) + 1, dtype=np.int32) * (keys.shape[1] if keys.ndim == 2 else 0))
    return pa.ListArray.from_arrays(offsets, pa.array(keys.reshape(-1), pa.uint64()))


def band_matrix(values, bands: int) -> np.ndarray:
    """Band keys ``(rows, bands)`` uint64 from what a batch holds: an Arrow list column, the numpy
    object array of arrays Ray Data makes of one, or a 2-D array."""
    if hasattr(values, "flatten") and not isinstance(values, np.ndarray):  # an Arrow list array
        values = values.flatten().to_numpy(zero_copy_only=False)
    values = np.asarray(values)
    if values.dtype == object:
        values = np.stack(list(values)) if len(values) else np.zeros((0, bands), np.uint64)
    return values.astype(np.uint64).reshape(-1, bands)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One xxh3_64 key per band, shape ``(n_texts, bands)``; the band index seeds the hash, so equal
    values in different bands never share a bucket."""
    n = len(sig)
    raw = np.ascontiguousarray(sig[:, : bands * rows]).tobytes()
    width = rows * 4
    keys = np.fromiter(
        (
            xxhash.xxh3_64_intdigest(raw[o : o + width], band)
            for o, band in zip(
                range(0, n * bands * width, width), np.tile(np.arange(bands), n).tolist(), strict=True
            )
        ),
        dtype=np.uint64,
        count=n * bands,
    )
    return keys.reshape(n, bands)


def minhash_bands(texts, cfg: MinHashConfig, batch_size: int = 1024) -> np.ndarray:
    """Band keys ``(n, bands)`` uint64 of many texts, a batch at a time, so that shingle hashes (8
    bytes a word) never exceed one batch in memory: the index costs ``8 * bands`` bytes a text."""
    a, b = permutations(cfg.num_perm, cfg.seed)
    keys = [np.zeros((0, cfg.bands), np.uint64)]
    for start in range(0, len(texts), batch_size):
        hashes, offsets = shingle_hashes(texts[start : start + batch_size], cfg.ngram)
        keys.append(band_keys(signatures(hashes, offsets, a, b), cfg.bands, cfg.rows))
    return np.concatenate(keys)


def shingle_sets(texts, ngram: int = 5, batch_size: int = 1024) -> list[np.ndarray]:
    """Sorted unique shingle hashes per text: the sets whose exact Jaccard verifies a candidate.

    Texts are split into words ``batch_size`` at a time: Python word strings cost ~60 bytes each,
    eight times the 8-byte hash that is kept.
    """
    sets = []
    for start in range(0, len(texts), batch_size):
        hashes, offsets = shingle_hashes(texts[start : start + batch_size], ngram)
        sets.extend(np.unique(hashes[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1))
    return sets
