"""Every benchmark of bench/README.md runs, small (--quick), as typed in a scratch clone, and
writes its JSON: name, ours, baseline, ratio = ours / baseline in seconds, unit, target, pairs, spread, load.
No timing is asserted (performance lives in bench/, never in tests)."""

import json

import pytest
from usercmd import scratch_clone, sh

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

PIPELINE = ".venv/bin/python bench/pipeline.py"
PIPELINE_LONG = ".venv/bin/python bench/pipeline.py --long"
VALIDATE = ".venv/bin/python bench/validate_throughput.py"
LOGGING = ".venv/bin/python bench/logging_overhead.py"
TRAIN_BARE = ".venv/bin/python bench/train_vs_bare.py"
TRAIN_SEED = ".venv/bin/python bench/train_vs_seed.py"
COLD = ".venv/bin/python bench/cold_start.py"
BOOTSTRAP = ".venv/bin/python bench/evaluate_bootstrap.py"
SURVIVAL = ".venv/bin/python bench/survival_metrics.py"
SCALING = ".venv/bin/python bench/scaling.py"
STREAMED = ".venv/bin/python bench/validate_streamed.py"
TREES = ".venv/bin/python bench/tree_baseline.py"
SEQUENCES = ".venv/bin/python bench/sequence_grid.py"
REPORT = ".venv/bin/python bench/report.py"
SLIDING = ".venv/bin/python bench/sliding_window.py"
UNET = ".venv/bin/python bench/unet_patches.py"

KEYS = {"name", "ours", "baseline", "ratio", "unit", "target", "pairs", "spread", "load"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return scratch_clone(tmp_path_factory.mktemp("bench") / "medflow")


def result(clone, name: str) -> dict:
    found = json.loads((clone / "bench" / "results" / f"{name}.json").read_text())
    assert set(found) >= KEYS and found["name"] == name
    assert found["ours"] > 0 and found["baseline"] > 0 and found["spread"][0] <= found["ratio"] <= found["spread"][1]
    return found


@pytest.mark.parametrize(
    ("command", "names"),
    [
        (COLD, ["cold_start"]),
        (BOOTSTRAP, ["evaluate_bootstrap", "calibration_bootstrap"]),
        (SURVIVAL, ["survival_cindex", "survival_cindex_ci"]),
        (LOGGING, ["logging_overhead"]),
        (TRAIN_BARE, ["train_vs_bare"]),
        (TRAIN_SEED, ["train_vs_seed"]),
        (VALIDATE, ["validate_throughput"]),
        (PIPELINE, ["pipeline_overhead", "rerun_cached"]),
        (PIPELINE_LONG, ["pipeline_overhead_long"]),
        (TREES, ["tree_baseline"]),
    ],
)
def test_each_paired_benchmark_writes_its_ratio_in_seconds(clone, command, names):
    out = sh(f"{command} --quick", clone, timeout=600).stdout
    for name in names:
        r = result(clone, name)
        assert r["unit"] == "s" and r["pairs"] == 1
        if name != "rerun_cached":  # one pair: the median ratio is that pair's
            assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"], rel=0.01)
        assert f"{name}: ratio" in out


def test_the_sequence_grid_benchmark_reports_time_and_peak_memory_of_each_stage(clone):
    out = sh(f"{SEQUENCES} --quick", clone, timeout=600).stdout
    r = json.loads((clone / "bench" / "results" / "sequence_grid.json").read_text())  # no ratio: seconds and MiB
    assert r["stays"] == 200 and r["grid"] == [200, 48, 5] and r["events"] > 0
    assert r["validate_peak_rss_mb"] > 0 and r["tensors_peak_rss_mb"] > 0 and r["target_mb"] == 2048
    assert "sequence_grid: peak RSS" in out


def test_streamed_validation_benchmark_reports_time_and_memory_against_reading_whole(clone):
    out = sh(f"{STREAMED} --quick", clone, timeout=600).stdout
    r = result(clone, "validate_streamed")
    assert r["rows"] == [20_000, 60_000] and r["ratio"] == pytest.approx(r["ours"] / r["baseline"], rel=0.01)
    assert set(r["peak_rss_mb"]) == {"in_memory", "streamed", "streamed_largest"} and r["mem_ratio"] > 0
    assert "60,000 rows" in out and "streamed" in out and "validate_streamed: " in out


def test_segmentation_benchmarks_report_memory_and_patches(clone):
    out = sh(f"{SLIDING} --quick", clone, timeout=600).stdout
    r = result(clone, "sliding_window")
    assert r["unit"] == "MiB" and r["baseline"] == 4096 and r["shape"] == [128, 128, 64] and r["seconds"] > 0
    assert "sliding_window: ratio" in out
    out = sh(f"{UNET} --quick", clone, timeout=600).stdout
    r = result(clone, "unet_patches")
    assert r["patches_per_s"] > 0 and r["sliding_window"]["shape"] == [32, 32, 32] and "unet_patches: " in out


def test_scaling_reports_every_step_at_every_size_and_the_report_tabulates_all(clone):
    sh(f"{SCALING} --quick", clone, timeout=600)
    r = result(clone, "scaling")
    assert r["rows"] == [1000, 2000]
    assert set(r["steps"]) == {"validate", "clean", "split", "train", "evaluate", "register"}
    assert all(m["wall_s"] > 0 and m["peak_rss_mb"] > 0 for sizes in r["steps"].values() for m in sizes.values())
    table = sh(REPORT, clone).stdout
    assert "| scaling |" in table
