"""`medflow migrate-store`: copies a store's experiments, runs and registry onto another (a tracking server), so a
team that moves from the project's SQLite file to a server keeps its history.

Copied: experiments (tags), runs (name, times, status, params, tags, every metric's history, dataset inputs,
artifacts), the logged models that versions point at (their artifacts), registered models (description, tags, the
champion history kept in them), versions in their numbers (description = model card, tags) and aliases. The
audit trail (experiments `medflow-audit/NAME`, medflow.tracking.audit) is experiments and runs: copied with them. Run
ids and model ids are new on the target; tags that name a run keep the old id. A model already on the target is
refused, so a second migration cannot interleave versions.
"""

from __future__ import annotations

import tempfile

PAGE = 1000


def _all(fetch, **kwargs) -> list:
    out, token = [], None
    while True:
        page = fetch(**kwargs, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _copy_run(src, dst, run, experiment_id: str) -> str:
    from mlflow.entities import Metric, Param, RunTag

    info, data = run.info, run.data
    new = dst.create_run(experiment_id, start_time=info.start_time, run_name=info.run_name).info.run_id
    tags = [RunTag(k, v) for k, v in data.tags.items() if k != "mlflow.runName"]
    params = [Param(k, v) for k, v in data.params.items()]
    for i in range(0, max(len(tags), len(params)), 100):  # MLflow takes at most 100 params/tags per batch
        dst.log_batch(new, params=params[i : i + 100], tags=tags[i : i + 100])
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in data.metrics
        for m in src.get_metric_history(info.run_id, key)
    ]
    for i in range(0, len(metrics), PAGE):
        dst.log_batch(new, metrics=metrics[i : i + PAGE])
    if run.inputs and run.inputs.dataset_inputs:
        dst.log_inputs(new, datasets=run.inputs.dataset_inputs)
    if src.list_artifacts(info.run_id):
        with tempfile.TemporaryDirectory() as tmp:
            dst.log_artifacts(new, src.download_artifacts(info.run_id, "", tmp))
    dst.set_terminated(new, info.status, end_time=info.end_time)
    return new


def _copy_logged_model(src_uri: str, dst, model_id: str, experiments: dict[str, str], runs: dict[str, str]) -> str:
    import mlflow
    from mlflow import MlflowClient

    lm = MlflowClient(tracking_uri=src_uri).get_logged_model(model_id)
    new = dst.create_logged_model(
        experiments[lm.experiment_id],
        name=lm.name,
        source_run_id=runs.get(lm.source_run_id),
        tags=lm.tags,
        params=lm.params,
        model_type=lm.model_type,
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=lm.artifact_location, dst_path=tmp)
        dst.log_model_artifacts(new.model_id, local)
    dst.finalize_logged_model(new.model_id, "READY")
    return new.model_id


def migrate(src_uri: str, dst_uri: str) -> dict[str, int]:
    """Copies everything from src_uri to dst_uri (tracking and registry URIs alike); returns what was copied."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    src = MlflowClient(tracking_uri=src_uri, registry_uri=src_uri)
    dst = MlflowClient(tracking_uri=dst_uri, registry_uri=dst_uri)
    models = _all(src.search_registered_models, max_results=100)
    taken = sorted(m.name for m in models if dst.search_registered_models(f"name = '{m.name}'"))
    if taken:
        raise ValueError(
            f"migrate-store: {dst_uri} already has registered model(s) {taken}: migrate into an empty store "
            "(versions keep their numbers only there)"
        )
    experiments, runs = {}, {}
    for exp in _all(src.search_experiments, view_type=ViewType.ALL, max_results=PAGE):
        found = _all(src.search_runs, experiment_ids=[exp.experiment_id], run_view_type=ViewType.ALL, max_results=PAGE)
        if exp.name == "Default" and not found:
            continue
        target = dst.get_experiment_by_name(exp.name)
        experiments[exp.experiment_id] = target.experiment_id if target else dst.create_experiment(exp.name)
        for k, v in exp.tags.items():
            dst.set_experiment_tag(experiments[exp.experiment_id], k, v)
        for run in sorted(found, key=lambda r: r.info.start_time or 0):
            runs[run.info.run_id] = _copy_run(src, dst, run, experiments[exp.experiment_id])
    # A sqlite/postgresql target's registry looks logged models up through the process's tracking URI.
    mlflow.set_tracking_uri(dst_uri)
    versions = aliases = 0
    for model in models:
        dst.create_registered_model(model.name, tags=model.tags, description=model.description)
        found = {int(v.version): v for v in _all(src.search_model_versions, filter_string=f"name = '{model.name}'")}
        logged: dict[str, str] = {}
        for number in range(1, max(found, default=0) + 1):
            v = found.get(number) or found[min(n for n in found if n > number)]  # a deleted number: a placeholder
            source, model_id = v.source, None
            if v.source.startswith("runs:/"):  # MLflow 2 versions: the model lives in the (copied) run
                old_run, _, rest = v.source.removeprefix("runs:/").partition("/")
                source = f"runs:/{runs.get(old_run, old_run)}/{rest}"
            elif v.source.startswith("models:/m-"):
                old = v.source.removeprefix("models:/")
                if old not in logged:
                    logged[old] = _copy_logged_model(src_uri, dst, old, experiments, runs)
                model_id = logged[old]
                source = f"models:/{model_id}"
            made = dst.create_model_version(
                model.name,
                source,
                run_id=runs.get(v.run_id),
                tags=v.tags,
                description=v.description,
                model_id=model_id,
            )
            if number not in found:
                dst.delete_model_version(model.name, made.version)
            else:
                versions += 1
        for alias, number in model.aliases.items():
            dst.set_registered_model_alias(model.name, alias, number)
            aliases += 1
    return {
        "experiments": len(experiments),
        "runs": len(runs),
        "models": len(models),
        "versions": versions,
        "aliases": aliases,
    }
