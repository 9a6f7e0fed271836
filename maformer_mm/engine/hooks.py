"""Stops training on a NaN or infinite loss before any checkpoint with broken weights is written."""

import math
import os.path as osp
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['InvalidLossHook']


@HOOKS.register_module()
class InvalidLossHook(Hook):
    """Raises `FloatingPointError` naming the iteration and the non-finite loss terms.

    It runs at VERY_HIGH priority, so it fires before CheckpointHook (VERY_LOW) in the same
    iteration: the checkpoints already on disk stay the last good ones. (mmdet's CheckInvalidLossHook
    checks every 50 iterations by default and fails with an empty assertion message.)

    Args:
        interval: Check every `interval` iterations (1: every iteration; the check is one `isfinite`).
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval: int = 1) -> None:
        self.interval = interval

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Optional[dict] = None, outputs: Optional[dict] = None
    ) -> None:
        if not outputs or 'loss' not in outputs or not self.every_n_train_iters(runner, self.interval):
            return
        loss = outputs['loss']
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        bad = [
            k
            for k, v in outputs.items()
            if k.startswith('loss') and k != 'loss' and isinstance(v, torch.Tensor) and not torch.isfinite(v).all()
        ]
        last = osp.join(runner.work_dir, 'last_checkpoint')
        saved = 'none saved yet'
        if osp.isfile(last):
            with open(last) as file:
                saved = file.read().strip()
        raise FloatingPointError(
            f'loss is {value} at iteration {runner.iter + 1} (non-finite terms: {", ".join(bad) or "loss"}); '
            f'training stopped before writing a checkpoint. Last good checkpoint: {saved}. '
            'Lower the learning rate, check the data, or resume with --resume from that checkpoint.'
        )
