"""Judging texts: scorers add columns (``scores/``), rules keep or drop rows on them and say why
(``rules/``), dedup removes repeats (``dedup/``). A scorer never drops; a rule never scores."""
