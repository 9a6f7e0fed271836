"""Params and FLOPs (SDPA counted)."""
