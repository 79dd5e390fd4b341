"""A trained model as a folder: weights, architecture, fitted preprocessing and schema.

The registered MLflow model ships this folder, so scoring a raw table needs nothing but medflow and torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medflow.data.features import Preprocessor, Schema, coerce_features
from medflow.models.tabular import build

FILES = ("weights.pt", "model.json", "preprocessor.json", "schema.json")


def save_bundle(
    out: Path, model: torch.nn.Module, model_config: dict, preprocessor: Preprocessor, schema: Schema
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    (out / "model.json").write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
    (out / "preprocessor.json").write_text(json.dumps(preprocessor.to_dict(), indent=2, sort_keys=True) + "\n")
    schema.save(out / "schema.json")


class Predictor:
    def __init__(self, bundle: Path):
        bundle = Path(bundle)
        self.schema = Schema.load(bundle / "schema.json")
        self.preprocessor = Preprocessor.from_dict(json.loads((bundle / "preprocessor.json").read_text()))
        config = json.loads((bundle / "model.json").read_text())
        self.model = build(config.pop("name"), **config)
        self.model.load_state_dict(torch.load(bundle / "weights.pt", map_location="cpu", weights_only=True))
        self.model.eval()

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    def predict_proba(self, raw: pd.DataFrame) -> np.ndarray:
        x = torch.from_numpy(self.preprocessor.transform(coerce_features(raw, self.schema)))
        with torch.inference_mode():
            return torch.softmax(self.model(x).float(), dim=1).numpy()

    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        proba = self.predict_proba(raw)
        out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes], index=raw.index)
        out.insert(0, "prediction", np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)])
        return out
