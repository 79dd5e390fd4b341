"""PHI by construction, end to end: identifiers seeded into declared columns, undeclared columns and free text never
reach a suite, profile, artifact, MLflow, Prefect, dvc.lock or log; a failed run leaves the champion as it was."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from usercmd import scratch_clone, sh

from medflow.data.synthetic import synthetic_cohort

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Wirth"]
DECLARED = "-P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn -P data.positive_class=disease"
TINY = "-P train.max_epochs=3 -P train.patience=2 -P 'train.hidden=[8]' -P register.model_name=phi-e2e"
# Three epochs of a tiny net on 60 patients: the gate's floor and baseline margin are opened, this is about PHI.
TINY += " -P register.min_primary=0.0 -P register.gate.baseline_margin=1"


def seeded_table() -> pd.DataFrame:
    df = synthetic_cohort(n_patients=60, seed=11)
    n = len(df)
    rng = np.random.default_rng(1)
    kin = [f"{FIRST[i % 8]} {LAST[(i // 8) % 8]}" for i in rng.permutation(n)]
    return df.assign(
        contact=[f"{k.split()[0].lower()}.{i}@example.org" for i, k in enumerate(kin)],  # e-mails, undeclared
        kin=kin,  # names, undeclared
        born=[f"{1935 + i % 60}-{1 + i % 12:02d}-{1 + i % 27:02d}" for i in range(n)],  # dates of birth, undeclared
        ref=[f"MRN{5500000 + 13 * i}" for i in range(n)],  # record numbers, undeclared
        notes=[f"called {k} on +1-555-{300 + i % 600:03d}-{1000 + i:04d}\nre: results" for i, k in enumerate(kin)],
    )


def seeded_values(df: pd.DataFrame) -> set[str]:
    values = {v for c in ("mrn", "name", "dob", "phone", "contact", "kin", "born", "ref") for v in df[c].dropna()}
    values |= {m for note in df["notes"] for m in re.findall(r"\+1-555-\d{3}-\d{4}", note)}
    return {str(v) for v in values if len(str(v)) >= 6}


def hits(store: Path, pattern: re.Pattern[bytes]) -> int:
    files = [store] if store.is_file() else [f for f in store.rglob("*") if f.is_file()]
    return sum(len(pattern.findall(f.read_bytes())) for f in files)


@pytest.fixture(scope="module")
def project(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("phi"), migrated_mlflow_db)
    df = seeded_table()
    (root / "data").mkdir(exist_ok=True)
    df.to_csv(root / "data" / "visits.csv", index=False)
    return root, df


def test_seeded_identifiers_stop_the_run_then_reach_no_store(project, capsys):
    root, df = project
    values = seeded_values(df)
    # The stop comes from validate alone: `medflow step validate` shows it without starting Prefect.
    stopped = sh(f".venv/bin/medflow step validate {DECLARED} -P 'data.identifiers=[name, dob, phone]' {TINY}",
                 root, check=False, MEDFLOW_SALT="e2e-salt")  # fmt: skip
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    line = [x for x in stopped.stderr.splitlines() if "undeclared column(s)" in x]
    assert line and all(f"column '{c}'" in line[0] for c in ("contact", "kin", "born", "ref", "notes")), line
    assert not (root / "expectations" / "visits.json").exists()

    identifiers = "-P 'data.identifiers=[name, dob, phone, contact, kin, born]' -P 'data.exclude=[ref, notes]'"
    done = sh(f".venv/bin/medflow run {DECLARED} {identifiers} {TINY}", root, MEDFLOW_SALT="e2e-salt")
    assert "registered phi-e2e v1 (champion" in done.stdout + done.stderr

    pattern = re.compile(b"|".join(re.escape(v.encode()) for v in sorted(values, key=len, reverse=True)))
    # data/ and DVC's cache (.dvc/cache) hold the raw input by design: every other store is searched.
    stores = {
        "suite": root / "expectations",
        "profile": root / "artifacts/validate/profile",
        "artifacts": root / "artifacts",
        "mlflow.db": root / "mlruns/mlflow.db",
        "mlflow artifacts": root / "mlruns",
        ".prefect": root / ".prefect",
        "dvc.lock": root / "dvc.lock",
        "params.yaml": root / "params.yaml",
        "logs": root / "artifacts/logs",
        "terminal": None,
    }
    counts = {name: hits(s, pattern) for name, s in stores.items() if s is not None and s.exists()}
    counts["terminal"] = len(pattern.findall((stopped.stdout + stopped.stderr + done.stdout + done.stderr).encode()))
    with capsys.disabled():
        print(f"\nPHI search, {len(values)} seeded values, hits per store: {counts}")
    assert {"suite", "profile", "mlflow.db", ".prefect", "dvc.lock", "logs"} <= set(counts)
    assert any((root / ".prefect").rglob("*.db")) and (root / "artifacts/validate/quarantine.csv").exists()
    assert counts == dict.fromkeys(counts, 0)


def test_a_failed_run_leaves_the_champion_as_it_was(project):
    root, df = project
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    before = client.get_model_version_by_alias("phi-e2e", "champion").version
    leaky = df.assign(lab_result=np.where(df["outcome"] == "disease", "positive", "negative"))
    leaky.to_csv(root / "data" / "visits.csv", index=False)
    failed = sh(".venv/bin/medflow run", root, check=False, MEDFLOW_SALT="e2e-salt")
    assert failed.returncode == 2
    assert "'lab_result' alone predicts 'outcome'" in failed.stderr
    assert client.get_model_version_by_alias("phi-e2e", "champion").version == before
    assert len(client.search_model_versions("name='phi-e2e'")) == 1
