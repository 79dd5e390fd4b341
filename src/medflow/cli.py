"""The `medflow` command: `run` (the Prefect flow), `step NAME` (what dvc.yaml calls), `data`, `ui`, `serve`."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from medflow import params as params_mod
from medflow.paths import STEPS, Paths

# Every tool medflow drives phones home unless told not to; these machines have no internet anyway.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def quiet_tools(paths: Paths) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Prefect's temporary server keeps its database in the project, not in the user's home.
    os.environ.setdefault("PREFECT_HOME", str(paths.root / ".prefect"))


def load_flow(paths: Paths):
    """flows/ lives beside src/ (Prefect deployments name it by file path), so it is loaded by path too."""
    file = paths.root / "flows" / "pipeline.py"
    if not file.exists():
        raise SystemExit(f"{file}: flow file not found; run medflow from the project root or pass --root")
    spec = importlib.util.spec_from_file_location("medflow_flows_pipeline", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_overrides(path: Path, overrides: list[str]) -> None:
    """Edits params.yaml in place, comments kept, as `dvc exp run -S` does, so dvc.lock records what ran."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text()) or {}
    for text in overrides:
        keys, value = params_mod.parse_override(text)
        node = doc
        for k in keys[:-1]:
            if k not in node:
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    with path.open("w") as fh:
        yaml.dump(doc, fh)


def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    params_file = Path(args.params) if args.params else paths.params_file
    # Fail on a bad key before anything is written or started.
    params_mod.load(params_file, args.override)
    if args.override and not args.params:
        write_overrides(paths.params_file, args.override)
    flows = load_flow(paths)
    result = flows.pipeline(
        root=str(paths.root),
        params_file=str(params_file),
        overrides=args.override if args.params else [],
        force=args.force,
    )
    reg = result.get("register")
    if reg:
        state = "champion" if reg["promoted"] else "not promoted"
        print(f"registered {reg['model_name']} v{reg['version']} ({state}: {reg['reason']})")
    return 0


def cmd_step(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.pipeline import run_step

    # No DVC calls here: under `dvc repro` the repository lock is held by the caller.
    params = params_mod.load(Path(args.params) if args.params else paths.params_file, args.override)
    summary = run_step(args.name, params, Paths.for_params(paths.root, args.params))
    print(f"{args.name}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list)))
    return 0


def cmd_data(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.pipeline import ensure_data

    params = params_mod.load(paths.params_file)
    source = ensure_data(params, paths)
    print(f"data ready: {source or params.data.source}")
    return 0


def cmd_ui(args: argparse.Namespace, paths: Paths) -> int:
    from medflow.tracking import tracking_uri

    uri = tracking_uri(paths)
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a tracking server: its UI is at {uri}")
        return 0
    # The experiments' own artifact root, so a run or experiment created from the UI lands beside the pipeline's.
    artifacts = (paths.mlruns / "artifacts").as_uri()
    print(f"MLflow UI on http://{args.host}:{args.port} (store: {uri}, artifacts: {artifacts})", flush=True)
    # One worker and no job runner: ~0.5 GB instead of 15 processes and ~3 GB.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--artifacts-destination"]
    command += [artifacts, "--host", args.host, "--port", str(args.port), "--workers", "1"]
    return subprocess.call(command, env=env)


def cmd_serve(args: argparse.Namespace, paths: Paths) -> int:
    flows = load_flow(paths)
    flows.pipeline.serve(name="medflow-scheduled", cron=args.cron, parameters={"root": str(paths.root)})
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medflow", description=__doc__)
    ap.add_argument("--root", default=".", help="project root (holds params.yaml, dvc.yaml)")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_params(p: argparse.ArgumentParser) -> None:
        p.add_argument("--params", help="params file (default: params.yaml in the root)")
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
    step = sub.add_parser("step", help="run one step (what dvc.yaml calls)")
    step.add_argument("name", choices=STEPS)
    with_params(step)
    sub.add_parser("data", help="materialise the default data and check it against data.dvc")
    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    serve = sub.add_parser("serve", help="run the pipeline on a cron schedule (needs a Prefect server)")
    serve.add_argument("--cron", default="0 2 * * *")
    return ap


COMMANDS = {"run": cmd_run, "step": cmd_step, "data": cmd_data, "ui": cmd_ui, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = Paths(root=Path(args.root))
    quiet_tools(paths)
    try:
        return COMMANDS[args.command](args, paths)
    except (params_mod.ParamsError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"medflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
