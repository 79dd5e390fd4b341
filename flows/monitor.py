"""Monitoring as a Prefect flow: a new batch against the champion's training reference, and the update it calls for.

check: drift per feature, of the scores and (labelled batches) of the primary metric, from the reference's stored
aggregates; the report goes to artifacts/monitor/<UTC time>/, to MLflow on the champion's run (tag `medflow.drift`
on the version) and to Prefect as an artifact. Reporting changes no data. update (opt-in: --update or
monitor.update, when the report says retrain): the labelled batch is written as a new file under data/batches/, DVC
records the new data version, and the training deployment (monitor.deployment) runs; its candidate goes through the
same gate as any other. With no Prefect server, no such deployment or no worker online for its pool, the pipeline
flow runs in this process instead, and the report says so.
Entry points: `medflow monitor`, and the deployment medflow-monitor in prefect.yaml (`flows/monitor.py:monitor`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from medflow import params as params_mod
from medflow import tracking
from medflow.monitoring import batch as batches
from medflow.monitoring import images
from medflow.monitoring import report as reports
from medflow.paths import Paths

log = logging.getLogger(__name__)


def _where(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# Results hold the report's status and counts, never rows.
@task(cache_policy=NO_CACHE, persist_result=False)
def check(root: str, batch: str, events: str | None = None) -> dict:
    """The drift report of the batch's new rows (or of scores `medflow predict` wrote) against its model; events:
    the events of an event model's label rows."""
    from medflow.imaging.network import Segmenter
    from medflow.models.bundle import Predictor
    from medflow.tracking.bundles import download_bundle
    from medflow.tracking.drift import reference_of

    paths = Paths(root=Path(root))
    params = params_mod.load(paths.params_file)
    tracking.configure(paths)
    name = params.register.model_name
    champion = tracking.version_by_alias(name, "champion")
    if champion is None:
        raise ValueError(f"model {name} has no champion to monitor: run `medflow run` first")
    reference = reference_of(name, champion)
    given = paths.source(batch)
    files = batches.pending(given, paths.monitoring / "checked.json")
    if not files:
        return {"status": f"nothing new in {_where(given, paths.root)} since the last check", "files": []}
    rows = batches.read(files, params.data.exclude)
    events_of = batches.read([paths.source(events)], params.data.exclude) if events else None
    if "version" in rows.columns and set(rows.get("model", ())) == {name} and rows["version"].nunique() == 1:
        # Scores `medflow predict` wrote are judged against the reference of the version that wrote them.
        champion = tracking.get_version(name, str(rows["version"].iloc[0]))
        reference = reference_of(name, champion)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = download_bundle(name, champion.version, Path(tmp))
        try:
            if params.data.task == "segmentation":
                # A manifest's image paths are relative to its own folder, as for `medflow predict`.
                report = images.check(rows, files[0].parent, reference, Segmenter(bundle), params)
            else:
                predictor = Predictor(bundle, reference["score"].get("threshold"))
                report = reports.check(rows, reference, predictor, params, events_of)
        except ValueError as exc:
            raise ValueError(f"{', '.join(_where(f, paths.root) for f in files)}: {exc}") from exc
    now = datetime.now(UTC)
    report |= {
        "model": {"name": name, "version": champion.version, "run_id": champion.run_id},
        "batch": _where(given, paths.root),
        "files": [_where(f, paths.root) for f in files],
        "checked_at": now.isoformat(timespec="seconds"),
        "labelled": params.data.target in rows.columns and bool(rows[params.data.target].notna().any()),
    }
    out = reports.write(report, reference, paths.monitoring / now.strftime("%Y%m%dT%H%M%SZ"))
    return {k: report[k] for k in ("status", "retrain_because", "drifted_features", "rows", "labelled", "files")} | {
        "report_dir": str(out),
        "model": report["model"],
    }


def trigger_training(deployment: str, root: str, timeout: float) -> str:
    """Runs the training deployment and waits for it; without a reachable one, the pipeline flow in this process."""
    if not os.environ.get("PREFECT_API_URL"):
        reason = "no Prefect server (PREFECT_API_URL is not set)"
    else:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import WorkerStatus
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                found = client.read_deployment_by_name(deployment)
            except ObjectNotFound:
                found = None
            pool = found.work_pool_name if found else None
            workers = client.read_workers_for_work_pool(pool) if pool else []
        if found is None:
            reason = f"no deployment {deployment} on the Prefect server"
        elif not any(w.status == WorkerStatus.ONLINE for w in workers):
            reason = f"no worker online for work pool {pool or '(none)'} of {deployment}"
        else:
            run = run_deployment(deployment, parameters={"root": root}, timeout=timeout)
            if not run.state or not run.state.is_completed():
                raise RuntimeError(f"training run {run.name} of {deployment} ended {run.state and run.state.name}")
            return f"deployment {deployment} (flow run {run.name})"
    get_run_logger().warning("monitor: %s: training in this process instead", reason)
    if root not in sys.path:
        sys.path.insert(0, root)  # flows/ is a package beside src/
    importlib.import_module("flows.pipeline").pipeline(root=root)
    return f"in-process pipeline run ({reason})"


@task(cache_policy=NO_CACHE, persist_result=False)
def add_and_retrain(root: str, files: list[str]) -> dict:
    """Adds the labelled batch to the training data as a new file, records the data version, retrains, and reads the
    gate's decision."""
    from medflow.lineage import dvc_md5
    from medflow.runlock import run_lock
    from medflow.staleness import ensure_data
    from medflow.tracking.drift import version_numbers

    paths = Paths(root=Path(root))
    params = params_mod.load(paths.params_file)
    tracking.configure(paths)
    name = params.register.model_name
    with run_lock(paths, wait_s=params.flow.timeout_s):
        added = batches.add(
            params.data.source, paths, [paths.source(f) for f in files], params.data.delimiter, params.data.encoding
        )
        ensure_data(params, paths)  # DVC records data/ as a new version (data.dvc)
    batch = _where(added, paths.root)
    data_version = dvc_md5(paths.root / "data.dvc")
    before = set(version_numbers(name))
    how = trigger_training(params.monitor.deployment, str(paths.root), params.flow.train_timeout_s)
    new = sorted(set(version_numbers(name)) - before)
    champion = tracking.version_by_alias(name, "champion")
    out = {"batch": batch, "data_dvc_md5": data_version, "how": how, "champion": champion and champion.version}
    if not new:
        return out | {"summary": f"retrained via {how} on data {data_version}: no new version (nothing was stale)"}
    v = tracking.get_version(name, str(new[-1]))
    gate = v.tags.get("medflow.gate", "no gate decision recorded")
    promoted = champion is not None and champion.version == v.version
    return out | {
        "version": v.version,
        "promoted": promoted,
        "gate": gate,
        "summary": f"labelled batch added as {batch} (data.dvc md5 {data_version}), retrained via {how}: "
        f"v{v.version} {gate}; champion is v{champion.version if champion else 'none'}",
    }


@flow(name="medflow-monitor", log_prints=True, persist_result=False)
def monitor(root: str = ".", batch: str = "incoming", update: bool | None = None, events: str | None = None) -> dict:
    """batch: a CSV/Parquet file, or a folder whose files not checked before make the batch (relative to root).
    update: on drift, add a labelled batch to the training data and retrain; None: monitor.update (false: report).
    events: an event model's events of the batch's label rows (their drift is reported; no update adds them)."""
    import json

    from medflow.tracking.drift import record

    logger = get_run_logger()
    root = str(Path(root).resolve())
    found = check(root, batch, events)
    if not found["files"]:
        logger.info("monitor: %s", found["status"])
        return found
    paths = Paths(root=Path(root))
    params = params_mod.load(paths.params_file)
    out = Path(found["report_dir"])
    report = json.loads((out / "report.json").read_text())
    failure = None
    if found["retrain_because"]:
        if not found["labelled"]:
            report["update"] = {
                "summary": f"drift found; not retrained: the batch has no labels ({params.data.target}); "
                "label it and check it again"
            }
        elif events:
            report["update"] = {
                "summary": "drift found; data/ unchanged, not retrained: add the batch's events and label rows to the "
                "event and label tables, then run `medflow run`"
            }
        elif not (params.monitor.update if update is None else update):
            report["update"] = {
                "summary": "drift found; data/ unchanged, not retrained: to add the labelled batch and retrain, run "
                "`medflow monitor --update` (or set monitor.update: true)"
            }
        else:
            try:
                report["update"] = add_and_retrain(root, found["files"])
            except Exception as exc:  # the drift report is recorded either way; the flow still fails below
                failure = exc
                report["update"] = {"summary": f"retraining failed: {type(exc).__name__}"}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(reports.markdown(report))
    tracking.configure(paths)
    model = report["model"]
    champion = tracking.get_version(model["name"], model["version"])
    artifact = record(model["name"], champion, out, report["status"])
    batches.remember([paths.source(f) for f in found["files"]], paths.monitoring / "checked.json")
    create_markdown_artifact(key="drift-report", markdown=reports.markdown(report), description=report["status"])
    if failure is not None:
        raise failure
    upd = report.get("update", {})
    message = f"{model['name']} v{model['version']}: {report['status']}"
    if upd:
        message += f"\nupdate: {upd['summary']}"
    logger.info("monitor: %s (report: %s, MLflow: %s)", message, _where(out, paths.root), artifact)
    return {
        "status": report["status"],
        "files": found["files"],
        "report_dir": str(out),
        "message": message,
        "update": {k: v for k, v in upd.items() if isinstance(v, str | int | bool | None)},
    }
