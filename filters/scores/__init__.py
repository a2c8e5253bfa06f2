"""Scorer stages: each adds columns to a batch and declares them (``columns(**kwargs)``)."""
