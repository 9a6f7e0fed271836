"""How the package's messages list names (classes, categories, keys): the first few, and how many in all."""

from typing import Sequence

__all__ = ['shown']


def shown(names: Sequence[object], limit: int = 6) -> str:
    """The first `limit` names, comma-separated, and how many there are when that is not all of them."""
    return ', '.join(map(str, names[:limit])) + (f', ... ({len(names)} in all)' if len(names) > limit else '')
