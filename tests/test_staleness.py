"""Which steps are stale and which data the run reads: DVC decides, asked once per run, and `medflow run` and
`dvc status` agree after every change a user or git makes to data/ or data.dvc."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medflow.params import from_dict
from medflow.paths import STEPS, Paths
from medflow.staleness import DataVersionError, plan

DVC = str(Path(sys.executable).parent / "dvc")
# Six stages named as medflow's, each copying its input to its output folder; validate depends on data/ and a param.
STAGES = "stages:\n" + "".join(
    f"  {step}:\n    cmd: mkdir -p artifacts/{step} && cp {src} artifacts/{step}/out.txt\n"
    f"    deps: [{src.split('/')[0] if step == 'validate' else src}]\n    outs: [artifacts/{step}]\n"
    + ("    params: [seed]\n" if step == "validate" else "")
    for step, src in zip(STEPS, ["data/table.csv", *(f"artifacts/{s}/out.txt" for s in STEPS)], strict=False)
)
PARAMS = from_dict({"data": {"source": "data/table.csv", "target": "b"}})
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]


def dvc(root: Path, *args: str) -> str:
    return subprocess.run([DVC, *args], cwd=root, check=True, capture_output=True, text=True).stdout


def clean(root: Path) -> bool:
    return "up to date" in dvc(root, "status")


def md5(root: Path) -> str:
    return yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]


@pytest.fixture
def recorded(tmp_path) -> Paths:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.yaml").write_text(STAGES)
    (tmp_path / ".dvcignore").write_text("__pycache__/\n*.pyc\n.DS_Store\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    # DVC's own API in this process, as medflow asks it: three `dvc` commands would pay DVC's imports thrice.
    from dvc.repo import Repo

    with Repo.init(str(tmp_path)) as repo, contextlib.chdir(tmp_path):
        repo.add("data")
        repo.reproduce()
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "v1"], cwd=tmp_path, check=True)
    return Paths(root=tmp_path)


@pytest.mark.parametrize(
    ("change", "first"),
    [
        (lambda root: (root / "params.yaml").write_text("seed: 2\n"), "validate"),
        (lambda root: (root / "artifacts/train/extra.txt").write_text("x"), "train"),
        (lambda root: (root / "artifacts/evaluate/out.txt").unlink(), "evaluate"),
    ],
    ids=["a param", "a file added to an output", "an output deleted"],
)
@pytest.mark.parametrize("cwd", ["project", "elsewhere"])  # DVC names stages from the working directory
def test_the_steps_to_run_start_at_the_first_stage_dvc_finds_stale(recorded, change, first, cwd, monkeypatch):
    root = recorded.root
    if cwd == "project":
        monkeypatch.chdir(root)
    assert plan(PARAMS, recorded) == []
    change(root)
    assert plan(PARAMS, recorded) == list(STEPS[STEPS.index(first) :])
    assert plan(PARAMS, recorded, force=True) == list(STEPS)


def test_a_same_size_edit_with_its_mtime_restored_is_recorded_by_a_forced_run(recorded):
    root, table = recorded.root, recorded.root / "data/table.csv"
    before = md5(root)
    stat = table.stat()
    table.write_text("a,b\n1,3\n")  # same size
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `touch -r`
    # DVC's state keys on inode, size and mtime: both DVC and medflow see nothing, and agree.
    assert plan(PARAMS, recorded) == [] and clean(root)
    assert plan(PARAMS, recorded, force=True) == list(STEPS)
    assert md5(root) != before  # data.dvc names the bytes the forced run reads
    dvc(root, "repro", "-q")
    assert clean(root) and plan(PARAMS, recorded) == []


def test_a_param_change_after_a_hidden_edit_records_the_data_validate_then_reads(recorded):
    root, table = recorded.root, recorded.root / "data/table.csv"
    before, stat = md5(root), table.stat()
    table.write_text("a,b\n1,3\n")
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (root / "params.yaml").write_text("seed: 2\n")
    assert plan(PARAMS, recorded) == list(STEPS)
    assert md5(root) != before


def test_files_dvc_ignores_change_nothing(recorded):
    for litter in ("__pycache__/x.cpython-311.pyc", "x.pyc", ".DS_Store", "sub/.DS_Store"):
        (recorded.root / "data" / litter).parent.mkdir(parents=True, exist_ok=True)
        (recorded.root / "data" / litter).write_bytes(b"\0\1")
    assert plan(PARAMS, recorded) == [] and clean(recorded.root)


def test_a_new_file_in_data_is_a_new_data_version_and_dvc_agrees(recorded):
    root = recorded.root
    before = md5(root)
    (root / "data/notes.txt").write_text("a file of the user's\n")
    assert plan(PARAMS, recorded) == list(STEPS)
    assert md5(root) != before
    dvc(root, "repro", "-q")
    assert clean(root) and plan(PARAMS, recorded) == []


def test_a_branch_switch_that_left_data_behind_stops_with_dvc_checkout(recorded):
    root = recorded.root
    subprocess.run([*GIT, "checkout", "-qb", "other"], cwd=root, check=True)
    (root / "data/table.csv").write_text("a,b\n1,2\n5,6\n")
    dvc(root, "add", "data", "-q")
    dvc(root, "repro", "-q")
    subprocess.run([*GIT, "commit", "-qam", "v2"], cwd=root, check=True)
    other = md5(root)
    subprocess.run([*GIT, "checkout", "-q", "main"], cwd=root, check=True)
    main = md5(root)
    with pytest.raises(
        DataVersionError, match=rf"holds data version {other} but data.dvc records {main}.*dvc checkout"
    ):
        plan(PARAMS, recorded)
    assert md5(root) == main and not clean(root)  # nothing recorded from the stale workspace; DVC says so too
    dvc(root, "checkout", "-q")
    assert plan(PARAMS, recorded) == [] and clean(root)
    subprocess.run([*GIT, "checkout", "-q", "other"], cwd=root, check=True)
    with pytest.raises(DataVersionError, match="dvc checkout"):
        plan(PARAMS, recorded)
    dvc(root, "checkout", "-q")
    assert plan(PARAMS, recorded) == [] and clean(root)


def test_a_data_version_not_in_the_cache_asks_for_dvc_pull(recorded):
    root = recorded.root
    (root / "data/table.csv").write_text("a,b\n9,9\n")
    dvc(root, "add", "data", "-q")
    dvc(root, "gc", "-w", "-f", "-q")  # keeps only what the workspace's .dvc files name: v1 is gone
    subprocess.run([*GIT, "checkout", "-q", "data.dvc"], cwd=root, check=True)  # back to v1, as a git pull would
    with pytest.raises(DataVersionError, match="dvc pull data.dvc"):
        plan(PARAMS, recorded)
