"""The study: TPE sampling over tune.space, pruning on the validation metric per epoch, one nested MLflow run per
trial; the best values go to params.tuned.yaml, which `medflow run` layers over params.yaml's train section.

The study lives in its own storage (tune.storage, else artifacts/tune/study.db), never in the MLflow store, under a
name derived from the data split and the parameters that shape a trial: the same command after a kill resumes it
and runs only the trials still missing; changed data or a changed space starts a new study.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from medflow import tracking
from medflow.console import say
from medflow.models import sequence, vision
from medflow.models.tabular import TREE_MODEL, build, check_kind
from medflow.params import Dimension, Params, ParamsError, TrainParams, study_record, tuned_file
from medflow.paths import Paths
from medflow.segmentation.train import check, fit_unet
from medflow.segmentation.train import cpu_threads as unet_threads
from medflow.tasks import for_params, of
from medflow.tracking import study as runs
from medflow.training.loop import FitConfig, fit, pick_device, seed_everything
from medflow.training.settings import LOOP_SETTINGS, balanced_weights, cpu_threads
from medflow.tuning.data import CaseData, TrialData, case_data, trial_data
from medflow.tuning.tuned import short, tune_dir

# Sections whose values change what a trial sees or does; the rest (evaluate, register, flow, ...) do not.
STUDY_SECTIONS = ("seed", "data", "validate", "clean", "split", "train")
REPORTS = 50  # most intermediate values a trial reports to the pruner


def storage_url(params: Params, paths: Paths) -> str:
    return params.tune.storage or f"sqlite:///{tune_dir(paths) / 'study.db'}"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def study_name(params: Params, paths: Paths) -> str:
    raw = params.as_dict()
    shaping = {k: raw[k] for k in STUDY_SECTIONS}
    # unet_space only for a U-Net: the studies of the other models keep the names they had before it existed.
    spaces = ("space", "tree_space", "unet_space") if params.train.model == "unet" else ("space", "tree_space")
    shaping["tune"] = {k: raw["tune"][k] for k in ("metric", "pruner", *spaces)}
    # The manifest holds row ids and splits only: which rows a trial trains and validates on.
    shaping["split_manifest"] = _md5(paths.manifest)
    shaping["schema"] = _md5(paths.schema)
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]
    return f"{params.register.model_name}-{digest}"


def suggest(trial, space: dict[str, Dimension]) -> dict[str, Any]:
    """Values of one trial. Choices that are lists (layer widths) are offered to Optuna as their JSON text, which
    its storage and plots take as they are."""
    values = {}
    for key, dim in space.items():
        if dim.choices is not None:
            texts = [json.dumps(c) for c in dim.choices]
            values[key] = json.loads(trial.suggest_categorical(key, texts))
        elif TrainParams.model_fields[key].annotation is int:
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return values


def with_strides(values: dict[str, Any], train: TrainParams) -> dict[str, Any]:
    """MONAI's U-Net takes one stride fewer than levels: a sampled unet_channels of another depth than
    train.unet_strides brings strides of 2 between its levels, unless unet_strides is sampled too."""
    if "unet_channels" not in values or "unet_strides" in values:
        return values
    depth = len(values["unet_channels"]) - 1
    return values | {"unet_strides": list(train.unet_strides) if len(train.unet_strides) == depth else [2] * depth}


def trial_values(trial, space: dict[str, Dimension], train: TrainParams) -> dict[str, Any]:
    """The train values a trial trains with and params.tuned.yaml holds: the sampled ones, and what they imply."""
    return with_strides(suggest(trial, space), train)


def check_unet_space(params: Params, space: dict[str, Dimension], dims: int) -> None:
    """Every U-Net shape the space may sample, checked against the cases before any trial trains."""
    keys = [k for k in ("unet_channels", "unet_strides", "patch_size") if k in space and space[k].choices]
    for combo in itertools.product(*(space[k].choices for k in keys)):
        values = with_strides(dict(zip(keys, combo, strict=True)), params.train)
        try:
            check(params.train.model_copy(update=values), dims)
        except ValueError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise ParamsError(f"tune.unet_space may sample {shown}: {exc}") from None


def model_config(train: TrainParams, data: TrialData) -> dict:
    schema, n_classes = data.schema, of(data.schema).head_width(data.schema)
    check_kind(train.model, schema.kind)
    if schema.kind == "image":
        h, w, c = schema.image_shape
        return {
            "name": train.model,
            "in_shape": [c, h, w],
            "n_classes": n_classes,
            **vision.options(train.model, train),
        }
    if schema.kind in ("events", "signals"):
        grid = sequence.options(train, data.preprocessor.channels, data.x["train"].shape[1])
        return {"name": train.model, "n_classes": n_classes} | grid
    n_in = len(data.preprocessor.feature_names)
    return {"name": train.model, "n_in": n_in, "n_classes": n_classes, "hidden": train.hidden, "dropout": train.dropout}


def _steps(train: TrainParams) -> int:
    """Most epochs of a trial; boosting rounds for trees."""
    return train.n_estimators if train.model == TREE_MODEL else train.max_epochs


def _pruner(params: Params):
    import optuna

    t = params.tune
    if t.pruner == "median":
        # A few trials run to the end before any is compared; no trial is judged on its first epochs.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(5, _steps(params.train) // 4))
    if t.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=_steps(params.train))
    return optuna.pruners.NopPruner()


class Objective:
    """One trial: train on the train split with the sampled values, report the validation metric each epoch."""

    def __init__(self, params: Params, data: TrialData | CaseData, parent_run: str, device: torch.device):
        self.params, self.data, self.parent, self.device = params, data, parent_run, device

    def __call__(self, trial) -> float:
        import optuna

        p, metric = self.params, self.params.tune.metric
        values = trial_values(trial, p.tune.space_for(p.train.model), p.train)
        try:
            train = TrainParams.model_validate({**p.train.model_dump(), **values})
        except Exception as exc:
            raise ParamsError(f"tune.space gave trial {trial.number} invalid train values: {exc}") from None
        run_id = runs.start_trial_run(self.parent, trial.number, values)
        trial.set_user_attr("mlflow_run_id", run_id)
        seed_everything(p.seed, train.deterministic)
        unet = isinstance(self.data, CaseData)
        best, value = math.inf, math.nan
        # Each report is a write to the study's storage and each pruning check a read: at most ~50 per trial, at the
        # same epochs in every trial, so that the pruner compares like with like.
        every = max(1, _steps(train) // REPORTS)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            nonlocal best, value
            tracking.log_epoch(run_id, row, step=epoch)
            # The value of the epoch training would keep, as the train step keeps it: the lowest validation loss, a
            # U-Net's highest validation Dice.
            score = -row["val_dice"] if unet else row["val_loss"]
            if score < best - 1e-6:
                best, value = score, row[metric]
            if epoch % every == 0:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            if unet:
                result = self._fit_unet(train, on_epoch)
            elif train.model == TREE_MODEL:
                result = self._fit_trees(train, on_epoch)
            else:
                result = self._fit_net(train, on_epoch)
        except optuna.TrialPruned:
            tracking.set_tags(run_id, {"medflow.trial_state": "pruned"})
            tracking.end_run(run_id)
            raise
        except BaseException as exc:
            tracking.end_run(run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
            raise
        tracking.log_metrics(run_id, {metric: value, "best_epoch": result.best_epoch, "epochs": result.epochs_run})
        tracking.set_tags(run_id, {"medflow.trial_state": "complete"})
        tracking.end_run(run_id)
        return value

    def _fit_unet(self, train: TrainParams, on_epoch):
        ids = self.data.ids
        params = self.params.model_copy(update={"train": train})
        paths, dims = self.data.paths, self.data.dims
        return fit_unet(params, paths, self.device, dims, ids["train"], ids["val"], on_epoch, resumable=False)

    def _fit_trees(self, train: TrainParams, on_epoch):
        from medflow.training.trees import fit_trees  # XGBoost is imported only to train trees

        data, task = self.data, of(self.data.schema)
        arrays = ({s: v.numpy() for s, v in data.x.items()}, {s: v.numpy() for s, v in data.y.items()})
        objective = task.tree_objective(train, data.schema)
        n_classes = len(data.schema.classes)
        _, result = fit_trees(*arrays, objective, n_classes, train, self.params.seed, on_epoch, scale=data.scale)
        return result

    def _fit_net(self, train: TrainParams, on_epoch):
        x, y, pre = self.data.x, self.data.y, self.data.preprocessor
        images = self.data.schema.kind == "image"
        task, scale = of(self.data.schema), self.data.scale
        cfg = FitConfig(
            **train.model_dump(include=LOOP_SETTINGS),
            seed=self.params.seed,
            device=str(self.device),
            class_weights=balanced_weights(y["train"].numpy(), len(self.data.schema.classes))
            if train.class_weights == "balanced" and task.has_classes
            else None,
            task=task.name,
            loss=train.loss,
            metric_scale=scale["std"] if scale else 1.0,
            mean=tuple(pre.mean) if images else None,
            std=tuple(pre.std) if images else None,
            checkpoint=None,  # a trial is cheap to redo; a killed study reruns the trial it was in
        )
        model = build(**model_config(train, self.data))
        return fit(model, x["train"], y["train"], x["val"], y["val"], cfg, on_epoch)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _fail_orphans(study) -> int:
    """Trials a killed study left RUNNING (this process holds the project's run lock, so none is alive)."""
    from optuna.trial import TrialState

    orphans = [t for t in study.trials if t.state == TrialState.RUNNING]
    for t in orphans:
        # FrozenTrial keeps its storage id private; the storage API needs it to change a trial's state.
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        if t.user_attrs.get("mlflow_run_id"):
            runs.end_orphaned_run(t.user_attrs["mlflow_run_id"])
    return len(orphans)


def values_of(trial, space: dict[str, Dimension], train: TrainParams) -> dict[str, Any]:
    """A finished trial's train values as params hold them (choices decoded from the JSON text Optuna stores)."""
    import optuna

    return trial_values(optuna.trial.FixedTrial(trial.params), {k: space[k] for k in trial.params}, train)


def _report(trial, metric: str, space: dict[str, Dimension], train: TrainParams) -> str:
    from optuna.trial import TrialState

    shown = ", ".join(f"{k}={short(v)}" for k, v in values_of(trial, space, train).items())
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number}: pruned after epoch {trial.last_step} ({shown})"
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: {metric} {trial.value:.4f} ({shown})"
    return f"trial {trial.number}: {trial.state.name.lower()} ({shown})"


def write_tuned(params_file: Path, best: dict[str, Any], header: list[str], study: dict[str, Any]) -> Path:
    """params.tuned.yaml: the study (what its values hold for: medflow.params.tuned_mismatch) and a train: section
    of the best values, YAML 1.2 as params.yaml is read."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = None
    out = tuned_file(params_file)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as fh:
        fh.write("".join(f"# {line}\n" for line in header))
        yaml.dump({"study": study, "train": best}, fh)
    tmp.replace(out)  # a kill mid-write leaves the previous file whole
    return out


def plots(study, out: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNGs (importances need two finished trials that differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as vis

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("optimization_history", vis.plot_optimization_history),
        ("param_importances", vis.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # matplotlib plots are "experimental" since v2
                ax = draw(study)
        except (ValueError, RuntimeError) as exc:
            say(f"tune: no {name} plot ({exc})")
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{name}.png")
    return written


def run(
    params: Params, paths: Paths, params_file: Path, trials: int | None = None, timeout_s: float | None = None
) -> dict:
    """Runs (or resumes) the study until it holds `trials` finished trials or timeout_s passes; writes the best
    values beside params_file. params: the params file's values without its tuned layer."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = params.tune
    task = for_params(params)
    space = t.space_for(params.train.model)
    trials = trials or t.trials
    timeout_s = timeout_s or t.timeout_s
    if task.name == "segmentation":
        data = case_data(paths)
        check_unet_space(params, space, data.dims)
    else:
        data = trial_data(paths, params.validate_.small_count)
        for model in space["model"].choices if "model" in space else [params.train.model]:
            model_config(params.train.model_copy(update={"model": model}), data)  # a model unfit for the data fails now
    out = tune_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    name = study_name(params, paths)
    study = optuna.create_study(
        storage=storage_url(params, paths),
        study_name=name,
        direction="minimize"
        if t.metric == "val_loss" or not task.higher_is_better(t.metric.removeprefix("val_"))
        else "maximize",
        sampler=optuna.samplers.TPESampler(seed=params.seed),
        pruner=_pruner(params),
        load_if_exists=True,
    )
    tracking.configure(paths)  # before the orphans: their MLflow runs are marked killed
    orphans = _fail_orphans(study)
    done_before = _finished(study)
    parent = runs.start_study_run(params, paths, name, study.user_attrs.get("mlflow_run_id"))
    study.set_user_attr("mlflow_run_id", parent)
    say(
        f"tune: study {name} ({storage_url(params, paths).split(':', 1)[0]} storage), {done_before} trial(s) already "
        f"finished{f', {orphans} left running by a kill marked failed' if orphans else ''}; "
        f"train {data.rows['train']} rows, val {data.rows['val']} rows, test split not read"
    )
    device = pick_device(params.train.device)
    if device.type == "cpu":
        # As the train step: 1 thread for the small MLPs, the cores for conv nets and the U-Net.
        torch.set_num_threads(
            unet_threads(params.train) if isinstance(data, CaseData) else cpu_threads(params.train, 1)
        )
    remaining = max(trials - done_before, 0)
    t0 = time.monotonic()
    try:
        if remaining:
            study.optimize(
                Objective(params, data, parent, device),
                n_trials=remaining,
                timeout=timeout_s,
                callbacks=[lambda s, tr: say(_report(tr, t.metric, space, params.train))],
            )
    except BaseException as exc:
        tracking.end_run(parent, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    seconds = time.monotonic() - t0
    states = [tr.state.name.lower() for tr in study.trials]
    counts = {s: states.count(s) for s in ("complete", "pruned", "fail")}
    if not counts["complete"]:
        tracking.end_run(parent, "FAILED")
        raise ValueError(f"tune: study {name} has no complete trial; raise --trials or tune.timeout_s")
    best = study.best_trial
    best_values = values_of(best, space, params.train)
    header = [
        f"Written by `medflow tune` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: study {name}, best of "
        f"{counts['complete']} complete trial(s) ({counts['pruned']} pruned): trial {best.number}, "
        f"{t.metric} {best.value:.4f} on the validation split.",
        f"Layered over {params_file.name}'s train section wherever it is read (medflow run, medflow step train, "
        "dvc repro);",
        f"replace with `train: {{}}` to train with {params_file.name} alone. They apply only to the data and model",
        "of the study below (the train step says when it ignores them).",
    ]
    record = {"name": name, **study_record(params.as_dict(), params_file)}
    written = write_tuned(params_file, best_values, header, record)
    summary = {
        "study": name,
        "storage": storage_url(params, paths).split(":", 1)[0],
        "metric": t.metric,
        "direction": study.direction.name.lower(),
        "trials": counts,
        "ran_now": remaining,
        "seconds": round(seconds, 1),
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best_values,
        "tuned_file": written.name,
        "parent_run_id": parent,
        "trial_runs": len(runs.child_runs(parent)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tracking.log_metrics(parent, {f"best_{t.metric}": best.value, "best_trial": best.number, **counts})
    tracking.set_tags(parent, {f"medflow.best.{k}": v for k, v in best_values.items()})
    for png in plots(study, out / "plots"):
        tracking.log_artifacts(parent, png, "plots")
    tracking.log_artifacts(parent, out / "summary.json")
    tracking.end_run(parent)
    return summary
