"""The loader's one error type and the sentence every refusal ends with."""

import pickle

__all__ = ['UnsafeCheckpointError', 'DOCS', 'WHAT_TO_DO', 'refusal']

DOCS = 'docs/checkpoints_and_safety.md'
WHAT_TO_DO = (
    'It was not loaded. Give a checkpoint that holds tensors and plain data only: a state dict, a training '
    'checkpoint of mmengine, mmdet, mmseg or mmpretrain, or a .safetensors file'
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file that was not loaded; the message names the file, what was found and what to do."""


def refusal(source: str, reason: str, advice: str = WHAT_TO_DO) -> UnsafeCheckpointError:
    """`SOURCE was refused: REASON. ADVICE (see the docs)`, as one error."""
    return UnsafeCheckpointError(f'{source} was refused: {reason.rstrip(".")}. {advice} (see {DOCS} in maformer_mm)')
