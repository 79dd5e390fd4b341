"""PHI by construction, end to end: identifiers seeded into declared columns, undeclared columns and free text (in the
formats people write them, and in a few rows only) never reach a suite, profile, artifact, MLflow, Prefect, dvc.lock,
log or DVC's cache; nor does a rare category's value; a failed run leaves the champion as it was."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from usercmd import scratch_clone, sh

from medflow.data.synthetic import synthetic_cohort

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Wirth"]
DECLARED = "-P data.source=data/visits.csv -P data.target=outcome -P data.patient_id=mrn -P data.positive_class=disease"
TINY = "-P train.max_epochs=3 -P train.patience=2 -P 'train.hidden=[8]' -P register.model_name=phi-e2e"
# Three epochs of a tiny net on 60 patients: the gate's floor and baseline margin are opened, this is about PHI.
TINY += " -P register.min_primary=0.0 -P register.gate.baseline_margin=1"


# Names none of the screen's lists hold, written in lower case; phone numbers as other countries write them.
GIVEN = ["maria", "jose", "wei", "fatima", "olivia", "kenji", "zanele", "ivan", "priya", "omar", "chloe", "lucas"]
FAMILY = ["garcia", "nguyen", "okafor", "kowalski", "tanaka", "haddad", "murphy", "rossi", "dubois", "novak"]
PHONES = ["07700 9{:05d}", "+44 20 7946 {:04d}", "+49 30 12{:04d}", "06123{:05d}", "(02) 9876 {:04d}"]
# Seen in a few rows each: fewer than validate.small_count, so no store but the row stores may name them.
RARE_WARDS = ["Quillfeather annex", "Zebedee unit"]


def seeded_table() -> pd.DataFrame:
    df = synthetic_cohort(n_patients=60, seed=11)
    n = len(df)
    rng = np.random.default_rng(1)
    kin = [f"{FIRST[i % 8]} {LAST[(i // 8) % 8]}" for i in rng.permutation(n)]
    ward = rng.choice(["A", "B"], n).astype(object)
    ward[[5, 40]], ward[77] = RARE_WARDS[0], RARE_WARDS[1]
    return df.assign(
        contact=[f"{k.split()[0].lower()}.{i}@example.org" for i, k in enumerate(kin)],  # e-mails, undeclared
        kin=kin,  # names, undeclared
        born=[f"{1935 + i % 60}-{1 + i % 12:02d}-{1 + i % 27:02d}" for i in range(n)],  # dates of birth, undeclared
        ref=[f"MRN{5500000 + 13 * i}" for i in range(n)],  # record numbers, undeclared
        notes=[f"called {k} on +1-555-{300 + i % 600:03d}-{1000 + i:04d}\nre: results" for i, k in enumerate(kin)],
        # Every 5th row names a doctor and a callback number; the others repeat, so the column reads as categories.
        remarks=[
            f"seen by dr {LAST[i % 8]}; callback 617-555-{1000 + i:04d}" if i % 5 == 0 else "routine follow up"
            for i in range(n)
        ],  # fmt: skip
        relative=[f"{GIVEN[rng.integers(12)]} {FAMILY[rng.integers(10)]}" for _ in range(n)],  # lower-case names
        memo=[f"ring {PHONES[i // 8 % 5].format(i)}" if i % 8 == 0 else "no change" for i in range(n)],
        # Arbitrary ids, not row numbers; nine digits: six-digit ones matched a timestamp's microseconds in Prefect's
        # database by chance (a whole word after its "."), a false leak once in a few runs.
        ID=rng.choice(900_000_000, n, replace=False) + 100_000_000,
        # What must pass the screen and stay a feature: labs, codes, small categories, and a rare one pooled.
        ldh=rng.normal(220, 40, n).round(1),
        icd=rng.choice(["I21.4", "I50.9", "E11.9", "J18.9"], n),
        severity=rng.choice(["none", "low", "high"], n),
        ward=ward,
    )


SEEDED_COLUMNS = ["contact", "kin", "born", "ref", "notes", "remarks", "relative", "memo", "ID"]
PHONE = re.compile(r"617-555-\d{4}|\+1-555-\d{3}-\d{4}|" + "|".join(
    re.escape(p).replace(r"\{:05d\}", r"\d{5}").replace(r"\{:04d\}", r"\d{4}") for p in PHONES))  # fmt: skip


def seeded_values(df: pd.DataFrame) -> set[str]:
    columns = ("mrn", "name", "dob", "phone", "contact", "kin", "born", "ref", "relative", "ID")
    values = {v for c in columns for v in df[c].dropna()}
    values |= {m for c in ("notes", "remarks", "memo") for text in df[c] for m in PHONE.findall(text)}
    values |= {f"dr {last}" for last in LAST}
    return {str(v) for v in values if len(str(v)) >= 6}


def _readable(f: Path) -> bytes:
    """A file's bytes, and a Parquet file's rows as text too: its pages may be compressed."""
    data = f.read_bytes()
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        data += pq.read_table(f).to_pandas().to_csv(index=False).encode()
    return data


def hits(store: Path, values: set[str], skip: set[str] = frozenset()) -> int:
    """Matches in a file or folder; skip: md5s of files stored there by design (the raw input in DVC's cache)."""
    files = [store] if store.is_file() else [f for f in store.rglob("*") if f.is_file()]
    return sum(matches(_readable(f), values) for f in files if hashlib.md5(f.read_bytes()).hexdigest() not in skip)


def matches(data: bytes, values: set[str]) -> int:
    """Whole-word, case-insensitive matches of values in data.

    One pattern of all 1,291 values tried at every byte took 129 of the module's 135 CPU-s: only values that occur in
    the data at all, case aside, can match, and a substring test finds those in C. The count is the whole pattern's.
    """
    lowered = data.lower()  # bytes: ASCII case only, as re.IGNORECASE folds a bytes pattern
    present = {v for v in values if v.encode().lower() in lowered}
    return len(whole_words(present).findall(data)) if present else 0


def whole_words(values: set[str]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(v.encode()) for v in sorted(values, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9])(?:" + alternatives + rb")(?![A-Za-z0-9])", re.IGNORECASE)


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
    assert len(line) == 1 and all(f"column {c!r}" in line[0] for c in SEEDED_COLUMNS), line
    sparse = sum(i % 5 == 0 for i in range(len(df)))  # one row in five: under the share a column of them needs
    assert f"'remarks': {sparse} of {len(df)} sampled values look like phone numbers" in line[0]
    assert "'ID' is named like an id" in line[0] and "'relative'" in line[0] and "look like person names" in line[0]
    assert not [c for c in ("ldh", "icd", "severity", "ward", "site", "visit_date") if f"column {c!r}" in line[0]]
    assert (
        "-P 'data.identifiers=[name, dob, phone, contact, kin, born, ref, notes, remarks, relative, memo, ID]'"
        in (line[0])
    )
    assert not (root / "expectations" / "visits.json").exists()

    identifiers = ("-P 'data.identifiers=[name, dob, phone, contact, kin, born, relative, ID]' "
                   "-P 'data.exclude=[ref, notes, remarks, memo]'")  # fmt: skip
    done = sh(f".venv/bin/medflow run {DECLARED} {identifiers} {TINY}", root, MEDFLOW_SALT="e2e-salt")
    assert "registered phi-e2e v1 (champion" in done.stdout + done.stderr

    # data/ holds the raw input by design, and so does DVC's cache, as one object: every other file is searched.
    raw = {hashlib.md5(f.read_bytes()).hexdigest() for f in (root / "data").rglob("*") if f.is_file()}
    stores = {
        "suite": root / "expectations",
        "profile": root / "artifacts/validate/profile",
        "artifacts": root / "artifacts",
        "mlflow.db": root / "mlruns/mlflow.db",
        "mlflow artifacts": root / "mlruns",
        ".prefect": root / ".prefect",
        "dvc.lock": root / "dvc.lock",
        ".dvc/cache": root / ".dvc/cache",
        "params.yaml": root / "params.yaml",
        "logs": root / "artifacts/logs",
        "terminal": None,
    }
    counts = {name: hits(s, values, raw) for name, s in stores.items() if s is not None and s.exists()}
    counts["terminal"] = matches((stopped.stdout + stopped.stderr + done.stdout + done.stderr).encode(), values)
    with capsys.disabled():
        print(f"\nPHI search, {len(values)} seeded values, hits per store: {counts}")
    assert {"suite", "profile", "mlflow.db", ".prefect", "dvc.lock", ".dvc/cache", "logs"} <= set(counts)
    assert any((root / ".prefect").rglob("*.db")) and (root / "artifacts/validate/quarantine.csv").exists()
    assert counts == dict.fromkeys(counts, 0)

    # A value in fewer than validate.small_count rows is named nowhere but in the rows themselves (valid and
    # cleaned Parquet files, in artifacts/ and DVC's cache): its rows pass the suite inferred from them, pooled.
    rows = {hashlib.md5(f.read_bytes()).hexdigest() for f in (root / "artifacts").rglob("*.parquet")}
    named = {name: hits(s, set(RARE_WARDS), raw | rows) for name, s in stores.items() if s is not None and s.exists()}
    assert named == dict.fromkeys(named, 0)
    summary = json.loads((root / "artifacts/validate/summary.json").read_text())
    assert not [r for r in summary["quarantine_reasons"] if r.startswith(("ward", "icd", "severity"))]
    suite = (root / "expectations/visits.json").read_text()
    assert '"<other>"' in suite and "I21.4" in suite
    kinds = json.loads((root / "artifacts/validate/columns.json").read_text())
    assert kinds["ldh"] == "numeric" and kinds["icd"] == kinds["severity"] == kinds["ward"] == "categorical"


def test_quarantine_holds_no_text_of_a_column_but_numbers(project):
    """A category the suite does not know quarantines its rows by row number and rule; the text stays in the
    source, which the row number finds."""
    root, df = project
    if not (root / "expectations/visits.json").exists():
        pytest.skip("needs the suite of the run above")
    batch = df.copy()
    batch.loc[batch.index % 10 == 3, "severity"] = "told mrs hopper by phone"
    batch.to_csv(root / "data" / "visits.csv", index=False)
    identifiers = ("-P 'data.identifiers=[name, dob, phone, contact, kin, born, relative, ID]' "
                   "-P 'data.exclude=[ref, notes, remarks, memo]'")  # fmt: skip
    done = sh(f".venv/bin/medflow step validate {DECLARED} {identifiers} {TINY}", root, check=False,
              MEDFLOW_SALT="e2e-salt")  # fmt: skip
    # A tenth of the rows and more: the run stops on validate.max_quarantine, its quarantine file written first.
    assert done.returncode == 2 and "more than validate.max_quarantine=0.1" in done.stderr, done.stderr[-2000:]
    held = pd.read_csv(root / "artifacts/validate/quarantine.csv", dtype=str)
    shifted = held[held["reason"].str.contains("severity: expect_column_values_to_be_in_set", regex=False)]
    assert sorted(shifted["_row_id"].astype(int)) == [i for i in range(len(df)) if i % 10 == 3]
    suite = json.loads((root / "expectations/visits.json").read_text())
    kinds = {c: s["kind"] for c, s in suite["meta"]["medflow"]["columns"].items()}
    assert set(held.columns) - {"_row_id", "reason", "_patient_key"} <= {c for c, k in kinds.items() if k == "numeric"}
    assert "hopper" not in (root / "artifacts/validate/quarantine.csv").read_text().lower()


def test_a_repeated_record_number_is_proposed_as_the_patient_id(tmp_path_factory, migrated_mlflow_db):
    root = scratch_clone(tmp_path_factory.mktemp("phi-pid"), migrated_mlflow_db)
    df = synthetic_cohort(n_patients=60, seed=11).drop(columns=["name", "dob", "phone"])
    df.insert(0, "patientId", df.pop("mrn").str[3:].astype(int))  # plain numbers, 1-4 visits per patient
    (root / "data").mkdir(exist_ok=True)
    df.to_csv(root / "data" / "visits.csv", index=False)
    source = "-P data.source=data/visits.csv -P data.target=outcome -P data.positive_class=disease"
    stopped = sh(f".venv/bin/medflow step validate {source}", root, check=False, MEDFLOW_SALT="e2e-salt")
    assert stopped.returncode == 2
    (line,) = [x for x in stopped.stderr.splitlines() if "undeclared column(s)" in x]
    assert "column 'patientId' is named like an id" in line and "a patient id" in line, line
    fix = re.search(r"Declare them \((-P data\.patient_id=patientId)\)", line)
    assert fix, line
    # The fix as printed passes validate, and every visit of a patient carries one salted key.
    sh(f".venv/bin/medflow step validate {source} {fix.group(1)}", root, MEDFLOW_SALT="e2e-salt")
    valid = pd.read_parquet(root / "artifacts/validate/valid.parquet")
    assert "patientId" not in valid and valid["_patient_key"].nunique() == df["patientId"].nunique()


def test_a_failed_run_leaves_the_champion_as_it_was(project, prefect_server):
    root, df = project
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    before = client.get_model_version_by_alias("phi-e2e", "champion").version
    leaky = df.assign(lab_result=np.where(df["outcome"] == "disease", "positive", "negative"))
    leaky.to_csv(root / "data" / "visits.csv", index=False)
    # The session's Prefect server: the run above met the temporary one, whose store it searched.
    failed = sh(".venv/bin/medflow run", root, check=False, MEDFLOW_SALT="e2e-salt", PREFECT_API_URL=prefect_server)
    assert failed.returncode == 2
    assert "'lab_result' alone predicts 'outcome'" in failed.stderr
    assert client.get_model_version_by_alias("phi-e2e", "champion").version == before
    assert len(client.search_model_versions("name='phi-e2e'")) == 1
