"""`medflow run -P`: only the lines of the keys named change, in params.yaml and in a `--params FILE` alike, and the
edit is kept (and said to be) when the run then stops at once."""

from __future__ import annotations

import re
import shutil

import pytest
from usercmd import scratch_clone, sh

from medflow.overrides import write
from medflow.params import ParamsError, read_yaml

# Six keys of every kind the file writes: a float in YAML's short form, a flow list, null over a number, a number
# over null, a nested key, a path.
SIX = [
    "train.lr=3e-4",
    "train.hidden=[128, 64]",
    "register.min_primary=null",
    "data.max_rows=100",
    "register.gate.test=non_inferiority",
    "data.source=data/missing.csv",  # stops the run at once, after the edit
]
FLAGS = " ".join(f"-P '{o}'" for o in SIX)


@pytest.fixture(scope="module")
def clone(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("overrides") / "medflow", migrated_mlflow_db)
    shutil.copy(root / "params.yaml", root / "other.yaml")
    sh("git add other.yaml && git commit -qm other", root)
    return root


def changed_lines(root, file: str) -> tuple[list[str], list[str]]:
    diff = sh(f"git diff -U0 -- {file}", root).stdout.splitlines()
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def assert_only_the_six_lines(root, file: str) -> None:
    removed, added = changed_lines(root, file)
    keys = sorted(o.partition("=")[0].rsplit(".", 1)[1] for o in SIX)
    assert len(removed) == len(added) == 6, (removed, added)
    assert sorted(re.match(r"\s*(\w+):", line).group(1) for line in added) == keys, added
    for old, new in zip(removed, added, strict=True):
        assert old.split(":")[0] == new.split(":")[0] and "#" in new  # the same key, its comment kept
        assert old[old.index("#") :] == new[new.index("#") :]
    assert "  min_primary: null " in "\n".join(added) and "  lr: 3e-4 " in "\n".join(added)
    assert "  hidden: [128, 64] " in "\n".join(added)
    values = read_yaml((root / file).read_text())
    assert values["train"]["lr"] == 3e-4 and values["register"]["gate"]["test"] == "non_inferiority"


@pytest.mark.e2e
@pytest.mark.parametrize("file", ["params.yaml", "other.yaml"])
def test_six_overrides_change_six_lines_and_stay_when_the_run_stops(clone, file):
    params = "" if file == "params.yaml" else f"--params {file} "
    done = sh(f".venv/bin/medflow run {params}{FLAGS}", clone, check=False, timeout=600)
    assert done.returncode == 2 and "missing.csv" in done.stderr, done.stderr[-2000:]
    assert f"; {file} keeps the -P values (log: " in done.stderr.strip().splitlines()[-1]
    assert f"{file}: -P set train.lr, train.hidden" in done.stdout and "kept in the file" in done.stdout
    assert_only_the_six_lines(clone, file)
    sh(f"git checkout -- {file}", clone)


@pytest.mark.e2e
def test_a_bad_value_writes_nothing(clone):
    done = sh(".venv/bin/medflow run -P train.lr=fast -P train.dropout=0.3", clone, check=False)
    assert done.returncode == 2 and "train.lr" in done.stderr
    assert sh("git status --porcelain -- params.yaml", clone).stdout == ""


def test_keys_the_file_does_not_write_and_flow_mappings(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("evaluate:\n  subgroup_bins: {}   # edges\n  n_boot: 1000\n\nsplit:\n  val: 0.15\n")
    write(file, ["evaluate.subgroup_bins.age=[40, 65]", "split.test=0.2", "register.gate.margin=0.02"])
    assert file.read_text() == (
        "evaluate:\n  subgroup_bins: {age: [40, 65]} # edges\n  n_boot: 1000\n\nsplit:\n  val: 0.15\n  test: 0.2\n"
        "\nregister:\n  gate:\n    margin: 0.02\n"
    )
    with pytest.raises(ParamsError, match="split.val"):
        write(file, ["split.val.x=1"])  # a number is no section: nothing is written
    assert "val: 0.15\n" in file.read_text()


def test_a_block_list_at_its_keys_indent_is_replaced_whole(tmp_path):
    """`dvc exp run -S` writes lists as blocks whose items sit at their key's indent: -P after it replaced the key's
    line only, and left the items below it, a file no YAML reader takes."""
    file = tmp_path / "p.yaml"
    file.write_text("train:\n  hidden:      # widths\n  - 64\n  - 32\n  lr: 0.001\n")
    write(file, ["train.hidden=[128, 64]"])
    assert file.read_text() == "train:\n  hidden: [128, 64] # widths\n  lr: 0.001\n"
