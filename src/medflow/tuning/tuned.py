"""Which of `medflow tune`'s values a training actually uses, for its output, its MLflow run and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medflow.params import Params, ParamsError, tuned_file, tuned_mismatch, tuned_values
from medflow.paths import Paths


def ignored(params: Params, paths: Paths) -> str | None:
    """Why the project's params.tuned.yaml values do not apply to params (another table, model or data version than
    their study's), or None. Another params file's pipeline has no known file location here: None for it."""
    if paths.pipeline:
        return None
    return tuned_mismatch(paths.params_file, params.as_dict())


def in_effect(params: Params, paths: Paths) -> dict[str, Any]:
    """The project's params.tuned.yaml values that params (as loaded) hold: all of them unless -P changed some, none
    when they belong to another pipeline or data version (ignored)."""
    if paths.pipeline or ignored(params, paths):
        return {}
    train = params.train.model_dump(mode="json")
    return {k: v for k, v in tuned_values(paths.params_file).items() if train.get(k) == v}


def short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def note(params: Params, paths: Paths) -> str | None:
    """The train step's line on the tuned values: applied (which), or ignored (why)."""
    name = tuned_file(paths.params_file).name
    if why := ignored(params, paths):
        return f"tuned values of {name} not applied: {why}"
    values = in_effect(params, paths)
    if not values:
        return None
    shown = ", ".join(f"{k}={short(v)}" for k, v in values.items())
    return f"tuned values in effect ({name}): {shown}"


def tune_dir(paths: Paths) -> Path:
    return paths.artifacts / "tune"


def study_of(params: Params, paths: Paths) -> dict[str, Any] | None:
    """The study whose best trial this training is: its summary when every tuned value it wrote is in effect."""
    file = tune_dir(paths) / "summary.json"
    if not file.exists():
        return None
    summary = json.loads(file.read_text())
    values = in_effect(params, paths)
    if not values or values != summary.get("best_params"):
        return None
    keys = ("study", "metric", "trials", "best_trial", "best_value", "best_params")
    return {k: summary[k] for k in keys}


def check_overrides(overrides: list[str], params_file: Path) -> None:
    """-P for a study may change train.* (its starting point) and tune.*; other sections shape the data it reads."""
    for text in overrides:
        if not text.split("=", 1)[0].strip().startswith(("train.", "tune.")):
            raise ParamsError(
                f"-P {text}: a study takes train.* and tune.* overrides only; other sections shape the data the "
                f"upstream steps write: edit {params_file.name} or pass --params FILE"
            )
