"""Benchmarks of MAFormer against mmdet's Swin in one process. Run them as modules from the repository
root, e.g. `python -m benchmarks.backbone_benchmark`, so that they import each other as a package."""
