"""Pausing Python's cyclic garbage collector around work it would only slow down or disturb."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(collect_first: bool = False) -> Iterator[None]:
    """The cyclic collector paused inside (reference counting still frees everything not in a
    cycle), resumed after if it was on. Also a decorator (`@gc_paused()`).

    `collect_first` collects once before pausing, as `timeit` does, so that garbage made earlier
    is not collected later in the middle of measured work."""
    enabled = gc.isenabled()
    if collect_first:
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
