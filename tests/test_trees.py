"""The gradient-boosted-tree wrapper on tables medflow did not make: each objective learns what its task asks."""

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from medflow.models import trees


def thirds(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled train (60%), validation (20%) and test (20%) positions."""
    idx = np.random.default_rng(seed).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return idx[:a], idx[a:b], idx[b:]


def test_regression_on_diabetes_beats_the_training_mean():
    x, y = load_diabetes(return_X_y=True)
    tr, va, te = thirds(len(y))
    booster = trees.fit(x[tr], y[tr], x[va], y[va], "regression", trees.TreeSettings(learning_rate=0.05), seed=0)
    pred = trees.predict(booster, x[te], "regression")
    mean = np.full(len(te), y[tr].mean())
    assert mean_absolute_error(y[te], pred) < 0.85 * mean_absolute_error(y[te], mean)
    assert r2_score(y[te], pred) > 0.3


def test_cox_on_whas500_ranks_who_dies_first():
    import pandas as pd
    from sksurv.datasets import load_whas500
    from sksurv.metrics import concordance_index_censored

    features, outcome = load_whas500()
    x = pd.get_dummies(features, dtype=float).to_numpy()
    time, event = outcome["lenfol"], outcome["fstat"]
    tr, va, te = thirds(len(x))
    label = trees.cox_label(time, event)
    assert (label[event] > 0).all() and (label[~event] < 0).all()
    settings = trees.TreeSettings(learning_rate=0.05)
    booster = trees.fit(x[tr], label[tr], x[va], label[va], "cox", settings, seed=0)
    risk = trees.predict(booster, x[te], "cox")
    assert concordance_index_censored(event[te], time[te], risk)[0] > 0.7


def test_classes_early_stopping_and_the_seed():
    x, y = load_breast_cancer(return_X_y=True)
    tr, va, te = thirds(len(y))
    settings = trees.TreeSettings(n_estimators=500, early_stopping_rounds=10, subsample=0.8, colsample_bytree=0.8)
    booster = trees.fit(x[tr], y[tr], x[va], y[va], "binary", settings, seed=3)
    assert booster.num_boosted_rounds() < 500  # cut at the best validation round
    proba = trees.predict(booster, x[te], "binary")
    assert proba.shape == (len(te), 2) and np.allclose(proba.sum(axis=1), 1)
    assert roc_auc_score(y[te], proba[:, 1]) > 0.97
    again = trees.predict(trees.fit(x[tr], y[tr], x[va], y[va], "binary", settings, seed=3), x[te], "binary")
    other = trees.predict(trees.fit(x[tr], y[tr], x[va], y[va], "binary", settings, seed=4), x[te], "binary")
    assert np.array_equal(proba, again) and not np.array_equal(proba, other)

    x, y = load_iris(return_X_y=True)
    tr, va, te = thirds(len(y))
    booster = trees.fit(x[tr], y[tr], x[va], y[va], "multiclass", trees.TreeSettings(), seed=0, n_classes=3)
    proba = trees.predict(booster, x[te], "multiclass")
    assert proba.shape == (len(te), 3) and (proba.argmax(axis=1) == y[te]).mean() > 0.85


def test_the_saved_model_is_xgboosts_json_and_scores_the_same(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    tr, va, te = thirds(len(y))
    booster = trees.fit(x[tr], y[tr], x[va], y[va], "binary", trees.TreeSettings(), seed=0)
    booster.save_model(tmp_path / "model.json")
    loaded = xgb.Booster(model_file=tmp_path / "model.json")
    assert np.array_equal(trees.predict(loaded, x[te], "binary"), trees.predict(booster, x[te], "binary"))


def test_an_unknown_objective_is_named():
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match="tree objective 'poisson' is not one of binary, multiclass"):
        trees.fit(x, np.zeros(4), x, np.zeros(4), "poisson", trees.TreeSettings(), seed=0)


def test_trees_are_for_tables():
    from medflow.models.tabular import check_kind

    with pytest.raises(ValueError, match=r"^train.model='xgboost' is for tables; image data needs one of \["):
        check_kind("xgboost", "image")


@pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`
def test_xgboost_trains_registers_and_predicts_through_the_pipeline(tmp_path, migrated_mlflow_db, prefect_server):
    import mlflow
    import pandas as pd
    from usercmd import free_port, scratch_clone, sh, stop, user_env, wait_http

    from medflow import tracking
    from medflow.paths import Paths

    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    n_boot = "-P evaluate.n_boot=200 -P register.gate.n_boot=200 -P validate.data_docs=false"
    done = sh(
        f".venv/bin/medflow run -P train.model=xgboost {n_boot}", root, timeout=600, PREFECT_API_URL=prefect_server
    )
    assert "stopped early after epoch" in done.stdout + done.stderr
    assert "registered medflow-breast-cancer v1 (champion: " in done.stdout, done.stdout[-2000:]
    bundle = root / "artifacts/train/model"
    assert (bundle / "trees.json").exists() and not (bundle / "weights.pt").exists()
    assert json.loads((bundle / "model.json").read_text())["name"] == "xgboost"
    card = (root / "artifacts/register/model_card.md").read_text()
    assert "| gradient_boosted_trees |" in card

    sh(
        ".venv/bin/medflow predict --model models:/medflow-breast-cancer@champion --input data/breast_cancer.csv "
        "--output preds.csv",
        root,
    )
    raw = pd.read_csv(root / "data/breast_cancer.csv", dtype=str)
    out = pd.read_csv(root / "preds.csv", keep_default_na=False)
    assert len(out) == len(raw) and set(out["status"]) == {"ok"}
    truth = (raw["diagnosis"] == "malignant").to_numpy()
    assert ((out["label"] == "malignant").to_numpy() == truth).mean() > 0.9

    tracking.configure(Paths(root=root))
    model = mlflow.pyfunc.load_model("models:/medflow-breast-cancer@champion")
    batch = raw.drop(columns=["diagnosis"]).head(5)
    first = batch.columns[-1]
    batch.loc[batch.index[1], first] = "not measured"
    scored = model.predict(batch)
    assert scored["status"].tolist() == ["ok", "refused", "ok", "ok", "ok"]
    assert scored["reason"].iloc[1] == f"{first}: not a number"
    needs = Path(mlflow.pyfunc.get_model_dependencies("models:/medflow-breast-cancer@champion")).read_text()
    assert "xgboost-cpu==" in needs

    # `mlflow models serve` as docs/predict.md starts it, on the tree champion.
    port = free_port()
    env = user_env(root, PATH=f"{root}/.venv/bin:{user_env(root)['PATH']}")
    env |= {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlruns/mlflow.db",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    serve = ["mlflow", "models", "serve", "-m", "models:/medflow-breast-cancer@champion", "--env-manager", "local"]
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*serve, "--port", str(port)],
            cwd=root,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log=log)
        body = batch.to_csv(index=False).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "text/csv"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            rows = json.loads(resp.read().decode())["predictions"]
    finally:
        stop(proc)
    assert [r["status"] for r in rows] == ["ok", "refused", "ok", "ok", "ok"]
    assert [r["proba_malignant"] for r in rows[2:]] == pytest.approx(scored["proba_malignant"].iloc[2:].tolist())


@pytest.mark.e2e
def test_tune_searches_the_tree_space_and_the_next_run_trains_trees_with_its_values(
    tmp_path, migrated_mlflow_db, prefect_server
):
    import yaml
    from usercmd import scratch_clone, sh

    from medflow.params import TuneParams

    root = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    env = {"PREFECT_API_URL": prefect_server}
    done = sh(".venv/bin/medflow tune --trials 20 -P train.model=xgboost", root, **env)  # as docs/trees.md prints it
    out = done.stdout + done.stderr
    assert len(re.findall(r"^.*trial \d+: (val_loss \d|pruned after)", out, flags=re.M)) == 20, out[-3000:]
    written = yaml.safe_load((root / "params.tuned.yaml").read_text())
    assert set(written["train"]) == set(TuneParams().tree_space) and written["study"]["train.model"] == "xgboost"
    n_boot = "-P evaluate.n_boot=200 -P register.gate.n_boot=200 -P validate.data_docs=false"
    done = sh(f".venv/bin/medflow run -P train.model=xgboost -P train.n_estimators=60 {n_boot}", root, **env)
    assert "train: tuned values in effect (params.tuned.yaml): " in done.stdout + done.stderr
    config = json.loads((root / "artifacts/train/model/model.json").read_text())
    assert config["name"] == "xgboost"
    assert {k: config[k] for k in ("max_depth", "subsample")} == {
        "max_depth": written["train"]["max_depth"],
        "subsample": written["train"]["subsample"],
    }


def test_the_cards_environment_names_xgboosts_version(tmp_path):
    from importlib.metadata import version

    from medflow.paths import Paths
    from medflow.steps.register import _environment

    assert _environment(Paths(root=tmp_path))["xgboost"] == version("xgboost-cpu") == xgb.__version__
