"""`medflow predict` and the predict flow: a batch file scored by a registered model, every row back once."""

from __future__ import annotations

from pathlib import Path

from medflow.models.bundle import BatchRejected
from medflow.models.scoring import read_batch, write_scored
from medflow.tracking import audit
from medflow.tracking.bundles import registered_predictor
from medflow.tracking.registry import resolve


def predict_file(
    model_uri: str, input_path: Path, output_path: Path, events_path: Path | None = None, explain: int = 0
) -> dict:
    """Scores input_path with the model and writes output_path; returns counts. An event model's input is the label
    rows (stay id, prediction time) and events_path their events. Raises BatchRejected, writing nothing, when the
    batch as a whole cannot be scored. explain: each scored row's that many largest contributions
    (models/explain.py), column names and signed numbers; refused rows keep them empty."""
    name, version = resolve(model_uri)
    if version.tags.get("medflow.task") == "segmentation":
        from medflow.segmentation.predict import predict_file as segment_file

        done = segment_file(name, version, Path(input_path), Path(output_path))
        counts = {k: done[k] for k in ("rows", "ok", "refused")}
        audit.append(name, "predict.batch", f"models:/{name}/{version.version}", None, counts, version.run_id)
        return done
    batch = read_batch(Path(input_path))
    events = read_batch(Path(events_path)) if events_path else None
    with registered_predictor(name, version) as predictor:
        if (predictor.schema.kind == "events") != (events is not None):
            raise BatchRejected(
                f"{name} scores stays from their events: give them with --events FILE"
                if events is None
                else f"{name} is no event model: --events is for models trained with data.kind=events"
            )
        scored = predictor.score(batch) if events is None else predictor.score_stays(batch, events)
        classes = bool(predictor.classes)
        if explain:
            scored = _explained(predictor, batch, scored, explain)
    done = write_scored(scored, name, version.version, Path(output_path), classes)
    counts = {k: done[k] for k in ("rows", "ok", "refused")}  # counts only: nothing of the rows or the files
    audit.append(name, "predict.batch", f"models:/{name}/{version.version}", None, counts, version.run_id)
    return done


def _explained(predictor, batch, scored, k: int):
    import pandas as pd

    from medflow.models import explain

    ok = scored["status"].eq("ok").to_numpy()
    columns, contributions = explain.attributions(predictor, batch[ok])
    top = explain.top(columns, contributions, k).set_axis(scored.index[ok])
    # Before status and reason, which stay the last columns.
    head = scored.drop(columns=["status", "reason"])
    return pd.concat([head, top.reindex(scored.index), scored[["status", "reason"]]], axis=1)
