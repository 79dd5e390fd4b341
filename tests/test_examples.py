"""The digits example end to end, and its registered model scoring raw arrays and image files."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medflow import params as params_mod
from medflow import tracking

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, migrated_mlflow_db):
    """`medflow run --params examples/digits.yaml` in a fresh project folder, as the README says."""
    import shutil
    import subprocess
    import sys

    from medflow.paths import Paths

    paths = Paths(root=tmp_path_factory.mktemp("digits"))
    paths.mlruns.mkdir()
    shutil.copy(migrated_mlflow_db, paths.mlflow_db)
    shutil.copytree(REPO / "flows", paths.root / "flows")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))}
    done = subprocess.run(
        [Path(sys.executable).parent / "medflow", "run", "--params", str(REPO / "examples/digits.yaml")],
        cwd=paths.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    params = params_mod.load(REPO / "examples/digits.yaml")
    summaries = {"register": json.loads(paths.summary("register").read_text())}
    return paths, params, summaries


def test_digits_example_reaches_the_accuracy_a_small_cnn_gets(digits_run):
    paths, _, summaries = digits_run
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["n_test"] == 270
    assert metrics["test_accuracy"] >= 0.98, metrics
    assert summaries["register"]["promoted"]


def test_registered_digits_model_scores_arrays_and_files(digits_run, tmp_path):
    import mlflow
    from sklearn.datasets import load_digits

    paths, params, _ = digits_run
    tracking.configure(paths)
    model = mlflow.pyfunc.load_model(f"models:/{params.register.model_name}@champion")
    ds = load_digits()
    pixels = np.round(ds.images[:40] * 255 / 16).astype(np.uint8)
    from_arrays = model.predict(pixels)
    assert (from_arrays["prediction"].astype(int).to_numpy() == ds.target[:40]).mean() >= 0.9
    files = []
    for i, img in enumerate(pixels[:5]):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(files[-1])
    from_files = model.predict(files)
    assert from_files["prediction"].tolist() == from_arrays["prediction"][:5].tolist()
    with pytest.raises(ValueError, match="this model takes"):
        model.predict(np.zeros((2, 28, 28), dtype=np.uint8))
