"""The registered model: a pyfunc wrapper that scores raw tables through medflow's own bundle code.

Imports mlflow at module level (a PythonModel subclass needs it), so only registry.py imports this, lazily.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec
from mlflow.types.schema import Schema as ColumnSchema

import medflow
from medflow.data.features import Schema

PACKAGE_DIR = Path(medflow.__file__).parent


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from medflow.models.bundle import Predictor

        self.predictor = Predictor(Path(context.artifacts["bundle"]))

    # A DataFrame hint is one MLflow infers nothing from: the signature below types the columns.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(model_input)


def signature(schema: Schema) -> ModelSignature | None:
    """Numeric features as double and categoricals as string, each optional (the bundle imputes missing values).

    MLflow enforces it before predict: `text/csv` is parsed with these types, and a DataFrame must carry numbers
    as floats (text or int64 in a double column is refused by MLflow). Medflow's own Predictor still reads raw text.
    """
    if schema.kind == "image":
        return None  # arrays, lists of paths or a DataFrame of paths: the Predictor checks the shape itself
    return ModelSignature(
        inputs=ColumnSchema(
            [ColSpec("double", c, required=False) for c in schema.numeric]
            + [ColSpec("string", c, required=False) for c in schema.categorical]
        ),
        outputs=ColumnSchema(
            [ColSpec("string", "prediction")] + [ColSpec("float", f"proba_{c}") for c in schema.classes]
        ),
    )


def requirements() -> list[str]:
    # Pinned to what trained the model, minus local tags such as "+cpu" that no index can serve.
    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in ("torch", "pandas", "numpy")]


def log_model(bundle: Path) -> str:
    """Logs into the active run; returns the model URI."""
    with warnings.catch_warnings():
        # Deliberate: an input example would be made of patient rows.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PACKAGE_DIR / "tracking" / "model_code.py",
            artifacts={"bundle": str(bundle)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=requirements(),
            signature=signature(Schema.load(bundle / "schema.json")),
        )
    return info.model_uri
