"""Why a command failed, for its one-line error: (what failed, what to do, exit code), chosen by the exception's
type. A failure medflow knows the fix of is raised as a type of its own where it is found (medflow.runlock.Busy,
medflow.orchestration.NoServer and ServerUnavailable, medflow.servers.PortBusy, medflow.params.ParamsError), or
carries its fix (`medflow_fix`); a step's failure comes as medflow.pipeline.StepFailed, naming the step."""

from __future__ import annotations

import sqlite3

from medflow.orchestration import NoServer, ServerUnavailable
from medflow.params import ParamsError
from medflow.pipeline import StepFailed
from medflow.runlock import Busy
from medflow.servers import PortBusy
from medflow.tracking.store import StoreBusy

# Libraries whose exceptions are the MLflow store's: imported only when raised, so named by their packages.
STORE_PACKAGES = ("mlflow", "sqlalchemy")


def is_store_error(exc: BaseException) -> bool:
    if isinstance(exc, StoreBusy | sqlite3.Error):
        return True
    return any(cls.__module__.split(".")[0] in STORE_PACKAGES for cls in type(exc).__mro__)


def failed_step(exc: BaseException, step: str) -> str:
    """The step an exception names: Prefect turns SIGTERM inside a flow into its own TerminationSignal, then re-sends
    the signal once the flow has ended, so the name is on an exception earlier in the chain."""
    seen = exc
    while seen is not None and not hasattr(seen, "medflow_step"):
        seen = seen.__context__
    return getattr(seen, "medflow_step", step)


def interrupt_behind(exc: BaseException) -> BaseException:
    """The interrupt an exception was raised while handling, else the exception: Ctrl-C landing inside Prefect's
    task engine, before the task run exists, surfaces as Prefect's own error in handling it."""
    seen = exc
    while seen is not None and not isinstance(seen, KeyboardInterrupt):
        seen = seen.__context__
    return exc if seen is None else seen


def explain(exc: BaseException) -> tuple[str, str, int]:
    """(what failed, what to do, exit code): 2 for bad input or params, 130 for an interrupt, 1 otherwise."""
    step = "setup"
    if isinstance(exc, StepFailed):
        step, exc = exc.step, exc.cause
    step = failed_step(exc, step)
    exc = interrupt_behind(exc)
    cause = " ".join(str(exc).split()) or type(exc).__name__
    # medflow's own messages end with their fix, however many columns they name; another library's may run long.
    cause = cause if len(cause) <= 400 or type(exc).__module__.startswith("medflow.") else cause[:400] + "..."
    match exc:
        case ValueError() if getattr(exc, "medflow_fix", None):
            return f"{step}: {cause}", exc.medflow_fix, 2  # a message that knows its own fix
        case KeyboardInterrupt():
            return f"{step} interrupted ({cause})", "run the same command again: finished steps are not repeated", 130
        case NoServer():
            return f"{step}: {cause}", "then run medflow serve again", 2
        case PortBusy():
            return cause, "nothing was started", 2
        case Busy():
            return cause, "wait for it to finish, or pass --wait SECONDS", 1
        case ParamsError():
            return f"{step}: {cause}", "fix the parameter named above in the params file or the -P value", 2
        case TimeoutError():
            return f"{step} timed out: {cause}", "raise flow.timeout_s (flow.train_timeout_s for train) in params", 1
        case ServerUnavailable():
            return (
                cause,
                "start one with `prefect server start` and set PREFECT_API_URL, or raise "
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                1,
            )
        case _ if is_store_error(exc):
            return (
                f"{step}: MLflow store error: {cause}",
                "check MLFLOW_TRACKING_URI and retry; for several concurrent writers use an MLflow server "
                "(docs/team.md)",
                1,
            )
        case ValueError() | KeyError() | FileNotFoundError():
            return f"{step}: {cause}", "fix the input or parameter named above and run again", 2
    return f"{step}: {type(exc).__name__}: {cause}", "see the log for the traceback", 1
