"""The registered model: a pyfunc wrapper that scores raw tables through medflow's own bundle code.

Imports mlflow at module level (a PythonModel subclass needs it), so only registry.py imports this, lazily.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from unittest import mock

import mlflow.pyfunc
import mlflow.utils.environment
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR
from mlflow.types.schema import ColSpec
from mlflow.types.schema import Schema as ColumnSchema

import medflow
from medflow.data.features import Schema
from medflow.models.bundle import BatchRejected, survival_column
from medflow.models.tabular import TREE_MODEL

PACKAGE_DIR = Path(medflow.__file__).parent


class OneLine(MlflowException):
    """An error `mlflow models serve` answers as this one line and nothing else. Of any other error than an
    MlflowException it answers with the traceback (the server's file paths), and it rewrites the message of an
    MlflowException raised in predict to quote the whole input table (patient data): this message stays as written."""

    def __init__(self, line: str, error_code: int):
        self._line = line
        super().__init__(line, error_code=error_code)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, _: str) -> None:
        pass


class Refused(OneLine, BatchRejected):
    """The bundle's refusal of a whole batch, answered with HTTP 400; still a BatchRejected for a Python caller."""

    def __init__(self, line: str):
        super().__init__(line, BAD_REQUEST)


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from medflow.models.bundle import Predictor

        if json.loads((Path(context.artifacts["bundle"]) / "model.json").read_text())["name"] == "unet":
            from medflow.imaging.inference import CaseTable

            self.predictor = CaseTable(Path(context.artifacts["bundle"]))
            return
        self.predictor = Predictor(Path(context.artifacts["bundle"]), (context.model_config or {}).get("threshold"))

    # A DataFrame hint is one MLflow infers nothing from: the signature below names the columns.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            return self.predictor.predict(model_input)
        except BatchRejected as exc:
            raise Refused(str(exc)) from None  # its message names columns and counts, never a value
        except Exception as exc:
            # Another library's message may quote an input value: the answer names the error's type, and the
            # server's log keeps where it was raised.
            frames = "".join(traceback.format_tb(exc.__traceback__))
            logging.getLogger(__name__).error("scoring failed with %s at:\n%s", type(exc).__name__, frames)
            raise OneLine(
                f"scoring failed ({type(exc).__name__}); the server's log says where", INTERNAL_ERROR
            ) from None


def signature(schema: Schema, horizons: list[float] | None = None) -> ModelSignature | None:
    """The output columns, typed; no input schema, so that every input value reaches the bundle's own checks.

    MLflow 3.17 enforces typed input columns before predict and its refusal of a wrong value (text in a double
    column, in a DataFrame or in `text/csv` parsed with the schema's dtypes) quotes the input rows: patient data in
    an error response. Columns of type `any` pass values through but make `mlflow models serve` refuse every CSV.
    The feature columns are listed in the model's metadata instead (`features`); the bundle refuses a batch without
    one, naming it, and a row with text in a numeric column with its reason (models/bundle.py).
    """
    if schema.kind == "image":
        return None  # arrays, lists of paths or a DataFrame of paths: the Predictor checks the shape itself
    if schema.outcome == "survival":  # the risk score and the survival probability at each of the bundle's horizons
        return ModelSignature(
            outputs=ColumnSchema(
                [ColSpec("long", "row"), ColSpec("double", "risk", required=False)]
                + [ColSpec("double", survival_column(h), required=False) for h in horizons or []]
                + [ColSpec("string", "status"), ColSpec("string", "reason")]
            ),
        )
    if not schema.classes:  # regression: the prediction in the target's units
        return ModelSignature(
            outputs=ColumnSchema(
                [ColSpec("long", "row"), ColSpec("double", "prediction", required=False)]
                + [ColSpec("string", "status"), ColSpec("string", "reason")]
            ),
        )
    return ModelSignature(
        outputs=ColumnSchema(
            [ColSpec("long", "row"), ColSpec("string", "prediction", required=False)]
            + [ColSpec("double", f"proba_{c}", required=False) for c in schema.classes]
            + [ColSpec("string", "status"), ColSpec("string", "reason")]
        ),
    )


def requirements(bundle: Path) -> list[str]:
    # Pinned to what trained the model, minus local tags such as "+cpu" that no index can serve.
    packages = ["torch", "pandas", "numpy"]
    name = json.loads((bundle / "model.json").read_text())["name"]
    if name == TREE_MODEL:
        packages.append(xgboost_distribution())
    if name == "unet":  # segmentation: MONAI's network and inference, nibabel's NIfTI
        packages += ["monai", "nibabel"]
    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in packages]


def xgboost_distribution() -> str:
    """XGBoost's CPU wheel (medflow's dependency) or, where a GPU user installed it instead, the full one."""
    try:
        version("xgboost-cpu")
    except PackageNotFoundError:
        return "xgboost"
    return "xgboost-cpu"


def log_model(bundle: Path, threshold: float | None = None) -> str:
    """Logs into the active run; returns the model URI. threshold (evaluate's) travels in the model's config."""
    schema = Schema.load(bundle / "schema.json")
    horizons = json.loads((bundle / "model.json").read_text()).get("survival", {}).get("horizons")
    # MLflow checks explicit requirements against the environment by mapping every installed distribution to its
    # modules (~2 s a run); requirements() is read from that same environment, so the check can only pass.
    # Where an MLflow release renames it, the check simply runs again.
    check = "warn_dependency_requirement_mismatches"
    unchecked = (
        mock.patch.object(mlflow.utils.environment, check, lambda reqs: None)
        if hasattr(mlflow.utils.environment, check)
        else contextlib.nullcontext()
    )
    with warnings.catch_warnings(), unchecked:
        # Deliberate: an input example would be made of patient rows.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PACKAGE_DIR / "tracking" / "model_code.py",
            artifacts={"bundle": str(bundle)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=requirements(bundle),
            signature=signature(schema, horizons),
            metadata={"features": {"numeric": schema.numeric, "categorical": schema.categorical}},
            model_config={"threshold": threshold} if threshold is not None else None,
        )
    return info.model_uri
