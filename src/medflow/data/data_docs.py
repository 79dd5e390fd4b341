"""Great Expectations Data Docs of one validation: the suite's expectations, each one's verdict and its counts, as
HTML rendered by GX's own site builder (index.html, the suite's page, the validation's page).

The validation result the pages show is built from medflow's checks, not from a second GX evaluation: the checks the
native evaluator made are on the pages too, and a table of 2,000 columns or one validated in chunks is not read again
(a streamed table's pages show the counts of the whole table, added up over its chunks). Each result holds counts
only: GX would render the values it samples (partial_unexpected_list, observed minima and maxima) and a cell value
must never reach a page, the run's artifacts or a browser's history.

GX's page templates load scripts from public CDNs and its logo from S3 (with the context id and the time in the
address) when a page is opened, and fill their tables in by script. The site's views (OfflinePageView,
OfflineIndexPageView) read medflow's templates (data_docs_views/) before GX's: tables in HTML, no script, the logo
from the site's own static/. GX's pages still link stylesheets on CDNs (Bootstrap, bootstrap-table, Font Awesome): a
browser offline shows them unstyled.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from medflow.data.checks import MAGNITUDE, SPLIT_VALUE, Check

log = logging.getLogger(__name__)
VIEWS = Path(__file__).with_name("data_docs_views")

SITE = "medflow"
# The counts a result may carry: what GX's renderers read to say how many values failed, and nothing that names one.
COUNTS = ("element_count", "missing_count", "unexpected_count")
# GX renders ~300 expectations a second and stores a result by serialising it whole: 8,000 checks (2,000 columns)
# took 25 s and 13 MB, against 1 s to evaluate them. Past SHOWN the pages show the table's checks, the failed ones,
# then those that found the most unexpected values; the statistics count every check, report.json lists each.
SHOWN = 1000


def _shown(checks: list[Check]) -> list[Check]:
    if len(checks) <= SHOWN:
        return checks
    first = sorted(range(len(checks)), key=lambda i: (checks[i].column is not None, checks[i].success,
                                                       -(checks[i].unexpected_count or 0)))  # fmt: skip
    return [checks[i] for i in sorted(first[:SHOWN])]


def _result(check: Check) -> dict:
    """A check's counts and shares, under the names GX's renderers read."""
    res = {k: getattr(check, k) for k in COUNTS if getattr(check, k) is not None}
    n, missing, bad = res.get("element_count"), res.get("missing_count", 0), res.get("unexpected_count")
    if n and bad is not None:
        res["unexpected_percent_total"] = 100 * bad / n
        res["missing_percent"] = 100 * missing / n
        considered = n if check.type in ("expect_column_values_to_not_be_null", SPLIT_VALUE) else n - missing
        res["unexpected_percent"] = res["unexpected_percent_nonmissing"] = 100 * bad / considered if considered else 0.0
    return res


def _expectation(check: Check, suite: dict) -> dict:
    """The suite's own expectation behind a check (its type, kwargs and meta); medflow's own row checks written as
    the GX expectations they are: the magnitude check as |x| < max_abs, the split-value check as not null."""
    if check.type == SPLIT_VALUE:
        timed = "split.by=time" in check.bound
        must = "a time must read as a number or a date" if timed else "every row names its site"
        meta = {"level": "row", "medflow": f"{check.bound.strip('()')}: {must}"}
        return {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": check.column}, "meta": meta}
    if check.type == MAGNITUDE:
        bound = float(check.bound.strip("[]"))
        kwargs = {"column": check.column, "min_value": -bound, "max_value": bound, "strict_min": True,
                  "strict_max": True}  # fmt: skip
        meta = {"level": "row", "medflow": "validate.max_abs: no measurement reaches this magnitude"}
        return {"type": "expect_column_values_to_be_between", "kwargs": kwargs, "meta": meta}
    exp = suite["expectations"][check.at]
    return {"type": exp["type"], "kwargs": exp.get("kwargs", {}), "meta": exp.get("meta", {})}


def _offline_view(base: type) -> type:
    """base, a GX Jinja view, reading medflow's templates before GX's own."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    class Offline(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.env.loader = ChoiceLoader([FileSystemLoader(VIEWS), self.env.loader])

    Offline.__name__ = Offline.__qualname__ = f"Offline{base.__name__}"
    return Offline


def __getattr__(name: str) -> type:
    # GX instantiates a site's views by module and class name; its classes are imported only when a site is built.
    from great_expectations.render import view

    base = {"OfflinePageView": view.DefaultJinjaPageView, "OfflineIndexPageView": view.DefaultJinjaIndexPageView}
    if name not in base:
        raise AttributeError(name)
    return _offline_view(base[name])


def write(folder: Path, suite: dict, checks: list[Check], dataset: str) -> Path:
    """Builds the Data Docs of checks (run_suite's and medflow's own row checks, or their combine over a table's chunks)
    against suite into folder; returns its index.html."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # GX announces at INFO the temporary folder of an ephemeral context's default site, which Prefect prints.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    page, index = ({"module_name": __name__, "class_name": c} for c in ("OfflinePageView", "OfflineIndexPageView"))
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": index},
            "site_section_builders": {"expectations": {"view": page}, "validations": {"view": page},
                                      "profiling": "None"}}  # fmt: skip
    context.add_data_docs_site(SITE, site)
    name, shown = suite["name"], _shown(checks)
    expectations, notes = suite["expectations"], suite.get("notes")
    if len(shown) < len(checks):
        expectations = [expectations[c.at] for c in shown if c.at is not None]
        notes = (f"{len(checks)} checks, {len(shown)} shown here (the table's, the failed ones, then those with the "
                 "most unexpected values); validate's report.json lists every one. " + (notes or ""))  # fmt: skip
    context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations, notes=notes))
    rows = next((c.element_count for c in checks if c.element_count is not None), None)
    results = []
    for check in shown:
        exp = _expectation(check, suite)
        res = _result(check)
        if check.type == "expect_table_row_count_to_be_between" and rows is not None:
            res["observed_value"] = rows
        config = ExpectationConfiguration(type=exp["type"], kwargs=exp["kwargs"], meta=exp["meta"])
        results.append(ExpectationValidationResult(success=check.success, expectation_config=config, result=res))
    passed = sum(c.success for c in checks)
    run_id = RunIdentifier(run_name="validate", run_time=dt.datetime.now(dt.UTC))
    statistics = {"evaluated_expectations": len(checks), "successful_expectations": passed,
                  "unsuccessful_expectations": len(checks) - passed,
                  "success_percent": 100 * passed / len(checks) if checks else 100.0}  # fmt: skip
    # The page names the table by the batch_spec's data_asset_name.
    meta = {"run_id": run_id, "batch_spec": {"data_asset_name": dataset}}
    result = ExpectationSuiteValidationResult(success=passed == len(checks), results=results, suite_name=name,
                                              statistics=statistics, meta=meta)  # fmt: skip
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=name), run_id, dataset)
    context.validation_results_store.store_validation_results(result, key)
    context.build_data_docs(site_names=[SITE])
    log.info("validate: Data Docs in %s", folder)
    return folder / "index.html"
