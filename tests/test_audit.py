"""The registry's audit trail: its hash chain, where MLflow keeps it, and the `medflow audit` commands."""

import hashlib
import json
import time

import pytest
from test_register import cohort, make_project, train_and_register

from medflow import audit, tracking
from medflow.tracking import audit as trail
from medflow.tracking.migrate import migrate


def chain_of(n: int, name: str = "m") -> list[audit.Record]:
    out, prev = [], audit.GENESIS
    for seq in range(1, n + 1):
        r = audit.make(seq=seq, prev=prev, chain=name, at="2026-01-01T00:00:00Z", who="ana", action="alias.set",
                       resource=f"models:/{name}@champion", before=None, after=str(seq))  # fmt: skip
        out.append(r)
        prev = r.hash
    return out


def test_an_intact_chain_verifies_and_each_tampering_names_the_first_broken_record():
    records = chain_of(4)
    assert audit.verify("m", records, (4, records[-1].hash)) == 4
    assert audit.verify("m", list(reversed(records))) == 4  # the store's order does not matter, the numbers do

    edited = audit.Record({**records[1].body, "after": "9"}, records[1].hash, "run abc")
    with pytest.raises(audit.ChainBroken, match=r"^record 2 of chain m \(run abc\) was edited"):
        audit.verify("m", [records[0], edited, *records[2:]])
    # Re-hashing the edited record does not help: the next record still names the old hash.
    rehashed = audit.Record(edited.body, audit.digest(edited.body))
    with pytest.raises(audit.ChainBroken, match=r"^record 3 of chain m does not follow record 2"):
        audit.verify("m", [records[0], rehashed, *records[2:]])
    with pytest.raises(audit.ChainBroken, match=r"^record 3 of chain m: record 2 before it was removed"):
        audit.verify("m", [records[0], *records[2:]])
    with pytest.raises(
        audit.ChainBroken, match=r"^record 4 of chain m and later were removed \(its head names record 4\)"
    ):
        audit.verify("m", records[:3], (4, records[-1].hash))
    fork = audit.make(**{**records[1].body, "after": "other"})
    with pytest.raises(audit.ChainBroken, match=r"forks the chain: record 2 of chain m has the same number"):
        audit.verify("m", [*records, fork])
    with pytest.raises(audit.ChainBroken, match="was moved into chain m"):
        audit.verify("m", [*records, *chain_of(5, "other")[4:]])


def test_long_values_are_recorded_as_their_digest():
    card = "# Model card\n" + "x" * 500
    r = audit.make(seq=1, prev=audit.GENESIS, chain="m", at="t", who="ana", action="version.card",
                   resource="models:/m/1", before=None, after={"card": card, "short": "kept"})  # fmt: skip
    assert r.body["after"] == {"card": "sha256:" + hashlib.sha256(card.encode()).hexdigest(), "short": "kept"}
    assert len(audit.canonical(r.body)) < 1000


def test_the_trail_lives_in_mlflow_is_checked_there_and_migrate_store_carries_it(project, migrated_mlflow_db):
    from mlflow import MlflowClient

    tracking.configure(project)
    tracking.ensure_model("m", "a test model", {})
    start = time.perf_counter()
    for i in range(5):
        trail.append("m", "predict.batch", "models:/m/1", None, {"rows": i, "ok": i, "refused": 0})
    print(f"audit append: {(time.perf_counter() - start) / 5 * 1000:.0f} ms a record (SQLite store)")
    assert trail.verify("m") == 6 and trail.chains() == ["m"]  # model.create, then the five batches
    assert [r.body["action"] for r in trail.records("m")] == ["model.create"] + ["predict.batch"] * 5

    target = project.root / "moved.db"
    (project.root / "moved.db").write_bytes(migrated_mlflow_db.read_bytes())
    migrate(f"sqlite:///{project.mlflow_db}", f"sqlite:///{target}")
    tracking.configure(project)
    before = [r.line() for r in trail.records("m")]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{target}")
    mlflow.set_registry_uri(f"sqlite:///{target}")
    assert [r.line() for r in trail.records("m")] == before and trail.verify("m") == 6

    client = MlflowClient()
    third = trail.records("m")[2]
    run_id = third.ref.removeprefix("run ")
    edited = json.dumps({**third.body, "after": {"rows": 99, "ok": 99, "refused": 0}}, sort_keys=True)
    client.set_tag(run_id, trail.RECORD_TAG, edited)
    with pytest.raises(audit.ChainBroken, match=rf"^record 3 of chain m \(run {run_id}\) was edited"):
        trail.verify("m")
    client.set_tag(run_id, trail.RECORD_TAG, audit.canonical(third.body).decode())
    assert trail.verify("m") == 6
    newest = trail.records("m")[-1].ref.removeprefix("run ")
    client.delete_run(newest)
    with pytest.raises(audit.ChainBroken, match=r"^record 6 of chain m and later were removed"):
        trail.verify("m")
    # An append after the removal chains onto the head, not onto what is left: the gap stays visible.
    trail.append("m", "predict.batch", "models:/m/1", None, {"rows": 1, "ok": 1, "refused": 0})
    with pytest.raises(audit.ChainBroken, match=r"^record 7 of chain m \(run \w+\): record 6 before it was removed"):
        trail.verify("m")


def test_a_training_run_records_the_data_version_it_read(project):
    from test_register import params_for

    from medflow.steps.train import open_run

    params = params_for("read")
    project.training_run.parent.mkdir(parents=True, exist_ok=True)
    run = open_run(params, project)
    (record,) = trail.records("read")
    assert record.body["action"] == "data.read" and record.body["run_id"] == run.run_id
    assert record.body["resource"] == f"runs:/{run.run_id}"
    assert record.body["after"]["medflow.data_dvc_md5"] == run.tags["medflow.data_dvc_md5"]


NAME = "medflow-breast-cancer"


def replayed(lines: list[dict]) -> tuple[dict, dict, dict]:
    """The registry as the trail tells it: each version's tags and card digest, the aliases, the model's tags."""
    versions, aliases, model_tags = {}, {}, {}
    for r in lines:
        resource, after = r["resource"], r["after"]
        if r["action"] == "model.create":
            model_tags |= after["tags"]
        elif r["action"] == "model.tags":
            model_tags |= after
        elif r["action"] == "history.append":
            model_tags[resource.partition("#")[2]] = after
        elif r["action"] in ("alias.set", "alias.delete"):
            alias = resource.partition("@")[2]
            aliases.pop(alias, None) if after is None else aliases.update({alias: after})
        elif r["action"].startswith("version."):
            v = versions.setdefault(resource.rpartition("/")[2], {"tags": {}, "card": None})
            if r["action"] == "version.create":
                v["tags"] |= {k: x for k, x in after.items() if k != "source"}
            elif r["action"] == "version.tags":
                v["tags"] |= after
            elif r["action"] == "version.state":
                v["tags"]["medflow.state"] = after
            elif r["action"] == "version.card":
                v["card"] = after
    return versions, aliases, model_tags


@pytest.mark.e2e
def test_runs_promotions_and_a_rollback_each_leave_their_record_and_tampering_fails_verify(
    tmp_path, migrated_mlflow_db
):
    from mlflow import MlflowClient
    from usercmd import scratch_clone, sh

    from medflow.paths import Paths

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    train_and_register(work, NAME, 0.95)  # v1: champion by the gate
    train_and_register(work, NAME, 0.97)  # v2: beats v1, champion by the gate
    root = scratch_clone(tmp_path / "proj", work.mlflow_db)
    sh(f".venv/bin/medflow rollback {NAME} --reason 'v2 misses site B'", root)
    sh(f".venv/bin/medflow promote {NAME} 2 --reason 'site B fixed, ticket 7'", root)
    cohort(20)[["a", "b", "c"]].to_csv(root / "batch.csv", index=False)
    sh(f".venv/bin/medflow predict --model models:/{NAME}@champion --input batch.csv --output scored.csv", root)

    ok = sh(".venv/bin/medflow audit verify medflow-breast-cancer", root)
    assert ok.stdout.strip().startswith(f"{NAME}: ") and ok.stdout.strip().endswith("audit records, chain intact")
    sh(".venv/bin/medflow audit export --to audit.jsonl", root)
    lines = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))
    assert all(r["who"] and r["at"].endswith("+00:00") for r in lines)
    actions = [r["action"] for r in lines]
    assert actions.count("gate.verdict") == 2 and actions.count("version.create") == 2
    assert [r["after"] for r in lines if r["action"] == "predict.batch"] == [{"rows": 20, "ok": 20, "refused": 0}]
    moves = [(r["before"], r["after"]) for r in lines if r["resource"] == f"models:/{NAME}@champion"]
    assert moves == [(None, "1"), ("1", "2"), ("2", "1"), ("1", "2")]  # gate, gate, rollback, promote

    # Every write medflow made to the registry in that sequence is in the trail: replayed, it is the registry.
    tracking.configure(Paths(root=root))
    client = MlflowClient()
    model = client.get_registered_model(NAME)
    versions, aliases, model_tags = replayed(lines)
    assert aliases == {a: str(v) for a, v in model.aliases.items()}
    history = {k: audit.bounded(json.loads(v)) for k, v in model.tags.items() if k.startswith("medflow.history.")}
    assert model_tags == model.tags | history
    for mv in client.search_model_versions(f"name = '{NAME}'"):
        assert versions[str(mv.version)]["tags"] == audit.bounded(mv.tags)
        assert versions[str(mv.version)]["card"] == "sha256:" + hashlib.sha256(mv.description.encode()).hexdigest()
        assert f"medflow audit show {NAME} --version {mv.version}" in mv.description  # the card links its records

    shown = sh(".venv/bin/medflow audit show medflow-breast-cancer --version 2", root).stdout.splitlines()
    assert shown and all(f"models:/{NAME}/2" in line for line in shown)
    assert any(" gate.verdict " in line for line in shown)

    records = trail.records(NAME)
    # The rollback's move of champion: edited, then removed.
    target = next(
        r for r in records if r.body["action"] == "alias.set" and (r.body["before"], r.body["after"]) == ("2", "1")
    )
    run_id = target.ref.removeprefix("run ")
    text = client.get_run(run_id).data.tags[trail.RECORD_TAG]
    client.set_tag(run_id, trail.RECORD_TAG, text.replace('"who":"', '"who":"x'))
    edited = sh(".venv/bin/medflow audit verify", root, check=False)
    assert edited.returncode == 1 and len(edited.stderr.strip().splitlines()) == 1, edited.stderr
    assert f"verify: record {target.seq} of chain {NAME} (run {run_id}) was edited" in edited.stderr
    client.set_tag(run_id, trail.RECORD_TAG, text)
    client.delete_run(run_id)
    removed = sh(".venv/bin/medflow audit verify medflow-breast-cancer", root, check=False)
    assert removed.returncode == 1 and len(removed.stderr.strip().splitlines()) == 1, removed.stderr
    assert f"record {target.seq + 1} of chain {NAME} (run " in removed.stderr
    assert f"record {target.seq} before it was removed" in removed.stderr


def test_only_versions_medflow_registered_are_loaded(tmp_path, migrated_mlflow_db):
    """A registered model runs code when it loads: predict, monitor and the gate (download_bundle) and
    mlflow.pyfunc.load_model refuse a version of a medflow model that medflow's registration did not make."""
    import mlflow
    from mlflow import MlflowClient
    from test_register import params_for

    from medflow.predict import predict_file
    from medflow.tracking.bundles import download_bundle
    from medflow.tracking.integrity import NotMadeByMedflow

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    run_id = tracking.start_run(params_for("m"), work, "train")
    tracking.ensure_model("m", "test model", {"medflow.task": "binary"})
    made = tracking.register_version("m", tracking.log_model(run_id, work.model_bundle), {})
    tracking.mark_complete("m", made)
    unfinished = tracking.register_version("m", tracking.log_model(run_id, work.model_bundle), {})
    client = MlflowClient()
    first = client.get_model_version("m", made)
    # By hand, with every tag of a medflow version copied: only the audit trail tells it apart.
    forged = client.create_model_version("m", first.source, run_id, tags=first.tags, model_id=first.model_id).version
    cohort(12).drop(columns=["y"]).to_csv(tmp_path / "batch.csv", index=False)

    assert predict_file("models:/m/1", tmp_path / "batch.csv", tmp_path / "p.csv")["rows"] == 12
    with pytest.raises(NotMadeByMedflow, match=r"^m v3 has no record of its registration in the audit trail"):
        predict_file(f"models:/m/{forged}", tmp_path / "batch.csv", tmp_path / "p3.csv")
    with pytest.raises(NotMadeByMedflow, match=r"^m v2 is no completed medflow registration \(medflow.state: regi"):
        download_bundle("m", unfinished, tmp_path / "b2")
    with pytest.raises(NotMadeByMedflow, match="has no record of its registration"):
        mlflow.pyfunc.load_model(f"models:/m/{forged}")
    client.set_model_version_tag("m", made, "medflow.files_sha256", "0" * 64)
    with pytest.raises(NotMadeByMedflow, match="its medflow.files_sha256 tag differs from the digest its audit"):
        mlflow.pyfunc.load_model("models:/m/1")
    assert not (tmp_path / "p3.csv").exists()


APPENDER = """
import sys, time
from pathlib import Path
from medflow import tracking
from medflow.paths import Paths
from medflow.tracking import audit
root = Path(sys.argv[1])
tracking.configure(Paths(root=root))
audit.records("m")  # mlflow imported and the store open before the start
(root / f"ready-{sys.argv[2]}").touch()
while not (root / "go").exists():
    time.sleep(0.01)
for i in range(10):
    audit.append("m", "predict.batch", "models:/m/1", None, {"rows": i, "ok": i, "refused": 0})
"""


def test_two_processes_appending_at_once_leave_one_unforked_chain(project):
    import subprocess
    import sys

    tracking.configure(project)
    trail.append("m", "model.create", "models:/m", None, {})  # the trail's experiment exists before the race
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(project.root), str(i)]) for i in range(2)]
    deadline = time.monotonic() + 300
    while not all((project.root / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.05)
    (project.root / "go").touch()
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    assert trail.verify("m") == 21


def test_a_registration_killed_before_its_creation_record_gets_it_when_finished(
    tmp_path, migrated_mlflow_db, monkeypatch
):
    from test_register import train

    from medflow.steps import register
    from medflow.tracking.bundles import download_bundle

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    params = train(work, "late", 0.95)
    append = trail.append

    def killed(chain, action, *args, **kwargs):
        if action == "version.create":
            raise KeyboardInterrupt  # as a kill between the version and its record
        return append(chain, action, *args, **kwargs)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(trail, "append", killed)
        register.run(params, work)
    assert register.run(params, work)["version"] == "1"
    (created,) = [r for r in trail.records("late") if r.body["action"] == "version.create"]
    assert created.body["after"]["recorded_late"] == "true"
    assert download_bundle("late", "1", tmp_path / "bundle").exists()  # medflow's own, finished: it loads
    assert trail.verify("late") == len(trail.records("late"))


def test_a_version_medflow_deletes_leaves_its_record(tmp_path, migrated_mlflow_db, monkeypatch):
    from test_register import params_for

    from medflow.tracking import registry

    work = make_project(tmp_path / "work", migrated_mlflow_db, cohort())
    run_id = tracking.start_run(params_for("gone"), work, "train")
    tracking.ensure_model("gone", "test model", {})
    tracking.register_version("gone", tracking.log_model(run_id, work.model_bundle), {})  # then killed: no alias
    monkeypatch.setattr(registry, "STALE_S", 0.0)
    assert tracking.finish_interrupted("gone", "another-run") == [
        "removed v1 (registration interrupted before its alias)"
    ]
    last = trail.records("gone")[-1].body
    assert (last["action"], last["resource"], last["before"], last["after"]) == (
        "version.delete",
        "models:/gone/1",
        "registering",
        None,
    )
