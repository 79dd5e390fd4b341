"""Segmentation through the steps on shrunk phantoms (12 cases of 48x48; 8 volumes of 24^3), then predict: the
metrics with their intervals, the overlays and the card, the gate, and masks written on the input's own grid."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medflow.imaging.inference import case_row, write_mask
from medflow.imaging.network import Segmenter
from medflow.imaging.phantoms import write_phantoms
from medflow.params import from_dict
from medflow.pipeline import run_step

SMALL = {"unet_channels": [8, 16, 32], "unet_strides": [2, 2], "unet_res_units": 0, "patches_per_case": 4,
         "batch_size": 8, "lr": 0.01}  # fmt: skip


def _params(source: str, train: dict, spacing=None) -> dict:
    data = {"kind": "image", "task": "segmentation", "source": source, "image_column": "image", "mask_column": "mask",
            "target": "mask", "patient_id": "patient", "spacing": spacing}  # fmt: skip
    return {"data": data, "split": {"val": 0.2, "test": 0.25}, "train": {"model": "unet", **SMALL, **train},
            "evaluate": {"n_boot": 100}, "register": {"model_name": "seg-test", "min_primary": 0.3,
                                                       "gate": {"n_boot": 100}}}  # fmt: skip


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(((a > 0) & (b > 0)).sum()) / max(float((a > 0).sum() + (b > 0).sum()), 1.0)


def test_2d_phantoms_to_a_champion_and_predicted_masks(project, salted):
    write_phantoms(project.data_dir / "ph", 2, 12, 48, seed=3)
    params = from_dict(_params("data/ph/manifest.csv", {"patch_size": [32, 32], "max_epochs": 3}))
    for step in ("validate", "clean", "split", "train", "evaluate"):
        run_step(step, params, project)
    split = pd.read_csv(project.manifest)
    assert split.groupby("patient_key")["split"].nunique().max() == 1  # a patient's two studies share a split
    metrics = json.loads(project.metrics.read_text())
    for key in ("mean_dice", "dice_1", "hd95_1", "nsd_1"):
        assert metrics[f"test_{key}_ci_low"] <= metrics[f"test_{key}"] <= metrics[f"test_{key}_ci_high"]
    assert metrics["test_mean_dice"] > 0.6 and metrics["n_test_patients"] == 2
    report = json.loads((project.step_dir("evaluate") / "report.json").read_text())
    assert [o["rank"] for o in report["overlays"]] == ["best", "median", "worst"]
    assert all((project.step_dir("evaluate") / o["file"]).stat().st_size > 1000 for o in report["overlays"])
    assert "P0" not in (project.step_dir("evaluate") / "cases.csv").read_text()  # salted keys, never an id

    summary = run_step("register", params, project)
    assert summary["promoted"] and summary["version"] == "1"
    card = (project.step_dir("register") / "model_card.md").read_text()
    assert "hd95_1" in card and "overlay_worst.png" in card and "spacing [1.0, 1.0] mm" in card

    from medflow.segmentation.predict import predict_file
    from medflow.tracking.registry import version_by_alias

    batch = project.root / "batch"
    batch.mkdir()
    shutil.copy(project.data_dir / "ph/cases/case012_image.png", batch / "held.png")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), batch / "volume.nii.gz")
    pd.DataFrame({"image": ["held.png", "gone.png", "volume.nii.gz"]}).to_csv(batch / "in.csv", index=False)
    done = predict_file("seg-test", version_by_alias("seg-test", "champion"), batch / "in.csv", batch / "out.csv")
    assert (done["ok"], done["refused"]) == (1, 2)
    out = pd.read_csv(batch / "out.csv")
    assert out["status"].tolist() == ["ok", "refused", "refused"]
    assert out["reason"].fillna("").tolist()[1:] == ["file_missing", "dims: a 3-D image for a 2-D model"]
    mask = np.load(out["mask"][0])
    truth = np.asarray(Image.open(project.data_dir / "ph/cases/case012_mask.png"))
    assert mask.shape == truth.shape and _dice(mask, truth) > 0.6
    assert out["volume_1"][0] == pytest.approx((mask == 1).sum())  # 1 mm pixels: mm^2 = pixels


def test_3d_volumes_resampled_and_masks_back_on_the_input_grid(project, salted):
    write_phantoms(project.data_dir / "vol", 3, 8, 24, seed=5)
    train = {"patch_size": [16, 16, 16], "max_epochs": 2, "unet_channels": [8, 16], "unet_strides": [2],
             "patches_per_case": 2}  # fmt: skip
    params = from_dict(_params("data/vol/manifest.csv", train, spacing=[2.0, 2.0, 2.0]))
    for step in ("validate", "clean", "split", "train", "evaluate"):
        run_step(step, params, project)
    # 24 voxels of 1.5 mm, 24 of 1.5 mm, 24 of 2 mm resampled to 2 mm: 18 x 18 x 24.
    assert np.load(project.step_dir("validate") / "cases/0_mask.npy", mmap_mode="r").shape == (18, 18, 24)
    metrics = json.loads(project.metrics.read_text())
    assert {"test_mean_dice", "test_hd95_1", "test_nsd_1"} <= set(metrics)
    report = json.loads((project.step_dir("evaluate") / "report.json").read_text())
    assert report["spacing_mm"] == [2.0, 2.0, 2.0] and report["orientation"] == "RAS"

    held = project.data_dir / "vol/cases/case008_image.nii.gz"
    segmenter = Segmenter(project.model_bundle)
    row, mask, volume, _ = case_row(segmenter, held)
    assert row["status"] == "ok" and mask.shape == (24, 24, 24)
    written = nib.load(write_mask(mask, volume, held, project.root, 0))
    assert np.allclose(written.affine, nib.load(held).affine)
    assert row["volume_1"] == pytest.approx((mask == 1).sum() * 1.5 * 1.5 * 2.0)


def test_a_killed_training_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(project, salted, monkeypatch):
    from medflow import tracking

    write_phantoms(project.data_dir / "ph", 2, 8, 32, seed=4)
    params = from_dict(_params("data/ph/manifest.csv", {"patch_size": [32, 32], "max_epochs": 3, "batch_size": 4}))
    for step in ("validate", "clean", "split"):
        run_step(step, params, project)
    run_step("train", params, project)
    whole = json.loads(project.summary("train").read_text())
    weights = (project.model_bundle / "weights.pt").read_bytes()
    logged = tracking.log_epoch

    def killed_after_epoch_2(run_id, row, step):
        logged(run_id, row, step)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tracking, "log_epoch", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_step("train", params, project)
    assert project.checkpoint.exists()
    monkeypatch.setattr(tracking, "log_epoch", logged)
    resumed = run_step("train", params, project)
    assert resumed["resumed_from"] == 1 and not project.checkpoint.exists()  # epoch 2 died before its checkpoint
    assert resumed["best_val_dice"] == whole["best_val_dice"] and resumed["best_epoch"] == whole["best_epoch"]
    assert (project.model_bundle / "weights.pt").read_bytes() == weights
