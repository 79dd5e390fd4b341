"""What reaches the terminal and what reaches the log file: one line per failure on the terminal, every record and
traceback in artifacts/logs/."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from medflow.paths import Paths


def say(line: str) -> None:
    """A line for the person at the terminal: a step's summary, a resumed checkpoint, a trial's result. The one print
    of medflow's library code; inside a Prefect flow (log_prints) it becomes a record of the flow run's log too."""
    print(line, flush=True)


class OnlyOurErrors(logging.Filter):
    """Keeps Prefect's error records and tracebacks off the terminal; the log file still receives them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return False
        if not record.name.startswith("prefect"):
            return True
        # A failed run's final state repeats the exception that medflow's own one-line message explains.
        return record.levelno < logging.ERROR and "in state Failed" not in str(record.msg)


def _prefect_console_handlers() -> set[logging.Handler]:
    if "prefect.logging.handlers" not in sys.modules:
        return set()
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if hasattr(lg, "handlers")),
    ]
    return {h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}


def hide_prefect_tracebacks() -> None:
    for handler in _prefect_console_handlers():
        if not any(isinstance(f, OnlyOurErrors) for f in handler.filters):
            handler.addFilter(OnlyOurErrors())


class Nothing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def close_prefect_console() -> None:
    """medflow's own last line stays the terminal's last: what Prefect logs after it (its temporary server
    stopping at the interpreter's exit) goes to the log file only."""
    for handler in _prefect_console_handlers():
        handler.addFilter(Nothing())


def log_file(paths: Paths, command: str) -> Path:
    return paths.artifacts / "logs" / f"medflow-{command}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"


def log_to(file: Path) -> None:
    """Sends every record to file (created on the first one). After Prefect's own logging setup: a root handler
    that exists before it makes Prefect leave the terminal without its console handler."""
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(file) for h in root.handlers):
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(file, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
