"""What every way of validating writes the same way: report.json (and the stop on a failed batch check), a suite
inferred this run, columns.json, formats.json, the profile and summary.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from medflow.data import data_docs, sources
from medflow.data.checks import Check
from medflow.data.numbers import Conversion
from medflow.data.profile import build_profile, save_figures, to_markdown
from medflow.data.suite import ValidationFailed
from medflow.params import Params
from medflow.paths import Paths
from medflow.validation.quarantine import batch_failures, report

log = logging.getLogger(__name__)


def write_json(path: Path, obj: object, sort_keys: bool = False) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def where_read(files: list[Path], root: Path) -> str:
    """data.source, and the batches `medflow monitor --update` added to it."""
    more = f" and {len(files) - 1} batch file(s) in {relative(files[1].parent, root)}" if len(files) > 1 else ""
    return relative(files[0], root) + more


def judge(checks: list[Check], paths: Paths, where: str, dataset: str, suite: dict, docs: bool = True) -> None:
    """Writes report.json and the Data Docs (docs: validate.data_docs); fails when a batch-level expectation failed."""
    if docs:
        data_docs.write(paths.data_docs, suite, checks, dataset)
    failures = batch_failures(checks)
    write_json(paths.step_dir("validate") / "report.json",
                {"dataset": dataset, "source": where, **report(checks, failures)})  # fmt: skip
    if failures:
        raise ValidationFailed(
            f"{where}: {len(failures)} batch-level expectation(s) failed:\n  " + "\n  ".join(failures)
        )


def adopt(suite: dict, created: bool, paths: Paths, where: str, dataset: str) -> None:
    """Writes a suite inferred this run, once its batch passed every check and the quarantine guard."""
    if created:
        # Written only once the batch passes: a suite inferred from a broken batch would bless it.
        suite_path = paths.suite(dataset)
        suite_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(suite_path, suite, sort_keys=True)
        log.info("inferred %s from %s: review it and commit it", suite_path, where)


def finish(
    params: Params,
    paths: Paths,
    where: str,
    suite: dict,
    created: bool,
    leaks: dict[str, dict],
    checks: list[Check],
    kinds: dict[str, str],
    counts: dict[str, int],
    conversions: dict[str, Conversion],
    profiled: pd.DataFrame,
    streamed: dict | None = None,
) -> dict:
    """columns.json, formats.json, the profile (of profiled: the valid rows, or a uniform sample of them) and
    summary.json."""
    data, vp, out = params.data, params.validate_, paths.step_dir("validate")
    dataset = sources.dataset_name(data.source)
    write_json(out / "columns.json", kinds)
    write_json(paths.number_formats, {c: v.format.to_dict() for c, v in conversions.items() if c in kinds})
    profile = build_profile(profiled, kinds, data, vp)
    if len(profiled) < counts["rows_valid"]:
        profile["sample_of"] = counts["rows_valid"]
    (out / "profile").mkdir()
    (out / "profile" / "profile.md").write_text(to_markdown(profile, dataset))
    save_figures(profile, out / "profile")

    rules = {c.rule: len(c.row_ids) for c in checks if c.level == "row" and c.row_ids}
    summary = {
        "dataset": dataset,
        "source": where,
        "suite": relative(paths.suite(dataset), paths.root),
        "suite_created": created,
        **{k: v for k, v in counts.items() if k != "not_features"},
        "quarantine_reasons": dict(sorted(rules.items())),
        "leakage_suspects": profile["leakage_suspects"],
        # What the model card reports: which columns were judged, and what was decided about them.
        "columns": {
            "identifiers": [c for c, k in kinds.items() if k in ("identifier", "patient_id")],
            "not_features": counts["not_features"],
            "excluded": list(data.exclude),
            "converted": {c: str(v) for c, v in conversions.items()},
        },
        "leakage": {
            "threshold": vp.leakage_auc,
            "accepted": {c: v for c, v in leaks.items() if c in vp.accept_leakage},
        },
        **({"streamed": streamed} if streamed else {}),
    }
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    write_json(paths.summary("validate"), summary)
    log.info("validate %s: %d rows, %d valid, %d quarantined", dataset, counts["rows_in"], counts["rows_valid"],
             counts["rows_quarantined"])  # fmt: skip
    return summary
