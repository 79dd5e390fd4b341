"""SIGTERM and SIGINT as Ctrl-C: raised in the main thread, so that every step's cleanup runs (MLflow run status,
the run lock, Prefect's temporary server)."""

from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised like Ctrl-C so that every step's cleanup (MLflow run status, temporary server) runs."""


def on_signal(signum: int, frame) -> None:
    # The first signal stops the run cleanly; a second one, as a second Ctrl-C, ends the process at once.
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signal.Signals(signum).name)


def install() -> None:
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
