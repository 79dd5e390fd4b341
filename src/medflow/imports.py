"""A command's heavy libraries, imported without Python's cyclic garbage collector, then frozen out of its walks.

The collector walks every object a library creates as it imports: torch, MLflow, Prefect and sympy (torch's
compiler) create millions, and a run's libraries took 4.7 s to import with it on against 3.4 s with it off. Their
objects live as long as the process, so once they are in they are moved out of its walks for good (`gc.freeze`),
and every later full collection skips them too. Only the CLI calls this, as a command starts.
"""

from __future__ import annotations

import gc
import importlib
import sys
from types import ModuleType


def import_then_freeze(names: list[str]) -> list[ModuleType]:
    enabled, before = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        # Only after imports: frozen, whatever garbage a long-lived caller (tests, a notebook) holds would stay.
        if len(sys.modules) > before:
            gc.freeze()
        if enabled:
            gc.enable()
