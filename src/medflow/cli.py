"""The `medflow` command: `run` (the Prefect flow), `step NAME` (what dvc.yaml calls), `data`, `ui`, `serve`.

This module parses the arguments, sets the environment every command runs in and prints a failure's one line
(medflow.errors says what it is); what each command does is in medflow.commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from medflow import commands, interrupts
from medflow.console import close_prefect_console, log_file, log_to
from medflow.errors import explain
from medflow.paths import STEPS, Paths, find_root

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
    # Without PREFECT_API_URL, Prefect starts its own temporary server for the command; under load it has taken
    # minutes to start, and a run waits for it rather than failing.
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "900",
}


def quiet_tools(paths: Paths) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Prefect's temporary server keeps its database in the project, not in the user's home.
    os.environ.setdefault("PREFECT_HOME", str(paths.root / ".prefect"))


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
    predict.add_argument("--events", help="event models: the events of the stays --input lists (docs/sequences.md)")
    predict.add_argument(
        "--explain", type=int, default=0, metavar="K", help="add each row's K largest contributions (feature, value)"
    )
    external = sub.add_parser(
        "evaluate-external", help="a registered model on another site's labelled table; a report on the version"
    )
    with_params(external)
    external.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    external.add_argument("--data", required=True, help="CSV or Parquet file: the model's features and the label")
    external.add_argument("--name", help="what the table stands for (a site, a period); default: the file's stem")
    monitor = sub.add_parser("monitor", help="drift of a new batch against the champion; a report, data unchanged")
    monitor.add_argument("--batch", default="incoming", help="CSV/Parquet file, or a folder of them (new files)")
    monitor.add_argument("--events", help="event models: the events of the stays --batch lists (docs/sequences.md)")
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
    "run": commands.cmd_run,
    "step": commands.cmd_step,
    "data": commands.cmd_data,
    "ui": commands.cmd_ui,
    "serve": commands.cmd_serve,
    "promote": commands.cmd_promote,
    "rollback": commands.cmd_rollback,
    "accept-files": commands.cmd_accept_files,
    "history": commands.cmd_history,
    "lineage": commands.cmd_lineage,
    "predict": commands.cmd_predict,
    "evaluate-external": commands.cmd_evaluate_external,
    "tune": commands.cmd_tune,
    "monitor": commands.cmd_monitor,
    "migrate-store": commands.cmd_migrate_store,
    "audit": commands.cmd_audit,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # From a subfolder too: logs and artifacts go to the project's root, never into the folder the user is in.
    paths = Paths(root=Path(args.root) if args.root else find_root(Path.cwd()))
    quiet_tools(paths)
    args.log = log = log_file(paths, args.command)
    interrupts.install()
    try:
        code = COMMANDS[args.command](args, paths)
        close_prefect_console()
        return code
    except (Exception, KeyboardInterrupt) as exc:
        close_prefect_console()
        log_to(log)
        logging.getLogger("medflow").error("medflow %s failed", args.command, exc_info=exc)
        what, todo, code = explain(exc)
        # DVC reads the parameters from the file: a -P edit stays after a failed run, which the user should know.
        kept = "".join(f"; {name} keeps the -P values" for name in getattr(args, "kept", {}))
        print(f"medflow {args.command}: error: {what}; {todo}{kept} (log: {log})", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
