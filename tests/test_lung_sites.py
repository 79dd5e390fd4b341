"""docs/evidence.md's multi-centre example as printed: lifelines' NCCTG lung table split into development and
institution 13, a survival model developed with two institutions held out, then evaluate-external on institution 13;
the card lists the held-out sites' test beside the external one."""

import json
from pathlib import Path

import pandas as pd
import pytest
from usercmd import documented, scratch_clone, sh

pytestmark = pytest.mark.e2e  # the real executable on a scratch clone: `make test`, not `make test-fast`

FILES = '''.venv/bin/python -c "import pandas as pd; from medflow.data.sources import resolve; from medflow.paths import Paths; t = pd.read_csv(resolve('lung', Paths('.')), dtype=str); x = t['inst'] == '13'; t[~x].to_csv('data/lung_dev.csv', index=False); t[x].to_csv('data/lung_inst13.csv', index=False)"'''  # noqa: E501
RUN = ".venv/bin/medflow run --params examples/lung_sites.yaml"
EXTERNAL = '.venv/bin/medflow evaluate-external --params examples/lung_sites.yaml --model models:/medflow-lung@champion --data data/lung_inst13.csv --name "institution 13"'  # noqa: E501


def test_held_out_institutions_then_an_external_one_stand_side_by_side_in_the_card(
    tmp_path, migrated_mlflow_db, prefect_server
):
    from mlflow import MlflowClient

    printed = documented()
    assert all(f"\n{c}\n" in printed for c in (FILES, RUN, EXTERNAL))
    clone = scratch_clone(tmp_path / "medflow", migrated_mlflow_db)
    env = {"PREFECT_API_URL": prefect_server}
    sh(FILES, clone)
    assert len(pd.read_csv(clone / "data/lung_inst13.csv")) == 20
    done = sh(RUN, clone, timeout=600, **env)
    assert done.stdout.strip().splitlines()[-1].startswith("registered medflow-lung v1 (champion"), done.stdout
    out = clone / "artifacts/lung_sites"
    # The row without an institution: quarantined with its reason, never silently dropped or trained on.
    held = pd.read_csv(out / "validate/quarantine.csv")
    undated = held.loc[held["reason"].str.contains("inst: split_value_present"), "reason"].tolist()
    assert undated == ["inst: split_value_present (split.by=site needs a value on every row)"], held["reason"]
    assert pd.read_csv(out / "clean/quarantine.csv").empty  # counted once, at validate
    manifest = pd.read_csv(out / "split/manifest.csv").set_index("row_id")["split"]
    dev = pd.read_csv(clone / "data/lung_dev.csv", dtype=str)
    assert set(dev.loc[manifest.index[manifest == "test"], "inst"]) == {"1", "12"}

    store = f"sqlite:///{clone / 'mlruns/mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)
    before = client.get_registered_model("medflow-lung").aliases
    done = sh(EXTERNAL, clone, timeout=300, **env)
    assert "medflow-lung v1 on institution_13: c_index " in done.stdout, done.stdout
    assert client.get_registered_model("medflow-lung").aliases == before == {"champion": 1}

    version = client.get_model_version("medflow-lung", "1")
    card = json.loads(Path(client.download_artifacts(version.run_id, "model_card.json", str(tmp_path))).read_text())
    rows = {r["kind"]: r for r in card["validation"]}
    assert set(rows) == {"held-out site(s) 1, 12", "external: institution_13"}
    assert all(r["metric"] == "c_index" and r["ci_low"] < r["value"] < r["ci_high"] for r in rows.values())
    assert rows["external: institution_13"]["rows"] == 20
    # The declared card and the subgroups by sex (a code, named as written) and age fill the card's TRIPOD+AI items.
    md = (out / "register/model_card.md").read_text()
    assert "| sex=1 |" in md and "| sex=2 |" in md and "| age<65 |" in md and "Not for clinical use." in md
    assert "43 of 43 applicable items reported or declared" in md and "| age | mean (SD) |" in md
    # A survival card's calibration by risk group and its decision curve at the last horizon (TRIPOD+AI 12f, 12e).
    assert "## Calibration" in md and "| horizon | risk group | rows | predicted | observed (KM) |" in md
    assert "## Clinical utility (decision curve)" in md and "Net benefit on test at 365 against" in md
    assert "| held-out site(s) 1, 12 | c_index |" in version.description
    assert "| external: institution_13 | c_index |" in version.description
    assert version.tags["medflow.external.institution_13"].startswith("c_index=")
    logged = {a.path for a in client.list_artifacts(version.run_id, "external/institution_13")}
    assert "external/institution_13/report.md" in logged
