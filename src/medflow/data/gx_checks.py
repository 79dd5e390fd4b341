"""Great Expectations running the expectations medflow does not evaluate itself (and, for the parity test, every
one): one ephemeral context per process, one batch per frame. Results are reduced to counts and row ids at once: raw
GX results carry cell values.
"""

from __future__ import annotations

import functools

import pandas as pd

from medflow.data.columns import ROW_ID


def _errors(info: dict) -> list[str]:
    # GX reports an expectation's error flat, or nested per metric when a metric failed to compute.
    infos = [info] if "raised_exception" in info else list(info.values())
    return sorted({str(i.get("exception_message")) for i in infos if isinstance(i, dict) and i.get("raised_exception")})


@functools.cache
def _gx_whole_frame():
    """GX's batch definition of a whole in-memory frame, in an ephemeral context made once per process: a context
    costs ~0.1 s and a temporary folder, a validation against it milliseconds."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        context.data_sources.add_pandas("medflow")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("whole")
    )


def run_gx(frames: dict[str, pd.DataFrame], groups: dict[str, list[tuple[int, dict]]], name: str) -> list[tuple]:
    """Expectations, (place in the suite, expectation) per frame, one GX batch per frame; returns (place, expectation,
    result fields, errors, failing row ids) per expectation. The caller reads each result with the suite's own kwargs
    and meta: GX echoes its normalised kwargs, in which `mostly: 1.0` is gone and a row check with it would never
    stop the run."""
    if not any(groups.values()):
        return []
    import great_expectations as gx

    whole = _gx_whole_frame()
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]}
    out = []
    for key, exps in groups.items():
        if not exps:
            continue
        own = {at: exp for at, exp in exps}
        tagged = [{**exp, "meta": {**exp.get("meta", {}), "medflow_at": at}} for at, exp in exps]
        gx_suite = gx.ExpectationSuite(name=f"{name}-{key}", expectations=tagged)
        batch = whole.get_batch(batch_parameters={"dataframe": frames[key]})
        result = batch.validate(gx_suite, result_format=fmt if key != "table" else "SUMMARY")
        for r in result.results:
            at = r.expectation_config.meta["medflow_at"]
            ids = tuple(sorted(int(u[ROW_ID]) for u in r.result.get("unexpected_index_list") or []))
            out.append((at, own[at], {**r.result, "success": r.success}, _errors(r.exception_info), ids))
    return out
