"""Which steps are stale: DVC decides, and once it has found every stage up to date, medflow says so again without
asking it while no file its verdict rests on has changed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medflow import pipeline
from medflow.paths import STEPS, Paths

DVC = str(Path(sys.executable).parent / "dvc")
# Six stages named as medflow's, each copying its input to its output folder; validate reads data/ and a param.
STAGES = "stages:\n" + "".join(
    f"  {step}:\n    cmd: mkdir -p artifacts/{step} && cp {src} artifacts/{step}/out.txt\n"
    f"    deps: [{src}]\n    outs: [artifacts/{step}]\n" + ("    params: [seed]\n" if step == "validate" else "")
    for step, src in zip(STEPS, ["data/table.csv", *(f"artifacts/{s}/out.txt" for s in STEPS)], strict=False)
)


def dvc(root: Path, *args: str) -> None:
    subprocess.run([DVC, *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def recorded(tmp_path) -> Paths:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "dvc.yaml").write_text(STAGES)
    (tmp_path / ".dvcignore").write_text("__pycache__/\n")
    dvc(tmp_path, "init", "--no-scm", "-q")
    dvc(tmp_path, "add", "data", "-q")
    dvc(tmp_path, "repro", "-q")
    return Paths(root=tmp_path)


def without_dvc(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # importing it now raises ImportError


def test_once_dvc_found_everything_up_to_date_it_is_not_asked_again_until_a_file_changes(recorded, monkeypatch):
    paths = recorded
    assert not pipeline.unchanged(paths)  # nothing kept yet: DVC decides
    assert pipeline.stale_steps(paths) == []
    with monkeypatch.context() as m:
        without_dvc(m)
        assert pipeline.stale_steps(paths) == []
        # Written again with the same bytes, a file is no longer known to be what DVC saw: DVC is asked.
        (paths.root / "artifacts/split/out.txt").write_text("a,b\n1,2\n")
        (paths.root / "src").mkdir()  # not a dependency: changes nothing
        with pytest.raises(ImportError):
            pipeline.stale_steps(paths)
    assert pipeline.stale_steps(paths) == []  # same content: up to date, and kept again
    with monkeypatch.context() as m:
        without_dvc(m)
        assert pipeline.stale_steps(paths) == []


@pytest.mark.parametrize(
    ("change", "first"),
    [
        (lambda root: (root / "params.yaml").write_text("seed: 2\n"), "validate"),
        (lambda root: (root / "artifacts/train/extra.txt").write_text("x"), "train"),
        (lambda root: (root / "artifacts/evaluate/out.txt").unlink(), "evaluate"),
        (lambda root: (root / "data/table.csv").write_text("a,b\n1,3\n"), "validate"),
    ],
    ids=["a param", "a file added to an output", "an output deleted", "the data"],
)
@pytest.mark.parametrize("cwd", ["project", "elsewhere"])  # DVC names stages from the working directory
def test_a_change_after_dvc_last_looked_is_found_by_dvc(recorded, change, first, cwd, monkeypatch):
    paths = recorded
    if cwd == "project":
        monkeypatch.chdir(paths.root)
    assert pipeline.stale_steps(paths) == []
    change(paths.root)
    assert not pipeline.unchanged(paths)
    assert pipeline.stale_steps(paths) == list(STEPS[STEPS.index(first) :])
    assert not pipeline.unchanged(paths)  # a stale verdict is never kept


def test_files_dvc_ignores_or_that_are_no_dependency_change_nothing(recorded):
    paths = recorded
    pipeline.stale_steps(paths)
    (paths.root / "artifacts/train/__pycache__").mkdir()
    (paths.root / "artifacts/train/__pycache__/x.pyc").write_text("")
    (paths.root / "notes.txt").write_text("not a dependency")
    assert pipeline.unchanged(paths)


def test_the_data_missing_from_dvcs_cache_is_a_change(recorded):
    # ensure_data fills the cache when it is missing (`dvc gc`, a fresh clone): it must look again.
    paths = recorded
    pipeline.stale_steps(paths)
    md5 = yaml.safe_load((paths.root / "data.dvc").read_text())["outs"][0]["md5"]
    (paths.root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
    assert not pipeline.unchanged(paths)


def test_stages_built_from_templates_are_always_left_to_dvc(recorded):
    paths = recorded
    (paths.root / "dvc.yaml").write_text("vars:\n  - s: 1\n" + STAGES)
    (paths.root / "dvc.yaml").write_text((paths.root / "dvc.yaml").read_text().replace("[seed]", "[seed]  # ${s}"))
    assert pipeline.snapshot(paths) is None
    pipeline.stale_steps(paths)
    assert not pipeline.unchanged(paths)


def test_a_foreach_stage_is_left_to_dvc_and_a_comment_naming_one_is_not(recorded):
    paths = recorded
    text = (paths.root / "dvc.yaml").read_text()
    (paths.root / "dvc.yaml").write_text("# a confusion matrix and a foreach loop, in words\n" + text)
    assert pipeline.snapshot(paths) is not None
    (paths.root / "dvc.yaml").write_text(text + "  extra:\n    foreach: [1, 2]\n    do:\n      cmd: echo one\n")
    assert pipeline.snapshot(paths) is None
