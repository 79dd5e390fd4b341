"""Heavy imports without Python's cyclic garbage collector.

The collector walks every object a library creates as it imports: torch, MLflow, Prefect and sympy (torch's
compiler) create millions, and a run's libraries took 4.7 s to import with it on against 3.4 s with it off. Their
objects live as long as the process, so once they are in they are moved out of its walks for good (`gc.freeze`),
and every later full collection skips them too.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def heavy() -> Iterator[None]:
    enabled, before = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        # Only after imports: frozen, whatever garbage a long-lived caller (tests, a notebook) holds would stay.
        if len(sys.modules) > before:
            gc.freeze()
        if enabled:
            gc.enable()
