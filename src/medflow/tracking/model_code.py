"""MLflow "models from code" entry: MLflow runs this file when a registered medflow model loads.

Nothing in medflow imports it; shipping code instead of a pickled object means loading a model never
unpickles anything.
"""

import mlflow

from medflow.tracking.pyfunc import BundleModel

mlflow.models.set_model(BundleModel())
