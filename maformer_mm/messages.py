"""How the package's messages list names (classes, categories, keys): the first few, and how many in all; and how
it warns: through mmengine's current logger, so a run's warnings land in its log file."""

import logging
from typing import Sequence

from mmengine.logging import print_log

__all__ = ['shown', 'warn']


def shown(names: Sequence[object], limit: int = 6) -> str:
    """The first `limit` names, comma-separated, and how many there are when that is not all of them."""
    return ', '.join(map(str, names[:limit])) + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def warn(message: str) -> None:
    """Logs `message` as a warning of the current mmengine logger (the run's log file when a run is on)."""
    print_log(message, logger='current', level=logging.WARNING)
