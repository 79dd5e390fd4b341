"""Which data a model was trained on, as a user and git change data/ and data.dvc: `medflow run` and `dvc status`
agree after each change, a model's lineage names the bytes it read, and a colleague's clone runs nothing after
`dvc pull`. Run through the real executable on one trained scratch clone of the breast-cancer demo."""

import hashlib
import os
import subprocess

import pytest
import yaml
from usercmd import scratch_clone, sh

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

SALT = {"MEDFLOW_SALT": "data-versions-salt", "OMP_NUM_THREADS": "1"}
TINY = "-P train.max_epochs=3 -P train.patience=2 -P evaluate.n_boot=100 -P register.gate.n_boot=100"
TINY += " -P validate.data_docs=false"
MODEL = "medflow-breast-cancer"
NOTHING = "nothing to do: every step is up to date"


def data_md5(root) -> str:
    return yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]


def dvc_clean(root) -> bool:
    return "up to date" in sh(".venv/bin/dvc status", root).stdout


def git(root, *args: str) -> str:
    return sh("git " + " ".join(args), root).stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory, migrated_mlflow_db, prefect_server):
    root = scratch_clone(tmp_path_factory.mktemp("versions") / "medflow", migrated_mlflow_db)
    env = SALT | {"PREFECT_API_URL": prefect_server}
    done = sh(f".venv/bin/medflow run {TINY}", root, timeout=600, **env)
    assert f"registered {MODEL} v1" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "'trained v1'")
    return root, env


def test_a_run_from_a_subfolder_finds_the_project_and_writes_nothing_there(project):
    root, env = project
    done = sh("cd src/medflow && ../../.venv/bin/medflow run", root, **env)
    assert NOTHING in done.stdout, done.stdout + done.stderr
    assert git(root, "status", "--porcelain", "--ignored", "src") == ""
    assert dvc_clean(root)


def test_files_dvc_ignores_under_data_change_nothing(project):
    root, env = project
    for litter in (".DS_Store", "__pycache__/x.cpython-311.pyc", "y.pyc"):
        (root / "data" / litter).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / litter).write_bytes(b"\0\1\2")
    done = sh(".venv/bin/medflow run", root, **env)
    assert NOTHING in done.stdout, done.stdout + done.stderr
    assert dvc_clean(root)


def test_a_branch_switch_that_left_data_behind_stops_with_dvc_checkout(project):
    root, env = project
    table = root / "data" / "breast_cancer.csv"
    git(root, "checkout", "-qb", "more-rows")
    with table.open("a") as fh:
        fh.write(table.read_text().splitlines()[1] + "\n")
    sh(".venv/bin/dvc add data -q", root)
    git(root, "commit", "-qam", "'one more row'")
    git(root, "checkout", "-q", "main")
    main = data_md5(root)

    stopped = sh(".venv/bin/medflow run", root, check=False, **env)
    assert stopped.returncode != 0 and "registered" not in stopped.stdout
    (line,) = stopped.stderr.strip().splitlines()
    assert f"data.dvc records {main}" in line and "`dvc checkout data.dvc`" in line, line
    assert data_md5(root) == main and not dvc_clean(root)  # nothing recorded from the other branch's data

    sh(".venv/bin/dvc checkout -q", root)
    done = sh(".venv/bin/medflow run", root, **env)
    assert NOTHING in done.stdout and dvc_clean(root)


def test_a_colleagues_clone_runs_nothing_after_dvc_pull_and_says_what_it_lacks(project, tmp_path):
    root, env = project
    sh(f".venv/bin/dvc remote add -d team {tmp_path / 'remote'} && .venv/bin/dvc push -q", root)
    git(root, "commit", "-qam", "'the team remote'")
    colleague = tmp_path / "colleague"
    subprocess.run(["git", "clone", "-q", str(root), str(colleague)], check=True)
    assert (colleague / ".venv").is_symlink()  # the scratch clone commits its link to the test's venv
    sh(".venv/bin/dvc pull -q", colleague)

    done = sh(".venv/bin/medflow run", colleague, **env)
    assert NOTHING in done.stdout, done.stdout + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("no MLflow store in this clone") and "medflow migrate-store" in line, line
    assert dvc_clean(colleague)


def test_a_same_size_edit_with_its_mtime_restored_is_what_a_forced_run_trains_on_and_records(project):
    root, env = project
    table = root / "data" / "breast_cancer.csv"
    before = data_md5(root)
    text = table.read_text()
    header, first, rest = text.split("\n", 2)
    edited = first.replace("1", "2", 1) if "1" in first else first.replace("2", "1", 1)
    stat = table.stat()
    table.write_text(f"{header}\n{edited}\n{rest}")
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: size and mtime as before
    assert table.stat().st_size == stat.st_size

    # DVC's state keys on size and mtime: DVC and medflow both see nothing, and agree.
    assert NOTHING in sh(".venv/bin/medflow run", root, **env).stdout and dvc_clean(root)

    done = sh(f".venv/bin/medflow run --force {TINY}", root, timeout=600, **env)
    assert f"registered {MODEL} v2" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert data_md5(root) != before and dvc_clean(root)
    lineage = sh(f".venv/bin/medflow lineage models:/{MODEL}/2", root, **env).stdout
    assert f"data version (DVC): {data_md5(root)}" in " ".join(lineage.split())
    assert f"data file md5: {hashlib.md5(table.read_bytes()).hexdigest()}" in " ".join(lineage.split())
    card = (root / "artifacts" / "register" / "model_card.json").read_text()
    assert data_md5(root) in card and before not in card
