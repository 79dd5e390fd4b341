"""Every path the pipeline touches, named once. Paths are not parameters: tests use Paths(root=tmp_path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STEPS = ("validate", "clean", "split", "train", "evaluate", "register")


@dataclass(frozen=True)
class Paths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def expectations_dir(self) -> Path:
        return self.root / "expectations"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def mlflow_db(self) -> Path:
        return self.mlruns / "mlflow.db"

    def step_dir(self, step: str) -> Path:
        if step not in STEPS:
            raise KeyError(step)
        return self.artifacts / step

    def source(self, source: str) -> Path:
        p = Path(source)
        return p if p.is_absolute() else self.root / p

    def suite(self, dataset: str) -> Path:
        return self.expectations_dir / f"{dataset}.json"

    # Hand-offs between steps, each written by exactly one step.
    @property
    def valid_rows(self) -> Path:
        return self.step_dir("validate") / "valid.parquet"

    @property
    def cleaned(self) -> Path:
        return self.step_dir("clean") / "cleaned.parquet"

    @property
    def images(self) -> Path:
        """uint8 [N, H, W, C], row i belonging to row i of cleaned.parquet."""
        return self.step_dir("clean") / "images.npy"

    @property
    def schema(self) -> Path:
        return self.step_dir("clean") / "schema.json"

    @property
    def manifest(self) -> Path:
        return self.step_dir("split") / "manifest.csv"

    @property
    def model_bundle(self) -> Path:
        return self.step_dir("train") / "model"

    @property
    def checkpoint(self) -> Path:
        """Outside artifacts/train, which a rerun empties (run_step, dvc repro): a killed run resumes from it."""
        return self.artifacts / ".checkpoints" / "train.pt"

    @property
    def train_run(self) -> Path:
        return self.step_dir("train") / "run.json"

    @property
    def metrics(self) -> Path:
        return self.step_dir("evaluate") / "metrics.json"

    def summary(self, step: str) -> Path:
        return self.step_dir(step) / "summary.json"
