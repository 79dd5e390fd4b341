"""What the task test modules (test_regression, test_survival_task) share: params built from a task's base section
dict with section__key overrides, the table written where those params read it, and the trees registered through
the real executable after an example's first champion."""

from __future__ import annotations

import copy

import pandas as pd
from usercmd import sh

from medflow.params import Params, from_dict
from medflow.paths import Paths


def task_params(base: dict, **over) -> Params:
    """base: params as a dict; over: section__key=value, each replacing that key."""
    raw = copy.deepcopy(base)
    for key, value in over.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return from_dict(raw)


def write_table(paths: Paths, df: pd.DataFrame, name: str) -> None:
    """df as data/<name>.csv of the project, where the task's params read it."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(paths.data_dir / f"{name}.csv", index=False)


def trees_registered(
    clone, example: str, store: str, scored: pd.DataFrame, env: dict[str, str]
) -> tuple[str, pd.DataFrame]:
    """`medflow run --params examples/<example>.yaml -P train.model=xgboost` after the example's v1, then `medflow
    predict` with that v2: its card, and its predictions, checked to have v1's columns (scored) and every row ok.
    env: the session's Prefect server, as for v1."""
    from mlflow import MlflowClient

    done = sh(
        f".venv/bin/medflow run --params examples/{example}.yaml -P train.model=xgboost", clone, timeout=900, **env
    )
    assert done.stdout.strip().splitlines()[-1].startswith(f"registered medflow-{example} v2 ("), done.stdout
    card = MlflowClient(store, registry_uri=store).get_model_version(f"medflow-{example}", "2").description
    sh(f".venv/bin/medflow predict --model models:/medflow-{example}/2 --input data/{example}.csv "
       "--output out/trees.csv", clone)  # fmt: skip
    trees = pd.read_csv(clone / "out/trees.csv")
    assert list(trees.columns) == list(scored.columns) and trees["status"].eq("ok").all()
    assert trees["version"].eq(2).all() and len(trees) == len(scored)
    return card, trees


def trained(paths: Paths, params: Params) -> tuple[dict, dict]:
    """validate, clean, split and train in process: the train summary and the bundle's model.json."""
    import json

    from medflow.pipeline import run_step

    for step in ("validate", "clean", "split", "train"):
        run_step(step, params, paths)
    return json.loads(paths.summary("train").read_text()), json.loads((paths.model_bundle / "model.json").read_text())
