"""A trained model as a folder: weights, architecture, fitted preprocessing and schema.

The registered MLflow model ships this folder, so scoring a raw table needs nothing but medflow and torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from medflow.data.features import ImageNormaliser, Preprocessor, Schema, coerce_features
from medflow.data.numbers import NumberFormat, parse, unreadable
from medflow.models.recalibration import recalibrate
from medflow.models.tabular import TREE_MODEL, build
from medflow.sequences.grid import SequenceNormaliser

if TYPE_CHECKING:
    from medflow.models.trees import TreeModel

FILES = ("weights.pt", "model.json", "preprocessor.json", "schema.json")  # a tree model: trees.json, not weights.pt


class BatchRejected(ValueError):
    """The whole batch is refused and nothing is scored. Its message names columns and counts, never a value."""


def row_problems(raw: pd.DataFrame, schema: Schema, ranges: dict[str, list[float]]) -> pd.Series:
    """Per input row, why it cannot be scored ("" when it can): in a numeric column, text that is neither a number
    as training read the column nor a missing word, an infinite value or one outside the training range (ranges:
    column -> [low, high], as the bundle's preprocessing recorded them)."""
    reasons = np.full(len(raw), "", dtype=object)
    for col in schema.numeric:
        values = raw[col].reset_index(drop=True)
        parsed = parse(values, NumberFormat.from_dict(schema.formats.get(col)))
        number = parsed.to_numpy()
        low, high = ranges.get(col, (-np.inf, np.inf))
        checks = (
            (unreadable(values, parsed), "not a number"),
            (np.isinf(number), "not finite"),
            (np.isfinite(number) & ((number < low) | (number > high)), "outside the training range"),
        )
        for bad, why in checks:
            reasons[bad] = reasons[bad] + f"{col}: {why}; "
    return pd.Series(reasons, index=raw.index, dtype=object).str.rstrip("; ")


def save_bundle(
    out: Path,
    model: torch.nn.Module | TreeModel,
    model_config: dict,
    preprocessor: Preprocessor | ImageNormaliser,
    schema: Schema,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.nn.Module):
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    else:
        model.save(out)
    (out / "model.json").write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
    (out / "preprocessor.json").write_text(json.dumps(preprocessor.to_dict(), indent=2, sort_keys=True) + "\n")
    schema.save(out / "schema.json")


def survival_column(horizon: float) -> str:
    """predict's column of the survival probability at a horizon: survival_at_365, survival_at_182.5."""
    return f"survival_at_{horizon:g}"


class Predictor:
    def __init__(self, bundle: Path, threshold: float | None = None):
        """threshold: evaluate's decision threshold on the positive class (binary); None labels by argmax."""
        bundle = Path(bundle)
        self.threshold = threshold
        self.schema = Schema.load(bundle / "schema.json")
        kinds = {"image": ImageNormaliser, "events": SequenceNormaliser, "signals": SequenceNormaliser}
        kind = kinds.get(self.schema.kind, Preprocessor)
        self.preprocessor = kind.from_dict(json.loads((bundle / "preprocessor.json").read_text()))
        config = json.loads((bundle / "model.json").read_text())
        # Regression bundles only: {"mean", "std"} of the training split's target, which the one output is scaled by.
        self.target_scale = config.pop("target_scale", None)
        # Survival bundles only: the Breslow baseline (times, cumhaz, shift) and the horizons predict answers at.
        self.survival = config.pop("survival", None)
        # Classifiers with train.recalibrate: the map fitted on the validation split, applied to every probability.
        self.recalibration = config.pop("recalibration", None)
        self.trees: TreeModel | None = None
        if config["name"] == TREE_MODEL:
            from medflow.models.trees import TreeModel  # a network's bundle scores without XGBoost

            self.trees = TreeModel.load(bundle, config)
            return
        self.model = build(config.pop("name"), **config)
        self.model.load_state_dict(torch.load(bundle / "weights.pt", map_location="cpu", weights_only=True))
        self.model.eval()

    @property
    def classes(self) -> list[str]:
        return self.schema.classes

    def images(self, raw) -> np.ndarray:
        """Raw image input -> [N, H, W, C]: an array (one image or a batch, channel axis optional), a list of
        arrays or file paths, or a DataFrame whose one column (or "path" column) holds either."""
        if isinstance(raw, pd.DataFrame):
            raw = (raw["path"] if "path" in raw.columns else raw.iloc[:, 0]).tolist()
        if isinstance(raw, list | tuple):
            from medflow.data.images import read_image

            raw = [read_image(Path(v)) if isinstance(v, str | Path) else np.asarray(v) for v in raw]
            raw = np.stack([v[..., None] if v.ndim == 2 else v for v in raw]) if raw else np.empty((0,))
        arr = np.asarray(raw)
        h, w, c = self.schema.image_shape
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape == (h, w, c)):
            arr = arr[None]
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.shape[1:] != (h, w, c):
            raise BatchRejected(
                f"images of shape {list(arr.shape[1:])} given; this model takes [H, W, C] = {[h, w, c]}"
            )
        return arr

    def outputs(self, raw) -> np.ndarray:
        """What the model answers for each row: class probabilities (rows x classes), or a regression's predictions
        in the target's units (rows x 1), or a survival model's risk score (rows x 1, higher = earlier event)."""
        if self.target_scale is None and self.survival is None:
            return self.predict_proba(raw)
        x = self.preprocessor.transform(coerce_features(raw, self.schema))
        if self.trees is not None:
            z = np.asarray(self.trees.proba(x), float).reshape(len(x), 1)
        else:
            with torch.inference_mode():
                z = self.model(torch.from_numpy(x)).double().numpy()
        if self.survival is not None:
            return z
        return z * self.target_scale["std"] + self.target_scale["mean"]

    @property
    def horizons(self) -> list[float]:
        return self.survival["horizons"] if self.survival else []

    def survival_at(self, risk: np.ndarray, horizons=None) -> np.ndarray:
        """(rows, horizons) probabilities of no event by each horizon (the bundle's unless given), from the
        Breslow baseline fitted on the training split's risk scores."""
        from medflow.models.cox import Baseline

        s = self.survival
        base = Baseline(np.asarray(s["times"], float), np.asarray(s["cumhaz"], float), float(s["shift"]))
        return base.survival(risk, self.horizons if horizons is None else horizons)

    def predict_proba(self, raw) -> np.ndarray:
        return recalibrate(self.recalibration, self._proba(raw))

    def _proba(self, raw) -> np.ndarray:
        if self.target_scale is not None or self.survival is not None:
            raise BatchRejected("a regression or survival model predicts values, not probabilities: use predict")
        if self.schema.kind == "image":
            return self._predict_images(self.images(raw))
        if self.schema.kind in ("events", "signals"):
            return self._predict_grid(np.asarray(raw))
        x = self.preprocessor.transform(coerce_features(raw, self.schema))
        if self.trees is not None:
            return self.trees.proba(x)
        x = torch.from_numpy(x)
        with torch.inference_mode():
            return torch.softmax(self.model(x).float(), dim=1).numpy()

    def _predict_images(self, images: np.ndarray, batch: int = 1024) -> np.ndarray:
        mean = torch.tensor(self.preprocessor.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessor.std).view(1, -1, 1, 1)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).float().permute(0, 3, 1, 2)
                out.append(torch.softmax(self.model((x - mean) / std).float(), dim=1))
        return torch.cat(out).numpy() if out else np.empty((0, len(self.classes)), dtype="float32")

    def _predict_grid(self, raw: np.ndarray, batch: int = 1024) -> np.ndarray:
        """raw: stays' grids as validate builds them ([stays, bins, variables], canonical units, NaN uncharted)."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(raw), batch):
                x = torch.from_numpy(self.preprocessor.transform(raw[i : i + batch]))
                out.append(torch.softmax(self.model(x).float(), dim=1))
        return torch.cat(out).numpy() if out else np.empty((0, len(self.classes)), dtype="float32")

    def labels(self, proba: np.ndarray) -> np.ndarray:
        if self.threshold is not None and proba.shape[1] == 2:
            picked = (proba[:, 1] >= self.threshold).astype(int)
        else:
            picked = proba.argmax(axis=1)
        return np.asarray(self.classes, dtype=object)[picked]

    def predict(self, raw) -> pd.DataFrame:
        """Images: prediction and probabilities. Tables: `score`, one row per input row with its status."""
        if self.schema.kind == "image":
            proba = self.predict_proba(raw)
            index = raw.index if isinstance(raw, pd.DataFrame) else None
            out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes], index=index)
            out.insert(0, "prediction", self.labels(proba))
            return out
        return self.score(raw)

    def _score_records(self, rows: pd.DataFrame) -> pd.DataFrame:
        """A signal model's score of a manifest: one row per record, refused (with its reason) when the file cannot
        be read or a lead is missing, flat or short."""
        from medflow.signals.read import score_records

        column = self.preprocessor.settings.get("path_column", "path")
        if not isinstance(rows, pd.DataFrame) or column not in rows.columns:
            raise BatchRejected(f"a signal model scores a manifest with a {column!r} column of waveform files")
        raw, reasons = score_records(rows, self.preprocessor.settings, self.preprocessor.variables)
        return self._scored(raw, reasons)

    def _scored(self, raw: np.ndarray, reasons: np.ndarray) -> pd.DataFrame:
        ok = reasons == ""
        proba = np.full((len(raw), len(self.classes)), np.nan)
        predicted = np.full(len(raw), None, dtype=object)
        if ok.any():
            proba[ok] = self._predict_grid(raw[ok])
            predicted[ok] = self.labels(proba[ok])
        out = pd.DataFrame({"row": np.arange(1, len(raw) + 1), "prediction": predicted})
        for i, c in enumerate(self.classes):
            out[f"proba_{c}"] = proba[:, i]
        out["status"] = np.where(ok, "ok", "refused")
        out["reason"] = reasons
        return out

    def score_stays(self, labels: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
        """An event model's score of new stays: one row per label row (row, prediction, proba_<class>, status,
        reason), a refused row keeping its place with its reason and no numbers. BatchRejected when a table lacks a
        column the model reads or its text holds an identifier."""
        from medflow.data.suite import ValidationFailed
        from medflow.sequences.events import score_stays

        try:
            raw, reasons = score_stays(labels, events, self.preprocessor.settings, self.preprocessor.variables)
        except ValidationFailed as exc:
            raise BatchRejected(str(exc)) from None
        return self._scored(raw, reasons)

    def stay_aggregates(self, labels: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
        """An event model's window aggregates of new stays (its monitoring features), one row per label row that
        passes its checks; BatchRejected as for score_stays."""
        from medflow.data.suite import ValidationFailed
        from medflow.sequences.events import stay_aggregates

        try:
            return stay_aggregates(labels, events, self.preprocessor.settings, self.preprocessor.variables)
        except ValidationFailed as exc:
            raise BatchRejected(str(exc)) from None

    def score(self, raw: pd.DataFrame) -> pd.DataFrame:
        """row (1-based input row number), prediction, proba_<class>, status (`ok` or `refused`) and reason; a
        regression's prediction is a number in the target's units and it has no probabilities; a survival model's
        columns are risk and survival_at_<horizon> in place of prediction and probabilities.

        A batch without a feature column is refused whole (BatchRejected); a row failing a row check keeps its
        place with empty probabilities and its reason, so callers never get a confident score for a bad row."""
        if self.schema.kind == "image":
            raise BatchRejected(
                "an image model scores arrays or image files: load it with mlflow.pyfunc (docs/predict.md)"
            )
        if self.schema.kind == "events":
            raise BatchRejected("an event model scores label rows with their events: medflow predict --events FILE")
        if self.schema.kind == "signals":
            return self._score_records(raw)
        if not isinstance(raw, pd.DataFrame):
            raise BatchRejected(f"expected a table with the feature columns, got {type(raw).__name__}")
        missing = [c for c in self.schema.features if c not in raw.columns]
        if missing:
            raise BatchRejected(f"batch of {len(raw)} rows lacks {len(missing)} feature column(s) {missing}")
        reasons = row_problems(raw, self.schema, self.preprocessor.ranges)
        ok = reasons.eq("").to_numpy()
        if self.survival is not None:
            risk = np.full(len(raw), np.nan)
            if ok.any():
                risk[ok] = self.outputs(raw[ok])[:, 0]
            out = pd.DataFrame({"row": np.arange(1, len(raw) + 1), "risk": risk}, index=raw.index)
            at = np.full((len(raw), len(self.horizons)), np.nan)
            at[ok] = self.survival_at(risk[ok])
            for h, column in zip(self.horizons, at.T, strict=True):
                out[survival_column(h)] = column
            out["status"] = np.where(ok, "ok", "refused")
            out["reason"] = reasons.to_numpy()
            return out
        if self.target_scale is not None:
            values = np.full(len(raw), np.nan)
            if ok.any():
                values[ok] = self.outputs(raw[ok])[:, 0]
            out = pd.DataFrame({"row": np.arange(1, len(raw) + 1), "prediction": values}, index=raw.index)
            out["status"] = np.where(ok, "ok", "refused")
            out["reason"] = reasons.to_numpy()
            return out
        proba = np.full((len(raw), len(self.classes)), np.nan)
        labels = np.full(len(raw), None, dtype=object)
        if ok.any():
            proba[ok] = self.predict_proba(raw[ok])
            labels[ok] = self.labels(proba[ok])
        out = pd.DataFrame({"row": np.arange(1, len(raw) + 1), "prediction": labels}, index=raw.index)
        for i, c in enumerate(self.classes):
            out[f"proba_{c}"] = proba[:, i]
        out["status"] = np.where(ok, "ok", "refused")
        out["reason"] = reasons.to_numpy()
        return out
