"""What a run leaves behind: shards (writer.py), atomic folder swaps (snapshot.py), packed token shards
(packing.py), the manifest (manifest.py), the dataset card (card.py), typed columns (schema.py) and the
run report, report.html (report.py; its data, examples, teacher timings and plots in report_*.py)."""
