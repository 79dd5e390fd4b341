"""Which pipeline a params file defines, and where its outputs go."""

import pytest

from medflow.paths import Paths


def test_the_projects_params_file_is_the_recorded_pipeline(tmp_path):
    for given in (None, tmp_path / "params.yaml"):
        paths = Paths.for_params(tmp_path, given)
        assert paths.pipeline == "" and paths.metrics == tmp_path / "artifacts/evaluate/metrics.json"


def test_another_params_file_writes_its_own_folder_checkpoint_included(tmp_path):
    paths = Paths.for_params(tmp_path, tmp_path / "examples/digits.yaml")
    assert paths.pipeline == "digits"
    assert paths.step_dir("train") == tmp_path / "artifacts/digits/train"
    assert paths.checkpoint == tmp_path / "artifacts/digits/.checkpoints/train.pt"
    # Shared by every pipeline of the project.
    assert paths.mlflow_db == tmp_path / "mlruns/mlflow.db" and paths.artifacts_root == tmp_path / "artifacts"


@pytest.mark.parametrize("name", ["train", "logs", "ui"])
def test_a_params_file_named_like_a_reserved_folder_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match=f"named '{name}'.*rename the file"):
        Paths.for_params(tmp_path, tmp_path / f"{name}.yaml")
