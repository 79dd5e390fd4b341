"""Every path the pipeline touches, named once. Paths are not parameters: tests use Paths(root=tmp_path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STEPS = ("validate", "clean", "split", "train", "evaluate", "register")
# Folders of artifacts/ that are not a pipeline's: its steps' own, run logs, run lock, UI screenshots, drift reports.
RESERVED = {*STEPS, "logs", "ui", "monitor"}


def find_root(start: Path) -> Path:
    """The project holding start: the nearest folder at or above it with dvc.yaml, params.yaml or .dvc/, as DVC and
    git find theirs; start itself when none does (the command then names what is missing)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() or (folder / "params.yaml").is_file() or (folder / ".dvc").is_dir():
            return folder
    return start


@dataclass(frozen=True)
class Paths:
    root: Path
    # "" is the project's pipeline (params.yaml, recorded by dvc.yaml/dvc.lock), writing artifacts/<step>/.
    # Another params file is a pipeline of its own, writing artifacts/<pipeline>/<step>/: it never touches what
    # DVC records for the project's pipeline.
    pipeline: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())
        name = self.pipeline
        if name and (name in RESERVED or name.startswith(".") or Path(name).name != name):
            raise ValueError(
                f"a params file named {name!r} would write into artifacts/{name}/, which is not a pipeline's "
                f"folder; rename the file (names taken: {', '.join(sorted(RESERVED))})"
            )

    @classmethod
    def for_params(cls, root: Path | str, params_file: Path | str | None = None) -> Paths:
        """The pipeline a params file defines: the project's own for params.yaml, else one named after the file."""
        paths = cls(root=Path(root))
        if params_file is None or Path(params_file).resolve() == paths.params_file:
            return paths
        return cls(root=paths.root, pipeline=Path(params_file).stem)

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
    def artifacts_root(self) -> Path:
        """Shared by every pipeline of the project: run logs and the run lock live here."""
        return self.root / "artifacts"

    @property
    def artifacts(self) -> Path:
        return self.artifacts_root / self.pipeline if self.pipeline else self.artifacts_root

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
    def data_docs(self) -> Path:
        """validate's Great Expectations Data Docs (a site: index.html and the pages it links)."""
        return self.step_dir("validate") / "data_docs"

    @property
    def number_formats(self) -> Path:
        """How each numeric column writes its numbers, as validate read them: the model records it for scoring."""
        return self.step_dir("validate") / "formats.json"

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
    def training_run(self) -> Path:
        """The MLflow run id of the training in progress: a process killed without a word leaves it behind."""
        return self.checkpoint.with_suffix(".run")

    @property
    def train_run(self) -> Path:
        return self.step_dir("train") / "run.json"

    @property
    def metrics(self) -> Path:
        return self.step_dir("evaluate") / "metrics.json"

    @property
    def monitoring(self) -> Path:
        """Drift reports of `medflow monitor`, one folder per check, and the record of batch files checked."""
        return self.artifacts_root / "monitor"

    def summary(self, step: str) -> Path:
        return self.step_dir(step) / "summary.json"
