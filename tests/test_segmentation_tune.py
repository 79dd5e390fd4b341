"""`medflow tune` of a U-Net on shrunk 2D phantoms (8 cases of 32x32), 2 trials of 2 epochs: each trial's value is
the validation Dice of the epoch the train step would keep, the best U-Net shape goes to params.tuned.yaml, and the
next train step trains with it."""

import json

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from medflow.imaging.phantoms import write_phantoms
from medflow.params import ParamsError, from_dict
from medflow.params import load as load_params
from medflow.pipeline import run_step
from medflow.tuning import search

# Depths 2 and 3 from a base of 4 levels: each trial brings strides of its own depth.
SPACE = {
    "unet_channels": {"choices": [[8, 16], [8, 16, 32]]},
    "lr": {"low": 0.003, "high": 0.03, "log": True},
    "batch_size": {"choices": [4, 8]},
    "patch_size": {"choices": [[16, 16], [32, 32]]},
}


def _params(**tune) -> dict:
    data = {"kind": "image", "task": "segmentation", "source": "data/ph/manifest.csv", "image_column": "image",
            "mask_column": "mask", "target": "mask", "patient_id": "patient"}  # fmt: skip
    train = {"model": "unet", "unet_channels": [8, 16, 32, 64], "unet_strides": [2, 2, 2], "unet_res_units": 0,
             "patch_size": [32, 32], "patches_per_case": 2, "max_epochs": 2}  # fmt: skip
    return {"data": data, "split": {"val": 0.25, "test": 0.25}, "train": train, "evaluate": {"n_boot": 100},
            "tune": {"metric": "val_dice", "trials": 2, "unet_space": SPACE, **tune},
            "register": {"model_name": "seg-tune"}}  # fmt: skip


def test_tune_searches_the_unet_on_val_dice_and_the_next_train_uses_its_best_shape(project, salted):
    write_phantoms(project.data_dir / "ph", 2, 8, 32, seed=4)
    project.params_file.write_text(yaml.safe_dump(_params()))
    params = load_params(project.params_file, tuned=False)
    for step in ("validate", "clean", "split"):
        run_step(step, params, project)
    summary = search.run(params, project, project.params_file)

    assert (summary["metric"], summary["direction"], summary["trials"]["complete"]) == ("val_dice", "maximize", 2)
    study = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{project.artifacts}/tune/study.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{project.mlflow_db}")
    patients = set(pd.read_csv(project.data_dir / "ph/manifest.csv")["patient"])
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        dice = [m.value for m in client.get_metric_history(run.info.run_id, "val_dice") if m.step > 0]
        assert len(dice) == 2 and trial.value == max(dice)  # the kept epoch's Dice, not its loss
        logged = json.dumps([run.data.params, run.data.tags, list(run.data.metrics)])
        assert not any(p in logged for p in patients)  # values and scores only, never a patient's id
        channels, strides = json.loads(trial.params["unet_channels"]), run.data.params["train.unet_strides"]
        assert json.loads(strides) == [2] * (len(channels) - 1)
    assert summary["best_value"] == max(t.value for t in study.trials)

    tuned = yaml.safe_load((project.root / "params.tuned.yaml").read_text())
    assert tuned["study"]["train.model"] == "unet" and tuned["train"] == summary["best_params"]
    assert set(tuned["train"]) == {*SPACE, "unet_strides"}
    trained = run_step("train", load_params(project.params_file), project)
    assert trained["best_val_dice"] == round(summary["best_value"], 6)  # the trial trained as the train step trains
    model = json.loads((project.model_bundle / "model.json").read_text())
    assert (model["channels"], model["patch_size"]) == (tuned["train"]["unet_channels"], tuned["train"]["patch_size"])
    tags = client.get_run(trained["run_id"]).data.tags
    assert tags["medflow.tuned"].startswith("tuned values in effect (params.tuned.yaml): ")
    assert "unet_channels=" in tags["medflow.tuned"] and "unet_strides=" in tags["medflow.tuned"]


def test_a_unet_space_with_a_patch_its_depth_cannot_halve_fails_before_any_trial(project, salted):
    write_phantoms(project.data_dir / "ph", 2, 8, 32, seed=4)
    space = {**SPACE, "unet_channels": {"choices": [[8, 16, 32, 64, 128, 256]]}}
    params = from_dict(_params(unet_space=space))
    for step in ("validate", "clean", "split"):
        run_step(step, params, project)
    words = r"^tune.unet_space may sample .*patch_size=\[16, 16\], unet_strides=\[2, 2, 2, 2, 2\]: train.patch_size: "
    with pytest.raises(ParamsError, match=words):
        search.run(params, project, project.params_file)
    assert not (project.artifacts / "tune/study.db").exists()
