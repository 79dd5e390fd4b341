"""The Prefect server a command's flows report to: the one PREFECT_API_URL names (a persistent server, README:
Scheduled runs), else Prefect's own temporary server, which Prefect starts for the command and stops at its exit.

Only Prefect's public settings shape the temporary server: PREFECT_SERVER_EPHEMERAL_ENABLED lets Prefect start it,
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS bounds its start (the CLI's defaults: medflow.cli.QUIET_ENV).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class ServerUnavailable(RuntimeError):
    """Prefect's temporary server did not start (in time, or at all)."""


class NoServer(RuntimeError):
    """A command that needs a lasting Prefect server (a schedule) found none configured."""


def temporary() -> bool:
    """True when no Prefect server is configured: this command's flows run on Prefect's temporary one."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


def connect() -> None:
    """Has Prefect start its temporary server now, when no server is configured, so that a failed start is named as
    one instead of surfacing from inside the first flow."""
    if not temporary():
        return
    from prefect.client.orchestration import get_client

    # The server is a child in the terminal's process group: a Ctrl-C would reach it too and stop it under the run,
    # whose last calls (marking the flow interrupted) would then retry for minutes. It is started with SIGINT blocked,
    # which it inherits: a Ctrl-C stops medflow, and medflow's exit stops the server (SIGTERM, at Prefect's atexit).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with get_client(sync_client=True):
            pass
    except Exception as exc:
        # Prefect waits out its start-up timeout, whether the server is slow or has died; why is in the log file.
        raise ServerUnavailable("Prefect's temporary server did not start in time") from exc
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C meanwhile is raised here


@contextlib.contextmanager
def flow_settings() -> Iterator[None]:
    """Flows run without heartbeats on the temporary server: they tell a lasting server that a run crashed, and
    this one ends with its command, while Prefect's heartbeat thread holds the end of every flow for up to 1 s."""
    if not temporary():
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield
