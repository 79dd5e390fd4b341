"""Batch scoring as a Prefect flow: observed and schedulable, running the same code as `medflow predict`.

The task returns counts only: Prefect may persist task results, and scored rows are patient data.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task


@task(name="predict")
def predict(model: str, input_path: str, output_path: str, root: str = ".") -> dict:
    from medflow import tracking
    from medflow.paths import Paths
    from medflow.predict import predict_file

    tracking.configure(Paths(root=Path(root)))
    return predict_file(model, Path(input_path), Path(output_path))


@flow(name="medflow-predict")
def score_batch(model: str, input_path: str, output_path: str, root: str = ".") -> dict:
    return predict(model, input_path, output_path, root)
