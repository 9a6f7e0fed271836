"""Inference: predictions drawn and saved through the host libraries' inferencers."""
