"""Where the audit trail lives: an MLflow experiment per registered model, `medflow-audit/NAME`, one run per record.

Why there. MLflow keeps no audit log of its own. The trail must live with the registry, so that a server move and
`medflow migrate-store` carry it, and outlive what it records (a deleted version, or model). Experiments and runs are
what every backend keeps alike (the SQLite file, a PostgreSQL-backed server, the basic-auth app, which grants them
per experiment) and what migrate-store already copies with their tags. Tags on the registered model were the other
candidate: a model's tags come back with every read of the model, so predict batches would slow every registry call,
and they go when the model is deleted. A record is a run's tags: the record's canonical JSON (bounded by
medflow.audit to far below MLflow 3.17's 8000-character run tag limit), its hash and its zero-padded number; the run
is FINISHED at once, so the UI lists the trail as runs.

Cost: an append is 5 calls (read the experiment and its head, the newest record, create the run with its tags,
finish it, move the head): 20 ms a record on the project's SQLite store, ~100 ms on a loaded 2-core machine
(tests/test_audit.py prints it), against seconds for a registration, which writes ~12 records.

Chain head and concurrency. The experiment's tag `medflow.audit.head` holds "SEQ HASH" of the last record: an
append chains onto it (not onto the newest record it can find), so a removed newest record is seen too. Appends to
one chain are serialised among this machine's processes with a file lock. MLflow offers no compare-and-set, so two
machines appending at once both write the same number: nothing is lost, and `medflow audit verify` reports the fork
(two records with one number) instead of hiding it. Each append checks for a newer record left by a writer killed
before it moved the head, and chains onto that one.

Who: MLFLOW_TRACKING_USERNAME against a server (which, in the team stack, authenticated it), else the OS user.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from medflow import audit
from medflow.tracking.store import client

PREFIX = "medflow-audit/"
RECORD_TAG = "medflow.audit.record"
HASH_TAG = "medflow.audit.hash"
SEQ_TAG = "medflow.audit.seq"
# Copies of the record's action and resource, so that one version's records are found without reading the trail;
# find() trusts a record only as far as its hashed JSON says the same.
ACTION_TAG = "medflow.audit.action"
RESOURCE_TAG = "medflow.audit.resource"
HEAD_TAG = "medflow.audit.head"
NOTE = (
    "medflow's audit trail of registered model `{}`: one run per record (tag medflow.audit.record), each holding "
    "the hash of the one before. Check it with `medflow audit verify {}`; never edit these runs."
)
PAGE = 1000


def who() -> str:
    import mlflow

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user and mlflow.get_tracking_uri().startswith(("http://", "https://")):
        return user
    return getpass.getuser()


def _lock(chain: str):
    import tempfile

    import mlflow
    from filelock import FileLock

    key = hashlib.sha256(f"{mlflow.get_tracking_uri()}\0audit\0{chain}".encode()).hexdigest()[:24]
    return FileLock(Path(tempfile.gettempdir()) / f"medflow-audit-{key}.lock")


def _experiment(chain: str, create: bool):
    from mlflow.exceptions import MlflowException

    c = client()
    name = PREFIX + chain
    found = c.get_experiment_by_name(name)
    if found is not None or not create:
        return found
    try:
        c.create_experiment(name, tags={"mlflow.note.content": NOTE.format(chain, chain)})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return c.get_experiment_by_name(name)


def _head(experiment) -> tuple[int, str]:
    seq, _, hash_ = experiment.tags.get(HEAD_TAG, f"0 {audit.GENESIS}").partition(" ")
    return int(seq), hash_


def _newest(experiment_id: str) -> audit.Record | None:
    found = client().search_runs([experiment_id], order_by=[f"tags.`{SEQ_TAG}` DESC"], max_results=1)
    return _record(found[0]) if found else None


def _record(run) -> audit.Record:
    tags = run.data.tags
    return audit.parse(tags[RECORD_TAG], tags.get(HASH_TAG, ""), f"run {run.info.run_id}")


def append(chain: str, action: str, resource: str, before=None, after=None, run_id: str | None = None) -> audit.Record:
    """Appends one record to the chain of registered model `chain` (made on first use) and returns it."""
    from medflow.privacy.scanner import assert_clean

    c = client()
    with _lock(chain):
        experiment = _experiment(chain, create=True)
        seq, prev = _head(experiment)
        newest = _newest(experiment.experiment_id)
        if newest is not None and newest.seq == seq + 1 and newest.body["prev"] == prev:
            seq, prev = newest.seq, newest.hash  # its writer was killed before it moved the head
        record = audit.make(
            seq=seq + 1,
            prev=prev,
            chain=chain,
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            who=who(),
            action=action,
            resource=resource,
            before=before,
            after=after,
            run_id=run_id,
            flow_run_id=os.environ.get("MEDFLOW_FLOW_RUN_ID") or None,
        )
        text = audit.canonical(record.body).decode()
        assert_clean(text, f"audit record {record.seq} of {chain}")
        tags = {RECORD_TAG: text, HASH_TAG: record.hash, SEQ_TAG: f"{record.seq:09d}", ACTION_TAG: action}
        tags[RESOURCE_TAG] = resource
        run = c.create_run(
            experiment.experiment_id, start_time=int(time.time() * 1000), run_name=f"{record.seq} {action}", tags=tags
        )
        c.set_terminated(run.info.run_id)
        c.set_experiment_tag(experiment.experiment_id, HEAD_TAG, f"{record.seq} {record.hash}")
    return record


def chains() -> list[str]:
    from mlflow.entities import ViewType

    found = client().search_experiments(view_type=ViewType.ALL, filter_string=f"name LIKE '{PREFIX}%'")
    return sorted(e.name.removeprefix(PREFIX) for e in found)


def records(chain: str) -> list[audit.Record]:
    """The chain's records in order; [] when it has none."""
    experiment = _experiment(chain, create=False)
    if experiment is None:
        return []
    out, token = [], None
    while True:
        page = client().search_runs(
            [experiment.experiment_id], order_by=[f"tags.`{SEQ_TAG}` ASC"], max_results=PAGE, page_token=token
        )
        out += [_record(r) for r in page]
        token = page.token
        if not token:
            return out


def find(chain: str, resource: str, actions: tuple[str, ...], c=None) -> list[audit.Record]:
    """The chain's records of `resource` whose action is one of `actions`, oldest first; only those whose JSON
    matches its hash and says the same. c: the client to read with (default: the configured store's)."""
    c = c or client()
    experiment = c.get_experiment_by_name(PREFIX + chain)
    if experiment is None:
        return []
    found = c.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RESOURCE_TAG}` = '{resource}'",
        order_by=[f"tags.`{SEQ_TAG}` ASC"],
        max_results=PAGE,
    )
    out = [_record(r) for r in found]
    return [
        r
        for r in out
        if audit.digest(r.body) == r.hash and r.body["resource"] == resource and r.body["action"] in actions
    ]


def verify(chain: str) -> int:
    """Checks the chain of registered model `chain`; returns its length or raises audit.ChainBroken."""
    experiment = _experiment(chain, create=False)
    if experiment is None:
        if client().search_registered_models(f"name = '{chain}'"):
            raise audit.ChainBroken(f"registered model {chain} has no audit trail (experiment {PREFIX}{chain})")
        raise ValueError(f"no audit trail for {chain}: the registry has no model of that name (medflow ui lists them)")
    if experiment.lifecycle_stage != "active":
        raise audit.ChainBroken(f"the audit trail of {chain} (experiment {PREFIX}{chain}) was deleted")
    return audit.verify(chain, records(chain), _head(experiment))
