"""Configs: the shipped ones by name and `maformer_mm::` inheritance (zoo), classes and class counts, `--data-root`,
the checks before a run, pretrained files."""
