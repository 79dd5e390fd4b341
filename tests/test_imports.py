"""Heavy imports with the cyclic garbage collector off (medflow.imports)."""

import gc
import sys

from medflow import imports


def test_the_collector_is_off_while_importing_and_as_it_was_after(monkeypatch):
    frozen, seen = [], []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(imports.importlib, "import_module", lambda name: seen.append(gc.isenabled()) or sys)
    for was in (True, False):
        (gc.enable if was else gc.disable)()
        try:
            assert imports.import_then_freeze(["sys"]) == [sys]
            assert gc.isenabled() is was
        finally:
            gc.enable()
    assert seen == [False, False]
    assert not frozen  # nothing was imported: a long-lived caller's garbage is not made permanent


def test_what_was_imported_is_frozen_out_of_later_collections(monkeypatch):
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    (colorsys,) = imports.import_then_freeze(["colorsys"])
    assert colorsys.__name__ == "colorsys" and frozen == [True] and gc.isenabled()
