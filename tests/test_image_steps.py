"""Images through clean and split: duplicates by content, patients and identical images kept in one split."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medflow.data.columns import CONTENT_HASH
from medflow.data.features import Schema
from medflow.params import from_dict
from medflow.steps import clean, split, validate


@pytest.fixture
def image_project(project, monkeypatch):
    """40 patients x 3 images of 12x12; patient 0's first image is filed twice (a duplicate), and one image
    is filed for two different patients with different labels (must not straddle splits)."""
    monkeypatch.setenv("MEDFLOW_SALT", "s")
    rng = np.random.default_rng(0)
    folder = project.data_dir / "scans"
    folder.mkdir(parents=True)
    rows = []
    for p in range(40):
        for k in range(3):
            label = "lesion" if (p + k) % 3 == 0 else "clear"
            name = f"p{p}_{k}.png"
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(folder / name)
            rows.append((name, label, f"PT{p:04d}"))
    (folder / "copy.png").write_bytes((folder / "p0_0.png").read_bytes())
    rows.append(("copy.png", rows[0][1], "PT0000"))  # exact duplicate: same pixels, same label
    (folder / "shared.png").write_bytes((folder / "p5_1.png").read_bytes())
    rows.append(("shared.png", "lesion" if rows[16][1] == "clear" else "clear", "PT0039"))  # same pixels, other label
    pd.DataFrame(rows, columns=["path", "label", "patient"]).to_csv(folder / "manifest.csv", index=False)
    params = from_dict(
        {"data": {"kind": "image", "source": "data/scans/manifest.csv", "target": "label", "patient_id": "patient"}}
    )
    validate.run(params, project)
    return project, params


def test_clean_quarantines_duplicate_images_and_keeps_images_aligned(image_project):
    paths, params = image_project
    summary = clean.run(params, paths)
    assert summary == {**summary, "rows_in": 122, "rows_out": 121, "rows_quarantined": 1, "kind": "image"}
    q = pd.read_csv(paths.step_dir("clean") / "quarantine.csv")
    validated = pd.read_parquet(paths.valid_rows)
    copy = validated.loc[validated["path"] == "copy.png", "_row_id"].tolist()
    assert list(q.columns) == ["_row_id", "reason"] and q["_row_id"].tolist() == copy
    assert q["reason"].str.startswith("duplicate").all()
    cleaned = pd.read_parquet(paths.cleaned)
    images = np.load(paths.images)
    assert images.shape == (121, 12, 12, 1)
    source = pd.read_csv(paths.data_dir / "scans/manifest.csv")
    row = cleaned.iloc[50]
    pixels = np.asarray(Image.open(paths.data_dir / "scans" / source.loc[row["_row_id"], "path"]))
    assert np.array_equal(images[50, :, :, 0], pixels)
    schema = Schema.load(paths.schema)
    assert schema.kind == "image" and schema.image_shape == [12, 12, 1] and schema.classes == ["clear", "lesion"]
    assert "path" in schema.dropped  # file paths can carry patient names: never a feature
    assert "PT0001" not in set(cleaned["_patient_key"])


def test_split_keeps_patients_and_identical_images_in_one_split(image_project):
    paths, params = image_project
    clean.run(params, paths)
    split.run(params, paths)
    cleaned = pd.read_parquet(paths.cleaned)
    manifest = pd.read_csv(paths.manifest)
    where = cleaned.assign(split=manifest["split"].to_numpy())
    assert where.groupby("_patient_key")["split"].nunique().max() == 1
    assert where.groupby(CONTENT_HASH)["split"].nunique().max() == 1
    summary = json.loads(paths.summary("split").read_text())
    assert all(summary["rows"][s] > 0 for s in ("train", "val", "test"))


def test_saliency_cases_are_picked_by_rank_in_turn_and_each_row_once():
    from medflow.evaluation.saliency import pick

    y = np.array([0, 1, 1, 0, 1])
    pred = np.array([0, 0, 1, 1, 1])
    confidence = np.array([0.9, 0.8, 0.55, 0.95, 0.6])
    assert pick(y, pred, confidence, 3) == [
        (0, "most confident correct"), (3, "most confident wrong"), (2, "least confident")
    ]  # fmt: skip
    # The next round: the next correct and wrong rows, and the least confident row not yet drawn.
    assert [i for i, _ in pick(y, pred, confidence, 6)] == [0, 3, 2, 4, 1]
    assert pick(y, y, confidence, 2) == [(3, "most confident correct"), (2, "least confident")]
    assert pick(y, pred, confidence, 0) == []


def test_evaluate_draws_saliency_maps_of_ranked_test_images_into_the_card_without_ids(image_project):
    import re

    from mlflow import MlflowClient

    from medflow.pipeline import run_step

    paths, params = image_project
    raw = params.as_dict()
    raw["train"] |= {"model": "mnist_mlp", "hidden": [16], "max_epochs": 3}
    raw["evaluate"] |= {"n_boot": 100, "primary_metric": "accuracy"}
    raw["register"] |= {"model_name": "scans-saliency", "min_primary": None}
    raw["register"]["gate"] |= {"n_boot": 100}
    params = from_dict(raw)
    for step in ("clean", "split", "train", "evaluate", "register"):
        run_step(step, params, paths)

    cases = json.loads((paths.step_dir("evaluate") / "report.json").read_text())["saliency"]["cases"]
    assert [(c["rank"], c["kind"]) for c in cases] == [
        (1, "most confident correct"), (2, "most confident wrong"), (3, "least confident")
    ]  # fmt: skip
    assert cases[0]["true"] == cases[0]["predicted"] and cases[1]["true"] != cases[1]["predicted"]
    plots = paths.step_dir("evaluate") / "plots"
    for c in cases:
        assert re.fullmatch(r"saliency_\d_[a-z_]+_true-(clear|lesion)_pred-(clear|lesion)\.png", c["file"]), c
        assert (plots / c["file"]).stat().st_size > 0
    card = (paths.step_dir("register") / "model_card.md").read_text()
    section = card.split("## Explanations (saliency maps)")[1].split("\n## ")[0]
    assert "Captum IntegratedGradients" in section and "32 steps" in section and "baseline" in section
    assert all(f"`evaluation/{c['file']}`" in section for c in cases)
    assert json.loads((paths.step_dir("register") / "model_card.json").read_text())["saliency"]["cases"] == cases
    run_id = json.loads(paths.train_run.read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_db}")
    logged = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {f"evaluation/{c['file']}" for c in cases} <= logged
    # No patient id, manifest file name or folder in what names or describes the cases.
    texts = [card, (paths.step_dir("evaluate") / "report.json").read_text(), *(c["file"] for c in cases)]
    for text in texts:
        assert not re.search(r"PT\d{4}|p\d+_\d\.png|copy\.png|shared\.png|scans/", text), text[:200]

    off = params.as_dict()
    off["evaluate"]["saliency_cases"] = 0
    run_step("evaluate", from_dict(off), paths)
    assert not list(plots.glob("saliency_*")) and "saliency" not in (plots.parent / "report.json").read_text()
