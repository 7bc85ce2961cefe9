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


def spare_final_collection() -> None:
    """Let the exiting interpreter skip its last full collection.

    At exit CPython collects every generation once more before tearing modules down: for a
    one-file check that scan of the libraries' objects (typing, pydantic-core's schema
    classes, click) took some 6 ms, a tenth of the run. gc.freeze() moves all of them to the
    permanent generation, which that collection leaves alone. Call it only when the process
    is about to exit: frozen objects are never collected (refcounting still frees them).
    """
    gc.freeze()
