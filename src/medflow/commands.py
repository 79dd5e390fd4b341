"""What each `medflow` command does, once medflow.cli has parsed its arguments."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from medflow import imports, interrupts, orchestration
from medflow import params as params_mod
from medflow.console import hide_prefect_tracebacks, log_to
from medflow.errors import failed_step
from medflow.interrupts import Interrupted
from medflow.overrides import write_overrides
from medflow.paths import Paths


def load_flow(paths: Paths, log: Path | None = None, steps: list[str] = ()):
    """flows/ is a package beside src/, imported as a real module: Prefect can serve and deploy only those. The
    modules of the steps to run (torch, MLflow, GX) are imported with it, then Prefect's server is reached."""
    file = paths.root / "flows" / "pipeline.py"
    if not file.exists():
        raise FileNotFoundError(f"{file}: flow file not found; run medflow from the project root or pass --root")
    sys.path.insert(0, str(paths.root))
    module, *_ = imports.import_then_freeze(["flows.pipeline", *(f"medflow.steps.{name}" for name in steps)])
    hide_prefect_tracebacks()
    if log:
        log_to(log)
    orchestration.connect()
    return module


def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.runlock import run_lock

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
        flows = load_flow(paths, args.log, todo)
        with orchestration.flow_settings():
            try:
                result = flows.pipeline(
                    root=str(paths.root), params_file=str(params_file), force=args.force, steps=todo
                )
            except KeyboardInterrupt as exc:
                # Outside every step (as Prefect starts or ends the flow) the interrupt is the run's.
                if failed_step(exc, "") == "":
                    exc.medflow_step = "the run"
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
    written = json.loads((paths.root / suite).read_text())
    if written.get("kind") == "image":  # an image suite holds a shape and a label set, no expectations
        what = f"the image shape and {len(written['labels'])} labels inferred from these images"
    else:
        what = f"{len(written['expectations'])} expectations inferred from this table"
    print(
        f"wrote {suite}: {what}, which later runs validate against; review "
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

    imports.import_then_freeze([f"medflow.steps.{args.name}"])
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
    signal.signal(signal.SIGHUP, interrupts.on_signal)
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


def cmd_serve(args: argparse.Namespace, paths: Paths) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect's temporary server lives as long as this process and cannot hold a schedule.
        raise orchestration.NoServer(
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
    register = params_mod.load(paths.params_file).register
    try:
        with tracking.model_lock(args.name):
            previous = tracking.promote(args.name, args.version, args.reason, register.required_card)
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

    if args.explain < 0:
        raise ValueError(f"predict: --explain {args.explain}; rule: K >= 0 contributions per row")
    events = args.events and Path(args.events)
    done = predict_file(args.model, Path(args.input), Path(args.output), events, args.explain)
    print(
        f"{args.output}: {done['rows']} rows scored by {done['model']} v{done['version']}, {done['ok']} ok, "
        f"{done['refused']} refused (reason in the row's `reason` column)"
    )
    return 0


def cmd_evaluate_external(args: argparse.Namespace, paths: Paths) -> int:
    from medflow import tracking
    from medflow.external import evaluate_external

    # --params: the file the model was trained with, whose evaluate, monitor and data settings (n_boot, min_rows,
    # patient_id) then apply; the model's own task picks the metric whatever the file says.
    params = params_mod.load(Path(args.params) if args.params else paths.params_file, args.override)
    tracking.configure(paths)
    data = paths.source(args.data)
    if not data.is_file():
        raise FileNotFoundError(f"evaluate-external: {args.data} not found in {paths.root}: give a CSV/Parquet file")
    try:
        report = evaluate_external(params, paths, args.model, data, args.name)
    except (ValueError, KeyError) as exc:
        exc.medflow_step = "evaluate-external"
        raise
    m, metric = report["model"], report["primary_metric"]
    value = report["metrics"].get(metric)
    shown = f"{metric} {value['value']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}]" if value else metric
    print(
        f"{m['name']} v{m['version']} on {report['label']}: {shown}, {report['evaluated_rows']} rows evaluated, "
        f"{report['refused']} refused; report: {Path(report['report_dir']).relative_to(paths.root)}/report.md, "
        "logged on the version (no alias moved)"
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
    if not paths.source(args.batch).exists():
        error = FileNotFoundError(f"batch {args.batch} not found in {paths.root}: give a CSV/Parquet file or a folder")
        error.medflow_step = "monitor"
        raise error
    if args.events and not paths.source(args.events).is_file():
        error = FileNotFoundError(f"events {args.events} not found in {paths.root}: give a CSV/Parquet file")
        error.medflow_step = "monitor"
        raise error
    sys.path.insert(0, str(paths.root))  # flows/ is a package beside src/
    (module,) = imports.import_then_freeze(["flows.monitor"])
    hide_prefect_tracebacks()
    log_to(args.log)
    orchestration.connect()
    try:
        with orchestration.flow_settings():
            result = module.monitor(root=str(paths.root), batch=args.batch, update=args.update, events=args.events)
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
        raise ValueError(f"no MLflow server answers at {url} ({exc}): start it (docs/team.md)") from exc


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
    from medflow.runlock import run_lock
    from medflow.tuning.tuned import check_overrides, short

    params_file = Path(args.params) if args.params else paths.params_file
    check_overrides(args.override, params_file)
    params_mod.load(params_file, args.override, tuned=False)  # a bad key fails before anything starts
    with run_lock(paths, args.wait):
        load_flow(paths, args.log, ["validate", "clean", "split"])
        (flows,) = imports.import_then_freeze(["flows.tune"])
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
