"""The `medflow` command: `run` (the Prefect flow), `step NAME` (what dvc.yaml calls), `data`, `ui`, `serve`."""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from medflow import imports, orchestration
from medflow import params as params_mod
from medflow.paths import STEPS, Paths, find_root
from medflow.servers import PortBusy
from medflow.sidecar import sidecar

# Every tool medflow drives phones home unless told not to; these machines have no internet anyway.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    # MLflow's INFO lines ("Creating initial MLflow database tables...") land between medflow's own on the terminal;
    # its warnings still show, and every record reaches the log file.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # Under load the temporary server has taken minutes to start; a run waits for it rather than failing.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "900",
}


def quiet_tools(paths: Paths) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Prefect's temporary server keeps its database in the project, not in the user's home.
    os.environ.setdefault("PREFECT_HOME", str(paths.root / ".prefect"))


def load_flow(paths: Paths, log: Path | None = None, trains: bool = True):
    """flows/ is a package beside src/, imported as a real module: Prefect can serve and deploy only those. With
    `trains`, torch's compiler too, which its optimizer imports when it is first built (~1 s)."""
    file = paths.root / "flows" / "pipeline.py"
    if not file.exists():
        raise FileNotFoundError(f"{file}: flow file not found; run medflow from the project root or pass --root")
    sys.path.insert(0, str(paths.root))
    with imports.heavy():
        module = importlib.import_module("flows.pipeline")
        hide_prefect_tracebacks()
        if log:
            log_to(log)
        from medflow import tracking

        modules = [f"medflow.steps.{name}" for name in STEPS] + (["torch._dynamo"] if trains else [])
        chores = [functools.partial(importlib.import_module, name) for name in modules]
        orchestration.server_ready(meanwhile=[*chores, functools.partial(tracking.configure, paths)])
    return module


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised like Ctrl-C so that every step's cleanup (MLflow run status, temporary server) runs."""


def on_signal(signum: int, frame) -> None:
    # The first signal stops the run cleanly; a second one, as a second Ctrl-C, ends the process at once.
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signal.Signals(signum).name)


class OnlyOurErrors(logging.Filter):
    """Keeps Prefect's error records and tracebacks off the terminal; the log file still receives them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return False
        if not record.name.startswith("prefect"):
            return True
        # A failed run's final state repeats the exception that medflow's own one-line message explains.
        return record.levelno < logging.ERROR and "in state Failed" not in str(record.msg)


def stop_temporary_server(wait: bool = True) -> None:
    """Stops the temporary server once the run's last log records reached it; before medflow's own last line, and
    even when the interpreter's exit is cut short."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    orchestration.stop_server(wait)


def hide_prefect_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if hasattr(lg, "handlers")),
    ]
    for handler in {h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}:
        if not any(isinstance(f, OnlyOurErrors) for f in handler.filters):
            handler.addFilter(OnlyOurErrors())


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


def explain(exc: BaseException) -> tuple[str, str, int]:
    """(what failed, what to do, exit code): 2 for bad input or params, 1 otherwise."""
    from medflow.pipeline import Busy, StepFailed

    step = "setup"
    if isinstance(exc, StepFailed):
        step, exc = exc.step, exc.cause
    # Prefect turns SIGTERM inside a flow into its own TerminationSignal, which the flow names, then re-sends the
    # signal once the flow has ended: the step's name is on an exception earlier in the chain.
    seen = exc
    while seen is not None and not hasattr(seen, "medflow_step"):
        seen = seen.__context__
    step = getattr(seen, "medflow_step", step)
    cause = " ".join(str(exc).split()) or type(exc).__name__
    kind = f"{type(exc).__module__}.{type(exc).__name__}"
    # medflow's own messages end with their fix, however many columns they name; another library's may run long.
    cause = cause if len(cause) <= 400 or kind.startswith("medflow.") else cause[:400] + "..."
    if isinstance(exc, ValueError) and getattr(exc, "medflow_fix", None):
        return f"{step}: {cause}", exc.medflow_fix, 2  # a message that knows its own fix
    if isinstance(exc, KeyboardInterrupt):
        return f"{step} interrupted ({cause})", "run the same command again: finished steps are not repeated", 130
    if isinstance(exc, NoServer):
        return f"{step}: {cause}", "then run medflow serve again", 2
    if isinstance(exc, PortBusy):
        return cause, "nothing was started", 2
    if isinstance(exc, Busy):
        return cause, "wait for it to finish, or pass --wait SECONDS", 1
    if isinstance(exc, params_mod.ParamsError):
        return f"{step}: {cause}", "fix the parameter named above in the params file or the -P value", 2
    if isinstance(exc, TimeoutError):
        return f"{step} timed out: {cause}", "raise flow.timeout_s (flow.train_timeout_s for train) in params", 1
    if "ephemeral Prefect API server" in cause:
        return (
            "Prefect's temporary server did not start in time",
            "start one with `prefect server start` and set PREFECT_API_URL, or raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
            1,
        )
    if kind.startswith(("mlflow.", "sqlite3.", "sqlalchemy.")) or "database is locked" in cause:
        return (
            f"{step}: MLflow store error: {cause}",
            "check MLFLOW_TRACKING_URI and retry; for several concurrent writers use an MLflow server "
            "(README: Scaling out)",
            1,
        )
    if isinstance(exc, ValueError | KeyError | FileNotFoundError):
        return f"{step}: {cause}", "fix the input or parameter named above and run again", 2
    return f"{step}: {type(exc).__name__}: {cause}", "see the log for the traceback", 1


def write_overrides(path: Path, overrides: list[str]) -> dict[str, list[str]]:
    """Edits the params file the run reads, only the lines of the keys named, as `dvc exp run -S` edits params.yaml,
    so the file (and dvc.lock, for params.yaml) records what ran. A train.* key that the tuned file sets is edited
    there instead, when its values apply: they are layered over the params file's. Returns file name -> keys."""
    from medflow import overrides as overrides_mod

    # Only where they apply: the tuned values of another table's study are ignored, and so would be an edit there.
    wanted = params_mod.apply_overrides(params_mod.read_yaml(path.read_text()) or {}, overrides)
    tuned = set(params_mod.tuned_values(path)) if params_mod.tuned_mismatch(path, wanted) is None else set()

    def in_tuned(text: str) -> bool:
        keys, _ = params_mod.parse_override(text)
        return len(keys) == 2 and keys[0] == "train" and keys[1] in tuned

    written = {}
    for file, texts in (
        (path, [o for o in overrides if not in_tuned(o)]),
        (params_mod.tuned_file(path), [o for o in overrides if in_tuned(o)]),
    ):
        if texts:
            overrides_mod.write(file, texts)
            written[file.name] = [t.partition("=")[0].strip() for t in texts]
    return written


def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.pipeline import run_lock

    params_file = Path(args.params) if args.params else paths.params_file
    # Fail on a bad key before anything is written or started.
    params_mod.load(params_file, args.override)
    # Before anything is written (params.yaml included) and before Prefect's server starts.
    with run_lock(paths, args.wait):
        args.kept = write_overrides(params_file, args.override)  # named again in the stop line, if the run stops
        for name, keys in args.kept.items():
            print(f"{name}: -P set {', '.join(keys)} (kept in the file, whatever the run does: git diff {name})")
        # DVC is asked once, here: with nothing stale, Prefect, torch, GX and MLflow are never started or imported.
        # Another params file is no record of the pipeline: every step runs.
        recorded = not args.params or Path(args.params).resolve() == paths.params_file.resolve()
        todo = stale(paths, params_file, [], force=args.force or not recorded)
        if not todo:
            return 0
        orchestration.start_server(Path(os.environ["PREFECT_HOME"]))
        # Started with the server: niced, it imports while the server's start leaves a core free.
        with sidecar.started():
            flows = load_flow(paths, args.log, trains="train" in todo)
            with orchestration.flow_settings():
                try:
                    result = flows.pipeline(
                        root=str(paths.root), params_file=str(params_file), force=args.force, steps=todo
                    )
                except BaseException as exc:
                    # Between steps or after the last (its DVC record, the flow's end) the interrupt is no step's.
                    if not isinstance(exc, Exception) and flows.finished and not hasattr(exc, "medflow_step"):
                        exc.medflow_step = f"the run, after {flows.finished[-1]} finished,"
                    raise
    wrote_suite(paths, result.get("validate"))
    for col, why in (result.get("clean") or {}).get("not_features", {}).items():
        print(f"not a feature: {col!r} ({why})")
    reg = result.get("register")
    if reg:
        state = "champion" if reg["promoted"] else "not promoted"
        print(f"registered {reg['model_name']} v{reg['version']} ({state}: {reg['reason']})")
    return 0


def wrote_suite(paths: Paths, validate: dict | None) -> None:
    """A first run's inferred suite is the user's to review and commit (README: Bring your own table): say so."""
    if not validate or not validate.get("suite_created"):
        return
    suite = validate["suite"]
    count = len(json.loads((paths.root / suite).read_text())["expectations"])
    print(
        f"wrote {suite}: {count} expectations inferred from this table, which later runs validate against; review "
        f"them (less {suite}), edit ranges or category sets, and commit the file (git add {suite})"
    )


def stale(paths: Paths, params_file: Path, overrides: list[str], force: bool) -> list[str]:
    """The steps DVC finds stale; with none, says so, naming the model the last run registered."""
    from medflow.staleness import plan

    todo = plan(params_mod.load(params_file, overrides), paths, force)
    if todo:
        return todo
    print("nothing to do: every step is up to date (dvc status is clean); use --force to rerun")
    summary = paths.summary("register")
    if summary.exists():
        reg = json.loads(summary.read_text())
        state = "champion" if reg.get("promoted") else "not promoted"
        print(f"the last run's model: {reg['model_name']} v{reg['version']} ({state})")
        if not os.environ.get("MLFLOW_TRACKING_URI") and not paths.mlflow_db.exists():
            # A clone brings the code, and `dvc pull` the data and artifacts; the MLflow store is neither.
            print(
                f"no MLflow store in this clone ({paths.mlflow_db.relative_to(paths.root)}): set MLFLOW_TRACKING_URI "
                "to the team's tracking server, or copy the store there with `medflow migrate-store --to URL`"
            )
    return []


def cmd_step(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.pipeline import run_step

    # No DVC calls here: under `dvc repro` the repository lock is held by the caller.
    params = params_mod.load(Path(args.params) if args.params else paths.params_file, args.override)
    try:
        summary = run_step(args.name, params, Paths.for_params(paths.root, args.params))
    except Exception as exc:
        exc.medflow_step = args.name  # the one-line error names the step, as `medflow run`'s does
        raise
    print(f"{args.name}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list)))
    return 0


def cmd_data(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.staleness import ensure_data

    params = params_mod.load(paths.params_file)
    ensure_data(params, paths)
    print(f"data ready: {params.data.source}")
    return 0


# MLflow 3's UI opens on its GenAI view (traces, token usage) unless the URL asks for the model-training one; its
# links keep the query, so the registry and the runs stay one click away.
UI_VIEW = "#/experiments?workflowType=machine_learning"


def cmd_ui(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.servers import WebServer, check_port, url_host
    from medflow.tracking import tracking_uri

    uri = tracking_uri(paths)
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a tracking server: its UI is at {uri.rstrip('/')}/{UI_VIEW}")
        return 0
    check_port(args.host, args.port)
    # The experiments' own artifact root, so a run or experiment created from the UI lands beside the pipeline's.
    artifacts = (paths.mlruns / "artifacts").as_uri()
    # One worker and no job runner: ~0.5 GB instead of 15 processes and ~3 GB.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--artifacts-destination"]
    command += [artifacts, "--host", args.host, "--port", str(args.port), "--workers", "1"]
    base = f"http://{url_host(args.host)}:{args.port}"
    # A closed terminal ends the command, and with it the server, as Ctrl-C and SIGTERM do.
    signal.signal(signal.SIGHUP, on_signal)
    server = WebServer(command, env, args.log.with_name(args.log.stem + "-server.log"))
    try:
        server.wait_until_answers(f"{base}/health", timeout=300)
        print(f"MLflow UI on {base}/{UI_VIEW} (store: {uri}; server log: {server.log}); Ctrl-C stops it", flush=True)
        code = server.process.wait()
    except Interrupted as stopped:
        code = None
        why = str(stopped)
    except RuntimeError as exc:
        exc.medflow_step = "ui"  # explain() names the step; there is no pipeline step here
        raise
    finally:
        server.stop()
    if code is None:
        print(f"MLflow UI stopped ({why}); port {args.port} is free")
        return 0
    error = RuntimeError(f"the MLflow server exited with code {code}: {server.last_words()} (log: {server.log})")
    error.medflow_step = "ui"
    raise error


class NoServer(RuntimeError):
    pass


def cmd_serve(args: argparse.Namespace, paths: Paths) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect's temporary server lives as long as this process and cannot hold a schedule.
        raise NoServer(
            "no Prefect server: start one (`prefect server start`) and set PREFECT_API_URL, "
            "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    flows = load_flow(paths, args.log)
    # The served flow's runs import flows.pipeline from the working directory.
    os.chdir(paths.root)
    flows.pipeline.serve(name=args.name, cron=args.cron, parameters={"root": str(paths.root)})
    return 0


def cmd_promote(args: argparse.Namespace, paths: Paths) -> int:
    from medflow import tracking

    tracking.configure(paths)
    try:
        with tracking.model_lock(args.name):
            previous = tracking.promote(args.name, args.version, args.reason)
    except ValueError as exc:
        exc.medflow_step = "promote"  # explain() names the step; there is no pipeline step here
        raise
    was = f"v{previous.version}" if previous else "none"
    print(f"{args.name} v{args.version} is now champion (was {was}); who, when and why are in the version's tags")
    return 0


def registry_command(step: str):
    """Runs a registry command with its errors named after it, as explain() names a pipeline step."""

    def wrap(fn):
        def run(args: argparse.Namespace, paths: Paths) -> int:
            from medflow import tracking

            tracking.configure(paths)
            try:
                return fn(args, tracking)
            except (ValueError, KeyError) as exc:
                exc.medflow_step = step
                raise

        return run

    return wrap


@registry_command("rollback")
def cmd_rollback(args: argparse.Namespace, tracking) -> int:
    with tracking.model_lock(args.name):
        was, now = tracking.rollback(args.name, args.reason)
    print(f"{args.name} champion rolled back from v{was} to v{now}; see: medflow history {args.name}")
    return 0


@registry_command("accept-files")
def cmd_accept_files(args: argparse.Namespace, tracking) -> int:
    digest = tracking.accept_files(args.name, args.version, args.reason)
    print(
        f"{args.name} v{args.version}: its files as they are now are accepted (sha256 {digest[:16]}...); "
        "who, when and why are in the version's tags"
    )
    return 0


@registry_command("history")
def cmd_history(args: argparse.Namespace, tracking) -> int:
    moves = tracking.history(args.name)
    if not moves:
        print(f"{args.name}: no champion moves recorded")
    for m in moves:
        was = f"v{m['from']}" if m["from"] else "none"
        report = f" (report: {m['report']})" if m.get("report") else ""
        print(f"{m['n']:>3} {m['at']} {m['how']:<8} {was} -> v{m['to']} by {m['who']}: {m['reason']}{report}")
    return 0


LINEAGE = {
    "data version (DVC)": "medflow.data_dvc_md5",
    "data file md5": "medflow.data_md5",
    "data batches": "medflow.data_batches",
    "code commit": "medflow.git_commit",
    "params hash": "medflow.params_hash",
    "Prefect flow run": "medflow.flow_run_id",
}


@registry_command("lineage")
def cmd_lineage(args: argparse.Namespace, tracking) -> int:
    name, v = tracking.resolve(args.model)
    print(f"{name} v{v.version}")
    for label, tag in LINEAGE.items():
        print(f"  {label + ':':<20} {v.tags.get(tag, 'unknown')}")
    print(f"  {'MLflow run:':<20} {v.run_id or 'unknown'}")
    return 0


@registry_command("predict")
def cmd_predict(args: argparse.Namespace, tracking) -> int:
    from medflow.predict import predict_file

    done = predict_file(args.model, Path(args.input), Path(args.output))
    print(
        f"{args.output}: {done['rows']} rows scored by {done['model']} v{done['version']}, {done['ok']} ok, "
        f"{done['refused']} refused (reason in the row's `reason` column)"
    )
    return 0


@registry_command("audit")
def cmd_audit(args: argparse.Namespace, tracking) -> int:
    """verify: exit 1 naming the first broken record; show: one model's records; export: JSON lines of every chain."""
    import json

    from medflow.audit import ChainBroken

    if args.action == "verify":
        names = [args.name] if args.name else tracking.audit.chains()
        if not names:
            print("no audit trail in this store: medflow starts one with a model's first registration")
        for name in names:
            try:
                n = tracking.audit.verify(name)
            except ChainBroken as exc:
                print(f"medflow audit: error: verify: {exc}; {exc.medflow_fix}", file=sys.stderr)
                return 1
            print(f"{name}: {n} audit records, chain intact")
        return 0
    if args.action == "show":
        for r in tracking.audit.records(args.name):
            b = r.body
            if args.version and b["resource"] != f"models:/{args.name}/{args.version}":
                continue
            run = f" run {b['run_id']}" if b["run_id"] else ""
            change = f"{json.dumps(b['before'])} -> {json.dumps(b['after'])}"
            print(f"{b['seq']:>5} {b['at']} {b['who']} {b['action']} {b['resource']}: {change}{run} [{r.hash[:12]}]")
        return 0
    lines = 0
    with open(args.to, "w", encoding="utf-8") as out:
        for name in [args.name] if args.name else tracking.audit.chains():
            for r in tracking.audit.records(name):
                out.write(json.dumps(r.line(), sort_keys=True, ensure_ascii=False) + "\n")
                lines += 1
    print(f"{args.to}: {lines} audit records as JSON lines")
    return 0


def cmd_monitor(args: argparse.Namespace, paths: Paths) -> int:
    # Before Prefect starts: a mistyped batch path is a one-line error in a second, not after a server start-up.
    params_mod.load(paths.params_file)
    if not paths.source(args.batch).exists():
        error = FileNotFoundError(f"batch {args.batch} not found in {paths.root}: give a CSV/Parquet file or a folder")
        error.medflow_step = "monitor"
        raise error
    orchestration.start_server(Path(os.environ["PREFECT_HOME"]))
    sys.path.insert(0, str(paths.root))  # flows/ is a package beside src/
    with imports.heavy():
        module = importlib.import_module("flows.monitor")
        hide_prefect_tracebacks()
        log_to(args.log)
        orchestration.server_ready()
    try:
        with orchestration.flow_settings():
            result = module.monitor(root=str(paths.root), batch=args.batch, update=args.update)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        exc.medflow_step = "monitor"
        raise
    print(result.get("message") or result["status"])
    if result.get("report_dir"):
        print(f"report: {Path(result['report_dir']).relative_to(paths.root)}/report.md")
    return 0


def server_answers(url: str) -> None:
    """MLflow's client retries an unreachable server for minutes; one look says at once whether it is up."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10):
            pass
    except OSError as exc:
        raise ValueError(f"no MLflow server answers at {url} ({exc}): start it (README: Scaling out)") from exc


def cmd_migrate_store(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.tracking.migrate import migrate

    source = args.source or f"sqlite:///{paths.mlflow_db}"
    if source.startswith("sqlite:///") and not Path(source.removeprefix("sqlite:///")).exists():
        raise FileNotFoundError(f"migrate-store: no MLflow store at {source.removeprefix('sqlite:///')}")
    try:
        if args.to.startswith(("http://", "https://")):
            server_answers(args.to)
        done = migrate(source, args.to)
    except ValueError as exc:
        exc.medflow_step = "migrate-store"
        raise
    print(f"copied to {args.to}: " + ", ".join(f"{n} {what}" for what, n in done.items()))
    return 0


def cmd_tune(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.pipeline import run_lock
    from medflow.tuning.tuned import check_overrides, short

    params_file = Path(args.params) if args.params else paths.params_file
    check_overrides(args.override, params_file)
    params_mod.load(params_file, args.override, tuned=False)  # a bad key fails before anything starts
    with run_lock(paths, args.wait):
        orchestration.start_server(Path(os.environ["PREFECT_HOME"]))
        load_flow(paths, args.log)
        flows = importlib.import_module("flows.tune")
        with orchestration.flow_settings():
            s = flows.tune(
                root=str(paths.root),
                params_file=args.params,
                overrides=args.override,
                trials=args.trials,
                timeout_s=args.timeout,
            )
    values = ", ".join(f"{k}={short(v)}" for k, v in s["best_params"].items())
    print(
        f"best of study {s['study']}: trial {s['best_trial']}, {s['metric']} {s['best_value']:.4f} "
        f"({s['trials']['complete']} complete, {s['trials']['pruned']} pruned); {s['tuned_file']}: {values}; "
        "the next `medflow run` trains with these values"
    )
    return 0


def params_path(text: str) -> str:
    """A pipe (`--params <(...)`) reads empty the second time: the run's later steps would take the defaults."""
    if os.path.exists(text) and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file, and every step reads it again: save it to one")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medflow", description=__doc__)
    ap.add_argument("--root", help="project root (holds params.yaml, dvc.yaml); default: the one holding this folder")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_params(p: argparse.ArgumentParser) -> None:
        p.add_argument("--params", type=params_path, help="params file (default: params.yaml in the root)")
        p.add_argument(
            "-P",
            dest="override",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a parameter; the value is read as YAML, e.g. -P 'data.identifiers=[name, mrn]'",
        )

    run = sub.add_parser("run", help="run the whole pipeline as a Prefect flow")
    with_params(run)
    run.add_argument("--force", action="store_true", help="rerun every step, even those DVC reports unchanged")
    run.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for another run in the project"
    )
    step = sub.add_parser("step", help="run one step (what dvc.yaml calls)")
    step.add_argument("name", choices=STEPS)
    with_params(step)
    sub.add_parser("data", help="materialise the default data and check it against data.dvc")
    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    serve = sub.add_parser("serve", help="run the pipeline on a cron schedule (needs a Prefect server)")
    serve.add_argument("--cron", default="0 2 * * *", help="schedule, in cron syntax (UTC)")
    serve.add_argument("--name", default="medflow-scheduled", help="deployment name")
    promote = sub.add_parser("promote", help="move the `champion` alias to a registered version, by hand")
    promote.add_argument("name", help="registered model name (register.model_name)")
    promote.add_argument("version", help="version number to make champion")
    promote.add_argument("--reason", required=True, help="why: recorded on the version with who and when")
    rollback = sub.add_parser("rollback", help="put `champion` back on the version it replaced")
    rollback.add_argument("name", help="registered model name")
    rollback.add_argument("--reason", default="", help="why: recorded in the model's history")
    accept = sub.add_parser("accept-files", help="accept the files of a version registered without their digest")
    accept.add_argument("name", help="registered model name")
    accept.add_argument("version", help="version number")
    accept.add_argument("--reason", required=True, help="what review found: recorded on the version with who and when")
    history = sub.add_parser("history", help="every move of `champion`: when, from, to, how, who, why")
    history.add_argument("name", help="registered model name")
    lineage = sub.add_parser("lineage", help="data version, code commit, params hash and runs behind a model")
    lineage.add_argument("model", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    predict = sub.add_parser("predict", help="score a CSV/Parquet batch; one output row per input row, with status")
    predict.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    predict.add_argument("--input", required=True, help="CSV or Parquet file with the model's feature columns")
    predict.add_argument("--output", required=True, help="CSV or Parquet file to write (nothing when refused)")
    monitor = sub.add_parser("monitor", help="drift of a new batch against the champion; a report, data unchanged")
    monitor.add_argument("--batch", default="incoming", help="CSV/Parquet file, or a folder of them (new files)")
    monitor.add_argument(
        "--update",
        action=argparse.BooleanOptionalAction,
        help="on drift, add the labelled batch to data/ as a new file (DVC records it) and retrain (monitor.update)",
    )
    migrate = sub.add_parser("migrate-store", help="copy the local MLflow store (runs, registry) to a server")
    migrate.add_argument("--to", required=True, help="target tracking URI, e.g. http://mlflow.internal:5000")
    migrate.add_argument("--from", dest="source", help="source tracking URI (default: the project's mlruns/mlflow.db)")
    audit = sub.add_parser("audit", help="the registry's audit trail: verify its hash chain, show, export")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check that no record was edited or removed (exit 1 if one was)")
    verify.add_argument("name", nargs="?", help="registered model (default: every model's trail)")
    show = audit_sub.add_parser("show", help="a model's audit records, oldest first")
    show.add_argument("name", help="registered model name")
    show.add_argument("--version", help="only the records of this version")
    export = audit_sub.add_parser("export", help="write the records as JSON lines, for a hospital's log system")
    export.add_argument("--to", required=True, help="the .jsonl file to write")
    export.add_argument("name", nargs="?", help="registered model (default: every model's trail)")
    tune = sub.add_parser("tune", help="search train.* with Optuna on the train/val splits; writes params.tuned.yaml")
    with_params(tune)
    tune.add_argument("--trials", type=int, metavar="N", help="finished trials the study should hold (tune.trials)")
    tune.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds (tune.timeout_s)")
    tune.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for another run in the project"
    )
    return ap


COMMANDS = {
    "run": cmd_run,
    "step": cmd_step,
    "data": cmd_data,
    "ui": cmd_ui,
    "serve": cmd_serve,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "accept-files": cmd_accept_files,
    "history": cmd_history,
    "lineage": cmd_lineage,
    "predict": cmd_predict,
    "tune": cmd_tune,
    "monitor": cmd_monitor,
    "migrate-store": cmd_migrate_store,
    "audit": cmd_audit,
}


def main(argv: list[str] | None = None) -> int:
    code = command(argv)
    if argv is None:  # the `medflow` executable, not a caller in the same process
        # Freeing torch's, MLflow's, Prefect's and GX's module state at interpreter teardown takes ~1.6 s that the
        # OS does at once; atexit handlers still run (temporary folders, log files).
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # From a subfolder too: logs and artifacts go to the project's root, never into the folder the user is in.
    paths = Paths(root=Path(args.root) if args.root else find_root(Path.cwd()))
    quiet_tools(paths)
    args.log = log = log_file(paths, args.command)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = COMMANDS[args.command](args, paths)
        # The executable exits next: the server needs no one to wait for its shutdown.
        stop_temporary_server(wait=argv is not None)
        return code
    except (Exception, KeyboardInterrupt) as exc:
        log_to(log)
        logging.getLogger("medflow").error("medflow %s failed", args.command, exc_info=exc)
        stop_temporary_server()
        what, todo, code = explain(exc)
        # DVC reads the parameters from the file: a -P edit stays after a failed run, which the user should know.
        kept = "".join(f"; {name} keeps the -P values" for name in getattr(args, "kept", {}))
        print(f"medflow {args.command}: error: {what}; {todo}{kept} (log: {log})", file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            # A task Prefect ran in a thread of its own (its timeout watcher) would keep the interpreter alive.
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(code)
        return code


if __name__ == "__main__":
    sys.exit(main())
