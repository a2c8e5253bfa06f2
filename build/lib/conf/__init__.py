"""Hydra config tree (a package so that installed litho finds it)."""
