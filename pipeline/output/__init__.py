"""What a run leaves behind: shards (writer.py), atomic folder swaps (snapshot.py), packed token shards
(packing.py), the manifest (manifest.py), the dataset card (card.py) and typed columns (schema.py)."""
