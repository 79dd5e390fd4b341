"""medflow tune: the search space, the sealed test split, and docs/tuning.md's commands on a scratch clone."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from usercmd import scratch_clone, sh

from medflow.data.columns import LABEL, ROW_ID
from medflow.params import ParamsError, TrainParams, from_dict, load, tuned_file
from medflow.tuning.search import suggest

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

TUNE = ".venv/bin/medflow tune --trials 20"
RUN_TUNED = ".venv/bin/medflow run"
# Small enough for CI: a handful of epochs per trial, few bootstrap resamples in evaluate and register.
FAST = {
    "max_epochs: 200": "max_epochs: 6",
    "patience: 20 ": "patience: 3  ",
    "n_boot: 1000 ": "n_boot: 200  ",
    "data_docs: true ": "data_docs: false",
}


def test_the_space_samples_choices_lists_log_ranges_and_integers():
    params = from_dict(
        {
            "tune": {
                "space": {
                    "hidden": {"choices": [[8], [16, 8]]},
                    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                    "blocks": {"low": 1, "high": 3},
                }
            }
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(12):
        trial = study.ask()
        values = suggest(trial, params.tune.space)
        TrainParams.model_validate({**params.train.model_dump(), **values})  # every sample is a valid train section
        seen.append(values)
        study.tell(trial, 0.0)
    assert {tuple(v["hidden"]) for v in seen} == {(8,), (16, 8)}
    assert all(1e-4 <= v["lr"] <= 1e-1 for v in seen) and min(v["lr"] for v in seen) < 1e-2  # log scale reaches low
    assert {type(v["blocks"]) for v in seen} == {int} and {v["blocks"] for v in seen} <= {1, 2, 3}


@pytest.mark.parametrize(
    "space, message",
    [
        ({"device": {"choices": ["cpu"]}}, "device cannot be searched"),
        ({"lr": {"low": 0.0, "high": 1.0, "log": True}}, "log-scale range needs low > 0"),
        ({"lr": {"choices": [0.1], "low": 0.0}}, "either choices"),
    ],
)
def test_a_bad_space_fails_at_load_naming_the_key(space, message):
    with pytest.raises(ParamsError, match=message):
        from_dict({"tune": {"space": space}})


# What `medflow tune` records of the default pipeline (no data.dvc beside the file: no data version).
STUDY = (
    "study: {name: s, data.kind: tabular, data.source: data/breast_cancer.csv, data.target: diagnosis, "
    "train.model: tabular_mlp, data_version: null}\n"
)


def test_tuned_values_layer_over_train_and_overrides_over_both(tmp_path):
    base = tmp_path / "params.yaml"
    base.write_text("train:\n  lr: 0.001\n  dropout: 0.1\n")
    tuned_file(base).write_text(STUDY + "train:\n  lr: 0.02\n")
    assert load(base).train.lr == 0.02 and load(base).train.dropout == 0.1
    assert load(base, tuned=False).train.lr == 0.001
    assert load(base, ["train.lr=0.5"]).train.lr == 0.5
    tuned_file(base).write_text("train: {}\nsplit:\n  val: 0.3\n")
    with pytest.raises(ParamsError, match="holds only study: and train: sections"):
        load(base)


def test_tuned_values_apply_only_to_their_studys_pipeline_and_data_version(tmp_path):
    from medflow.paths import Paths
    from medflow.tuning.tuned import note

    base = tmp_path / "params.yaml"
    base.write_text("train:\n  lr: 0.001\n")
    tuned_file(base).write_text(STUDY.replace("null}", "abc.dir}") + "train:\n  lr: 0.02\n")
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    paths = Paths(root=tmp_path)
    assert load(base).train.lr == 0.02
    assert note(load(base), paths) == "tuned values in effect (params.tuned.yaml): lr=0.02"
    # Another table, or another model: the study's values do not hold, and the train step says why.
    for override, changed in (("data.source=digits", "data.source=digits"), ("data.kind=image", "data.kind=image")):
        params = load(base, [override])
        assert params.train.lr == 0.001
        assert note(params, paths).startswith(
            f"tuned values of params.tuned.yaml not applied: its study s ran on {changed.split('=')[0]}="
        ) and f"this run has {changed}: run medflow tune for it" in note(params, paths)
    assert load(base, ["train.model=resnet_small"]).train.lr == 0.001
    # Another version of the data (data.dvc records new data under data/).
    (tmp_path / "data.dvc").write_text("outs:\n- md5: def.dir\n  path: data\n")
    assert load(base).train.lr == 0.001 and "data_version=abc.dir" in note(load(base), paths)
    # A tuned file naming no study (hand-written, or from before studies were recorded) is not applied either.
    tuned_file(base).write_text("train:\n  lr: 0.02\n")
    assert load(base).train.lr == 0.001 and "names no study" in note(load(base), paths)


def poison_test_rows(root) -> int:
    """Test rows of the cleaned table become unusable: row ids no manifest holds (a read of the whole table fails the
    split lookup), labels no class has and no feature values (a trial that used one would fail or learn nothing)."""
    cleaned = root / "artifacts/clean/cleaned.parquet"
    df = pd.read_parquet(cleaned)
    manifest = pd.read_csv(root / "artifacts/split/manifest.csv")
    test = df[ROW_ID].isin(manifest.loc[manifest["split"] == "test", "row_id"]).to_numpy()
    features = [c for c in df.columns if c not in (ROW_ID, LABEL) and not c.startswith("_")]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(df[c])]
    df.loc[test, numeric] = np.nan
    df.loc[test, LABEL] = 99
    df.loc[test, ROW_ID] = -1 - np.arange(int(test.sum()))
    df.to_parquet(cleaned, index=False)
    return int(test.sum())


def children(root, parent: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns/mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)


def test_tune_reads_no_test_row_and_the_next_run_trains_with_its_best_values(
    tmp_path, migrated_mlflow_db, prefect_server
):
    root = scratch_clone(tmp_path / "proj", migrated_mlflow_db)
    text = (root / "params.yaml").read_text()
    for old, new in FAST.items():
        assert old in text, old
        text = text.replace(old, new)
    (root / "params.yaml").write_text(text)
    env = {"PREFECT_API_URL": prefect_server, "MEDFLOW_SALT": "tune-test"}
    sh(".venv/bin/medflow data && .venv/bin/dvc repro split", root, **env)
    saved = tmp_path / "saved"
    saved.mkdir()
    for f in ("artifacts/clean/cleaned.parquet", "dvc.lock"):
        shutil.copy(root / f, saved / f.split("/")[-1])
    assert poison_test_rows(root) > 50
    # Recorded as the stage outputs, so that tune's staleness check keeps the poisoned table rather than rebuild it.
    sh(".venv/bin/dvc commit -f clean split", root, **env)

    done = sh(TUNE, root, **env)
    out = done.stdout + done.stderr
    assert "test split not read" in out and "0 trial(s) already finished" in out
    assert len(re.findall(r"^.*trial \d+: (val_loss \d|pruned after)", out, flags=re.M)) == 20, out[-3000:]
    summary = json.loads((root / "artifacts/tune/summary.json").read_text())
    assert summary["trial_runs"] == 20 and sum(summary["trials"].values()) == 20 and summary["trials"]["fail"] == 0
    assert len(children(root, summary["parent_run_id"])) == 20
    assert {p.name for p in (root / "artifacts/tune/plots").iterdir()} == {
        "optimization_history.png",
        "param_importances.png",
    }
    written = yaml.safe_load((root / "params.tuned.yaml").read_text())
    tuned = written["train"]
    assert set(tuned) == {"hidden", "dropout", "lr", "weight_decay", "batch_size", "mixup"}
    assert tuned == summary["best_params"]
    data_version = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    assert written["study"] == {
        "name": summary["study"],
        "data.kind": "tabular",
        "data.source": "data/breast_cancer.csv",
        "data.target": "diagnosis",
        "train.model": "tabular_mlp",
        "data_version": data_version,
    }

    # A trial a SIGKILL cut short: RUNNING in the study's storage, its MLflow run RUNNING.
    from mlflow import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns/mlflow.db'}")
    parent = store.get_run(summary["parent_run_id"])
    killed = store.create_run(parent.info.experiment_id).info.run_id
    cut = optuna.load_study(storage=f"sqlite:///{root / 'artifacts/tune/study.db'}", study_name=summary["study"]).ask()
    cut.set_user_attr("mlflow_run_id", killed)

    # A second call resumes the same study and parent run: only the trials still missing run.
    again = sh(".venv/bin/medflow tune --trials 22", root, **env)
    again = again.stdout + again.stderr
    assert "20 trial(s) already finished, 1 left running by a kill marked failed" in again
    assert store.get_run(killed).info.status == "KILLED"
    assert len(children(root, summary["parent_run_id"])) == 22

    for f in ("cleaned.parquet", "dvc.lock"):
        shutil.copy(saved / f, root / ("artifacts/clean/" + f if f.endswith(".parquet") else f))
    best = json.loads((root / "artifacts/tune/summary.json").read_text())["best_params"]
    done = sh(RUN_TUNED, root, **env)
    out = done.stdout + done.stderr
    assert "train: tuned values in effect (params.tuned.yaml): " in out
    assert "steps to run: train, evaluate, register" in out

    run_id = json.loads((root / "artifacts/train/run.json").read_text())["run_id"]
    logged = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns/mlflow.db'}").get_run(run_id).data.params
    assert float(logged["train.lr"]) == best["lr"] and logged["train.batch_size"] == str(best["batch_size"])
    card = (root / "artifacts/register/model_card.md").read_text()
    assert "Chosen by `medflow tune`" in card and "Δ this model − baseline [95% CI]" in card
    assert re.search(
        r"\| logistic_regression \| [\d.]+ \[[\d.]+, [\d.]+\] \| [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\] \|", card
    )
    # Another table's training (here DVC's train stage with another data.source) is told the values are not its own.
    other = sh(".venv/bin/medflow step train -P data.source=data/another_table.csv", root, **env).stdout
    assert (
        "train: tuned values of params.tuned.yaml not applied: its study "
        f"{summary['study']} ran on data.source=data/breast_cancer.csv; this run has "
        "data.source=data/another_table.csv: run medflow tune for it"
    ) in other, other[-2000:]


def test_a_trial_a_kill_left_running_is_failed_when_the_study_resumes(tmp_path):
    from medflow.tuning.search import _fail_orphans, _finished

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    study.tell(study.ask(), 1.0)
    study.ask()  # started, never told: what a SIGKILL mid-trial leaves in the storage
    resumed = optuna.load_study(storage=url, study_name="s")
    assert _finished(resumed) == 1 and _fail_orphans(resumed) == 1
    states = [t.state for t in optuna.load_study(storage=url, study_name="s").trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_a_run_override_of_a_tuned_key_edits_the_tuned_file_so_that_it_takes_effect(tmp_path):
    from medflow.overrides import write_overrides

    base = tmp_path / "params.yaml"
    base.write_text("train:\n  lr: 0.001  # AdamW\n  dropout: 0.1\n")
    tuned_file(base).write_text("# from a study\n" + STUDY + "train:\n  lr: 0.02\n")
    write_overrides(base, ["train.lr=0.5", "train.dropout=0.3"])
    assert load(base).train.lr == 0.5 and load(base).train.dropout == 0.3
    assert "lr: 0.001  # AdamW" in base.read_text() and "# from a study" in tuned_file(base).read_text()


def test_a_list_set_then_emptied_with_p_leaves_params_yaml_as_it_was_written(tmp_path):
    from ruamel.yaml import YAML
    from usercmd import REPO

    from medflow.overrides import write

    committed = REPO / "params.yaml"
    path = tmp_path / "params.yaml"
    path.write_text(committed.read_text())
    # What a user types: the fix an error printed (a quoted name), then the exclusion taken back.
    for override in ['data.exclude=["Unnamed: 0"]', "data.exclude=[]", "data.exclude=[a, b]", "train.hidden=[8]"]:
        write(path, [override])
        YAML(typ="safe").load(path.read_text())  # raises where an edit broke the file
    lines = path.read_text().splitlines()
    assert [x.split("#")[0].rstrip() for x in lines if x.strip().startswith(("exclude:", "hidden:"))] == [
        "  exclude: [a, b]", "  hidden: [8]", "    hidden: {choices: [[32], [64, 32], [128, 64]]}"
    ]  # fmt: skip
    assert len(lines) == len(committed.read_text().splitlines())  # every comment and blank line kept


def test_tune_refuses_an_override_of_a_section_that_shapes_the_data_before_anything_runs(tmp_path):
    from usercmd import REPO

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    done = sh(f"{REPO}/.venv/bin/medflow tune --trials 2 -P data.max_rows=50", tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert "-P data.max_rows=50: a study takes train.* and tune.* overrides only" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "artifacts/tune").exists()
