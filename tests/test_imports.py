"""Heavy imports with the cyclic garbage collector off (medflow.imports)."""

import gc
import sys

from medflow import imports


def test_the_collector_is_off_while_importing_and_as_it_was_after(monkeypatch):
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    for was in (True, False):
        (gc.enable if was else gc.disable)()
        try:
            with imports.heavy():
                assert not gc.isenabled()
            assert gc.isenabled() is was
        finally:
            gc.enable()
    assert not frozen  # nothing was imported: a long-lived caller's garbage is not made permanent


def test_what_was_imported_is_frozen_out_of_later_collections(monkeypatch):
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    with imports.heavy():
        import colorsys  # noqa: F401
    assert frozen == [True] and gc.isenabled()
