"""Pausing CPython's cyclic garbage collector while a layout is loaded and worked on."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one load-and-check or load-and-plan.

    A layout at KVM's memslot limit becomes some two million small objects (the YAML nodes and
    marks kept for positions, the models, the regions) that live until the job ends and form
    no reference cycles; the collector would rescan them again and again, which took more than
    half of the run time and grew faster than the layout. It resumes afterwards, as it was.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
