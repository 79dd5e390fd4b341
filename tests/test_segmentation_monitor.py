"""`medflow monitor` on a segmentation champion (shrunk 2D phantoms): the training reference register logs, then
batches drawn like training (no drift), shifted in intensity and spacing (drift named with its statistics) and
holding unreadable files (refused with their reason, the rest scored); aggregates only in the report and MLflow."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from medflow.imaging.phantoms import write_phantoms
from medflow.imaging.volumes import read_volume
from medflow.params import from_dict
from medflow.pipeline import run_step

SMALL = {"unet_channels": [8, 16, 32], "unet_strides": [2, 2], "unet_res_units": 0, "patches_per_case": 4,
         "batch_size": 8, "lr": 0.01, "patch_size": [32, 32], "max_epochs": 3}  # fmt: skip
PARAMS = {
    "data": {"kind": "image", "task": "segmentation", "source": "data/ph/manifest.csv", "image_column": "image",
             "mask_column": "mask", "target": "mask", "patient_id": "patient"},
    "split": {"val": 0.2, "test": 0.25}, "train": {"model": "unet", **SMALL}, "evaluate": {"n_boot": 100},
    "register": {"model_name": "seg-mon", "min_primary": 0.3, "gate": {"n_boot": 100}},
    "monitor": {"min_rows": 5},
}  # fmt: skip


@pytest.fixture(scope="module")
def champion(tmp_path_factory, migrated_mlflow_db, salted):
    """A registered 2D champion in a project of its own, and the project's Paths."""
    import shutil

    from medflow.paths import Paths

    project = Paths(root=tmp_path_factory.mktemp("segmon"))
    project.mlruns.mkdir(parents=True)
    shutil.copy(migrated_mlflow_db, project.mlflow_db)
    write_phantoms(project.data_dir / "ph", 2, 32, 48, seed=3)
    project.params_file.write_text(yaml.safe_dump(PARAMS))
    params = from_dict(PARAMS)
    for step in ("validate", "clean", "split", "train", "evaluate", "register"):
        summary = run_step(step, params, project)
    assert summary["promoted"]
    return project


def _check(project, batch: str) -> tuple[dict, str]:
    """The monitor flow's check task and its MLflow record, as `medflow monitor --batch` runs them; returns the
    report and every text it wrote (report files, MLflow artifacts, the version's drift tag)."""
    from flows.monitor import check
    from medflow import tracking
    from medflow.tracking.drift import record
    from medflow.tracking.store import client

    found = check.fn(str(project.root), batch)
    out = project.root / found["report_dir"]
    report = json.loads((out / "report.json").read_text())
    tracking.configure(project)
    version = tracking.version_by_alias("seg-mon", "champion")
    artifact = record("seg-mon", version, out, report["status"])
    logged = client().download_artifacts(version.run_id, artifact, str(project.root / "downloaded"))
    texts = [p.read_text() for p in sorted((project.root / "downloaded").rglob("*")) if p.suffix in (".json", ".md")]
    tag = tracking.get_version("seg-mon", version.version).tags["medflow.drift"]
    assert logged and (out / "report.md").exists()
    return report, "\n".join([*texts, (out / "report.md").read_text(), tag])


def _private(text: str) -> None:
    for secret in ("P00", "case0", ".png", ".nii", "cases/"):
        assert secret not in text


def test_the_reference_register_logs_holds_aggregates_of_the_training_cases(champion):
    ref = json.loads((champion.step_dir("register") / "reference.json").read_text())
    assert ref["task"] == "segmentation"
    assert ref["train_cases"] == sum(pd.read_csv(champion.manifest)["split"] == "train")
    assert sum(ref["intensity"]["counts"]) == ref["train_cases"] * 48 * 48
    assert set(ref["features"]) == {"spacing_x", "spacing_y", "shape_x", "shape_y", "volume_1"}
    assert ref["features"]["spacing_x"]["counts"] == [0, ref["train_cases"], 0]  # empty outer bins kept
    _private(json.dumps(ref))


def test_a_batch_drawn_like_training_has_no_drift_and_its_masks_give_dice(champion):
    write_phantoms(champion.root / "like", 2, 10, 48, seed=11)
    report, texts = _check(champion, "like/manifest.csv")
    assert report["status"] == "ok: no drift beyond the thresholds", report["features"]
    assert report["refused_rows"] == 0 and report["performance"]["labelled_rows"] == 10
    assert report["performance"]["value"] > 0.5
    assert report["features"]["intensity"]["psi"] < 0.05
    _private(texts)


def test_shifted_intensities_and_spacing_are_flagged_with_their_statistics(champion):
    folder = champion.root / "shifted"
    write_phantoms(folder, 2, 20, 48, seed=12)
    rows = []
    for i, image in enumerate(pd.read_csv(folder / "manifest.csv")["image"]):
        # Another scanner: intensities scaled and offset, 1.5 mm pixels.
        pixels = read_volume(folder / image).array.astype(np.float32) * 0.3 + 180
        nib.save(nib.Nifti1Image(pixels, np.diag([1.5, 1.5, 1.0, 1.0])), folder / f"s{i}.nii.gz")
        rows.append({"image": f"s{i}.nii.gz"})
    pd.DataFrame(rows).to_csv(folder / "in.csv", index=False)
    report, texts = _check(champion, "shifted/in.csv")
    f = report["features"]
    assert {"intensity", "spacing_x", "spacing_y"} <= set(report["drifted_features"])
    assert not f["shape_x"]["drifted"] and report["status"].startswith("drift: ")
    for name in ("intensity", "spacing_x"):
        assert f[name]["psi"] >= 0.2 and f[name]["ks_pvalue"] < 0.01
    assert "not retrained" in report["update"]["summary"] and report["retrain_because"] == []
    assert "| intensity |" in texts and "PSI" in texts
    _private(texts)


def test_unreadable_and_missing_files_are_refused_with_their_reason_and_the_rest_scored(champion):
    folder = champion.root / "broken"
    write_phantoms(folder, 2, 6, 48, seed=13)
    (folder / "cases/bad.png").write_bytes(b"not a picture")
    (folder / "MRN4417302").mkdir()  # a DICOM series folder named as hospitals name them, by the patient
    manifest = pd.read_csv(folder / "manifest.csv")[["image"]]
    extra = pd.DataFrame({"image": ["cases/bad.png", "cases/gone.png", "MRN4417302"]})
    pd.concat([manifest, extra]).to_csv(folder / "in.csv", index=False)
    report, texts = _check(champion, "broken/in.csv")
    assert report["rows"] == 9 and report["refused_rows"] == 3
    assert report["refused"] == [
        {"row": 6, "reason": "not a readable image (UnidentifiedImageError)"},
        {"row": 7, "reason": "file_missing"},
        {"row": 8, "reason": "DICOM series: an empty folder (rule: a series folder holds its slices)"},
    ]
    assert report["features"]["intensity"]["psi"] is not None and report["performance"] is None
    _private(texts)
    assert "MRN4417302" not in texts
