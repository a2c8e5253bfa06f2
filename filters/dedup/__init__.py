"""Removing repeats: exact hashes (exact.py), MinHash signatures and LSH (minhash.py, lsh.py), union-find
(unionfind.py), the cross-run index (index.py) and the per-batch stages the Ray graph runs (stages.py)."""
